"""`lens sql` without --write changes nothing on disk or network (issue 13, point 1).

Two layers, each tested on its own:

* the statement check (``lens.commands.query.check_read_only``): DuckDB's parser splits the
  text into statements and every one must be a SELECT (DESCRIBE, SHOW, SUMMARIZE, FROM-first,
  ``pragma show_tables`` parse as SELECT) or an EXPLAIN [ANALYZE] of a SELECT; anything else is
  refused before any statement runs, with a message naming --write;
* the sandboxed connection (``Warehouse.connect(read_only=True, sandbox=True)``): external
  access off, no extension auto-install/auto-load, configuration locked, so even a statement
  that got past the check could not write a file, read one outside the warehouse, or turn
  those settings back on.

Every attack runs through the real CLI against a seeded warehouse file, with the working
directory and $HOME inside the test folder, and asserts that every file under it (the
warehouse included) is byte-for-byte unchanged and that no file appeared. ``INSTALL ... FROM``
points at a socket on 127.0.0.1 that counts connections: none arrive.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import duckdb
import pytest
from _seed import seed_complete_run
from click.testing import CliRunner

from lens.cli import cli as lens_cli
from lens.warehouse import Warehouse, view_files


class CountingServer:
    """A TCP listener on 127.0.0.1 that only counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def net():
    server = CountingServer()
    yield server
    server.close()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A seeded warehouse in tmp_path/wh; cwd and $HOME inside tmp_path too."""
    wh = Warehouse(tmp_path / "wh" / "lens.duckdb", lock_timeout=10)
    seed_complete_run(wh, n_predictions=30, n_failures=6)
    (tmp_path / "cwd").mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def sql(query: str, *extra: str):
        return runner.invoke(lens_cli, ["--warehouse", str(wh.path), "sql", query, *extra])

    sql.wh = wh
    sql.root = tmp_path
    return sql


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root -> sha256 of its bytes (directories listed too, as 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def attacks(db: Path, port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}/"
    return {
        "copy over the warehouse": f"COPY (select 'oops' as x) TO '{db}' (FORMAT csv)",
        "copy to a relative file": "COPY (select 'oops' as x) TO 'out.csv' (FORMAT csv)",
        "copy a table to parquet": "copy runs to 'runs.parquet' (format parquet)",
        "copy from a file": f"copy runs from '{db}'",
        "export database": "EXPORT DATABASE 'dump'",
        "set a setting": "SET threads = 1",
        "set log_query_path": "SET log_query_path = 'queries.log'",
        "re-enable external access": "SET enable_external_access = true",
        "reset": "RESET threads",
        "set variable": "SET VARIABLE x = 1",
        "call checkpoint": "CALL checkpoint()",
        "call a pragma function": "CALL pragma_version()",
        "pragma enable_profiling": "PRAGMA enable_profiling",
        "pragma profiling_output": "PRAGMA profiling_output = 'profile.txt'",
        "pragma force_checkpoint": "PRAGMA force_checkpoint",
        "checkpoint": "CHECKPOINT",
        "force checkpoint": "FORCE CHECKPOINT",
        "install from url": f"INSTALL httpfs FROM '{url}'",
        "install": "INSTALL httpfs",
        "load": "LOAD httpfs",
        "attach a new file": "ATTACH 'other.duckdb' AS other",
        "attach in memory": "ATTACH ':memory:' AS mem",
        "detach": "DETACH other",
        "create table": "create table t (a int)",
        "create temp table": "create temp table t as select 1 as a",
        "create secret": "create secret (type http)",
        "insert": "insert into verdicts (verdict_id) values ('x')",
        "update": "update runs set kind = 'x'",
        "delete": "delete from prediction_rows",
        "truncate": "truncate verdicts",
        "drop": "drop table verdicts",
        "alter": "alter table runs add column x int",
        "comment on": "comment on table runs is 'x'",
        "begin": "begin transaction",
        "vacuum": "vacuum",
        "analyze": "analyze",
        "prepare": "prepare p as select 1",
        "use": "use memory",
        "pivot that creates a type": "pivot (select 1 as a) on a",
        "select then copy": "select 1; COPY (select 'oops' as x) TO 'out.csv' (FORMAT csv)",
        "select then copy over the warehouse": f"select 1; COPY (select 'oops' as x) TO '{db}' (FORMAT csv)",
        "copy after a comment": "/* select */ copy runs to 'c.csv'",
        "select then set then copy": "select 1;set enable_external_access=true;copy runs to 'x.csv'",
        "explain analyze copy": "explain analyze copy (select 1) to 'explained.csv'",
        "explain analyze with options": "explain (analyze, format json) copy (select 1) to 'e.csv'",
        "explain create": "explain create table t (a int)",
    }


@pytest.mark.parametrize("name", list(attacks(Path("x"), 0)))
def test_refused_statements_change_nothing_and_name_write(sandbox, net, name):
    query = attacks(sandbox.wh.path, net.port)[name]
    before = snapshot(sandbox.root)
    before_connections = net.connections
    result = sandbox(query)
    assert snapshot(sandbox.root) == before, name
    assert net.connections == before_connections, f"{name}: a network request was made"
    assert result.exit_code == 1, (name, result.output)
    assert result.output.startswith("Error: ") and "--write" in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("query", [
    "select * from read_csv('/etc/passwd')",
    "select * from read_text('/etc/passwd')",
    "select * from glob('/etc/*')",
    "select * from read_parquet('elsewhere.parquet')",
    "select * from duckdb_extensions()",
])
def test_read_only_sql_reads_no_file_outside_the_warehouse(sandbox, query):
    before = snapshot(sandbox.root)
    result = sandbox(query)
    assert result.exit_code == 1, result.output
    assert "root:" not in result.output
    assert "--write" in result.output and "reads the warehouse only" in result.output, result.output
    assert snapshot(sandbox.root) == before


def test_select_like_statements_and_every_view_still_work(sandbox):
    before = snapshot(sandbox.root)
    for p in view_files():
        view = p.stem
        result = sandbox(f"select count(*) as n from {view}", "--format", "csv")
        assert result.exit_code == 0, (view, result.output)
        assert result.output.splitlines()[0] == "n", (view, result.output)
    ok = {
        "select run_id from runs": "demo",
        "from runs select kind": "kind",
        "describe runs": "run_id",
        "show tables": "prediction_rows",
        "pragma show_tables": "verdicts",
        "summarize class_metrics": "column_name",
        "explain select * from class_metrics": "explain",
        "explain analyze select count(*) from predictions": "explain",
        "explain (format json) select 1": "explain",
        "pivot (select 1 as a) on a in (1)": "1",
        "select 1 as a; select 2 as b": "b",
        "with x as (select 1 as a) select * from x": "a",
        "select json_extract('{\"a\": 7}', '$.a') as j": "7",
        "select * from checkpoint()": "",   # a SELECT, but on a read-only file it writes nothing
        "/* comment */ select 42 as answer -- trailing": "42",
    }
    for query, expected in ok.items():
        result = sandbox(query, "--format", "csv")
        assert result.exit_code == 0, (query, result.output)
        assert expected in result.output, (query, result.output)
    assert snapshot(sandbox.root) == before


def test_write_mode_still_writes(sandbox):
    result = sandbox("insert into lens_meta values ('probe', 'x')", "--write")
    assert result.exit_code == 0, result.output
    result = sandbox("select value from lens_meta where key = 'probe'", "--format", "csv")
    assert result.output.splitlines() == ["value", "x"]


def test_sandboxed_connection_blocks_files_network_and_settings_on_its_own(sandbox, net):
    """Second layer: what the statement check would refuse also fails on the connection itself."""
    wh = sandbox.wh
    before = snapshot(sandbox.root)
    with wh.connect(read_only=True, sandbox=True) as con:
        assert con.execute("select count(*) from class_metrics").fetchone()[0] > 0
        for stmt in [
            f"COPY (select 'oops' as x) TO '{wh.path}' (FORMAT csv)",
            "COPY (select 1) TO 'out.csv'",
            "EXPORT DATABASE 'dump'",
            "SET enable_external_access = true",
            "SET log_query_path = 'queries.log'",
            "SET lock_configuration = false",
            "SET autoinstall_known_extensions = true",
            f"INSTALL httpfs FROM 'http://127.0.0.1:{net.port}/'",
            "LOAD httpfs",
            "ATTACH 'other.duckdb'",
            "select * from read_csv('/etc/passwd')",
        ]:
            with pytest.raises(duckdb.Error):
                con.execute(stmt)
    assert snapshot(sandbox.root) == before
    assert net.connections == 0
    with pytest.raises(ValueError):
        with wh.connect(sandbox=True):
            pass


def test_check_read_only_refuses_before_anything_runs(sandbox):
    """The whole text is checked first: the SELECT before a COPY does not run either."""
    from lens.commands.query import check_read_only
    from lens.errors import LensError

    with sandbox.wh.connect(read_only=True, sandbox=True) as con:
        with pytest.raises(LensError, match="--write"):
            check_read_only(con, "select 1; copy runs to 'x.csv'")
        with pytest.raises(LensError, match="No SQL statement"):
            check_read_only(con, "  ;  ")
        check_read_only(con, "select 1; explain select 2")
