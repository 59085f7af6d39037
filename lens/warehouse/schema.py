"""Migrations (``sql/migrations/NNN_name.sql``, applied once each, in order) and views."""

from __future__ import annotations

import hashlib
import random
import re
import time
from pathlib import Path

import duckdb

from lens import lake
from lens.errors import LensError
from lens.resources import data_dir
from lens.warehouse.replay import _rollback_quietly
from lens.warehouse.rows import utcnow

def _migration_files() -> list[tuple[int, str, Path]]:
    out = []
    for p in sorted(data_dir("sql").joinpath("migrations").glob("*.sql")):
        m = re.match(r"^(\d+)_([a-z0-9_]+)\.sql$", p.name)
        if not m:
            raise LensError(f"Bad migration file name {p.name}: expected NNN_name.sql")
        out.append((int(m.group(1)), m.group(2), p))
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise LensError(f"Two migrations share a number in {data_dir('sql') / 'migrations'}")
    return out


def view_files() -> list[Path]:
    return sorted(data_dir("sql").joinpath("views").glob("*.sql"))


def migrate(con: duckdb.DuckDBPyConnection, *, conflict_timeout: float = 60.0) -> list[str]:
    """Apply pending migrations (each once, in its own transaction) and refresh views.

    Returns the names of the migrations applied now. Several processes may migrate one
    lake at once: each migration's transaction also updates the ``schema_lock`` row of
    ``lens_meta``, so two of them always conflict in DuckLake and one rolls back; that one
    backs off, re-reads ``lens_migrations`` and goes on with what is still missing.
    """
    deadline = time.monotonic() + conflict_timeout
    delay = 0.05
    applied: list[str] = []
    while True:
        try:
            applied += _migrate_once(con)
            return applied
        except duckdb.Error as exc:
            if not lake.is_conflict(exc) or time.monotonic() >= deadline:
                raise
            _rollback_quietly(con)
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)


def _migrate_once(con: duckdb.DuckDBPyConnection) -> list[str]:
    con.execute(
        "create table if not exists lens_migrations ("
        " version integer not null, name varchar not null, sha256 varchar not null,"
        " applied_at timestamp not null)"
    )
    con.execute("create table if not exists lens_meta (key varchar not null, value varchar)")
    if con.execute("select count(*) from lens_meta where key = 'schema_lock'").fetchone()[0] == 0:
        con.execute("insert into lens_meta values ('schema_lock', '')")
    done = {r[0] for r in con.execute("select version from lens_migrations").fetchall()}
    applied = []
    for version, name, path in _migration_files():
        if version in done:
            continue
        text = path.read_text()
        con.execute("begin transaction")
        try:
            # first: two processes applying this migration at once always conflict (see migrate)
            con.execute("update lens_meta set value = ? where key = 'schema_lock'", [f"{version:03d}_{name}"])
            if con.execute("select count(*) from lens_migrations where version = ?", [version]).fetchone()[0]:
                con.execute("rollback")
                continue
            con.execute(text)
            con.execute(
                "insert into lens_migrations values (?, ?, ?, ?)",
                [version, name, hashlib.sha256(text.encode()).hexdigest(), utcnow()],
            )
        except BaseException:
            con.execute("rollback")
            raise
        con.execute("commit")
        applied.append(f"{version:03d}_{name}")
    _refresh_views(con, force=bool(applied))
    return applied


def create_views(con: duckdb.DuckDBPyConnection, files: list[Path] | None = None) -> None:
    """``create or replace`` every view file; views may build on views, so create in passes."""
    pending = list(view_files() if files is None else files)
    while pending:
        failed = []
        last_error: Exception | None = None
        for p in pending:
            try:
                con.execute(p.read_text())
            except duckdb.CatalogException as exc:
                failed.append(p)
                last_error = exc
        if len(failed) == len(pending):
            raise LensError(f"Cannot create views {[p.name for p in failed]}: {last_error}")
        pending = failed


def _refresh_views(con: duckdb.DuckDBPyConnection, *, force: bool) -> None:
    files = view_files()
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
    row = con.execute("select value from lens_meta where key = 'views_sha256'").fetchone()
    if row and row[0] == digest and not force:
        return
    con.execute("begin transaction")
    try:
        create_views(con, files)
        con.execute("delete from lens_meta where key = 'views_sha256'")
        con.execute("insert into lens_meta values ('views_sha256', ?)", [digest])
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")
