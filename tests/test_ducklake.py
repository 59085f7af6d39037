"""Portability: the schema, a complete run and every view work unchanged in a DuckLake catalog.

DuckLake (Parquet files + a SQL catalog) is where the warehouse goes when a team outgrows one
file. Here the catalog is a local DuckDB file (the PostgreSQL catalog differs only in where the
metadata lives); the extension comes from the PyPI package ``duckdb-extension-ducklake`` built
for duckdb 1.5.5, so nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import pytest
from _seed import seed_complete_run

from lens.warehouse import Warehouse, _migration_files, create_views
from tests.contracts import KEYS, check_contracts

# a run with every table filled, then the same SQL against the file and against the lake
VIEWS_COMPARED = ("class_metrics", "run_metrics", "confusion", "training_curve", "cluster_summary",
                  "cluster_purity", "data_quality_spotlight", "grounding_summary", "recommendations")


def _extension() -> Path:
    spec = importlib.util.find_spec("duckdb_extension_ducklake")
    if spec is None:
        pytest.fail("duckdb-extension-ducklake is not installed: run ./setup.sh")
    return Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / "ducklake.duckdb_extension"


def test_schema_run_and_views_in_ducklake(tmp_path):
    wh = Warehouse(tmp_path / "lens.duckdb")
    seed_complete_run(wh, n_predictions=60, n_failures=12)
    with wh.connect() as con:
        con.execute("insert into verdicts select 'v1', run_id, hypothesis_id, example_id, 'fix', 'agree', 'ana',"
                    " null, now()::timestamp, 'review' from hypotheses limit 1")
        tables = [t for (t,) in con.execute(
            "select table_name from information_schema.tables where table_type = 'BASE TABLE'"
            " and table_name not like 'lens_%' order by 1").fetchall()]
        expected = {v: con.execute(f"select * from {v} order by all").fetchall() for v in VIEWS_COMPARED}

    lake = duckdb.connect()
    try:
        lake.execute(f"load '{_extension()}'")
        lake.execute(f"attach 'ducklake:{tmp_path / 'meta.ducklake'}' as lake (data_path '{tmp_path / 'data'}/')")
        lake.execute("use lake")
        for _, _, path in _migration_files():  # every migration, unchanged
            lake.execute(path.read_text())
        create_views(lake)  # every view, unchanged
        lake.execute(f"attach '{wh.path}' as src (read_only)")
        for t in tables:
            lake.execute(f"insert into lake.main.{t} select * from src.main.{t}")
        lake.execute("detach src")
        counts = check_contracts(lake)
        assert counts["hypotheses"] > 0 and counts["cluster_members"] > 0 and counts["verdicts"] == 1
        assert set(KEYS) - set(counts) <= set(), set(KEYS) - set(counts)
        for v in VIEWS_COMPARED:
            got = lake.execute(f"select * from {v} order by all").fetchall()
            assert len(got) == len(expected[v]), v
            for a, b in zip(got, expected[v]):  # sums may differ in the last bit (aggregation order)
                assert all(x == pytest.approx(y, rel=1e-9) if isinstance(y, float) else x == y
                           for x, y in zip(a, b)), (v, a, b)
        # stage writes work in the lake as in the file: delete-then-insert and appends
        lake.execute("begin")
        lake.execute("delete from samples where run_id = 'demo'")
        lake.execute("insert into samples values ('demo', 1, 'per-class', 0, 1)")
        lake.execute("commit")
        assert lake.execute("select count(*) from samples").fetchone()[0] == 1
        assert list((tmp_path / "data").rglob("*.parquet")), "the lake stores its rows as Parquet files"
    finally:
        lake.close()
