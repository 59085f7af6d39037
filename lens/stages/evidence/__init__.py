"""``lens evidence``: measured facts for every failure of a run.

For each failure (not only the sample) the stage computes and stores one ``evidence`` row, one
function per part (:mod:`.parts`, :mod:`.stats`), each taking arrays and returning its columns:

model signals
    confidence, margin (top-1 minus top-2), entropy, probability and rank of the true class
    (from ``predictions.probs``).
label quality
    cleanlab's label quality (self-confidence) and label-issue flag, computed over the WHOLE
    evaluation split's stored out-of-sample probabilities (:func:`lens.diagnosis.label_signals`).
neighbours
    the ``k`` (10) nearest training examples by cosine in the model's feature space
    (``features`` rows of split 'train'; :func:`lens.neighbours.nearest_neighbours`), their ids,
    labels and similarities, and the shares carrying the true and the predicted label. Every
    evaluation example gets neighbours, so that detection power can plant flips among them all.
image facts
    :func:`lens.measure.image_facts` of ``failures.image_png``: brightness, contrast,
    saturation, sharpness, edge share, border/centre colour (terms and shares), centre-border
    colour distance.
class statistics
    z-scores of those facts against the training images of the true and of the predicted class,
    and how common the image's dominant colours are in those classes. The statistics come from
    the run's dataset source (``open_source(runs.dataset).load('train', limit=stats_limit)``), are
    stored in ``class_image_stats`` keyed by (dataset, image side) and reused by later runs on
    the same source (``force`` recomputes them).
saliency
    :mod:`lens.saliency` (captum Grad-CAM on layer1 by default) of the predicted class from the
    run's checkpoint: the share in the centre and a heatmap overlay PNG.
diagnosis
    :mod:`lens.diagnosis`: ``label_error_score`` and ``ambiguity_score`` with their signals, and
    the run's detection power (stored in ``detection_power``).

What cannot be computed is skipped, never guessed: each row's ``skipped`` column holds JSON
``{part: reason}`` and :class:`EvidenceResult` carries the run-level reasons (an ingested run has
no checkpoint and usually no features, so saliency and neighbours are skipped; without
probability vectors, margin/entropy/rank and label quality are).

Everything is read in one short connection, computed with none open, and written in one
transaction: with ``force`` the run's evidence rows are replaced; otherwise failures that already
have evidence by the current diagnosis rules are left alone and only the missing ones are computed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lens import diagnosis, measure
from lens.datasets import decode_pngs
from lens.stages.evidence import parts, stats
from lens.stages.evidence.read import RunData, read
from lens.warehouse import Warehouse, delete_rows, insert_arrow, record_stage, replace_rows, utcnow

DEFAULT_K = 10
#: training images per dataset measured for the class statistics (stratified, seed 0)
DEFAULT_STATS_LIMIT = 10_000


@dataclass
class EvidenceResult:
    run_id: str
    failures: int  # failures of the run
    computed: int  # evidence rows written now
    already: int  # failures skipped because they had evidence
    eval_rows: int = 0  # evaluation examples cleanlab saw
    label_issues_eval: int | None = None  # flagged among all evaluation examples
    label_issues_failures: int | None = None  # flagged among the computed failures
    skipped: dict[str, str] = field(default_factory=dict)  # run-level {part: reason}
    timings: dict[str, float] = field(default_factory=dict)  # seconds per part
    stats_source: str | None = None  # 'stored' | 'computed' | None
    detection: Any = None  # lens.diagnosis.DetectionPower of the run (None: could not be estimated)
    tagged: dict[str, int] = field(default_factory=dict)  # data_quality tag -> failures (of those computed)


class _Collector:
    """Gathers the parts' columns, skip reasons and timings."""

    def __init__(self, n: int):
        self.cols: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self.row_skips: list[dict[str, str]] = [{} for _ in range(n)]
        self.timings: dict[str, float] = {}

    def add(self, name: str, t0: float, part: parts.Part) -> parts.Part:
        self.cols.update(part.cols)
        self.skipped.update(part.skipped)
        for i, reason in part.row_skips.items():
            self.row_skips[i][name] = reason
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        return part


