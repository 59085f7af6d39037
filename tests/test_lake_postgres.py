"""The warehouse on DuckLake with a real PostgreSQL catalog (issue 17, points 1, 2 and 4).

A throwaway PostgreSQL 15 cluster (tests/_postgres.py) holds the catalog; Parquet files go to
a temporary folder. Proven here:

* the same end-to-end ``lens run`` (ingest of a predictions file, sample, evidence,
  hypothesize with the measured backend, embed, cluster) on a file warehouse and on the lake
  gives identical view results, passes the contracts, and ``lens sql``, ``lens report``,
  ``lens verdicts import`` and the dashboard work on the lake unchanged;
* a wrong catalog string, a refused or unreachable PostgreSQL, an unknown database and an
  unwritable data folder each end in one line naming what to fix, before any work;
* writers that conflict are replayed (planted conflicts lose and duplicate nothing), and two
  processes migrating one new lake at once apply each migration once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _postgres import postgres  # noqa: F401  (fixture)
from click.testing import CliRunner

from lens.warehouse import Warehouse, WriteConflictError, insert_arrow, record_stage, replay_stats
from tests.contracts import check_contracts

REPO = Path(__file__).resolve().parent.parent
VIEWS = ("class_metrics", "run_metrics", "confusion", "predictions", "cluster_summary", "cluster_purity",
         "data_quality_spotlight", "grounding_summary", "failure_claims", "recommendations", "review_queue",
         "latest_verdicts")
STAGES = (("sample", "--run", "r1", "--per-class", "2"), ("evidence", "--run", "r1", "--stats-limit", "100"),
          ("hypothesize", "--run", "r1", "--backend", "measured"), ("embed", "--run", "r1"),
          ("cluster", "--run", "r1", "--k-min", "2", "--k-max", "3", "--min-size", "2"))


def _lens(*args: str, expect: int = 0):
    from lens.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.output


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, cifar_dir):
    n = 200
    labels = pq.read_table(cifar_dir / "test.parquet", columns=["label"]).column("label").to_numpy()[:n]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 10))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    path = tmp_path_factory.mktemp("preds") / "preds.parquet"
    pq.write_table(pa.table({"id": np.arange(n), "label": labels, "probs": list(probs.astype(np.float32)),
                             "index": np.arange(n)}), path)
    verdicts = path.parent / "verdicts.csv"
    return path, verdicts


def _comparable(con, view: str) -> list[tuple]:
    """The view's rows, sorted, without timestamp columns (made at write time)."""
    cols = [r[0] for r in con.execute(f"describe {view}").fetchall()
            if "TIMESTAMP" not in r[1] and r[0] not in ("created_at", "verdict_id")]
    return con.execute(f"select {', '.join(cols)} from {view} order by all").fetchall()


def _same(a: list[tuple], b: list[tuple], view: str) -> None:
    assert len(a) == len(b), view
    for x, y in zip(a, b):  # float sums may differ in the last bit (aggregation order)
        assert all(u == pytest.approx(v, rel=1e-9, abs=1e-12) if isinstance(v, float) else u == v
                   for u, v in zip(x, y)), (view, x, y)


