"""Rows in and out: ids and timestamps, bulk writes as Arrow, stage bookkeeping, small lookups."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import duckdb

from lens.errors import LensError
from lens.resources import data_dir

#: rows per Arrow record batch handed to DuckDB (its row-group size), for parallel inserts
ARROW_CHUNK = 122_880

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def utcnow() -> datetime:
    """Naive UTC timestamp (the warehouse stores UTC without a zone, portable to DuckLake)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def stable_id(*parts: object, length: int = 16) -> str:
    """Deterministic id from parts: the first ``length`` hex digits of their sha256."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8"))
    return h.hexdigest()[:length]


def safe_name(name: str) -> str:
    """A filesystem-safe form of a run name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or stable_id(name)


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a table/column identifier: {name!r}")
    return name


def insert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: Any) -> int:
    """Insert an Arrow table / pandas DataFrame into ``table`` by column name, in one statement.

    The columns of ``data`` must be a subset of the table's; the rest get NULL.
    Returns the number of rows inserted.
    """
    _check_ident(table)
    cols = [_check_ident(c) for c in data.column_names] if hasattr(data, "column_names") else [
        _check_ident(c) for c in data.columns
    ]
    n = data.num_rows if hasattr(data, "num_rows") else len(data)
    if n == 0:
        return 0
    if hasattr(data, "to_batches") and n > ARROW_CHUNK:
        # DuckDB scans an Arrow table in parallel by record batch: one huge chunk would be
        # inserted by a single thread. Slicing is zero-copy.
        import pyarrow as pa

        data = pa.Table.from_batches(data.to_batches(max_chunksize=ARROW_CHUNK), schema=data.schema)
    view = f"_lens_src_{threading.get_ident()}"
    con.register(view, data)
    try:
        col_sql = ", ".join(cols)
        con.execute(f"insert into {table} ({col_sql}) select {col_sql} from {view}")
    finally:
        con.unregister(view)
    return n


def delete_rows(con: duckdb.DuckDBPyConnection, table: str, where: Mapping[str, Any]) -> None:
    """``delete from table where k1 = ? and k2 = ?`` with the values as parameters."""
    _check_ident(table)
    if not where:
        raise ValueError("refusing to delete a whole table")
    clause = " and ".join(f"{_check_ident(k)} = ?" for k in where)
    con.execute(f"delete from {table} where {clause}", list(where.values()))


def replace_rows(con: duckdb.DuckDBPyConnection, table: str, where: Mapping[str, Any], data: Any) -> int:
    """Delete the rows matching ``where`` and insert ``data``: a stage's idempotent write.

    Call it inside :meth:`Warehouse.transaction` so the swap is atomic.
    """
    delete_rows(con, table, where)
    return insert_arrow(con, table, data)


# -- stage bookkeeping -------------------------------------------------------------------


def record_stage(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    stage: str,
    *,
    status: str = "done",
    started_at: datetime | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Record that ``stage`` ran for ``run_id`` (replacing its previous record)."""
    if status not in {"done", "partial", "failed"}:
        raise ValueError(f"bad stage status {status!r}")
    delete_rows(con, "stage_runs", {"run_id": run_id, "stage": stage})
    con.execute(
        "insert into stage_runs values (?, ?, ?, ?, ?, ?)",
        [run_id, stage, started_at or utcnow(), utcnow(), status, json.dumps(details or {}, default=str)],
    )


def require_run(con: duckdb.DuckDBPyConnection, run_id: str | None) -> str:
    """Resolve ``run_id`` (None = the newest run) or raise a LensError listing the runs."""
    runs = [r[0] for r in con.execute("select run_id from runs order by created_at desc").fetchall()]
    if not runs:
        raise LensError("The warehouse has no runs yet: start with `lens train` or `lens ingest`.")
    if run_id is None:
        return runs[0]
    if run_id not in runs:
        raise LensError(f"No run named {run_id!r}. Runs: {', '.join(runs)}")
    return run_id


def class_names(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """Class names of a run in class-id order."""
    rows = con.execute(
        "select class_name from classes where run_id = ? order by class_id", [run_id]
    ).fetchall()
    return [r[0] for r in rows]


def load_query(name: str) -> str:
    """The text of a parameterised query in ``sql/queries/<name>.sql`` (parameters as ``$name``)."""
    path = data_dir("sql") / "queries" / f"{name}.sql"
    if not path.is_file():
        raise LensError(f"No query {name!r} in {path.parent}")
    return path.read_text()
