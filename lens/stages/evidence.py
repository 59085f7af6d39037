"""``lens evidence``: measured facts for every failure of a run.

For each failure (not only the sample) the stage computes and stores one ``evidence`` row:

model signals
    confidence, margin (top-1 minus top-2), entropy, probability and rank of the true class
    (from ``predictions.probs``); label quality (cleanlab ``get_label_quality_scores``,
    self-confidence) and the label-issue flag (cleanlab ``find_label_issues``), both computed
    over the WHOLE evaluation split's stored out-of-sample probabilities.
neighbours
    the ``k`` (10) nearest training examples by cosine in the model's feature space
    (``features`` rows of split 'train'; chunked matrix products), their ids, labels and
    similarities, and the shares carrying the true and the predicted label.
image facts
    :func:`lens.measure.image_facts` of ``failures.image_png``: brightness, contrast,
    saturation, sharpness, edge share, border/centre colour (terms and shares), centre-border
    colour distance; z-scores against the training images of the true and of the predicted
    class, and how common the image's dominant colours are in those classes.
saliency
    :mod:`lens.saliency` (captum Grad-CAM on layer1 by default) of the predicted class from
    the run's checkpoint: the share in the centre and a heatmap overlay PNG.

Class statistics of the facts come from the run's dataset source
(``lens.datasets.open_source(runs.dataset).load('train', limit=stats_limit)``), are stored
in ``class_image_stats`` keyed by (dataset, image side) and reused by later runs on the
same source (``force`` recomputes them).

What cannot be computed is skipped, never guessed: each row's ``skipped`` column holds
JSON ``{part: reason}`` and :class:`EvidenceResult` carries the run-level reasons (an
ingested run has no checkpoint and usually no features, so saliency and neighbours are
skipped; without probability vectors, margin/entropy/rank and label quality are).

Everything is read in one short connection, computed with none open, and written in one
transaction: with ``force`` the run's evidence rows are replaced; otherwise failures that
already have evidence are left alone and only the missing ones are computed.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lens import diagnosis, measure
from lens.errors import LensError
from lens.warehouse import Warehouse, class_names as run_class_names, delete_rows, insert_arrow, record_stage
from lens.warehouse import replace_rows, require_run, utcnow

DEFAULT_K = 10
#: training images per dataset measured for the class statistics (stratified, seed 0)
DEFAULT_STATS_LIMIT = 10_000
NEIGHBOUR_CHUNK = 512


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


def _progress(iterable, *, desc: str, total: int | None = None, enabled: bool | None = None):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=None if enabled is None else not enabled, leave=False)


def _list_matrix(col: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A list<float> Arrow column of equal-length rows as a 2-D numpy array."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    if flat.size % n:
        raise LensError("stored vectors have different lengths; rerun the stage that wrote them")
    return flat.reshape(n, flat.size // n)


def decode_pngs(blobs: list[bytes | None]) -> list[np.ndarray | None]:
    """PNG bytes -> uint8 RGB arrays (H, W, 3); None stays None."""
    from PIL import Image

    out: list[np.ndarray | None] = []
    for b in blobs:
        if b is None:
            out.append(None)
            continue
        with Image.open(io.BytesIO(b)) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return out


def nearest_neighbours(queries: np.ndarray, train: np.ndarray, k: int, *, chunk: int = NEIGHBOUR_CHUNK,
                       progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` training rows by cosine similarity for each query.

    Parameters
    ----------
    queries : ndarray, shape (Q, D)
    train : ndarray, shape (T, D)
    k : int

    Returns
    -------
    idx : ndarray of int64, shape (Q, min(k, T)), positions in ``train``, most similar first
    sims : ndarray of float32, shape (Q, min(k, T))
    """
    def unit(a):
        a = np.asarray(a, dtype=np.float32)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    q, t = unit(queries), unit(train)
    k = min(k, len(t))
    idx = np.zeros((len(q), k), dtype=np.int64)
    sims = np.zeros((len(q), k), dtype=np.float32)
    for s in _progress(range(0, len(q), chunk), desc="neighbours", total=-(-len(q) // chunk), enabled=progress):
        sim = q[s : s + chunk] @ t.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        psim = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-psim, axis=1, kind="stable")
        idx[s : s + chunk] = np.take_along_axis(part, order, axis=1)
        sims[s : s + chunk] = np.take_along_axis(psim, order, axis=1)
    return idx, sims


def label_signals(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab label quality (self-confidence) and label-issue flags over a whole split.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
    probs : ndarray of float, shape (N, C), out-of-sample probabilities

    Returns
    -------
    quality : ndarray of float64, shape (N,)
    issue : ndarray of bool, shape (N,)
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    quality = get_label_quality_scores(labels, probs)
    issue = find_label_issues(labels, probs, n_jobs=1)
    return np.asarray(quality, dtype=np.float64), np.asarray(issue, dtype=bool)


# -- reading --------------------------------------------------------------------------------------


def _read(wh: Warehouse, run_id: str | None, force: bool, data: str | None):
    with wh.connect() as con:
        run_id = require_run(con, run_id)
        run = con.execute(
            "select kind, dataset, checkpoint_path, num_classes, config from runs where run_id = ?", [run_id]
        ).fetchone()
        names = run_class_names(con, run_id)
        failures = con.execute(
            "select example_id, label, pred, confidence, true_prob, image_png from failures"
            " where run_id = ? order by example_id",
            [run_id],
        ).to_arrow_table()
        have = set()
        if not force:
            # rows scored by older diagnosis rules count as missing: a rerun brings them up to date
            have = {r[0] for r in con.execute(
                "select example_id from evidence where run_id = ? and diagnosis_version = ?",
                [run_id, diagnosis.RULES_VERSION]).fetchall()}
        preds = con.execute(
            "select example_id, label, pred, confidence, probs from predictions where run_id = ? order by example_id",
            [run_id],
        ).to_arrow_table()
        # every evaluation example's vector: failures get neighbours, and detection power plants
        # flips among all of them
        eval_feats = con.execute(
            "select example_id, vector from features where run_id = ? and split = 'eval' order by example_id",
            [run_id],
        ).to_arrow_table()
        train_feats = con.execute(
            "select example_id, label, vector from features where run_id = ? and split = 'train' order by example_id",
            [run_id],
        ).to_arrow_table()
        dataset = data or run[1]
        stats = None
        if dataset:
            stats = con.execute(
                "select image_side, class_id, fact, n, mean, std from class_image_stats where dataset = ?", [dataset]
            ).df()
    return run_id, run, names, failures, have, preds, eval_feats, train_feats, dataset, stats


# -- class statistics -----------------------------------------------------------------------------


def _stats_from_rows(df, side: int, num_classes: int) -> dict[str, np.ndarray] | None:
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


def _stats_rows(dataset: str, side: int, stats: dict[str, np.ndarray]) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in ("dataset", "image_side", "class_id", "fact", "n", "mean", "std")}
    now = utcnow()

    def add(c, fact, mean, std):
        rows["dataset"].append(dataset)
        rows["image_side"].append(side)
        rows["class_id"].append(c)
        rows["fact"].append(fact)
        rows["n"].append(int(stats["n"][c]))
        rows["mean"].append(None if mean is None or np.isnan(mean) else float(mean))
        rows["std"].append(None if std is None or np.isnan(std) else float(std))

    for c in range(len(stats["n"])):
        for fact in measure.NUMERIC_FACTS:
            add(c, fact, stats[f"{fact}_mean"][c], stats[f"{fact}_std"][c])
        for region in ("border", "centre"):
            for i, t in enumerate(measure.COLOUR_TERMS):
                add(c, f"{region}_colour={t}", stats[f"{region}_colour_share"][c, i], None)
    table = pa.table(
        {
            "dataset": pa.array(rows["dataset"], pa.string()),
            "image_side": pa.array(rows["image_side"], pa.int32()),
            "class_id": pa.array(rows["class_id"], pa.int32()),
            "fact": pa.array(rows["fact"], pa.string()),
            "n": pa.array(rows["n"], pa.int32()),
            "mean": pa.array(rows["mean"], pa.float64()),
            "std": pa.array(rows["std"], pa.float64()),
        }
    )
    return table.append_column("computed_at", pa.array([now] * table.num_rows, pa.timestamp("us")))


def _compute_stats(dataset: str, side: int, names: list[str], limit: int | None, progress) -> dict[str, np.ndarray]:
    from lens.datasets import open_source

    source = open_source(dataset)
    if "train" not in source.splits():
        raise LensError(f"{dataset} has no 'train' split (found: {', '.join(source.splits())})")
    if list(source.class_names) != list(names):
        raise LensError(f"{dataset}'s class names {source.class_names[:4]}... differ from the run's {names[:4]}...")
    split = source.load("train", limit=limit, seed=0, size=side)
    parts = []
    step = 2048
    for s in _progress(range(0, len(split), step), desc="class stats", total=-(-len(split) // step), enabled=progress):
        parts.append(measure.image_facts(split.images[s : s + step]))
    facts = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return measure.class_fact_stats(facts, split.labels, len(names))


# -- the stage ------------------------------------------------------------------------------------


def run(
    wh: Warehouse,
    *,
    run_id: str | None = None,
    force: bool = False,
    k: int = DEFAULT_K,
    saliency: bool = True,
    saliency_method: str | None = None,
    stats_limit: int | None = DEFAULT_STATS_LIMIT,
    data: str | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    progress: bool | None = None,
) -> EvidenceResult:
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

    saliency_method = saliency_method or DEFAULT_METHOD
    started = utcnow()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    run_id, run, names, failures, have, preds, eval_feats, train_feats, dataset, stored_stats = _read(
        wh, run_id, force, data
    )
    kind, _, checkpoint_path, num_classes, _ = run
    timings["read"] = time.perf_counter() - t0
    ids_all = failures.column("example_id").to_numpy()
    keep = np.array([int(e) not in have for e in ids_all], dtype=bool)
    res = EvidenceResult(run_id=run_id, failures=len(ids_all), computed=int(keep.sum()), already=int((~keep).sum()))
    if not keep.any():
        res.timings = timings
        return res
    fail = failures.filter(pa.array(keep))
    ids = fail.column("example_id").to_numpy().astype(np.int64)
    labels = fail.column("label").to_numpy().astype(np.int64)
    pred = fail.column("pred").to_numpy().astype(np.int64)
    n = len(ids)
    skipped: dict[str, str] = {}
    row_skips: list[dict[str, str]] = [{} for _ in range(n)]
    cols: dict[str, Any] = {
        "confidence": fail.column("confidence").to_numpy(zero_copy_only=False).astype(np.float32),
        "true_prob": np.array([np.nan if v is None else v for v in fail.column("true_prob").to_pylist()], np.float32),
    }

    # -- model signals and label quality ------------------------------------------------------
    t0 = time.perf_counter()
    for key in ("margin", "entropy", "label_quality"):
        cols[key] = np.full(n, np.nan, np.float32)
    cols["true_rank"] = np.full(n, -1, np.int64)
    cols["label_issue"] = np.full(n, None, dtype=object)
    probs_col = preds.column("probs")
    if preds.num_rows and probs_col.null_count == 0:
        probs_all = _list_matrix(probs_col, np.float64)
        labels_all = preds.column("label").to_numpy().astype(np.int64)
        pos_of = {int(e): i for i, e in enumerate(preds.column("example_id").to_numpy())}
        pos = np.array([pos_of[int(e)] for e in ids], dtype=np.int64)
        p = probs_all[pos]
        cols["margin"] = measure.margin(p).astype(np.float32)
        cols["entropy"] = measure.entropy(p).astype(np.float32)
        cols["true_rank"] = measure.true_rank(p, labels)
        cols["true_prob"] = p[np.arange(n), labels].astype(np.float32)
        try:
            quality, issue = label_signals(labels_all, probs_all)
        except Exception as exc:  # cleanlab refuses degenerate inputs (e.g. a class with no examples)
            skipped["label_quality"] = f"cleanlab could not score this split ({type(exc).__name__}: {exc})"
        else:
            cols["label_quality"] = quality[pos].astype(np.float32)
            cols["label_issue"] = issue[pos].astype(object)
            res.eval_rows = len(labels_all)
            res.label_issues_eval = int(issue.sum())
            res.label_issues_failures = int(issue[pos].sum())
    else:
        reason = "no probability vectors stored for this run (only the predicted class and its confidence)"
        skipped["model_signals"] = reason + ": margin, entropy and true-class rank need them"
        skipped["label_quality"] = reason + ": cleanlab needs them"
    timings["model_signals"] = time.perf_counter() - t0

    # -- neighbours ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    nb_ids = [None] * n
    nb_labels = [None] * n
    nb_sims = [None] * n
    eval_nl = None  # (N_eval, k) neighbour labels of every evaluation example in predictions order
    cols["neighbour_true_share"] = np.full(n, np.nan, np.float32)
    cols["neighbour_pred_share"] = np.full(n, np.nan, np.float32)
    if train_feats.num_rows == 0:
        skipped["neighbours"] = (
            "no training features stored for this run"
            + (" (it was ingested: Lens has no model to compute them with)" if kind == "ingest" else "")
        )
    elif eval_feats.num_rows == 0:
        skipped["neighbours"] = "no feature vectors stored for the evaluation examples"
    else:
        tvec = _list_matrix(train_feats.column("vector"))
        tids = train_feats.column("example_id").to_numpy()
        tlab = train_feats.column("label").to_numpy()
        evec = _list_matrix(eval_feats.column("vector"))
        eids = eval_feats.column("example_id").to_numpy()
        # neighbours of every evaluation example (detection power plants flips among them all)
        idx, sims = nearest_neighbours(evec, tvec, k, progress=progress)
        all_nl = tlab[idx]
        epos = {int(e): i for i, e in enumerate(eids)}
        eval_nl = np.full((preds.num_rows, all_nl.shape[1]), -1, dtype=np.int64)
        for i, e in enumerate(preds.column("example_id").to_numpy()):
            j = epos.get(int(e))
            if j is not None:
                eval_nl[i] = all_nl[j]
        rows = np.array([epos.get(int(e), -1) for e in ids])
        for i in np.flatnonzero(rows >= 0):
            j = rows[i]
            nl = all_nl[j]
            nb_ids[i] = tids[idx[j]].tolist()
            nb_labels[i] = nl.tolist()
            nb_sims[i] = sims[j].tolist()
            cols["neighbour_true_share"][i] = float((nl == labels[i]).mean())
            cols["neighbour_pred_share"][i] = float((nl == pred[i]).mean())
        for i in np.flatnonzero(rows < 0):
            row_skips[i]["neighbours"] = "no feature vector stored for this example"
    timings["neighbours"] = time.perf_counter() - t0

    # -- image facts ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    images = decode_pngs(fail.column("image_png").to_pylist())
    for key in ("brightness", "contrast", "saturation", "sharpness", "fg_bg_distance", "edge_share"):
        cols[key] = np.full(n, np.nan, np.float32)
    for key in ("border_colour", "centre_colour", "border_colours", "centre_colours"):
        cols[key] = [None] * n
    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        if im is None:
            row_skips[i]["image_facts"] = "no image stored for this failure"
        else:
            by_shape.setdefault(im.shape, []).append(i)
    if not by_shape:
        skipped["image_facts"] = "no failure has a stored image (ingest with an 'image' or 'index' column to add them)"
    for shape, members in _progress(list(by_shape.items()), desc="image facts", enabled=progress):
        f = measure.image_facts(np.stack([images[i] for i in members]))
        for j, i in enumerate(members):
            for key in ("brightness", "contrast", "saturation", "sharpness", "fg_bg_distance", "edge_share"):
                cols[key][i] = f[key][j]
            cols["border_colour"][i] = f["border_colour"][j]
            cols["centre_colour"][i] = f["centre_colour"][j]
            cols["border_colours"][i] = json.dumps(measure.shares_dict(f["border_shares"][j]))
            cols["centre_colours"][i] = json.dumps(measure.shares_dict(f["centre_shares"][j]))
    timings["image_facts"] = time.perf_counter() - t0

    # -- class statistics and z-scores ---------------------------------------------------------
    t0 = time.perf_counter()
    z_true: list[str | None] = [None] * n
    z_pred: list[str | None] = [None] * n
    share_true: list[str | None] = [None] * n
    share_pred: list[str | None] = [None] * n
    new_stats: pa.Table | None = None
    sides = {shape[0] for shape in by_shape if shape[0] == shape[1]}
    side = max(by_shape, key=lambda s: len(by_shape[s]))[0] if by_shape else None
    stats = None
    if not by_shape:
        pass
    elif not dataset:
        skipped["z_scores"] = (
            "the run names no dataset source, so there are no training images to compare with"
            " (pass --data SOURCE)"
        )
    else:
        if stored_stats is not None and not force:
            stats = _stats_from_rows(stored_stats, side, num_classes)
            res.stats_source = "stored" if stats is not None else None
        if stats is None:
            try:
                stats = _compute_stats(dataset, side, names, stats_limit, progress)
            except LensError as exc:
                skipped["z_scores"] = f"training images of {dataset} unavailable: {exc}"
            else:
                new_stats = _stats_rows(dataset, side, stats)
                res.stats_source = "computed"
        if len(sides) > 1 and stats is not None:
            skipped["z_scores_other_sizes"] = f"class statistics are at {side}x{side}; other image sizes got none"
    if stats is not None:
        term = {t: i for i, t in enumerate(measure.COLOUR_TERMS)}
        ok = np.array([images[i] is not None and images[i].shape[:2] == (side, side) for i in range(n)])
        zs = {}
        for which, cls in (("true", labels), ("pred", pred)):
            zs[which] = {
                fact: measure.z_scores(fact, cols[fact], stats[f"{fact}_mean"][cls], stats[f"{fact}_std"][cls])
                for fact in measure.NUMERIC_FACTS
            }
        for i in np.flatnonzero(ok):
            for which, cls, zlist, slist in (("true", labels, z_true, share_true), ("pred", pred, z_pred, share_pred)):
                zlist[i] = json.dumps(
                    {f: round(float(zs[which][f][i]), 2) for f in measure.NUMERIC_FACTS if np.isfinite(zs[which][f][i])}
                )
                c = int(cls[i])
                slist[i] = json.dumps(
                    {
                        region: round(float(stats[f"{region}_colour_share"][c, term[cols[f"{region}_colour"][i]]]), 3)
                        for region in ("border", "centre")
                        if np.isfinite(stats[f"{region}_colour_share"][c, term[cols[f"{region}_colour"][i]]])
                    }
                )
    timings["class_stats"] = time.perf_counter() - t0

    # -- diagnosis scores and detection power -------------------------------------------------
    t0 = time.perf_counter()
    cols["label_error_score"], cols["ambiguity_score"], diag_json, power = _diagnose(
        preds, ids, eval_nl, cols["brightness"], cols["edge_share"], num_classes, skipped)
    timings["diagnosis"] = time.perf_counter() - t0
    res.detection = power
    res.tagged = {t: int(c) for t, c in zip(*np.unique(diagnosis.tags(cols["label_error_score"],
                                                                          cols["ambiguity_score"]).astype(str),
                                                           return_counts=True))}

    # -- saliency ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    sal_share = np.full(n, np.nan, np.float32)
    sal_png: list[bytes | None] = [None] * n
    sal_method: list[str | None] = [None] * n
    if not saliency:
        skipped["saliency"] = "turned off (--no-saliency)"
    elif not checkpoint_path:
        skipped["saliency"] = "the run has no model checkpoint" + (
            " (it was ingested: Lens only has its predictions)" if kind == "ingest" else ""
        )
    elif not by_shape:
        skipped["saliency"] = "no failure images stored"
    else:
        ckpt_file = wh.artifact_path(checkpoint_path)  # relative to the warehouse's folder
        if not ckpt_file.is_file():
            skipped["saliency"] = f"checkpoint {ckpt_file} not found (was the run trained on another machine?)"
        else:
            _saliency(ckpt_file, images, pred, saliency_method, device, batch_size, progress,
                      sal_share, sal_png, sal_method)
    timings["saliency"] = time.perf_counter() - t0

    # -- write ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    for i in range(n):
        row_skips[i] = {**skipped, **row_skips[i]}
    table = _evidence_table(run_id, ids, labels, pred, cols, nb_ids, nb_labels, nb_sims, z_true, z_pred,
                            share_true, share_pred, sal_method, sal_share, sal_png, row_skips, diag_json)
    details = {
        "failures": res.failures,
        "computed": res.computed,
        "already": res.already,
        "label_issues_eval": res.label_issues_eval,
        "label_issues_failures": res.label_issues_failures,
        "eval_rows": res.eval_rows,
        "skipped": skipped,
        "saliency_method": saliency_method if any(sal_method) else None,
    }
    with wh.transaction() as con:
        if force:
            replace_rows(con, "evidence", {"run_id": run_id}, table)
        else:
            # Another `lens evidence` may have stored some of these failures since this one
            # started: replace exactly the rows computed here, so two runs never duplicate.
            con.register("_lens_new_evidence", table.select(["example_id"]))
            try:
                con.execute(
                    "delete from evidence where run_id = ? and example_id in "
                    "(select example_id from _lens_new_evidence)",
                    [run_id],
                )
            finally:
                con.unregister("_lens_new_evidence")
            insert_arrow(con, "evidence", table)
        if power is not None:
            replace_rows(con, "detection_power", {"run_id": run_id}, _power_table(run_id, power))
        if new_stats is not None:
            delete_rows(con, "class_image_stats", {"dataset": dataset, "image_side": side})
            insert_arrow(con, "class_image_stats", new_stats)
        record_stage(con, run_id, "evidence", started_at=started, details=details)
    timings["write"] = time.perf_counter() - t0
    res.skipped = skipped
    res.timings = timings
    return res


def _pred_arrays(preds: pa.Table):
    """(example ids, labels, preds, probs or None, confidence) of every evaluation example."""
    eids = preds.column("example_id").to_numpy()
    labels = preds.column("label").to_numpy().astype(np.int64)
    pred = preds.column("pred").to_numpy().astype(np.int64)
    probs_col = preds.column("probs")
    probs = _list_matrix(probs_col, np.float64) if preds.num_rows and probs_col.null_count == 0 else None
    conf = np.array([np.nan if v is None else v for v in preds.column("confidence").to_pylist()], np.float64)
    return eids, labels, pred, probs, conf


def _diagnose(preds: pa.Table, ids: np.ndarray, eval_nl: np.ndarray | None, brightness: np.ndarray,
              edge_share: np.ndarray, num_classes: int, skipped: dict[str, str]):
    """label_error_score, ambiguity_score and their JSON records for the failures ``ids``, and the
    run's detection power (:mod:`lens.diagnosis`)."""
    eids, labels_all, pred_all, probs_all, conf_all = _pred_arrays(preds)
    pos_of = {int(e): i for i, e in enumerate(eids)}
    pos = np.array([pos_of[int(e)] for e in ids], dtype=np.int64)
    labels, pred = labels_all[pos], pred_all[pos]
    probs = None if probs_all is None else probs_all[pos]
    nl = None if eval_nl is None else eval_nl[pos]
    le_sig = diagnosis.label_error_signals(labels=labels, probs=probs, confidence=conf_all[pos], neighbour_labels=nl)
    le, le_model = diagnosis.label_error_score(le_sig)
    class_error, pair = diagnosis.confusion_rates(labels_all, pred_all, num_classes)
    am_sig = diagnosis.ambiguity_signals(labels=labels, pred=pred, class_error=class_error, pair=pair, probs=probs,
                                         brightness=brightness, edge_share=edge_share)
    am, am_model = diagnosis.ambiguity_score(am_sig)
    records = []
    for i in range(len(ids)):
        records.append(json.dumps({
            "label_error": diagnosis.explain(diagnosis.LABEL_ERROR_MODELS, le_model[i],
                                             {k: v[i] for k, v in le_sig.items()}),
            "ambiguity": diagnosis.explain(diagnosis.AMBIGUITY_MODELS, am_model[i],
                                           {k: v[i] for k, v in am_sig.items()}),
            "version": diagnosis.RULES_VERSION,
        }))
    power = diagnosis.detection_power(labels=labels_all, probs=probs_all, confidence=conf_all, pred=pred_all,
                                      neighbour_labels=eval_nl, num_classes=num_classes)
    if power is None:
        skipped["detection_power"] = "too few evaluation examples or classes to plant flips among"
    return le.astype(np.float32), am.astype(np.float32), records, power


def _power_table(run_id: str, power: "diagnosis.DetectionPower") -> pa.Table:
    row = {k: getattr(power, k) for k in (
        "signals", "eval_examples", "flips_per_trial", "trials", "threshold", "recall", "recall_low", "recall_high",
        "precision", "precision_low", "precision_high", "average_precision", "candidates", "verdict", "message")}
    row.update(run_id=run_id, diagnosis_version=diagnosis.RULES_VERSION, computed_at=utcnow())
    return pa.Table.from_pylist([row])


def _saliency(checkpoint_path, images, pred, method, device, batch_size, progress, share, pngs, methods) -> None:
    import torch
    from PIL import Image

    from lens.models import load_checkpoint, normalize
    from lens.saliency import centre_share, overlay_png, saliency_maps

    model, meta = load_checkpoint(checkpoint_path, device=device)
    size = int(meta.get("image_size") or 32)
    present = [i for i, im in enumerate(images) if im is not None]
    for s in _progress(range(0, len(present), batch_size), desc="saliency", total=-(-len(present) // batch_size),
                       enabled=progress):
        members = present[s : s + batch_size]
        batch = np.stack(
            [
                images[i] if images[i].shape[:2] == (size, size)
                else np.asarray(Image.fromarray(images[i]).resize((size, size), Image.BILINEAR))
                for i in members
            ]
        )
        x = normalize(batch, meta["mean"], meta["std"]).to(device)
        with torch.enable_grad():
            maps = saliency_maps(model, x, pred[members], method=method, batch_size=batch_size)
        cs = centre_share(maps)
        for j, i in enumerate(members):
            share[i] = cs[j]
            methods[i] = method
            pngs[i] = overlay_png(batch[j], maps[j])


def _evidence_table(run_id, ids, labels, pred, cols, nb_ids, nb_labels, nb_sims, z_true, z_pred, share_true,
                    share_pred, sal_method, sal_share, sal_png, row_skips, diag_json) -> pa.Table:
    n = len(ids)

    def f32(a):
        a = np.asarray(a, dtype=np.float32)
        return pa.array(a, pa.float32(), mask=~np.isfinite(a))

    rank = np.asarray(cols["true_rank"])
    now = utcnow()
    return pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "example_id": pa.array(ids, pa.int64()),
            "label": pa.array(labels.astype(np.int32), pa.int32()),
            "pred": pa.array(pred.astype(np.int32), pa.int32()),
            "confidence": f32(cols["confidence"]),
            "margin": f32(cols["margin"]),
            "entropy": f32(cols["entropy"]),
            "true_prob": f32(cols["true_prob"]),
            "true_rank": pa.array(rank.astype(np.int32), pa.int32(), mask=rank < 1),
            "label_quality": f32(cols["label_quality"]),
            "label_issue": pa.array(list(cols["label_issue"]), pa.bool_()),
            "neighbour_ids": pa.array(nb_ids, pa.list_(pa.int64())),
            "neighbour_labels": pa.array(nb_labels, pa.list_(pa.int32())),
            "neighbour_sims": pa.array(nb_sims, pa.list_(pa.float32())),
            "neighbour_true_share": f32(cols["neighbour_true_share"]),
            "neighbour_pred_share": f32(cols["neighbour_pred_share"]),
            "brightness": f32(cols["brightness"]),
            "contrast": f32(cols["contrast"]),
            "saturation": f32(cols["saturation"]),
            "sharpness": f32(cols["sharpness"]),
            "edge_share": f32(cols["edge_share"]),
            "border_colour": pa.array(cols["border_colour"], pa.string()),
            "centre_colour": pa.array(cols["centre_colour"], pa.string()),
            "border_colours": pa.array(cols["border_colours"], pa.string()),
            "centre_colours": pa.array(cols["centre_colours"], pa.string()),
            "fg_bg_distance": f32(cols["fg_bg_distance"]),
            "z_true": pa.array(z_true, pa.string()),
            "z_pred": pa.array(z_pred, pa.string()),
            "colour_share_true": pa.array(share_true, pa.string()),
            "colour_share_pred": pa.array(share_pred, pa.string()),
            "saliency_method": pa.array(sal_method, pa.string()),
            "saliency_centre_share": f32(sal_share),
            "saliency_png": pa.array(sal_png, pa.binary()),
            "skipped": pa.array([json.dumps(s) if s else None for s in row_skips], pa.string()),
            "label_error_score": f32(cols["label_error_score"]),
            "ambiguity_score": f32(cols["ambiguity_score"]),
            "diagnosis": pa.array(diag_json, pa.string()),
            "diagnosis_version": pa.array([diagnosis.RULES_VERSION] * n, pa.string()),
            "computed_at": pa.array([now] * n, pa.timestamp("us")),
        }
    )


#: evidence columns holding JSON text (decoded by :func:`load_evidence`)
JSON_COLUMNS = ("z_true", "z_pred", "skipped", "border_colours", "centre_colours", "colour_share_true",
                "colour_share_pred", "diagnosis")


def load_evidence(wh: Warehouse, run_id: str, example_ids=None) -> dict[int, dict[str, Any]]:
    """Evidence rows of a run as {example_id: dict}, JSON columns decoded, lists as lists."""
    sql = "select * exclude (saliency_png) from evidence where run_id = ?"
    with wh.connect() as con:
        rows = con.execute(sql, [run_id]).to_arrow_table().to_pylist()
    wanted = None if example_ids is None else {int(e) for e in example_ids}
    out = {}
    for r in rows:
        if wanted is not None and r["example_id"] not in wanted:
            continue
        for c in JSON_COLUMNS:
            if isinstance(r.get(c), str):
                r[c] = json.loads(r[c])
        out[int(r["example_id"])] = r
    return out
