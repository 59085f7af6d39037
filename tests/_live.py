"""Raw HTTP for security tests: ``raw_request(base, method, path, body, headers)`` sends the
request line exactly as given (no client-side normalisation of ``..``, ``//``, percent
escapes or control bytes) over a plain socket and returns (status, body).
Serve the app with the ``live_app`` fixture of tests/conftest.py; ``seeded_warehouse`` and
``verdict_count`` are the serve tests' shared warehouse helpers.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from urllib.parse import urlparse

from _seed import seed_complete_run

from lens.warehouse import Warehouse

#: the environment of a `lens serve` subprocess: unbuffered output, a patient warehouse lock
SERVE_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "LENS_LOCK_TIMEOUT": "30"}


def seeded_warehouse(tmp_path_factory, name: str):
    """(warehouse, seeded ids): a small complete run (40 predictions, 8 failures) in a fresh file."""
    wh = Warehouse(tmp_path_factory.mktemp(name) / "lens.duckdb", lock_timeout=30)
    return wh, seed_complete_run(wh, n_predictions=40, n_failures=8)


def verdict_count(wh: Warehouse) -> int:
    with wh.connect() as con:
        return con.execute("select count(*) from verdicts").fetchone()[0]


def raw_request(base: str, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request over a plain socket, the request line exactly as given."""
    u = urlparse(base)
    head = {"Host": f"{u.hostname}:{u.port}", "Connection": "close", **(headers or {})}
    if body is not None:
        head["Content-Length"] = str(len(body))
    data = f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + b"".join(
        f"{k}: {v}\r\n".encode("latin-1") for k, v in head.items()) + b"\r\n" + (body or b"")
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head_end = raw.find(b"\r\n\r\n")
    status = int(raw.split(b" ", 2)[1])
    return status, raw[head_end + 4:] if head_end >= 0 else b""


def raw_get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    return raw_request(base, "GET", path, headers=headers)


def save_verdict_body(hyp: str, dims: Sequence[str] = ()) -> bytes:
    """The Dash callback request the review page sends when reviewer 'mallory' presses `a` on ``hyp``."""
    outputs = [("verdict-tick", "data"), ("save-status", "children"), ("pending-verdicts", "data"),
               ("retry-interval", "disabled")]
    return json.dumps({
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [{"id": "key-verdict", "property": "data", "value": {"v": "agree", "t": 1}}, [],
                   {"id": "retry-interval", "property": "n_intervals", "value": None}],
        "changedPropIds": ["key-verdict.data"],
        "state": [
            {"id": "review-state", "property": "data",
             "value": {"run": "demo", "ids": [hyp], "pos": 0, "dims": list(dims)}},
            {"id": "selected-dim", "property": "data", "value": "overall"},
            {"id": "reviewer", "property": "value", "value": "mallory"},
            {"id": "note", "property": "value", "value": None},
            {"id": "pending-verdicts", "property": "data", "value": []},
            {"id": "verdict-tick", "property": "data", "value": 0},
        ],
    }).encode()
