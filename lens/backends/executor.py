"""The one way hypothesis requests are run, for every backend: ``concurrent.futures``.

A :class:`Lanes` holds one backend per server (one lane for a single backend, several for
``--ollama-host A=8,B=4``), each with its number of slots. :meth:`Lanes.answers` yields
``(request, answer)`` pairs in completion order:

* **Prepared ahead.** One thread runs each backend's :meth:`~lens.backends.base.Hypothesizer.prepare`
  (image upscaling and encoding, messages) in submission order, while requests are in
  flight; a lane's executor has ``slots`` workers and up to ``slots`` more jobs queued behind
  them, so a worker whose reply is in starts the next prepared request at once, and a pause
  of the consumer (the stage committing a batch) does not empty a server's slots.
* **Queued ahead.** A lane of a model server has ``ahead`` more workers than slots
  (``--queue-ahead``, default 1): that many requests wait in the server's own queue, so a slot
  that frees starts the next request at once instead of idling while Lens reads the reply
  and sends another (~10 ms a request on a busy 2-core machine: 5% of a 200 ms answer).
* **Errors recorded here, once.** A backend's exception becomes an ``error`` answer with its
  type and text (a :class:`~lens.errors.LensError` stops the run); a request that cannot be
  prepared (:class:`~lens.backends.base.UnanswerableRequest`) is stored ``error`` unsent.
* **Failover** (a pool of several servers): a request that ends ``error`` on a server goes to
  a live server that has not tried it; a server whose connection failed, timed out or
  answered 502/503/504 leaves the pool (its queued requests move to the others). A moved
  answer notes ``failed on URL: why`` and ``answered by URL``; :meth:`Lanes.details` gives
  per server answers, failures and why it left; once every server has left, the rest is
  answered ``error`` with the reason, never sent.

When the consumer stops early (an exception, Ctrl-C) queued jobs are cancelled and no new
request is sent; requests in flight finish within their timeout.
"""

from __future__ import annotations

import queue
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lens.backends.base import HypothesisAnswer, HypothesisRequest, Hypothesizer, UnanswerableRequest
from lens.errors import LensError
from lens.prompts import Prompt

#: errors after which a server leaves a pool (it is down or not answering)
DEAD = re.compile(r"connection failed|timeout after|HTTP 50[234]\b", re.IGNORECASE)
Pair = tuple[HypothesisRequest, HypothesisAnswer]


@dataclass(eq=False)
class Lane:
    """One backend (one server) and how many requests it takes at once."""

    backend: Hypothesizer
    slots: int
    url: str = ""
    ahead: int = 0  # requests sent beyond the slots, to wait in the server's queue
    down: str | None = None  # why it left the pool
    answered: int = 0
    failed: int = 0
    queued: int = 0  # jobs submitted and not finished
    noted: bool = False


@dataclass(frozen=True)
class _Job:
    request: HypothesisRequest
    prepared: Future
    tried: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()


@dataclass
class _Outcome:
    answer: HypothesisAnswer | None  # None: not sent (the lane left, or the run stopped)
    sent: bool = True  # False: the request could not be prepared (final, never moved)


@dataclass
class Lanes:
    """The lanes of one run; ``pool``: failover between them (several servers, or ``URL=N``)."""

    lanes: list[Lane]
    pool: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def backend(self) -> Hypothesizer:
        """The first lane's backend: name, model, capabilities and preparation of the run."""
        return self.lanes[0].backend

    def check(self, prompt: Prompt) -> None:
        """Check each server; in a pool those that fail leave it (noted), unless none is left."""
        errors = []
        for lane in self.lanes:
            try:
                lane.backend.check(prompt)
            except LensError as exc:
                if not self.pool:
                    raise
                lane.down = f"failed its check: {exc}"
                lane.noted = True
                errors.append(exc)
                self.notes.append(f"{lane.url} left the pool before the run: {exc}")
        if errors and all(lane.down for lane in self.lanes):
            raise errors[0]

    def details(self) -> dict[str, Any]:
        """For ``stage_runs.details``: per server of a pool, answers, failures, why it left."""
        if not self.pool:
            return {}
        return {"servers": [{"url": s.url, "slots": s.slots, "answered": s.answered, "failed": s.failed,
                             "left_pool": s.down} for s in self.lanes]}

    def answers(self, requests: Iterable[HypothesisRequest], prompt: Prompt, *,
                wait_s: Callable[[], float | None] = lambda: None) -> Iterator[Pair | None]:
        """Answer ``requests``; yields pairs in completion order, and None when ``wait_s()``
        seconds pass without one (so the caller can commit on time)."""
        return _Batch(self, prompt).run(iter(requests), wait_s)


def _final_error(notes: tuple[str, ...], last: HypothesisAnswer | None = None) -> HypothesisAnswer:
    return HypothesisAnswer(status="error", error="; ".join(notes) or "no server could answer",
                            attempts=last.attempts if last else 0, latency_s=last.latency_s if last else 0.0,
                            raw_response=last.raw_response if last else None)