def test_same_run_on_a_file_and_on_a_postgres_lake_gives_the_same_views(postgres, predictions, cifar_dir, tmp_path):
    preds, verdicts_csv = predictions
    file_db = str(tmp_path / "file" / "lens.duckdb")
    lake = f"ducklake:{postgres.catalog(postgres.create_db('e2e'))}"
    data = tmp_path / "lake-data"
    for wh_args in (("--warehouse", file_db), ("--warehouse", lake, "--lake-data", str(data))):
        _lens(*wh_args, "ingest", "--predictions", str(preds), "--images", str(cifar_dir), "--run", "r1")
        for stage in STAGES:
            _lens(*wh_args, *stage)

    # verdicts through the import command on both sides (an append writer)
    with Warehouse(file_db).connect() as con:
        hyps = [r[0] for r in con.execute("select hypothesis_id from hypotheses order by 1 limit 5").fetchall()]
    verdicts_csv.write_text("verdict_id,hypothesis_id,dimension,verdict,reviewer\n" + "".join(
        f"v{i},{h},fix,{'agree' if i % 2 else 'disagree'},ana\n" for i, h in enumerate(hyps)))
    for wh_args in (("--warehouse", file_db), ("--warehouse", lake)):
        assert "Imported 5 verdicts" in _lens(*wh_args, "verdicts", "import", str(verdicts_csv))

    file_wh, lake_wh = Warehouse(file_db), Warehouse(lake)  # the catalog remembers the data folder
    with file_wh.connect() as f, lake_wh.connect() as lk:
        assert lk.execute("select current_database()").fetchone()[0] == "lens_lake"
        counts = check_contracts(lk, require_rows=("predictions", "failures", "samples", "evidence", "hypotheses",
                                                   "embeddings", "cluster_members", "verdicts"))
        assert counts == check_contracts(f)
        for view in VIEWS:
            _same(_comparable(lk, view), _comparable(f, view), view)
        assert lk.execute("select count(*) from cluster_summary").fetchone()[0] >= 3
    assert list(data.rglob("*.parquet")), "the lake keeps its rows as Parquet files in --lake-data"
    assert lake_wh.path.parent == data.resolve()
    assert lake_wh.artifact_dir("r1") == data.resolve() / "artifacts" / "r1"  # checkpoints beside the data
    assert lake_wh.artifact_ref(data / "artifacts" / "r1" / "m.pt") == "artifacts/r1/m.pt"

    # lens sql (read-only, sandboxed), lens status, lens report and the dashboard, unchanged
    out = _lens("--warehouse", lake, "sql", "select run_id, round(accuracy, 4) as acc from run_metrics",
                "--format", "csv")
    with file_wh.connect() as f:
        acc = f.execute("select round(accuracy, 4) from run_metrics").fetchone()[0]
    assert f"r1,{acc}" in out
    out = _lens("--warehouse", lake, "sql", "select * from read_csv('/etc/passwd')", expect=1)
    assert "read-only" in out
    report = tmp_path / "report.html"
    _lens("--warehouse", lake, "report", "--run", "r1", "--out", str(report))
    assert report.stat().st_size > 10_000 and "class-metrics" in report.read_text()

    from dashboards import queries
    from dashboards.app import create_app

    data_lake, data_file = queries.overview(lake_wh, "r1"), queries.overview(file_wh, "r1")
    assert data_lake["runs"] == data_file["runs"] == ["r1"]
    server = create_app(lake_wh).server.test_client()
    assert server.get("/").status_code == 200
    ex = int(lake_wh.query("select example_id from failures order by 1 limit 1").iloc[0, 0])
    assert server.get(f"/img/r1/{ex}.png").data.startswith(b"\x89PNG")


