"""The hypothesize stage's writer: answers in, batches committed (see lens.stages.hypothesize).

Each batch is one short transaction that deletes and re-inserts its hypothesis ids in
``hypotheses``, ``hypothesis_dimensions`` and ``claims`` and records the stage's progress in
``stage_runs``; an answer Arrow cannot hold is stored as an ``error`` saying why instead of
losing its batch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lens import prompts as prompts_mod
from lens.backends import base
from lens.backends.base import HypothesisAnswer, HypothesisRequest
from lens.warehouse import Warehouse, insert_arrow, record_stage, utcnow

if TYPE_CHECKING:
    from lens.stages.hypothesize import HypothesizeResult

STAGE = "hypothesize"
#: the writer commits when this many answers are pending, or the oldest has waited BATCH_SECONDS
#: (a commit on a file costs ~0.13 s: opening it ~30 ms, the checkpoint at close ~40 ms; batches
#: keep that off the answer rate). Time bounds what a hard crash can lose (what is asked again);
#: the count only caps a batch when answers come fast (>= 256/s).
BATCH_SIZE = 512
BATCH_SECONDS = 2.0
_TABLES = ("claims", "hypothesis_dimensions", "hypotheses")

# -- the writer ----------------------------------------------------------------------------

#: what a value Arrow cannot hold raises (text that is no UTF-8, a number out of range, a wrong type)
_ROW_ERRORS = (pa.ArrowException, UnicodeError, ValueError, TypeError, OverflowError)


def _column_types() -> tuple[tuple[pa.DataType, ...], ...]:
    """Arrow types of the writer's hypotheses, hypothesis_dimensions and claims columns, in order."""
    s, i64, i32, f64 = pa.string(), pa.int64(), pa.int32(), pa.float64()
    return ((s, s, i64, s, s, s, s, s, s, s, s, f64, i32, pa.timestamp("us")), (s, s, i64, s, s, s, s),
            (s, s, i64, s, i32, s, s, s, s))


def _unstorable(exc: BaseException) -> str:
    text, _ = base.clean_text(f"{type(exc).__name__}: {exc}")
    return f"the backend's answer could not be stored ({text[:300]})"


