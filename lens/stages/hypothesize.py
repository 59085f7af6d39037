"""``lens hypothesize``: ask a backend why each sampled failure failed, and store the answers.

Input: the run's ``samples`` (``lens sample``) joined with ``failures`` (image, label,
prediction, confidences) and ``predictions`` (top-3), plus the ``evidence`` row of each
failure when ``lens evidence`` has run. The ``import`` backend reads its own file and
works on the run's failures that the file names (no sample needed).

Output, one answer per (run, failure, backend, model, prompt sha256)::

    hypotheses             hypothesis_id = stable_id(run_id, example_id, backend, model, prompt_sha256);
                           status 'ok' | 'invalid' | 'error', error text, raw response,
                           latency (seconds waiting on the backend), attempts, description
    hypothesis_dimensions  one row per prompt dimension of an ok answer: tag, text (the
                           answer / reason), summary (the one-sentence verdict)
    claims                 for ok answers with evidence: lens.grounding.check_answer(...)

Concurrency and durability: :mod:`lens.backends.executor` answers with ``concurrency``
requests served per server (plus ``queue_ahead`` waiting in its queue); every answer comes to
ONE writer (:mod:`lens.stages.hypothesize_writer`) on this module's thread, which commits a
batch every 2 s (or 512 answers) in a short transaction (delete-then-insert of those
hypothesis ids, so a redo replaces). A SIGKILL loses at most
the uncommitted batch and the requests in flight; nothing committed is touched again.

Resume: a failure already answered for (backend, model, prompt sha256) is skipped;
``force`` asks again for all of them; ``retry_errors`` asks again for those stored as
``invalid`` or ``error`` (unanswered failures are always asked).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from lens import defaults as D
from lens import prompts as prompts_mod
from lens.backends import pool, registry
from lens.backends.base import HypothesisAnswer, HypothesisRequest, Hypothesizer
from lens.backends.executor import Lanes
from lens.errors import LensError
from lens.stages.hypothesize_writer import Writer
from lens.warehouse import Warehouse, class_names, require_run, stable_id, utcnow

NO_IMAGE = "no image stored for this failure (failures.image_png is empty)"


@dataclass
class HypothesizeResult:
    run_id: str
    backend: str
    model: str
    prompt_name: str
    prompt_sha256: str
    chosen_reason: str | None = None
    candidates: int = 0  # failures this run could answer
    skipped: int = 0  # already answered (resume)
    requested: int = 0  # asked now
    ok: int = 0
    invalid: int = 0
    error: int = 0
    claims: int = 0
    grounding_errors: list[str] = field(default_factory=list)
    not_failures: list[int] = field(default_factory=list)  # import: ids in the file that are no failure
    errors: list[str] = field(default_factory=list)  # the first few error texts
    seconds: float = 0.0
    stage_status: str = "done"

    @property
    def failed(self) -> bool:
        """Nothing succeeded although something was asked."""
        return self.requested > 0 and self.ok == 0


def hypothesis_id(run_id: str, example_id: int, backend: str, model: str, prompt_sha256: str) -> str:
    return stable_id(run_id, int(example_id), backend, model, prompt_sha256)


# -- the backend ----------------------------------------------------------------------------


def choose_backend(*, model: str | None = None, **options: Any) -> tuple[str, str]:
    """``--backend auto``: (name, why): the first usable backend of the registry's auto order
    (Ollama when it answers with the model, else the measured analyst)."""
    return registry.choose_auto(options, model)


def open_backend(backend: str, *, model: str | None, concurrency: int, options: dict[str, Any],
                 tuning: dict[str, Any] | None = None, echo=None,
                 queue_ahead: int = 0) -> tuple[Lanes, str | None]:
    """The backend's lanes (one server, or a pool) and, for ``auto``, why it was chosen.

    ``options``: backend options by name (``ollama_host=...``, ``timeout=...``; each backend
    takes those its ``Options`` declares); ``tuning`` goes to the backend as it is.
    """
    unknown = set(options) - {name for name, _, _ in registry.option_specs()}
    if unknown:
        raise LensError(f"No backend takes the option(s) {', '.join(sorted(unknown))}.")
    reason = None
    if backend == "auto":
        backend, reason = choose_backend(model=model, **options)
        if echo is not None:
            echo(f"Backend: {backend} ({reason})")
        if registry.auto_candidates()[0].name != backend:
            model = None  # --model names the model of the backend auto tries first
    cls = registry.get(backend)
    lanes = pool.lanes(cls, registry.options_for(cls, options), model=model, concurrency=concurrency,
                       tuning=tuning, queue_ahead=queue_ahead)
    return lanes, reason


# -- reading the warehouse -----------------------------------------------------------------


def _rows(con, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    return con.execute(sql, params).to_arrow_table().to_pylist()


def _uses_evidence(prompt: prompts_mod.Prompt) -> bool:
    return "evidence" in set(re.findall(r"{([a-z_0-9]+)[^}]*}", prompt.template))



# -- the stage -------------------------------------------------------------------------------


@dataclass
class _Inputs:
    """What the warehouse holds for the run: candidates, stored answers, evidence."""

    run_id: str
    names: list[str]
    rows: list[dict[str, Any]]  # the failures to answer (sample order, or the backend's ids)
    existing: dict[str, str]  # hypothesis_id -> status, of this backend, model and prompt
    evidence: dict[int, dict[str, Any]]
    not_failures: list[int]
    stored: list[tuple[str, str, str]] = field(default_factory=list)  # (model, hypothesis_id, status)


_SELECT = ("select f.example_id, f.label, f.pred, f.confidence, f.true_prob, {image},"
           " p.top3_class, p.top3_prob from failures f"
           " left join predictions p on p.run_id = f.run_id and p.example_id = f.example_id")


def _read(warehouse: Warehouse, run_id: str | None, hyp: Hypothesizer, prompt: prompts_mod.Prompt) -> _Inputs:
    from lens.measure import decode_evidence

    only_ids = hyp.example_ids()
    select = _SELECT.format(image="f.image_png" if hyp.needs_image else "null::blob as image_png")
    not_failures: list[int] = []
    with warehouse.connect() as con:
        run_id = require_run(con, run_id)
        names = class_names(con, run_id)
        if only_ids is None:
            rows = _rows(con, select + " join samples s on s.run_id = f.run_id and s.example_id = f.example_id"
                         " where f.run_id = ? order by s.rank, f.example_id", [run_id])
            if not rows:
                raise LensError(f"Run {run_id!r} has no sampled failures: run `lens sample --run {run_id}` first.")
        else:
            rows = _rows(con, select + " where f.run_id = ? and f.example_id in (select unnest(?::bigint[]))"
                         " order by f.example_id", [run_id, sorted(only_ids)])
            not_failures = sorted(only_ids - {r["example_id"] for r in rows})
        stored = con.execute(  # of every model: the model may be known only once the server is checked
            "select model, hypothesis_id, status from hypotheses where run_id = ? and backend = ?"
            " and prompt_sha256 = ?", [run_id, hyp.name, prompt.sha256]).fetchall()
        evidence = {int(e["example_id"]): decode_evidence(e)
                    for e in _rows(con, "select * from evidence where run_id = ?", [run_id])}
    for row in rows:  # the failure's classes, for evidence rows that do not carry them
        ev = evidence.get(int(row["example_id"]))
        for col in ("label", "pred"):
            if ev is not None and ev.get(col) is None:
                ev[col] = row[col]
    return _Inputs(run_id, names, rows, {}, evidence, not_failures, stored)


def _read_while_checking(warehouse: Warehouse, run_id: str | None, lanes: Lanes,
                         prompt: prompts_mod.Prompt) -> _Inputs:
    """:func:`_read` while the servers are checked (their client library may still be importing,
    lens.backends.chat.import_in_background); a server that cannot answer is reported first, as
    before. Then each failure's key and its stored answer, for the model the check settled on."""
    from concurrent.futures import ThreadPoolExecutor

    hyp = lanes.backend
    if warehouse.lake is None and not warehouse.memory and not warehouse.path.exists():
        lanes.check(prompt)  # reading would create the file: a server that cannot answer leaves none
        inputs = _read(warehouse, run_id, hyp, prompt)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="lens-check") as ex:
            checking = ex.submit(lanes.check, prompt)
            try:
                inputs = _read(warehouse, run_id, hyp, prompt)
            except LensError:
                checking.result()
                raise
            checking.result()
    inputs.existing = {key: status for model, key, status in inputs.stored if model == hyp.model}
    for row in inputs.rows:
        row["key"] = hypothesis_id(inputs.run_id, row["example_id"], hyp.name, hyp.model, prompt.sha256)
    return inputs