def run(wh: Warehouse, *, run_id: str | None = None, force: bool = False, k: int = DEFAULT_K, saliency: bool = True,
        saliency_method: str | None = None, stats_limit: int | None = DEFAULT_STATS_LIMIT, data: str | None = None,
        device: str = "cpu", batch_size: int = 256, progress: bool | None = None) -> EvidenceResult:
    """Compute and store evidence for the failures of a run (see the module docstring).

    Parameters
    ----------
    run_id : the run (default: the newest)
    force : recompute every failure (and the class statistics) and replace the run's rows
    k : neighbours per failure
    saliency : compute saliency when the run has a checkpoint
    saliency_method : one of :data:`lens.saliency.METHODS` (default Grad-CAM on layer1)
    stats_limit : training images measured for the class statistics (None = all)
    data : dataset source overriding ``runs.dataset`` (for the class statistics)
    """
    from lens.saliency import DEFAULT_METHOD

    started, t0 = utcnow(), time.perf_counter()
    rd = read(wh, run_id, force, data)
    ids_all = rd.failures.column("example_id").to_numpy()
    keep = np.array([int(e) not in rd.have for e in ids_all], dtype=bool)
    res = EvidenceResult(run_id=rd.run_id, failures=len(ids_all), computed=int(keep.sum()),
                         already=int((~keep).sum()), timings={"read": time.perf_counter() - t0})
    if not keep.any():
        return res
    fail = rd.failures.filter(pa.array(keep))
    ids = fail.column("example_id").to_numpy().astype(np.int64)
    labels = fail.column("label").to_numpy().astype(np.int64)
    pred = fail.column("pred").to_numpy().astype(np.int64)
    c = _Collector(len(ids))
    c.cols["confidence"] = fail.column("confidence").to_numpy(zero_copy_only=False).astype(np.float32)
    c.cols["true_prob"] = np.array([np.nan if v is None else v for v in fail.column("true_prob").to_pylist()],
                                   np.float32)
    pos = rd.split.positions(ids)
    c.add("model_signals", time.perf_counter(), parts.model_signals(rd.split, pos))
    quality = c.add("label_quality", time.perf_counter(), parts.label_quality(rd.split, pos))
    if quality.extra:
        res.eval_rows = quality.extra["eval_rows"]
        res.label_issues_eval, res.label_issues_failures = quality.extra["issues_eval"], quality.extra["issues_failures"]
    nb = c.add("neighbours", time.perf_counter(), parts.neighbours(
        rd.train_feats, rd.eval_feats, rd.split, ids, labels, pred, k, ingested=rd.kind == "ingest"))
    t0 = time.perf_counter()
    images = decode_pngs(fail.column("image_png").to_pylist())
    facts = c.add("image_facts", t0, parts.image_facts(images, progress=progress))
    t0 = time.perf_counter()
    cls_stats = c.add("class_stats", t0, stats.class_statistics(rd, facts, force=force, stats_limit=stats_limit,
                                                                progress=progress))
    res.stats_source = cls_stats.extra["source"]
    c.add("class_stats", time.perf_counter(), stats.z_scores(cls_stats.extra["stats"], cls_stats.extra["side"],
                                                             images, labels, pred, c.cols))
    t0 = time.perf_counter()
    diag = c.add("diagnosis", t0, parts.diagnose(rd.split, pos, nb.extra.get("eval_nl"), c.cols["brightness"],
                                                 c.cols["edge_share"], rd.num_classes))
    method = saliency_method or DEFAULT_METHOD
    t0 = time.perf_counter()
    c.add("saliency", t0, _saliency_part(wh, rd, images, pred, facts, enabled=saliency, method=method,
                                         device=device, batch_size=batch_size, progress=progress))
    res.detection = diag.extra["power"]
    res.tagged = {t: int(n) for t, n in zip(*np.unique(diagnosis.tags(c.cols["label_error_score"],
                                                                        c.cols["ambiguity_score"]).astype(str),
                                                       return_counts=True))}
    t0 = time.perf_counter()
    _write(wh, rd, res, c, cls_stats.extra, started=started, force=force,
           method=method if any(c.cols["saliency_method"]) else None, ids=ids, labels=labels, pred=pred)
    c.timings["write"] = time.perf_counter() - t0
    res.skipped, res.timings = c.skipped, {**res.timings, **c.timings}
    return res


def _saliency_part(wh: Warehouse, rd: RunData, images, pred, facts: parts.Part, *, enabled: bool, method: str,
                   device: str, batch_size: int, progress) -> parts.Part:
    """Saliency when it can be computed, else the reason why not."""
    n = len(images)
    empty = parts.Part({"saliency_centre_share": np.full(n, np.nan, np.float32), "saliency_png": [None] * n,
                        "saliency_method": [None] * n})
    if not enabled:
        empty.skipped["saliency"] = "turned off (--no-saliency)"
    elif not rd.checkpoint_path:
        empty.skipped["saliency"] = "the run has no model checkpoint" + (
            " (it was ingested: Lens only has its predictions)" if rd.kind == "ingest" else "")
    elif not facts.extra["by_shape"]:
        empty.skipped["saliency"] = "no failure images stored"
    else:
        ckpt_file = wh.artifact_path(rd.checkpoint_path)  # relative to the warehouse's folder
        if not ckpt_file.is_file():
            empty.skipped["saliency"] = f"checkpoint {ckpt_file} not found (was the run trained on another machine?)"
        else:
            return parts.saliency(ckpt_file, images, pred, method=method, device=device, batch_size=batch_size,
                                  progress=progress)
    return empty


# -- writing ---------------------------------------------------------------------------------------

_F32 = ("confidence", "margin", "entropy", "true_prob", "label_quality", "neighbour_true_share",
        "neighbour_pred_share", "brightness", "contrast", "saturation", "sharpness", "edge_share", "fg_bg_distance",
        "saliency_centre_share", "label_error_score", "ambiguity_score")
