"""The CLI: every command has help with an example, `lens --help` stays light, sql/status work."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lens.cli import cli as lens_cli
from lens.warehouse import Warehouse

HEAVY = ("torch", "torchvision", "sentence_transformers", "transformers", "dash", "sklearn", "cleanlab", "captum")


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


def test_every_command_has_help_with_an_example(cli):
    names = []
    for path, cmd in _all_commands(lens_cli):
        out = cli(*path, "--help")
        assert "Usage:" in out.output
        assert cmd.help and len(cmd.help.strip()) > 20, f"{path} has no docstring"
        if not isinstance(cmd, click.Group):
            assert "Example" in cmd.help, f"lens {' '.join(path)} help has no example"
        names.append(" ".join(path))
    assert {"ingest", "sql", "status"} <= set(names)


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from lens.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='lens')\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def _seed(cli, tmp_path):
    path = tmp_path / "p.parquet"
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    pq.write_table(pa.table({"id": [1, 2, 3], "label": [0, 1, 1], "probs": list(probs)}), path)
    cli("ingest", "--predictions", str(path), "--classes", "cat,dog", "--run", "r1")


def test_sql_formats_and_read_only(cli, tmp_path):
    _seed(cli, tmp_path)
    out = cli("sql", "select class_name, support from class_metrics order by class_id", "--format", "json")
    assert json.loads(out.output) == [{"class_name": "cat", "support": 1}, {"class_name": "dog", "support": 2}]
    out = cli("sql", "select run_id, failures from run_metrics", "--format", "csv")
    assert out.output.splitlines() == ["run_id,failures", "r1,1"]
    out = cli("sql", "delete from prediction_rows", expect=1)
    assert "read-only" in out.output and "--write" in out.output
    out = cli("sql", "delete from predictions", "--write", expect=1)  # a view
    assert "prediction_rows" in out.output
    cli("sql", "delete from prediction_rows where example_id = ?", expect=1)  # no parameters from the CLI
    cli("sql", "delete from prediction_rows where example_id = 3", "--write")
    out = cli("sql", "select count(*) as n from predictions", "--format", "csv")
    assert out.output.splitlines()[1] == "2"
    out = cli("sql", "select * from no_such_table", expect=1)
    assert "no_such_table" in out.output


def test_status_lists_runs_rows_and_stages(cli, tmp_path):
    out = cli("status")
    assert "No runs yet" in out.output
    _seed(cli, tmp_path)
    out = cli("status", "--format", "json")
    report = json.loads(out.output)
    assert report[0]["run_id"] == "r1"
    assert report[0]["rows"]["predictions"] == 3 and report[0]["rows"]["failures"] == 1
    assert report[0]["stages"]["ingest"]["status"] == "done"


def test_run_status_view_counts_every_stage_table(tmp_path):
    """`lens status` reads the run_status view: its counts match each table's, zero included."""
    from tests._seed import seed_complete_run

    wh = Warehouse(tmp_path / "w.duckdb")
    seed_complete_run(wh, "demo")
    seed_complete_run(wh, "other", n_failures=5, seed=1)
    with wh.connect(read_only=True) as con:
        rows = dict(con.execute("select run_id, rows from run_status").fetchall())
        stages = dict(con.execute("select run_id, stages from run_status").fetchall())
        for run_id, counts in rows.items():
            assert list(counts)[:2] == ["predictions", "failures"] and len(counts) == 12
            for table, n in counts.items():
                source = "prediction_rows" if table == "predictions" else table
                assert n == con.execute(f"select count(*) from {source} where run_id = ?", [run_id]).fetchone()[0]
            stored = con.execute("select stage from stage_runs where run_id = ? order by finished_at",
                                 [run_id]).fetchall()
            assert [s["stage"] for s in stages[run_id]] == [r[0] for r in stored]
    assert rows["other"]["failures"] == 5 and rows["demo"]["verdicts"] == 0


def test_errors_are_clean(cli, tmp_path):
    out = cli("ingest", "--predictions", str(tmp_path / "missing.parquet"), expect=1)
    assert out.output.startswith("Error: ") and "file not found" in out.output
    assert "Traceback" not in out.output