def test_bad_catalogs_unreachable_servers_and_unwritable_data_end_in_one_line(postgres, tmp_path):
    port = postgres.port
    good = postgres.catalog(postgres.create_db("checks"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = [
        ("ducklake:", "names no DuckLake catalog"),
        ("ducklake:postgres:dbname=x hots=127.0.0.1", "unknown PostgreSQL connection option(s) hots"),
        ("ducklake:postgres:host=127.0.0.1", "names no database"),
        ("ducklake:postgres:dbname=x host='127.0.0.1", "cannot be read"),
        ("ducklake:sqlite:/tmp/x.db", "not supported"),
        (f"ducklake:postgres:dbname=x host=127.0.0.1 port={port} user=lens", 'database "x" does not exist'),
        (f"ducklake:postgres:dbname=checks host=127.0.0.1 port={port} user=mallory", 'role "mallory" does not exist'),
        (f"ducklake:postgres:dbname=checks host=127.0.0.1 port={_closed_port()} user=lens", "Connection refused"),
        (f"ducklake:{tmp_path / 'no-such-folder' / 'x.ducklake'}", "does not exist"),
    ]
    env = {**os.environ, "LENS_LAKE_DATA": str(tmp_path / "data")}
    for spec, words in cases:
        proc = subprocess.run([sys.executable, "-m", "lens", "--warehouse", spec, "sample", "--run", "r"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 1, (spec, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], (spec, proc.stderr)
        assert "Traceback" not in proc.stderr
    # a new lake without a data folder, then an unwritable one: nothing is created in the catalog
    out = _lens("--warehouse", f"ducklake:{good}", "sample", "--run", "r", expect=1)
    assert "does not exist yet: pass --lake-data DIR" in out
    if os.geteuid() != 0:  # root writes anywhere: use a path under a file instead
        bad_data = str(locked / "data")
    else:
        (tmp_path / "a-file").write_text("x")
        bad_data = str(tmp_path / "a-file" / "data")
    out = _lens("--warehouse", f"ducklake:{good}", "--lake-data", bad_data, "sample", "--run", "r", expect=1)
    assert "data folder" in out and "is not writable" in out and "--lake-data" in out
    out = _lens("--warehouse", f"ducklake:{good}", "--lake-data", str(tmp_path / "data"), "sql",
                "select count(*) as n from lens_migrations", "--format", "csv")
    assert out.splitlines()[-1] != "0"  # created (and migrated) only once a writable folder was given


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_planted_conflicts_are_replayed_and_lose_nothing(postgres, tmp_path):
    lake = f"ducklake:{postgres.catalog(postgres.create_db('conflicts'))}"
    wh = Warehouse(lake, lake_data=tmp_path / "data", lock_timeout=60)
    wh.check()
    n_writers, rounds = 4, 3
    barrier = threading.Barrier(n_writers)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for r in range(rounds):
                run = f"run{w}"
                rows = pa.table({"run_id": [run] * 3, "example_id": [r * 10 + i for i in range(3)],
                                 "strategy": ["t"] * 3, "rank": [0, 1, 2], "seed": [r] * 3})
                barrier.wait()  # every writer commits at the same moment: they conflict
                with wh.transaction() as con:
                    # a stage's write: replace its rows for the run, record the stage (deletes)
                    con.execute("delete from samples where run_id = ?", [run])
                    insert_arrow(con, "samples", rows)
                    record_stage(con, run, "sample", details={"round": r})
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    before = dict(replay_stats)
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with wh.connect() as con:
        got = con.execute("select run_id, example_id from samples order by all").fetchall()
        stages = con.execute("select run_id, json_extract(details, '$.round')::int from stage_runs"
                             " order by all").fetchall()
    last = (rounds - 1) * 10
    assert got == sorted((f"run{w}", last + i) for w in range(n_writers) for i in range(3))
    assert stages == [(f"run{w}", rounds - 1) for w in range(n_writers)]
    assert replay_stats["conflicts"] - before["conflicts"] >= rounds  # planted: every round conflicted
    assert replay_stats["replayed"] > before["replayed"]


def test_a_read_changed_by_another_writer_is_not_replayed(postgres, tmp_path):
    lake = f"ducklake:{postgres.catalog(postgres.create_db('stale'))}"
    wh = Warehouse(lake, lake_data=tmp_path / "data", lock_timeout=30)
    with wh.transaction() as con:
        con.execute("insert into lens_meta values ('k', 'a')")
    with pytest.raises(WriteConflictError, match="changed rows this write had read"):
        with wh.transaction() as con:
            seen = con.execute("select value from lens_meta where key = 'k'").fetchone()[0]
            con.execute("update lens_meta set value = ? where key = 'k'", [seen + "-mine"])
            with wh.transaction() as other:  # commits first: ours conflicts, and what we read changed
                other.execute("update lens_meta set value = 'theirs' where key = 'k'")
    with wh.connect() as con:
        assert con.execute("select value from lens_meta where key = 'k'").fetchall() == [("theirs",)]


def test_two_processes_migrating_a_new_lake_apply_each_migration_once(postgres, tmp_path):
    lake = f"ducklake:{postgres.catalog(postgres.create_db('race'))}"
    env = {**os.environ, "LENS_LAKE_DATA": str(tmp_path / "data")}
    code = "from lens.warehouse import Warehouse; Warehouse().check()"
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**env, "LENS_WAREHOUSE": lake},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    from lens.warehouse import _migration_files

    with Warehouse(lake).connect() as con:
        rows = con.execute("select version, count(*) from lens_migrations group by 1 order by 1").fetchall()
        n_tables = con.execute("select count(*) from duckdb_tables() where database_name = 'lens_lake'").fetchone()[0]
    assert rows == [(v, 1) for v, _, _ in _migration_files()]
    assert n_tables > 15


def test_warehouse_copy_file_to_lake_and_back_keeps_every_row(postgres, tmp_path):
    from _seed import seed_complete_run

    src = Warehouse(tmp_path / "src.duckdb")
    seed_complete_run(src, n_predictions=60, n_failures=12)
    with src.transaction() as con:
        con.execute("insert into verdicts select 'v1', run_id, hypothesis_id, example_id, 'fix', 'agree', 'ana',"
                    " null, now()::timestamp, 'review' from hypotheses limit 1")
    lake = f"ducklake:{postgres.catalog(postgres.create_db('copy'))}"
    back = tmp_path / "back.duckdb"
    out = _lens("warehouse", "copy", str(src.path), lake, "--dest-lake-data", str(tmp_path / "data"))
    assert "row counts and digests match" in out
    out = _lens("warehouse", "copy", lake, str(back))
    assert "row counts and digests match" in out
    with src.connect() as a, Warehouse(lake).connect() as lk, Warehouse(back).connect() as b:
        expected = check_contracts(a)
        assert check_contracts(lk) == expected and check_contracts(b) == expected
        assert expected["hypotheses"] > 0 and expected["verdicts"] == 1 and expected["cluster_members"] > 0
        for view in ("class_metrics", "confusion", "cluster_summary", "cluster_purity", "recommendations"):
            _same(_comparable(lk, view), _comparable(a, view), view)
            _same(_comparable(b, view), _comparable(a, view), view)
    # into a warehouse that holds rows: refused, nothing added; from a file that does not exist: refused
    out = _lens("warehouse", "copy", str(src.path), lake, expect=1)
    assert "already holds rows" in out
    with Warehouse(lake).connect() as lk:
        assert lk.execute("select count(*) from verdicts").fetchone()[0] == 1
    out = _lens("warehouse", "copy", str(tmp_path / "nope.duckdb"), str(tmp_path / "x.duckdb"), expect=1)
    assert "No warehouse file" in out


def test_missing_extension_packages_are_named_with_what_to_install(monkeypatch, tmp_path):
    import lens.lake

    monkeypatch.setitem(lens.lake.PACKAGES, "ducklake", ("no_such_module_lens", "duckdb-extension-ducklake"))
    out = _lens("--warehouse", f"ducklake:{tmp_path / 'team.ducklake'}", "--lake-data", str(tmp_path / "d"),
                "status", expect=1)
    assert "duckdb-extension-ducklake is not installed" in out and "pip install" in out
    assert "never downloads" in out and len(out.strip().splitlines()) == 1
    assert not (tmp_path / "team.ducklake").exists()


def test_a_local_catalog_file_is_taken_in_turns_like_a_warehouse_file(tmp_path):
    lake = f"ducklake:{tmp_path / 'team.ducklake'}"
    _lens("--warehouse", lake, "--lake-data", str(tmp_path / "data"), "status")
    out = _lens("--warehouse", lake, "sql", "select count(*) as n from lens_migrations", "--format", "csv")
    assert int(out.splitlines()[-1]) > 0
    wh = Warehouse(lake, lock_timeout=20)
    with wh.connect() as a, wh.connect() as b:  # two connections of one process share the attached catalog
        a.execute("insert into lens_meta values ('a', '1')")
        assert b.execute("select count(*) from lens_meta where key = 'a'").fetchone()[0] == 1
    # another process holds the catalog for 2 s: this one waits its turn, then writes
    code = ("import time; from lens.warehouse import Warehouse\n"
            f"with Warehouse({lake!r}).connect() as con:\n    print('held', flush=True); time.sleep(2)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with wh.transaction() as con:
            con.execute("insert into lens_meta values ('b', '2')")
        assert time.monotonic() - t0 > 0.5
    finally:
        holder.wait(30)
    with wh.connect() as con:
        assert con.execute("select count(*) from lens_meta where key in ('a', 'b')").fetchone()[0] == 2


def test_a_catalog_server_that_goes_away_mid_use_is_one_line_and_comes_back(postgres, tmp_path):
    from lens.warehouse import CatalogUnreachableError

    lake = f"ducklake:{postgres.catalog(postgres.create_db('restart'))}"
    wh = Warehouse(lake, lake_data=tmp_path / "data", lock_timeout=10)
    with wh.transaction() as con:
        con.execute("insert into lens_meta values ('before', '1')")
    postgres.stop()
    try:
        with pytest.raises(CatalogUnreachableError, match="Lost the lake's PostgreSQL catalog .* Connection refused"):
            with wh.transaction() as con:
                con.execute("insert into lens_meta values ('while-down', '1')")
    finally:
        postgres.start()
    with wh.transaction() as con:  # the same process goes on once the server is back
        con.execute("insert into lens_meta values ('after', '1')")
    with wh.connect() as con:
        keys = {r[0] for r in con.execute("select key from lens_meta").fetchall()}
    assert {"before", "after"} <= keys and "while-down" not in keys


def test_a_catalog_password_is_never_printed():
    from lens.lake import LakeLocation

    loc = LakeLocation("ducklake:postgres:dbname=lens host=db.lan password='s3 cret' user=ana")
    wh = Warehouse(loc)
    assert "s3 cret" not in str(wh.path) and "s3 cret" not in wh.describe() and "password=***" in str(loc)
    assert "s3cret" not in str(LakeLocation("ducklake:postgres:dbname=lens password=s3cret"))
    assert wh.lake.params["password"] == "s3 cret"  # still given to PostgreSQL


def test_a_password_in_a_refused_catalog_string_stays_out_of_the_error(postgres):
    spec = f"ducklake:postgres:dbname=nodb host=127.0.0.1 port={postgres.port} user=lens password=hunter2"
    out = _lens("--warehouse", spec, "status", expect=1)
    assert "hunter2" not in out and 'database "nodb" does not exist' in out
    from lens.lake import hide_password

    assert hide_password('at "dbname=x password=hunter2 host=h": failed') == 'at "dbname=x password=*** host=h": failed'