def _to_ask(inputs: _Inputs, hyp: Hypothesizer, *, force: bool, retry_errors: bool,
            limit: int | None) -> tuple[list[dict[str, Any]], int]:
    """The rows to ask now and how many are skipped as answered (resume: module docstring)."""
    todo = [row for row in inputs.rows if inputs.existing.get(row["key"]) is None or force
            or (retry_errors and inputs.existing[row["key"]] in ("invalid", "error"))]
    skipped = len(inputs.rows) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    if hyp.needs_evidence:
        missing = [r["example_id"] for r in todo if r["example_id"] not in inputs.evidence]
        if missing:
            raise LensError(
                f"The {hyp.name} backend needs measured evidence, and {len(missing)} failures of run "
                f"{inputs.run_id!r} have none (e.g. example {missing[0]}): run `lens evidence --run "
                f"{inputs.run_id}` first."
            )
    return todo, skipped


def _request_for(inputs: _Inputs, prompt: prompts_mod.Prompt):
    """A function: one warehouse row -> its HypothesisRequest."""
    from lens.grounding import format_facts

    names, with_facts = inputs.names, _uses_evidence(prompt)

    def request(row: dict[str, Any]) -> HypothesisRequest:
        ev = inputs.evidence.get(int(row["example_id"]))
        top3 = [(names[c], float(p)) for c, p in zip(row["top3_class"] or [], row["top3_prob"] or [])]
        return HypothesisRequest(
            key=row["key"], run_id=inputs.run_id, example_id=int(row["example_id"]),
            true_class=names[row["label"]], pred_class=names[row["pred"]],
            true_prob=None if row["true_prob"] is None else float(row["true_prob"]),
            confidence=float(row["confidence"]), top3=top3 or [(names[row["pred"]], float(row["confidence"]))],
            class_names=names, image_png=row["image_png"], evidence=ev,
            evidence_text=format_facts(ev, names) if (with_facts and ev is not None) else "",
        )

    return request