class Writer:
    """Collects answers and commits them in batches (one transaction per batch)."""

    def __init__(self, wh: Warehouse, result: HypothesizeResult, prompt: prompts_mod.Prompt,
                 names: list[str], started, details: dict[str, Any]):
        self.wh = wh
        self.result = result
        self.prompt = prompt
        self.names = names
        self.started = started
        self.details = details
        from lens.grounding import check_answer

        self.check_answer = check_answer
        self._reset()

    def _reset(self) -> None:
        self.hyp: dict[str, list] = {k: [] for k in (
            "hypothesis_id", "run_id", "example_id", "backend", "model", "prompt_name", "prompt_sha256",
            "status", "error", "description", "raw_response", "latency_s", "attempts", "created_at")}
        self.dims: dict[str, list] = {k: [] for k in (
            "hypothesis_id", "run_id", "example_id", "dimension", "tag", "text", "summary")}
        self.claims: dict[str, list] = {k: [] for k in (
            "hypothesis_id", "run_id", "example_id", "dimension", "claim_index", "kind", "claim", "verdict", "fact")}
        self.pending = 0
        self.oldest: float | None = None

    def add(self, req: HypothesisRequest, ans: HypothesisAnswer) -> None:
        r = self.result
        h = self.hyp
        try:  # every backend's output is made storable here (base.stored_answer: text repairs, size cap)
            ans = base.stored_answer(ans)
            latency_s, attempts = float(ans.latency_s), int(ans.attempts)
        except Exception as exc:  # an odd answer must not stop the stage: store why instead
            ans = HypothesisAnswer(status="error", error=_unstorable(exc))
            latency_s, attempts = 0.0, 1
        for k, v in (("hypothesis_id", req.key), ("run_id", req.run_id), ("example_id", req.example_id),
                     ("backend", r.backend), ("model", r.model), ("prompt_name", r.prompt_name),
                     ("prompt_sha256", r.prompt_sha256), ("status", ans.status), ("error", ans.error),
                     ("description", ans.description), ("raw_response", ans.raw_response),
                     ("latency_s", latency_s), ("attempts", attempts),
                     ("created_at", utcnow())):
            h[k].append(v)
        setattr(r, ans.status, getattr(r, ans.status) + 1)
        if ans.status != "ok" and ans.error and len(r.errors) < 5:
            r.errors.append(f"example {req.example_id}: {ans.error}")
        if ans.status == "ok":
            for dim in self.prompt.dimension_names:
                d = ans.dimensions.get(dim)
                if d is None:
                    continue
                for k, v in (("hypothesis_id", req.key), ("run_id", req.run_id), ("example_id", req.example_id),
                             ("dimension", dim), ("tag", d.tag), ("text", d.text), ("summary", d.summary)):
                    self.dims[k].append(v)
            if req.evidence is not None:
                self._add_claims(req, ans)
        self.pending += 1
        if self.oldest is None:
            self.oldest = time.monotonic()

    def _add_claims(self, req: HypothesisRequest, ans: HypothesisAnswer) -> None:
        try:
            claims = self.check_answer(ans.dimensions, ans.description, req.evidence, self.names)
        except Exception as exc:  # a grounding bug must not stop the stage: count and report it
            if len(self.result.grounding_errors) < 3:
                self.result.grounding_errors.append(f"example {req.example_id}: {type(exc).__name__}: {exc}")
            return
        for c in claims:
            for k, v in (("hypothesis_id", req.key), ("run_id", req.run_id), ("example_id", req.example_id),
                         ("dimension", c.dimension), ("claim_index", int(c.claim_index)), ("kind", c.kind),
                         ("claim", c.claim), ("verdict", c.verdict), ("fact", c.fact)):
                self.claims[k].append(v)
        self.result.claims += len(claims)

    def due(self) -> bool:
        return self.pending >= BATCH_SIZE or (
            self.oldest is not None and time.monotonic() - self.oldest >= BATCH_SECONDS
        )

    def seconds_left(self) -> float | None:
        if self.oldest is None:
            return None
        return max(0.0, self.oldest + BATCH_SECONDS - time.monotonic())

    def _tables(self) -> tuple[pa.Table, pa.Table, pa.Table]:
        hyp_t, dims_t, claims_t = _column_types()
        hyp = pa.table({k: pa.array(v, type=t) for (k, v), t in zip(self.hyp.items(), hyp_t)})
        dims = pa.table({k: pa.array(v, type=t) for (k, v), t in zip(self.dims.items(), dims_t)})
        claims = pa.table({k: pa.array(v, type=t) for (k, v), t in zip(self.claims.items(), claims_t)})
        return hyp, dims, claims

    def _isolate_bad_rows(self) -> None:
        """Replace each answer whose rows Arrow cannot hold by an ``error`` answer saying why."""
        for i, key in enumerate(self.hyp["hypothesis_id"]):
            try:
                for table, types in zip((self.hyp, self.dims, self.claims), _column_types()):
                    rows = [i] if table is self.hyp else [j for j, k in enumerate(table["hypothesis_id"]) if k == key]
                    for values, t in zip(table.values(), types):
                        pa.array([values[j] for j in rows], type=t)
            except _ROW_ERRORS as exc:
                old, r = self.hyp["status"][i], self.result
                setattr(r, old, getattr(r, old) - 1)
                r.error += 1
                if len(r.errors) < 5:
                    r.errors.append(f"example {self.hyp['example_id'][i]}: {_unstorable(exc)}")
                for name, value in (("status", "error"), ("error", _unstorable(exc)), ("description", None),
                                    ("raw_response", None), ("latency_s", 0.0), ("attempts", 1)):
                    self.hyp[name][i] = value
                for table in (self.dims, self.claims):
                    keep = [j for j, k in enumerate(table["hypothesis_id"]) if k != key]
                    for name, values in table.items():
                        table[name] = [values[j] for j in keep]

    def flush(self, *, final_status: str | None = None, candidate_keys: list[str] | None = None) -> None:
        if not self.pending and final_status is None:
            return
        try:
            hyp, dims, claims = self._tables()
        except _ROW_ERRORS:  # one answer Arrow cannot hold must not lose the batch: store it as error
            self._isolate_bad_rows()
            hyp, dims, claims = self._tables()
        ids = self.hyp["hypothesis_id"]
        r = self.result
        with self.wh.transaction() as con:
            if ids:
                for table in _TABLES:  # identifiers from this module only
                    con.execute(f"delete from {table} where hypothesis_id in (select unnest(?::varchar[]))", [ids])
                insert_arrow(con, "hypotheses", hyp)
                insert_arrow(con, "hypothesis_dimensions", dims)
                insert_arrow(con, "claims", claims)
            status = "partial"
            stored: dict[str, int] = {}
            if final_status is not None:
                stored = dict(con.execute(
                    "select status, count(*) from hypotheses where hypothesis_id in (select unnest(?::varchar[]))"
                    " group by status", [candidate_keys or []]).fetchall())
                n_ok = stored.get("ok", 0)
                if candidate_keys and n_ok == 0:
                    status = "failed"
                elif n_ok < len(candidate_keys or []):
                    status = "partial"
                else:
                    status = "done"
                r.stage_status = status
            details = {**self.details, "requested": r.requested, "skipped": r.skipped, "ok": r.ok,
                       "invalid": r.invalid, "error": r.error, "claims": r.claims}
            if stored:
                details["stored"] = stored
            record_stage(con, r.run_id, STAGE, status=status, started_at=self.started, details=details)
        self._reset()
