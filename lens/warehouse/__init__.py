"""The DuckDB warehouse (moved into a package; split into modules in the next commit)."""

from lens.warehouse.connection import *  # noqa: F401,F403
from lens.warehouse.connection import _migration_files  # noqa: F401
