"""The parts of ``lens evidence``, one function each: arrays in, evidence columns out.

Every part returns a :class:`Part`: its columns (one value per failure, in the failures'
order), the run-level reasons it could not be computed (``skipped``: {part: reason}) and
per-failure reasons (``row_skips``: {row: reason}). Nothing here touches the warehouse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lens import diagnosis, measure
from lens.stages.evidence.read import EvalSplit, list_matrix

IMAGE_FACTS = ("brightness", "contrast", "saturation", "sharpness", "fg_bg_distance", "edge_share")


@dataclass
class Part:
    cols: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    row_skips: dict[int, str] = field(default_factory=dict)  # row -> reason (under the part's name)
    extra: dict[str, Any] = field(default_factory=dict)  # what later parts or the result need


def progress_bar(iterable, *, desc: str, total: int | None = None, enabled: bool | None = None):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=None if enabled is None else not enabled, leave=False)


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan, np.float32)


NO_PROBS = "no probability vectors stored for this run (only the predicted class and its confidence)"


def model_signals(split: EvalSplit, pos: np.ndarray) -> Part:
    """Margin, entropy, rank and probability of the true class (from the stored probabilities)."""
    n = len(pos)
    if split.probs is None:
        return Part({"margin": _nan(n), "entropy": _nan(n), "true_rank": np.full(n, -1, np.int64)},
                    skipped={"model_signals": NO_PROBS + ": margin, entropy and true-class rank need them"})
    p, labels = split.probs[pos], split.labels[pos]
    return Part({"margin": measure.margin(p).astype(np.float32), "entropy": measure.entropy(p).astype(np.float32),
                 "true_rank": measure.true_rank(p, labels),
                 "true_prob": p[np.arange(n), labels].astype(np.float32)})


def label_quality(split: EvalSplit, pos: np.ndarray) -> Part:
    """cleanlab's label quality and label-issue flag, computed over the WHOLE evaluation split."""
    n = len(pos)
    empty = {"label_quality": _nan(n), "label_issue": np.full(n, None, dtype=object)}
    if split.probs is None:
        return Part(empty, skipped={"label_quality": NO_PROBS + ": cleanlab needs them"})
    try:
        quality, issue = diagnosis.label_signals(split.labels, split.probs)
    except Exception as exc:  # cleanlab refuses degenerate inputs (e.g. a class with no examples)
        return Part(empty, skipped={"label_quality": f"cleanlab could not score this split ({type(exc).__name__}: {exc})"})
    return Part({"label_quality": quality[pos].astype(np.float32), "label_issue": issue[pos].astype(object)},
                extra={"eval_rows": len(split.labels), "issues_eval": int(issue.sum()),
                       "issues_failures": int(issue[pos].sum())})


def neighbours(train_feats: pa.Table, eval_feats: pa.Table, split: EvalSplit, ids: np.ndarray, labels: np.ndarray,
               pred: np.ndarray, k: int, *, ingested: bool) -> Part:
    """The ``k`` nearest training examples of every evaluation example (cosine, lens.neighbours);
    the failures get their ids, labels, similarities and true/pred shares, and ``extra['eval_nl']``
    holds every evaluation example's neighbour labels (rows of -1 without a vector)."""
    from lens.neighbours import nearest_neighbours

    n = len(ids)
    cols: dict[str, Any] = {"neighbour_ids": [None] * n, "neighbour_labels": [None] * n,
                            "neighbour_sims": [None] * n, "neighbour_true_share": _nan(n),
                            "neighbour_pred_share": _nan(n)}
    if train_feats.num_rows == 0:
        why = "no training features stored for this run"
        if ingested:
            why += (" (it was ingested: Lens has no model to compute them with; bring the model's own with "
                    "lens ingest --features)")
        return Part(cols, skipped={"neighbours": why})
    if eval_feats.num_rows == 0:
        return Part(cols, skipped={"neighbours": "no feature vectors stored for the evaluation examples"})
    tids = train_feats.column("example_id").to_numpy()
    tlab = train_feats.column("label").to_numpy()
    eids = eval_feats.column("example_id").to_numpy()
    idx, sims = nearest_neighbours(list_matrix(eval_feats.column("vector")),
                                   list_matrix(train_feats.column("vector")), k)
    all_nl = tlab[idx]
    epos = {int(e): i for i, e in enumerate(eids)}
    eval_nl = np.full((len(split.ids), all_nl.shape[1]), -1, dtype=np.int64)
    for i, e in enumerate(split.ids):
        j = epos.get(int(e))
        if j is not None:
            eval_nl[i] = all_nl[j]
    part = Part(cols, extra={"eval_nl": eval_nl})
    for i, e in enumerate(ids):
        j = epos.get(int(e))
        if j is None:
            part.row_skips[i] = "no feature vector stored for this example"
            continue
        nl = all_nl[j]
        cols["neighbour_ids"][i] = tids[idx[j]].tolist()
        cols["neighbour_labels"][i] = nl.tolist()
        cols["neighbour_sims"][i] = sims[j].tolist()
        cols["neighbour_true_share"][i] = float((nl == labels[i]).mean())
        cols["neighbour_pred_share"][i] = float((nl == pred[i]).mean())
    return part


