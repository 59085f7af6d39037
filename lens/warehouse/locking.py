"""Waiting for a warehouse that another process holds: how long, and who holds it."""

from __future__ import annotations

import re
import threading
from pathlib import Path

ENV_LOCK_TIMEOUT = "LENS_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 30.0

# DuckDB's per-process instance cache races when threads open and close the same file at
# once ("Unique file handle conflict"): open and close connections one at a time.
_open_close_lock = threading.Lock()


def _lock_holder(message: str) -> str:
    """Describe the process named in DuckDB's lock error ("... (PID 123) ...")."""
    m = re.search(r"PID (\d+)", message)
    if not m:
        return "another process"
    pid = m.group(1)
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        cmd = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    except OSError:
        cmd = ""
    return f"process {pid} ({cmd})" if cmd else f"process {pid}"


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def _is_disk_full(exc: Exception) -> bool:
    """DuckDB's ENOSPC: IOException mid-statement, FatalException (checkpoint) or TransactionException (WAL) at commit."""
    return "No space left on device" in str(exc)