class _Batch:
    """One call of :meth:`Lanes.answers`: the executors, the jobs in flight, the moved ones."""

    def __init__(self, lanes: Lanes, prompt: Prompt):
        self.lanes, self.prompt = lanes, prompt
        self.stopped = False
        self.moved: deque[_Job] = deque()
        self.inflight: dict[Future, tuple[Lane, _Job]] = {}
        # finished futures, in completion order: one queue put per reply instead of a
        # concurrent.futures.wait() that hooks a waiter onto every future in flight each time
        self.finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self.preparer = ThreadPoolExecutor(1, thread_name_prefix="lens-prepare")
        self.executors = {id(lane): ThreadPoolExecutor(lane.slots + lane.ahead, thread_name_prefix=f"lens-{lane.backend.name}-{i}")
                          for i, lane in enumerate(lanes.lanes)}

    def run(self, requests: Iterator[HypothesisRequest], wait_s) -> Iterator[Pair | None]:
        try:
            self._fill(requests)
            while self.inflight:
                done = self._done(wait_s())
                if not done:
                    yield None
                for fut in done:
                    lane, job = self.inflight.pop(fut)
                    lane.queued -= 1
                    pair = self._settle(lane, job, fut.result())
                    if pair is not None:
                        yield pair
                self._fill(requests)
            yield from self._leftovers(requests)
        finally:
            self.stopped = True  # the caller stopped early or failed: no new request is sent
            for ex in (self.preparer, *self.executors.values()):
                ex.shutdown(wait=False, cancel_futures=True)

    def _done(self, timeout: float | None) -> list[Future]:
        """The futures finished so far (waiting up to ``timeout`` s for one; [] when none came)."""
        try:
            done = [self.finished.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self.finished.get_nowait())
            except queue.Empty:
                return done

    # -- submitting -------------------------------------------------------------------------------

    def _fill(self, requests: Iterator[HypothesisRequest]) -> None:
        """Give every live lane jobs up to twice its slots plus its queue-ahead (moved ones first,
        then new requests)."""
        for lane in self.lanes.lanes:
            while lane.down is None and lane.queued < 2 * lane.slots + lane.ahead:
                job = self._next_job(lane, requests)
                if job is None:
                    break
                fut = self.executors[id(lane)].submit(self._work, lane, job)
                self.inflight[fut] = (lane, job)
                fut.add_done_callback(self.finished.put)
                lane.queued += 1

    def _next_job(self, lane: Lane, requests: Iterator[HypothesisRequest]) -> _Job | None:
        for job in self.moved:
            if lane.url not in job.tried:
                self.moved.remove(job)
                return job
        req = next(requests, None)
        if req is None:
            return None
        return _Job(req, self.preparer.submit(self.lanes.backend.prepare, req, self.prompt))

    def _work(self, lane: Lane, job: _Job) -> _Outcome:
        """On a lane's worker: send the prepared request; every exception but LensError recorded."""
        if lane.down is not None or self.stopped:
            return _Outcome(None)
        start = time.perf_counter()
        try:
            prepared = job.prepared.result()
        except UnanswerableRequest as exc:
            return _Outcome(HypothesisAnswer(status="error", error=str(exc), attempts=0), sent=False)
        except Exception as exc:  # a backend bug must not stop the stage: record it
            return _Outcome(HypothesisAnswer(status="error", attempts=0,
                                             error=f"cannot prepare the request: {type(exc).__name__}: {exc}"),
                            sent=False)
        try:
            ans = lane.backend.answer_prepared(job.request, self.prompt, prepared)
        except LensError:
            raise
        except Exception as exc:  # a backend bug must not stop the stage: record it
            ans = HypothesisAnswer(status="error", error=f"{type(exc).__name__}: {exc}",
                                   latency_s=time.perf_counter() - start)
        if self.lanes.pool and ans.status == "error" and lane.down is None and DEAD.search(ans.error or ""):
            lane.down = ans.error  # at once, so that the lane's queued jobs are not sent there
        return _Outcome(ans)

    # -- results ----------------------------------------------------------------------------------

    def _settle(self, lane: Lane, job: _Job, out: _Outcome) -> Pair | None:
        """The pair to yield for a finished job, or None when it moves to another lane."""
        if lane.down is not None and not lane.noted:
            lane.noted = True
            self.lanes.notes.append(f"{lane.url} left the pool: {lane.down}")
        ans = out.answer
        if ans is None:  # never sent on this lane
            self.moved.appendleft(job)
            return None
        if not out.sent or not self.lanes.pool:
            return job.request, ans
        if ans.status != "error":
            lane.answered += 1
            if job.notes:
                ans.repairs.extend([*job.notes, f"answered by {lane.url}"])
            return job.request, ans
        lane.failed += 1
        moved = _Job(job.request, job.prepared, job.tried | {lane.url},
                     (*job.notes, f"failed on {lane.url}: {ans.error or 'error'}"))
        if all(s.down is not None or s.url in moved.tried for s in self.lanes.lanes):
            return job.request, _final_error(moved.notes, ans)
        self.moved.append(moved)
        return None

    def _leftovers(self, requests: Iterator[HypothesisRequest]) -> Iterator[Pair]:
        """Nothing is in flight: moved requests every live server has tried end with their notes;
        when every server has left the pool, what was not answered gets the reason, unsent."""
        live = any(lane.down is None for lane in self.lanes.lanes)
        reason = "; ".join(self.lanes.notes[-len(self.lanes.lanes):]) or "no server left in the pool"
        while self.moved:
            job = self.moved.popleft()
            yield job.request, _final_error(job.notes if live else (*job.notes, f"not sent: {reason}"))
        for req in requests:
            yield req, _final_error((f"not sent: {reason}",))
