"""Hypotheses over several model servers: ``--ollama-host`` / ``--base-url`` with more than one.

``--ollama-host http://gpu1:11434=8 --ollama-host gpu2=4`` (or one comma-separated value)
names servers, each with its own number of parallel requests (``=N``; default
``--concurrency``). :class:`ServerPool` builds one chat backend per server and answers a
batch with ``N`` worker threads per server, all taking the next prepared request from one
queue, so every server's slots stay full whatever its speed, and each request goes to one
server at a time.

Failover: when a request ends as ``error`` on a server (transport faults after that backend's
retries, an HTTP error), it is handed to another live server that has not tried it; a server
whose connection failed or timed out is taken out of the pool (its workers stop) and its
requests in flight move to the others. Each moved answer notes where it failed and why (kept
in ``hypotheses.error`` next to an ``ok`` status, like other notes), and
:meth:`ServerPool.run_details` (stored in ``stage_runs.details``) gives per server: answers,
failures and why it left the pool. When every server has left, the remaining requests are
stored as ``error`` with the reason. Requests that were never sent are never stored as errors
while some server lives.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from lens.backends.base import HypothesisAnswer, HypothesisRequest
from lens.errors import LensError
from lens.prompts import Prompt

#: errors after which a server is taken out of the pool (it is down or not answering)
_DEAD = re.compile(r"connection failed|timeout after|HTTP 50[234]\b", re.IGNORECASE)
SERVER_KEYS = {"ollama": "host", "openai": "base_url"}


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


def build(cls: type, *, backend: str, model: str | None, options: dict[str, Any], concurrency: int):
    """One backend, or a :class:`ServerPool` when its server option names several (or ``=N``)."""
    key = SERVER_KEYS.get(backend)
    raw = options.get(key) if key else None
    servers = parse_servers(raw, concurrency) if raw else []
    if len(servers) <= 1 and not (raw and "=" in str(raw)):
        return cls(model=model, **options)
    members = [(url, slots, cls(model=model, **{**options, key: url})) for url, slots in servers]
    return ServerPool(members)


def first_server(values: str | Iterable[str] | None) -> str | None:
    servers = parse_servers(values, 1)
    return servers[0][0] if servers else None


class _Server:
    def __init__(self, url: str, slots: int, backend: Any):
        self.url, self.slots, self.backend = url, slots, backend
        self.down: str | None = None  # why it left the pool
        self.answered = 0
        self.failed = 0


class ServerPool:
    """Several chat backends of one kind (same model) behind the Hypothesizer interface."""

    def __init__(self, members: list[tuple[str, int, Any]]):
        if not members:
            raise ValueError("a pool needs servers")
        self.servers = [_Server(url, slots, be) for url, slots, be in members]
        first = self.servers[0].backend
        self.name, self.model = first.name, first.model
        self.needs_image = getattr(first, "needs_image", True)
        self.needs_evidence = getattr(first, "needs_evidence", False)
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # anything else a backend has (options, ...): the first's
        if name == "servers":
            raise AttributeError(name)
        return getattr(self.servers[0].backend, name)

    @property
    def slots(self) -> int:
        return sum(s.slots for s in self.servers if s.down is None)

    def check(self, prompt: Prompt) -> None:
        """Check every server; those that fail leave the pool (noted). None usable: the first error."""
        errors = []
        for s in self.servers:
            try:
                s.backend.check(prompt)
            except LensError as exc:
                s.down = f"failed its check: {exc}"
                errors.append(exc)
                self.notes.append(f"{s.url} left the pool before the run: {exc}")
        if all(s.down for s in self.servers):
            raise errors[0]

    def answer(self, request: HypothesisRequest, prompt: Prompt) -> HypothesisAnswer:
        return next(iter(self.answer_batch([request], prompt)))[1]

    def run_details(self) -> dict[str, Any]:
        return {"servers": [{"url": s.url, "slots": s.slots, "answered": s.answered, "failed": s.failed,
                             "left_pool": s.down} for s in self.servers]}

    def answer_batch(self, requests: Iterable[HypothesisRequest], prompt: Prompt, *,
                     concurrency: int = 1) -> Iterator[tuple[HypothesisRequest, HypothesisAnswer]]:
        """Answer in completion order with every live server's slots busy (module docstring).

        ``concurrency`` is ignored: each server has its own number of slots.
        """
        it = iter(requests)
        stop = threading.Event()
        prepared: queue.Queue = queue.Queue(maxsize=2 * max(1, self.slots))
        retry: queue.Queue = queue.Queue()  # (request, image, tried urls, notes) moved from a failed server
        out: queue.Queue = queue.Queue()
        pending = [0]  # requests taken from the iterator and not answered yet
        exhausted = threading.Event()
        unsent: list[Any] = []
        feeder_lock = threading.Lock()
        first = self.servers[0].backend

        def next_item(server: _Server):
            """The next request for ``server``: moved ones first, then fresh ones; None when done."""
            while not stop.is_set() and server.down is None:
                try:
                    item = retry.get_nowait()
                    if server.url in item[2]:  # it already failed there: leave it for another server
                        retry.put(item)
                        if self._nobody_else(item[2]):
                            return item  # every live server tried it: answered below as error
                        time.sleep(0.01)
                        continue
                    return item
                except queue.Empty:
                    pass
                try:
                    return prepared.get(timeout=0.05)
                except queue.Empty:
                    if exhausted.is_set():
                        with feeder_lock:
                            if pending[0] == 0 and retry.empty():
                                return None
            return None

        def feed() -> None:
            try:
                for req in it:
                    try:
                        item: Any = (req, first.prepare_image(req) if hasattr(first, "prepare_image") else None,
                                     frozenset(), ())
                    except Exception as exc:  # an unreadable stored image: that request fails alone
                        with feeder_lock:
                            pending[0] += 1
                        out.put(("answer", req, HypothesisAnswer(
                            status="error", attempts=0,
                            error=f"cannot read the stored image: {type(exc).__name__}: {exc}")))
                        continue
                    with feeder_lock:
                        pending[0] += 1
                    while not stop.is_set():
                        try:
                            prepared.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            if not any(s.down is None for s in self.servers):
                                stop.set()
                    else:  # stopped with a request in hand: answered with the rest below
                        unsent.append(item)
                        return
            except BaseException as exc:
                out.put(("raise", exc, None))
            finally:
                exhausted.set()

        def work(server: _Server) -> None:
            try:
                while True:
                    item = next_item(server)
                    if item is None:
                        return
                    req, image, tried, notes = item
                    if server.url in tried:  # nobody else is left to try it
                        out.put(("answer", req, _final_error(notes)))
                        continue
                    start = time.perf_counter()
                    try:
                        ans = server.backend._answer(req, prompt, image)
                    except LensError:
                        raise
                    except Exception as exc:  # a backend bug must not stop the stage: record it
                        ans = HypothesisAnswer(status="error", error=f"{type(exc).__name__}: {exc}",
                                               latency_s=time.perf_counter() - start)
                    if ans.status != "error":
                        server.answered += 1
                        if notes:
                            ans.repairs.extend(notes)
                            ans.repairs.append(f"answered by {server.url}")
                        out.put(("answer", req, ans))
                        continue
                    server.failed += 1
                    why = ans.error or "error"
                    if _DEAD.search(why) and server.down is None:
                        server.down = why
                        with self._lock:
                            self.notes.append(f"{server.url} left the pool: {why}")
                    moved = (req, image, tried | {server.url}, (*notes, f"failed on {server.url}: {why}"))
                    if self._nobody_else(moved[2]):
                        out.put(("answer", req, _final_error(moved[3], ans)))
                    else:
                        retry.put(moved)
                    if server.down is not None:
                        return
            except BaseException as exc:
                out.put(("raise", exc, None))
            finally:
                out.put(("worker-done", server, None))

        workers = [threading.Thread(target=work, args=(s,), name=f"lens-pool-{i}-{j}", daemon=True)
                   for i, s in enumerate(self.servers) if s.down is None for j in range(s.slots)]
        feeder = threading.Thread(target=feed, name="lens-pool-feed", daemon=True)
        feeder.start()
        for t in workers:
            t.start()
        running = len(workers)
        try:
            while running:
                kind, a, b = out.get()
                if kind == "worker-done":
                    running -= 1
                elif kind == "raise":
                    raise a
                else:
                    with feeder_lock:
                        pending[0] -= 1
                    yield a, b
            # every server left the pool: what is still queued or unread gets the reason
            reason = "; ".join(self.notes[-len(self.servers):]) or "no server left in the pool"
            leftovers = []
            while True:
                try:
                    leftovers.append(retry.get_nowait())
                except queue.Empty:
                    break
            stop.set()
            feeder.join(timeout=5)
            leftovers += unsent
            while True:
                try:
                    leftovers.append(prepared.get_nowait())
                except queue.Empty:
                    break
            for req, _image, _tried, notes in leftovers:
                yield req, _final_error((*notes, f"not sent: {reason}"))
            for req in it:
                yield req, _final_error((f"not sent: {reason}",))
        finally:
            stop.set()

    def _nobody_else(self, tried: frozenset[str]) -> bool:
        return all(s.down is not None or s.url in tried for s in self.servers)


def _final_error(notes: tuple[str, ...], last: HypothesisAnswer | None = None) -> HypothesisAnswer:
    ans = HypothesisAnswer(status="error", error="; ".join(notes) or "no server could answer",
                           attempts=last.attempts if last else 0, latency_s=last.latency_s if last else 0.0,
                           raw_response=last.raw_response if last else None)
    return ans