def _ask(lanes: Lanes, writer: Writer, todo: list[dict[str, Any]], request, prompt, bar) -> None:
    """Send ``todo`` through the lanes; the writer stores each answer and commits on time."""
    def add(req: HypothesisRequest, ans: HypothesisAnswer) -> None:
        writer.add(req, ans)
        bar.update(1)
        if not bar.disable:
            r = writer.result
            bar.set_postfix(ok=r.ok, invalid=r.invalid, error=r.error, refresh=False)

    sendable = []
    for row in todo:  # failures without an image cannot be shown to an image model: stored, never sent
        if lanes.backend.needs_image and row["image_png"] is None:
            add(request(row), HypothesisAnswer(status="error", attempts=0, error=NO_IMAGE))
        else:
            sendable.append(row)
    try:
        for pair in lanes.answers(map(request, sendable), prompt, wait_s=writer.seconds_left):
            if pair is not None:
                add(*pair)
            if pair is None or writer.due():
                writer.flush()
    except BaseException:
        writer.flush()  # keep every answer already received (Ctrl-C, a backend's LensError)
        raise


def run(
    warehouse: Warehouse,
    *,
    run_id: str | None = None,
    prompt: str = D.PROMPT,
    backend: str = D.BACKEND,
    model: str | None = None,
    concurrency: int = D.CONCURRENCY,
    queue_ahead: int = D.QUEUE_AHEAD,
    force: bool = False,
    retry_errors: bool = False,
    limit: int | None = None,
    backend_options: dict[str, Any] | None = None,
    progress: bool = True,
    echo=None,
    **options: Any,
) -> HypothesizeResult:
    """Answer the run's sampled failures with a backend and store the answers (module docstring).

    ``options`` are backend options by name (``ollama_host``, ``base_url``, ``timeout``,
    ``from_path``, ...: each backend's ``Options``, see ``lens.backends.registry``);
    ``backend_options`` go to the backend as they are (e.g. ``retries``, ``retry_backoff``).
    ``echo(str)`` is told which backend ``auto`` chose and why.
    """
    started, t0 = utcnow(), time.perf_counter()
    if concurrency < 1:
        raise LensError("--concurrency must be at least 1")
    if queue_ahead < 0:
        raise LensError("--queue-ahead must be at least 0")
    if limit is not None and limit < 0:
        raise LensError("--limit must be at least 0")
    if force and retry_errors:
        raise LensError("--force already redoes everything; drop --retry-errors")
    the_prompt = prompts_mod.load(prompt)
    lanes, reason = open_backend(backend, model=model, concurrency=concurrency, options=options,
                                 tuning=backend_options, echo=echo, queue_ahead=queue_ahead)
    hyp = lanes.backend
    inputs = _read_while_checking(warehouse, run_id, lanes, the_prompt)
    todo, skipped = _to_ask(inputs, hyp, force=force, retry_errors=retry_errors, limit=limit)
    result = HypothesizeResult(run_id=inputs.run_id, backend=hyp.name, model=hyp.model,
                               prompt_name=the_prompt.name, prompt_sha256=the_prompt.sha256, chosen_reason=reason,
                               candidates=len(inputs.rows), requested=len(todo), not_failures=inputs.not_failures)
    result.skipped = skipped
    details = {"backend": hyp.name, "model": hyp.model, "prompt": the_prompt.name,
               "prompt_sha256": the_prompt.sha256, "concurrency": concurrency,
               "queue_ahead": lanes.lanes[0].ahead, "force": force,
               "retry_errors": retry_errors, "candidates": len(inputs.rows)}
    writer = Writer(warehouse, result, the_prompt, inputs.names, started, details)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="answer", desc=f"{hyp.name} {hyp.model}", disable=None if progress else True,
               dynamic_ncols=True, smoothing=0.1)
    try:
        _ask(lanes, writer, todo, _request_for(inputs, the_prompt), the_prompt, bar)
    finally:
        bar.close()
        result.seconds = time.perf_counter() - t0
        writer.details["seconds"] = round(result.seconds, 3)
    writer.details.update(lanes.details())  # a pool: answers per server, and why any left it
    result.errors.extend(lanes.notes)
    writer.flush(final_status="done", candidate_keys=[r["key"] for r in inputs.rows])
    return result
