"""The review app's verdict writes: one queue per app, group commit, bad records fail alone.

Every save request puts its records (the new verdict and whatever the browser still holds
unsaved) into the app's queue and waits for its turn to write. The writer takes *everything*
queued at that moment, its own records and other reviewers', and appends it in one
transaction (:func:`lens.stages.verdicts.append`, stored verdict ids skipped; the hypotheses
it validated against in the last minute are not read again). A request
whose records were written by another request's commit while it waited returns without
writing: with several reviewers saving at once, a handful of commits store them all.

A batch that fails because of what a record holds (validation: unknown hypothesis, bad
dimension or verdict value; or the record cannot be converted or stored: DuckDB data,
constraint and input errors, bad dates or text) is written again one record at a time, so
only the bad record fails; its request gets the error and everybody else's verdicts are
stored. A held warehouse (:class:`~lens.errors.WarehouseLockedError`) leaves the batch
queued for the next try.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb

from lens.errors import DataError, WarehouseLockedError
from lens.stages import verdicts as verdict_stage
from lens.warehouse import Warehouse

#: seconds the queue trusts what it read of a hypothesis (its run, example, dimensions) before
#: reading it again; hypotheses change only when `lens hypothesize --force` asks again
KNOWN_SECONDS = 60.0

#: errors that come from the records written (a write of each record alone tells which one)
RECORD_ERRORS = (DataError, duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException,
                 ValueError, TypeError)


@dataclass(eq=False)
class _Ticket:
    """One save request: the verdict ids it queued and what became of each."""

    ids: frozenset[str]
    outcomes: dict[str, str | None] = field(default_factory=dict)  # verdict id -> None (stored) or error

    def done(self) -> bool:
        return bool(self.ids) and self.ids <= self.outcomes.keys()


@dataclass
class SaveResult:
    """What one :meth:`VerdictQueue.submit` found.

    ``state``: ``"saved"`` (every record of the request stored, or nothing to do),
    ``"waiting"`` (the queue's writer did not get its turn in time), ``"busy"`` (the
    warehouse was held); ``written``: records of this request stored; ``errors``: their
    verdict id -> why it was not stored; ``left``: records still queued that are this
    request's or that no other request is waiting for (the browser keeps them and retries);
    ``last``: the last record of the batch this request wrote itself, if it wrote one.
    """

    state: str
    written: list[dict[str, Any]]
    errors: dict[str, str]
    left: list[dict[str, Any]]
    last: dict[str, Any] | None = None


class VerdictQueue:
    """Verdict records not stored yet, written by group commit (module docstring)."""

    def __init__(self, wh: Warehouse):
        self.wh = wh
        self.stats = {"commits": 0, "records": 0, "record_errors": 0}
        self._pending: dict[str, dict[str, Any]] = {}  # verdict id -> record, in arrival order
        self._tickets: set[_Ticket] = set()
        self._cond = threading.Condition()
        self._writing = False  # the write lock: one verdict write at a time in this process
        self._known: verdict_stage.HypothesisInfo = {}  # hypotheses validated lately (the writer only)
        self._known_since = time.monotonic()

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def submit(self, records: Iterable[Mapping[str, Any]]) -> SaveResult:
        """Queue ``records`` (each with a ``verdict_id``) and return once they are written or failed,
        or once the wait for the write lock or the warehouse ran out (then they stay queued)."""
        mine = {str(r["verdict_id"]): dict(r) for r in records if r.get("verdict_id")}
        ticket = _Ticket(frozenset(mine))
        with self._cond:
            for vid, r in mine.items():
                self._pending.setdefault(vid, r)
            self._tickets.add(ticket)
        try:
            batch = self._take_turn(ticket)
            if batch is None:
                return self._result(ticket, mine, "waiting")
            if batch:  # this request holds the write lock
                try:
                    self._write(batch)
                except WarehouseLockedError:
                    return self._result(ticket, mine, "busy")
                finally:
                    with self._cond:
                        self._writing = False
                        self._cond.notify_all()
            return self._result(ticket, mine, "saved", batch[-1] if batch else None)
        finally:
            with self._cond:
                self._tickets.discard(ticket)

    def _take_turn(self, ticket: _Ticket) -> list[dict[str, Any]] | None:
        """Wait for the write lock, then re-read the queue: the batch to write is everything queued
        now (the write lock is then held), or [] when there is nothing to write (another request's
        commit wrote this request's records meanwhile, or nothing is queued). None: the lock did
        not come within the warehouse's lock timeout."""
        deadline = time.monotonic() + self.wh.lock_timeout
        with self._cond:
            while self._writing and not ticket.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if ticket.done() or not self._pending:
                return []
            self._writing = True
            return list(self._pending.values())

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Append ``batch`` in one transaction; on a record's error, each record alone."""
        try:
            self._append(batch)
        except RECORD_ERRORS as exc:
            if len(batch) == 1:
                self._settle(batch, str(exc))
                return
            for record in batch:  # WarehouseLockedError: the rest stays queued
                try:
                    self._append([record])
                except RECORD_ERRORS as one:
                    self._settle([record], str(one))

    def _append(self, batch: list[dict[str, Any]]) -> None:
        if time.monotonic() - self._known_since > KNOWN_SECONDS:
            self._known.clear()
            self._known_since = time.monotonic()
        appended = verdict_stage.append(self.wh, batch, source="review", skip_existing=True, known=self._known)
        with self._cond:
            self.stats["commits"] += bool(appended)
            self.stats["records"] += len(appended)
        self._settle(batch, None)

    def _settle(self, batch: list[dict[str, Any]], error: str | None) -> None:
        """Take ``batch`` off the queue and tell each waiting request what became of its records."""
        ids = [str(r["verdict_id"]) for r in batch]
        with self._cond:
            if error is not None:
                self.stats["record_errors"] += len(ids)
            for vid in ids:
                self._pending.pop(vid, None)
            for t in self._tickets:
                for vid in t.ids.intersection(ids):
                    t.outcomes[vid] = error
            self._cond.notify_all()  # a request whose records are all settled need not wait for the lock

    def _result(self, ticket: _Ticket, mine: dict[str, dict[str, Any]], state: str,
                last: dict[str, Any] | None = None) -> SaveResult:
        with self._cond:
            others = set().union(*(t.ids for t in self._tickets if t is not ticket))
            left = [r for vid, r in self._pending.items() if vid in ticket.ids or vid not in others]
            outcomes = dict(ticket.outcomes)
        written = [mine[vid] for vid, err in outcomes.items() if err is None]
        errors = {vid: err for vid, err in outcomes.items() if err is not None}
        if state != "saved" and ticket.done():
            state = "saved"  # written by another request's commit meanwhile
        return SaveResult(state, written, errors, left, last)
