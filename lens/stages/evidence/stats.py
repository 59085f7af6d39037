"""Class statistics of the image facts (``class_image_stats``) and the z-score part of ``lens evidence``.

The statistics of a dataset's training images are stored per (dataset, image side, class,
fact) and reused by every later run on the same source; :func:`z_scores` compares each
failure with the training images of its true and of its predicted class.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from lens import measure
from lens.errors import LensError
from lens.stages.evidence.parts import Part, progress_bar
from lens.warehouse import utcnow


def stats_from_rows(df, side: int, num_classes: int) -> dict[str, np.ndarray] | None:
    """Rebuild :func:`lens.measure.class_fact_stats` output from class_image_stats rows."""
    df = df[df["image_side"] == side]
    if df.empty:
        return None
    out: dict[str, np.ndarray] = {"n": np.zeros(num_classes, dtype=np.int64)}
    for fact in measure.NUMERIC_FACTS:
        out[f"{fact}_mean"] = np.full(num_classes, np.nan)
        out[f"{fact}_std"] = np.full(num_classes, np.nan)
    for region in ("border", "centre"):
        out[f"{region}_colour_share"] = np.full((num_classes, len(measure.COLOUR_TERMS)), np.nan)
    term = {t: i for i, t in enumerate(measure.COLOUR_TERMS)}
    for row in df.itertuples(index=False):
        c = int(row.class_id)
        if not 0 <= c < num_classes:
            continue
        out["n"][c] = int(row.n)
        if "=" in row.fact:
            region, t = row.fact.split("=", 1)
            out[f"{region.removesuffix('_colour')}_colour_share"][c, term[t]] = row.mean
        else:
            out[f"{row.fact}_mean"][c] = row.mean
            out[f"{row.fact}_std"][c] = row.std
    return out


def stats_rows(dataset: str, side: int, stats: dict[str, np.ndarray]) -> pa.Table:
    """class_image_stats rows of :func:`lens.measure.class_fact_stats` output."""
    rows: dict[str, list] = {k: [] for k in ("dataset", "image_side", "class_id", "fact", "n", "mean", "std")}

    def add(c, fact, mean, std):
        for key, value in (("dataset", dataset), ("image_side", side), ("class_id", c), ("fact", fact),
                           ("n", int(stats["n"][c])),
                           ("mean", None if mean is None or np.isnan(mean) else float(mean)),
                           ("std", None if std is None or np.isnan(std) else float(std))):
            rows[key].append(value)

    for c in range(len(stats["n"])):
        for fact in measure.NUMERIC_FACTS:
            add(c, fact, stats[f"{fact}_mean"][c], stats[f"{fact}_std"][c])
        for region in ("border", "centre"):
            for i, t in enumerate(measure.COLOUR_TERMS):
                add(c, f"{region}_colour={t}", stats[f"{region}_colour_share"][c, i], None)
    types = {"dataset": pa.string(), "image_side": pa.int32(), "class_id": pa.int32(), "fact": pa.string(),
             "n": pa.int32(), "mean": pa.float64(), "std": pa.float64()}
    table = pa.table({k: pa.array(v, types[k]) for k, v in rows.items()})
    return table.append_column("computed_at", pa.array([utcnow()] * table.num_rows, pa.timestamp("us")))


def compute_stats(dataset: str, side: int, names: list[str], limit: int | None, progress) -> dict[str, np.ndarray]:
    """Measure the dataset's training images (stratified ``limit``, seed 0) at ``side`` x ``side``."""
    from lens.datasets import open_source

    source = open_source(dataset)
    if "train" not in source.splits():
        raise LensError(f"{dataset} has no 'train' split (found: {', '.join(source.splits())})")
    if list(source.class_names) != list(names):
        raise LensError(f"{dataset}'s class names {source.class_names[:4]}... differ from the run's {names[:4]}...")
    split = source.load("train", limit=limit, seed=0, size=side)
    parts = []
    step = 2048
    for s in progress_bar(range(0, len(split), step), desc="class stats", total=-(-len(split) // step),
                          enabled=progress):
        parts.append(measure.image_facts(split.images[s : s + step]))
    facts = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return measure.class_fact_stats(facts, split.labels, len(names))


def class_statistics(run, facts: Part, *, force: bool, stats_limit: int | None, progress) -> Part:
    """The class statistics to compare with (stored, or computed and returned in
    ``extra['new_stats']`` for storing), at the most common square image side."""
    by_shape = facts.extra["by_shape"]
    part = Part(extra={"stats": None, "side": None, "new_stats": None, "source": None})
    if not by_shape:
        return part
    side = max(by_shape, key=lambda s: len(by_shape[s]))[0]
    part.extra["side"] = side
    if not run.dataset:
        part.skipped["z_scores"] = ("the run names no dataset source, so there are no training images to compare "
                                    "with (pass --data SOURCE)")
        return part
    stats = None
    if run.stored_stats is not None and not force:
        stats = stats_from_rows(run.stored_stats, side, run.num_classes)
        part.extra["source"] = "stored" if stats is not None else None
    if stats is None:
        try:
            stats = compute_stats(run.dataset, side, run.names, stats_limit, progress)
        except LensError as exc:
            part.skipped["z_scores"] = f"training images of {run.dataset} unavailable: {exc}"
            return part
        part.extra.update(new_stats=stats_rows(run.dataset, side, stats), source="computed")
    if len({shape[0] for shape in by_shape if shape[0] == shape[1]}) > 1:
        part.skipped["z_scores_other_sizes"] = f"class statistics are at {side}x{side}; other image sizes got none"
    part.extra["stats"] = stats
    return part


def z_scores(stats: dict[str, np.ndarray] | None, side: int | None, images, labels: np.ndarray, pred: np.ndarray,
             facts: dict[str, Any]) -> Part:
    """z-scores of each image fact vs the true and the predicted class's training images, and how
    common the image's dominant border / centre colours are in those classes (JSON columns)."""
    n = len(labels)
    cols: dict[str, Any] = {k: [None] * n for k in ("z_true", "z_pred", "colour_share_true", "colour_share_pred")}
    if stats is None:
        return Part(cols)
    term = {t: i for i, t in enumerate(measure.COLOUR_TERMS)}
    zs = {which: {fact: measure.z_scores(fact, facts[fact], stats[f"{fact}_mean"][cls], stats[f"{fact}_std"][cls])
                  for fact in measure.NUMERIC_FACTS}
          for which, cls in (("true", labels), ("pred", pred))}
    for i in range(n):
        if images[i] is None or images[i].shape[:2] != (side, side):
            continue
        for which, cls in (("true", labels), ("pred", pred)):
            cols[f"z_{which}"][i] = json.dumps(
                {f: round(float(zs[which][f][i]), 2) for f in measure.NUMERIC_FACTS if np.isfinite(zs[which][f][i])})
            shares = {}
            for region in ("border", "centre"):
                v = stats[f"{region}_colour_share"][int(cls[i]), term[facts[f"{region}_colour"][i]]]
                if np.isfinite(v):
                    shares[region] = round(float(v), 3)
            cols[f"colour_share_{which}"][i] = json.dumps(shares)
    return Part(cols)
