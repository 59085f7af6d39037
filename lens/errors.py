"""Exceptions that Lens raises for problems a user can fix.

The CLI turns every :class:`LensError` into a one-line ``Error: ...`` message and a
non-zero exit; library callers catch them like any exception.
"""


class LensError(Exception):
    """A problem with the user's input or environment, with advice on what to do next."""


class WarehouseLockedError(LensError):
    """Another process holds the DuckDB file for writing and did not let go in time."""


class DataError(LensError):
    """Bad input data: the message names the file and the first offending rows."""
