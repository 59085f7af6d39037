"""Several model servers for one backend: ``--ollama-host`` / ``--base-url`` with more than one.

``--ollama-host http://gpu1:11434=8 --ollama-host gpu2=4`` (or one comma-separated value)
names servers, each with its own number of parallel requests (``=N``; default
``--concurrency``). :func:`lanes` makes one backend per server (the backend's
``server_option`` says which option names them) and hands them to
:mod:`lens.backends.executor`, which keeps every server's slots full and moves a request that
failed on one server to another (failover, and what is recorded, are described there).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from lens.backends.base import Hypothesizer
from lens.backends.executor import Lane, Lanes
from lens.errors import LensError


def parse_servers(values: str | Iterable[str] | None, default_slots: int) -> list[tuple[str, int]]:
    """``["a=8,b", "c"]`` -> ``[("a", 8), ("b", default_slots), ("c", default_slots)]``.

    A trailing ``=N`` is the server's number of parallel requests (N >= 1).
    """
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out: list[tuple[str, int]] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            url, slots = part, default_slots
            m = re.match(r"^(.*)=(\d+)$", part)
            if m:
                url, slots = m.group(1).strip(), int(m.group(2))
                if slots < 1:
                    raise LensError(f"Server {url}: its number of parallel requests (={slots}) must be at least 1.")
            elif "=" in part:
                raise LensError(f"Server {part!r}: write URL or URL=N (N parallel requests).")
            if any(u == url for u, _ in out):
                raise LensError(f"Server {url} is named twice: give it once, with =N for more parallel requests.")
            out.append((url, slots))
    return out


def lanes(cls: type[Hypothesizer], options: Any, *, model: str | None, concurrency: int,
          tuning: dict[str, Any] | None = None, queue_ahead: int = 0) -> Lanes:
    """One lane of ``concurrency`` slots, or a pool when the server option names several (or ``=N``).

    A backend with a server (``server_option``) sends each server ``queue_ahead`` requests
    beyond its slots, to wait in its queue (see :mod:`lens.backends.executor`); a local
    backend runs exactly ``concurrency`` at once.
    """
    key = cls.server_option
    ahead = queue_ahead if key else 0
    raw = getattr(options, key) if key else None
    servers = parse_servers(raw, concurrency) if raw else []
    if len(servers) <= 1 and not (raw and "=" in str(raw)):
        return Lanes([Lane(cls(options, model=model, **(tuning or {})), concurrency, ahead=ahead)])
    return Lanes([Lane(cls(dataclasses.replace(options, **{key: url}), model=model, **(tuning or {})), slots, url,
                       ahead=ahead) for url, slots in servers], pool=True)


def first_server(values: str | Iterable[str] | None) -> str | None:
    servers = parse_servers(values, 1)
    return servers[0][0] if servers else None
