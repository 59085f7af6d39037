"""DuckLake: replaying a transaction whose commit conflicted with another writer's."""

from __future__ import annotations

import hashlib
import random
import re
import time
from typing import Any

import duckdb

from lens import lake
from lens.errors import WarehouseLockedError
from lens.warehouse.locking import ENV_LOCK_TIMEOUT

_WRITE_WORDS = re.compile(r"\b(insert|update|delete|create|drop|alter|copy|attach|detach|set|call|checkpoint)\b",
                          re.IGNORECASE)
_READ_START = re.compile(r"^\s*\(*\s*(select|with|from|values|table|show|describe|summarize|explain)\b",
                         re.IGNORECASE)
#: DuckLake conflicts per write before giving up (besides the time limit)
MAX_REPLAYS = 50
#: counts in this process: commits refused by DuckLake and replays that then committed (for tests/benchmarks)
replay_stats = {"conflicts": 0, "replayed": 0}


class WriteConflictError(WarehouseLockedError):
    """A DuckLake commit kept conflicting with other writers', or what it read changed under it.

    A kind of :class:`WarehouseLockedError` (the warehouse was busy): callers that queue and
    retry a write on a held file (the review app's verdict saves) do the same here."""


def _is_read(sql: str) -> bool:
    """A statement that changes nothing (its rows are checked on replay); anything doubtful is a write."""
    text = re.sub(r"--[^\n]*", " ", sql)
    return bool(_READ_START.match(text)) and not _WRITE_WORDS.search(text)


def _rows_digest(rows: list) -> str:
    return hashlib.sha256(repr(rows).encode("utf-8", "surrogatepass")).hexdigest()


class _StaleRead(Exception):
    pass


class ReplayingConnection:
    """A lake connection inside :meth:`Warehouse.transaction` that records what it does.

    Writes (``execute``/``executemany``/``sql`` of anything but a read, ``register``/
    ``unregister`` of Arrow data) are logged; a read is run once, its rows kept as Arrow for a
    digest and returned as a relation over them (same fetch methods as a result). When DuckLake refuses the commit (another writer changed the same table
    first), :func:`_commit_replaying` starts a new transaction on the newest snapshot, runs
    every read again and compares its rows, and replays the writes: the same result as
    running the code again, as long as what it read is unchanged. Everything else is passed
    to the DuckDB connection.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con
        self._log: list[tuple[str, Any, Any, str | None]] = []

    def execute(self, query: str, parameters: Any = None):
        if _is_read(query):
            # run once: the rows are kept (Arrow) for their digest and handed back as a relation
            # over them, which has the fetch methods of a result (fetchone/fetchall/df/arrow ...)
            table = self._con.execute(query, parameters).to_arrow_table()
            self._log.append(("read", query, parameters, _rows_digest(table.to_pylist())))
            return self._con.from_arrow(table)
        self._log.append(("write", query, parameters, None))
        return self._con.execute(query, parameters)

    def executemany(self, query: str, parameters: Any = None):
        self._log.append(("many", query, parameters, None))
        return self._con.executemany(query, parameters)

    def sql(self, query: str, *args: Any, **kwargs: Any):
        if _is_read(query):
            table = self._con.execute(query).to_arrow_table()
            self._log.append(("read", query, None, _rows_digest(table.to_pylist())))
            return self._con.from_arrow(table)
        else:
            self._log.append(("write", query, None, None))
        return self._con.sql(query, *args, **kwargs)

    def register(self, name: str, data: Any):
        self._log.append(("register", name, data, None))
        return self._con.register(name, data)

    def unregister(self, name: str):
        self._log.append(("unregister", name, None, None))
        return self._con.unregister(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def replay(self) -> None:
        con = self._con
        for kind, query, params, digest in self._log:
            if kind == "read":
                if _rows_digest(con.execute(query, params).to_arrow_table().to_pylist()) != digest:
                    raise _StaleRead(query)
            elif kind == "write":
                con.execute(query, params)
            elif kind == "many":
                con.executemany(query, params)
            elif kind == "register":
                con.register(query, params)
            else:
                con.unregister(query)


def _rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("rollback")
    except duckdb.Error:
        pass  # a refused commit already ended the transaction


def _commit_replaying(con: duckdb.DuckDBPyConnection, rec: ReplayingConnection, *, timeout: float,
                      where: str) -> None:
    """COMMIT; on a DuckLake conflict, back off and replay ``rec`` in a new transaction."""
    deadline = time.monotonic() + timeout
    delay, attempts = 0.05, 0
    while True:
        try:
            con.execute("commit")
            replay_stats["replayed"] += attempts > 0
            return
        except duckdb.Error as exc:
            if not lake.is_conflict(exc):
                raise
            last = exc
        _rollback_quietly(con)
        attempts += 1
        replay_stats["conflicts"] += 1
        if time.monotonic() >= deadline or attempts > MAX_REPLAYS:
            raise WriteConflictError(
                f"The lake {where} kept refusing this write: {attempts} commits conflicted with other "
                f"writers' in {timeout:.0f}s ({' '.join(str(last).split())[:200]}). Nothing of it was stored; "
                f"run the command again (or raise {ENV_LOCK_TIMEOUT} to keep trying longer)."
            ) from last
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 2.0)
        con.execute("begin transaction")
        try:
            rec.replay()
        except _StaleRead as stale:
            _rollback_quietly(con)
            raise WriteConflictError(
                f"Another writer changed rows this write had read in the lake {where} (while it committed), "
                f"so it was not replayed and nothing of it was stored: run the command again."
            ) from stale
        except BaseException:
            _rollback_quietly(con)
            raise