_TYPES = {"label_issue": pa.bool_(), "neighbour_ids": pa.list_(pa.int64()), "neighbour_labels": pa.list_(pa.int32()),
          "neighbour_sims": pa.list_(pa.float32()), "saliency_png": pa.binary()}
#: evidence columns in table order after run_id, example_id, label, pred
_ORDER = ("confidence", "margin", "entropy", "true_prob", "true_rank", "label_quality", "label_issue", "neighbour_ids",
          "neighbour_labels", "neighbour_sims", "neighbour_true_share", "neighbour_pred_share", "brightness",
          "contrast", "saturation", "sharpness", "edge_share", "border_colour", "centre_colour", "border_colours",
          "centre_colours", "fg_bg_distance", "z_true", "z_pred", "colour_share_true", "colour_share_pred",
          "saliency_method", "saliency_centre_share", "saliency_png", "skipped", "label_error_score",
          "ambiguity_score", "diagnosis", "diagnosis_version")


def evidence_table(run_id: str, ids: np.ndarray, labels: np.ndarray, pred: np.ndarray, cols: dict[str, Any],
                   row_skips: list[dict[str, str]]) -> pa.Table:
    """The ``evidence`` rows of the computed failures from the parts' columns."""
    n = len(ids)
    cols = {**cols, "skipped": [json.dumps(s) if s else None for s in row_skips]}
    out: dict[str, pa.Array] = {"run_id": pa.array([run_id] * n, pa.string()), "example_id": pa.array(ids, pa.int64()),
                                "label": pa.array(labels.astype(np.int32), pa.int32()),
                                "pred": pa.array(pred.astype(np.int32), pa.int32())}
    for name in _ORDER:
        v = cols[name]
        if name in _F32:
            a = np.asarray(v, dtype=np.float32)
            out[name] = pa.array(a, pa.float32(), mask=~np.isfinite(a))
        elif name == "true_rank":
            r = np.asarray(v)
            out[name] = pa.array(r.astype(np.int32), pa.int32(), mask=r < 1)
        else:
            out[name] = pa.array(list(v), _TYPES.get(name, pa.string()))
    out["computed_at"] = pa.array([utcnow()] * n, pa.timestamp("us"))
    return pa.table(out)


def _power_table(run_id: str, power: diagnosis.DetectionPower) -> pa.Table:
    row = {k: getattr(power, k) for k in (
        "signals", "eval_examples", "flips_per_trial", "trials", "threshold", "recall", "recall_low", "recall_high",
        "precision", "precision_low", "precision_high", "average_precision", "candidates", "verdict", "message")}
    row.update(run_id=run_id, diagnosis_version=diagnosis.RULES_VERSION, computed_at=utcnow())
    return pa.Table.from_pylist([row])


def _write(wh: Warehouse, rd: RunData, res: EvidenceResult, c: _Collector, st: dict, *, started, force: bool,
           method: str | None, ids, labels, pred) -> None:
    """One transaction: the evidence rows, detection power, new class statistics, the stage record."""
    rows = [{**c.skipped, **r} for r in c.row_skips]
    table = evidence_table(rd.run_id, ids, labels, pred, c.cols, rows)
    details = {"failures": res.failures, "computed": res.computed, "already": res.already,
               "label_issues_eval": res.label_issues_eval, "label_issues_failures": res.label_issues_failures,
               "eval_rows": res.eval_rows, "skipped": c.skipped, "saliency_method": method}
    with wh.transaction() as con:
        if force:
            replace_rows(con, "evidence", {"run_id": rd.run_id}, table)
        else:
            # Another `lens evidence` may have stored some of these failures since this one
            # started: replace exactly the rows computed here, so two runs never duplicate.
            con.register("_lens_new_evidence", table.select(["example_id"]))
            try:
                con.execute("delete from evidence where run_id = ? and example_id in "
                            "(select example_id from _lens_new_evidence)", [rd.run_id])
            finally:
                con.unregister("_lens_new_evidence")
            insert_arrow(con, "evidence", table)
        if res.detection is not None:
            replace_rows(con, "detection_power", {"run_id": rd.run_id}, _power_table(rd.run_id, res.detection))
        if st["new_stats"] is not None:
            delete_rows(con, "class_image_stats", {"dataset": rd.dataset, "image_side": st["side"]})
            insert_arrow(con, "class_image_stats", st["new_stats"])
        record_stage(con, rd.run_id, "evidence", started_at=started, details=details)


def load_evidence(wh: Warehouse, run_id: str, example_ids=None) -> dict[int, dict[str, Any]]:
    """Evidence rows of a run as {example_id: dict}, JSON columns decoded (:func:`lens.measure.decode_evidence`)."""
    with wh.connect() as con:
        rows = con.execute("select * exclude (saliency_png) from evidence where run_id = ?",
                           [run_id]).to_arrow_table().to_pylist()
    wanted = None if example_ids is None else {int(e) for e in example_ids}
    return {int(r["example_id"]): measure.decode_evidence(r) for r in rows
            if wanted is None or r["example_id"] in wanted}