def image_facts(images: list[np.ndarray | None], *, progress: bool | None = None) -> Part:
    """:func:`lens.measure.image_facts` of the stored failure images, batched by image shape;
    ``extra['by_shape']`` maps each shape to its rows."""
    n = len(images)
    cols: dict[str, Any] = {key: _nan(n) for key in IMAGE_FACTS}
    for key in ("border_colour", "centre_colour", "border_colours", "centre_colours"):
        cols[key] = [None] * n
    by_shape: dict[tuple, list[int]] = {}
    part = Part(cols, extra={"by_shape": by_shape})
    for i, im in enumerate(images):
        if im is None:
            part.row_skips[i] = "no image stored for this failure"
        else:
            by_shape.setdefault(im.shape, []).append(i)
    if not by_shape:
        part.skipped["image_facts"] = ("no failure has a stored image (ingest with an 'image' or 'index' column to "
                                       "add them)")
    for _shape, members in progress_bar(list(by_shape.items()), desc="image facts", enabled=progress):
        f = measure.image_facts(np.stack([images[i] for i in members]))
        for j, i in enumerate(members):
            for key in IMAGE_FACTS:
                cols[key][i] = f[key][j]
            cols["border_colour"][i] = f["border_colour"][j]
            cols["centre_colour"][i] = f["centre_colour"][j]
            cols["border_colours"][i] = json.dumps(measure.shares_dict(f["border_shares"][j]))
            cols["centre_colours"][i] = json.dumps(measure.shares_dict(f["centre_shares"][j]))
    return part


def saliency(checkpoint, images: list[np.ndarray | None], pred: np.ndarray, *, method: str, device: str,
             batch_size: int, progress: bool | None = None) -> Part:
    """Saliency of the predicted class (lens.saliency) from the run's checkpoint: the centre share
    and an overlay PNG per failure with an image."""
    import torch
    from PIL import Image

    from lens.models import load_checkpoint, normalize
    from lens.saliency import centre_share, overlay_png, saliency_maps

    n = len(images)
    cols: dict[str, Any] = {"saliency_centre_share": _nan(n), "saliency_png": [None] * n,
                            "saliency_method": [None] * n}
    model, meta = load_checkpoint(checkpoint, device=device)
    size = int(meta.get("image_size") or 32)
    present = [i for i, im in enumerate(images) if im is not None]
    for s in progress_bar(range(0, len(present), batch_size), desc="saliency",
                          total=-(-len(present) // batch_size), enabled=progress):
        members = present[s : s + batch_size]
        batch = np.stack([
            images[i] if images[i].shape[:2] == (size, size)
            else np.asarray(Image.fromarray(images[i]).resize((size, size), Image.BILINEAR))
            for i in members
        ])
        x = normalize(batch, meta["mean"], meta["std"]).to(device)
        with torch.enable_grad():
            maps = saliency_maps(model, x, pred[members], method=method, batch_size=batch_size)
        cs = centre_share(maps)
        for j, i in enumerate(members):
            cols["saliency_centre_share"][i] = cs[j]
            cols["saliency_method"][i] = method
            cols["saliency_png"][i] = overlay_png(batch[j], maps[j])
    return Part(cols)


def diagnose(split: EvalSplit, pos: np.ndarray, eval_nl: np.ndarray | None, brightness: np.ndarray,
             edge_share: np.ndarray, num_classes: int) -> Part:
    """label_error_score, ambiguity_score and their JSON records (lens.diagnosis) for the failures
    at ``pos``; ``extra['power']`` is the run's detection power."""
    labels, pred = split.labels[pos], split.pred[pos]
    probs = None if split.probs is None else split.probs[pos]
    nl = None if eval_nl is None else eval_nl[pos]
    le_sig = diagnosis.label_error_signals(labels=labels, probs=probs, confidence=split.confidence[pos],
                                           neighbour_labels=nl)
    le, le_model = diagnosis.label_error_score(le_sig)
    class_error, pair = diagnosis.confusion_rates(split.labels, split.pred, num_classes)
    am_sig = diagnosis.ambiguity_signals(labels=labels, pred=pred, class_error=class_error, pair=pair, probs=probs,
                                         brightness=brightness, edge_share=edge_share)
    am, am_model = diagnosis.ambiguity_score(am_sig)
    records = [json.dumps({
        "label_error": diagnosis.explain(diagnosis.LABEL_ERROR_MODELS, le_model[i], {k: v[i] for k, v in le_sig.items()}),
        "ambiguity": diagnosis.explain(diagnosis.AMBIGUITY_MODELS, am_model[i], {k: v[i] for k, v in am_sig.items()}),
        "version": diagnosis.RULES_VERSION,
    }) for i in range(len(pos))]
    power = diagnosis.detection_power(labels=split.labels, probs=split.probs, confidence=split.confidence,
                                      pred=split.pred, neighbour_labels=eval_nl, num_classes=num_classes)
    part = Part({"label_error_score": le.astype(np.float32), "ambiguity_score": am.astype(np.float32),
                 "diagnosis": records, "diagnosis_version": [diagnosis.RULES_VERSION] * len(pos)},
                extra={"power": power})
    if power is None:
        part.skipped["detection_power"] = "too few evaluation examples or classes to plant flips among"
    return part
