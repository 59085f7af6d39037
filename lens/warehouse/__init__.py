"""The DuckDB warehouse: connect, migrate, bulk-write, retry on a held lock.

DuckDB lets one process at a time open a database file for writing. Lens therefore
keeps connections short: open, work, close. When another Lens process holds the file,
:meth:`Warehouse.connect` retries with backoff for ``lock_timeout`` seconds
(``LENS_LOCK_TIMEOUT``, default 30) and then raises :class:`WarehouseLockedError`
naming the process that holds it.

Usage::

    wh = Warehouse("warehouse/lens.duckdb")
    with wh.transaction() as con:          # one atomic write
        replace_rows(con, "samples", {"run_id": "r1"}, arrow_table)
    with wh.connect(read_only=True) as con:
        con.sql("select * from class_metrics").show()

Migrations (``sql/migrations/NNN_name.sql``) are applied once each, in order, and
recorded in ``lens_migrations``; views (``sql/views/*.sql``) are re-created whenever
their files change.

A team warehouse is a DuckLake (``Warehouse("ducklake:postgres:dbname=lens host=...",
lake_data="/mnt/lake")``, see :mod:`lens.lake`): the same API, tables and views; there
``transaction()`` replays a commit that conflicted with another writer's (with backoff),
and migrations take turns across processes.
"""

from lens.warehouse.connection import (DEFAULT_PATH, ENV_PATH, SANDBOX_CONFIG, CatalogUnreachableError,
                                       Warehouse)
from lens.warehouse.copying import copy_warehouse, table_digest, user_tables
from lens.warehouse.locking import DEFAULT_LOCK_TIMEOUT, ENV_LOCK_TIMEOUT
from lens.warehouse.replay import MAX_REPLAYS, ReplayingConnection, WriteConflictError, replay_stats
from lens.warehouse.rows import (ARROW_CHUNK, class_names, delete_rows, insert_arrow, load_query, record_stage,
                                 replace_rows, require_run, safe_name, stable_id, utcnow)
from lens.warehouse.schema import _migration_files, create_views, migrate, view_files

__all__ = [
    "ARROW_CHUNK", "DEFAULT_LOCK_TIMEOUT", "DEFAULT_PATH", "ENV_LOCK_TIMEOUT", "ENV_PATH", "MAX_REPLAYS",
    "SANDBOX_CONFIG", "CatalogUnreachableError", "ReplayingConnection", "Warehouse", "WriteConflictError",
    "class_names", "copy_warehouse", "create_views", "delete_rows", "insert_arrow", "load_query", "migrate",
    "record_stage", "replace_rows", "replay_stats", "require_run", "safe_name", "stable_id", "table_digest",
    "user_tables", "utcnow", "view_files",
]
