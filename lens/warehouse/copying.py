"""Copying a warehouse between a file and a DuckLake (`lens warehouse copy`), checked by row digests."""

from __future__ import annotations

import threading

import duckdb

from lens.errors import LensError
from lens.warehouse.connection import Warehouse
from lens.warehouse.replay import _rollback_quietly
from lens.warehouse.rows import ARROW_CHUNK, _check_ident

def user_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The warehouse's tables (not views, not Lens' own bookkeeping), in name order."""
    rows = con.execute(
        "select table_name from duckdb_tables() where database_name = current_database()"
        " and schema_name = 'main' and not temporary order by 1").fetchall()
    return [r[0] for r in rows if not r[0].startswith("lens_")]


def table_digest(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int]:
    """(rows, sum of row hashes): equal for two tables with the same rows in any order."""
    _check_ident(table)
    n, h = con.execute(f"select count(*), coalesce(sum(hash(t)::hugeint), 0) from {table} t").fetchone()
    return int(n), int(h)


def copy_warehouse(src: Warehouse, dest: Warehouse, *, batch_rows: int = ARROW_CHUNK,
                   echo=None) -> dict[str, int]:
    """Copy every table of ``src`` into the empty warehouse ``dest`` (file -> lake, lake -> file,
    or file -> file) in one transaction, then check each table's row count and row digest
    (:func:`table_digest`) against the source. Returns rows per table.

    Both are migrated to this Lens's schema first. ``dest`` must hold no rows (tables created by
    migrations are fine); a mismatch after the copy raises a LensError and rolls it back.
    """
    if src.lake is None and not src.memory and not src.path.is_file():
        raise LensError(f"No warehouse file {src.path} to copy from.")
    if src.path == dest.path and str(src.path) != ":memory:":
        raise LensError(f"{src.describe()} is both the source and the destination: name another warehouse.")
    with src.connect() as s:
        tables = user_tables(s)
    with dest.connect() as d:
        missing = sorted(set(tables) - set(user_tables(d)))
        if missing:
            raise LensError(f"{dest.describe()} lacks tables {', '.join(missing)}: update Lens where it runs.")
        held = [table for table in map(_check_ident, user_tables(d))
                if d.execute(f"select count(*) > 0 from {table}").fetchone()[0]]
    if held:
        raise LensError(f"{dest.describe()} already holds rows (in {', '.join(held[:5])}"
                        f"{', ...' if len(held) > 5 else ''}): copy into a new, empty warehouse.")
    counts: dict[str, int] = {}
    with src.connect() as s, dest.connect() as d:
        d.execute("begin transaction")
        try:
            for table in map(_check_ident, tables):
                cols = [r[0] for r in s.execute(f"describe {table}").fetchall()]
                reader = s.execute(f"select * from {table}").to_arrow_reader(batch_rows)
                view = f"_lens_copy_{threading.get_ident()}"
                d.register(view, reader)
                try:
                    col_sql = ", ".join(_check_ident(c) for c in cols)
                    d.execute(f"insert into {table} ({col_sql}) select {col_sql} from {view}")
                finally:
                    d.unregister(view)
                want, got = table_digest(s, table), table_digest(d, table)
                if want != got:
                    raise LensError(f"Copying {table} into {dest.describe()} gave {got[0]:,} rows (digest {got[1]}) for "
                                    f"{want[0]:,} (digest {want[1]}): nothing was copied.")
                counts[table] = want[0]
                if echo:
                    echo(f"  {table}: {want[0]:,} rows")
            d.execute("commit")
        except BaseException:
            _rollback_quietly(d)
            raise
    # read back after the commit, through a new connection
    with dest.connect() as d:
        for t in tables:
            n = table_digest(d, t)[0]
            if n != counts[t]:
                raise LensError(f"{dest.describe()} holds {n:,} rows of {t} after the copy, not {counts[t]:,}.")
    return counts
