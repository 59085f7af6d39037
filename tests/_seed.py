"""A small but complete synthetic run in every table, for tests and benchmarks.

``seed_complete_run(wh, run_id="demo")`` writes one run through every stage's tables
(runs, classes, predictions, training_log, features, failures, samples, evidence,
hypotheses, hypothesis_dimensions, claims, embeddings, embedding_cache, clusters,
cluster_members, cluster_k_scores, stage_runs) with a planted, known structure:

* failures are the first ``n_failures`` examples (pred != label), each with a real PNG
  (``image_side`` px) and a real saliency PNG;
* hypotheses answer the sampled failures (the first ``n_hypotheses`` failures) on the three
  reference dimensions; hypothesis ``i`` is in cluster ``i % n_clusters`` of every
  dimension, except every 7th (i % 7 == 6), which is noise (-1) when ``noise`` is true;
* ``data_quality`` tags: cluster 0 ``model_error``, cluster 1 ``ambiguous_image``, others
  ``annotation_issue`` (and every hypothesis with i % 5 == 3 is ``annotation_issue``);
* ``visual_cause`` has one claim per hypothesis, ``contradicted`` when i % 4 == 1;
* hypothesis 0's visual_cause text (and its description) contain ``<script>alert(1)</script>``
  and ``<img src=x onerror=alert(1)>``; so does the name of the ``fix`` cluster 1.

Returns a :class:`Seeded` with the ids a test needs. Everything is vectorised, so 100,000
predictions and 5,000 hypotheses take a few seconds (benchmarks/bench_dashboard.py).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
from PIL import Image

from lens.predictions import insert_predictions
from lens.warehouse import Warehouse, insert_arrow, record_stage, stable_id

XSS = "<script>alert(1)</script> and <img src=x onerror=alert(1)>"
DIMENSIONS = ("data_quality", "visual_cause", "fix")
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_VISUAL = ["dark background similar to {pred}", "object small and off-centre", "blurry low-contrast texture",
           "unusual pose seen from above", "cluttered scene with other objects"]
_FIX = ["add brightness augmentation", "collect more close-up {true} images", "random-crop and zoom augmentation",
        "relabel the doubtful examples", "add rotation augmentation"]
_VISUAL_NAMES = ["dark background", "small off-centre object", "blurry texture", "unusual pose", "clutter"]
_FIX_NAMES = ["brightness augmentation", XSS + " crops", "crop and zoom", "relabelling", "rotation"]
_DQ_TAGS = ["model_error", "ambiguous_image", "annotation_issue"]


@dataclass
class Seeded:
    run_id: str
    class_names: list[str]
    failure_ids: list[int]
    hypothesis_ids: list[str]
    xss_hypothesis_id: str
    contradicted: list[tuple[str, str]]                      # (hypothesis_id, dimension)
    clusters: dict[str, dict[int, list[str]]] = field(default_factory=dict)  # dim -> cluster -> hyp ids
    dimensions: tuple[str, ...] = DIMENSIONS


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _list(matrix: np.ndarray, t: pa.DataType) -> pa.Array:
    n, k = matrix.shape
    flat = pa.array(np.ascontiguousarray(matrix).reshape(-1), type=t)
    return pa.FixedSizeListArray.from_arrays(flat, k).cast(pa.list_(t))


def _const(value, n, t=None):
    return pa.array([value] * n, type=t or pa.string())

_BORDERS = np.array(["black", "blue", "green", "white", "grey"])
_EMBEDDER = "all-MiniLM-L6-v2"
_DIM_KEYS = ("hypothesis_id", "example_id", "dimension", "tag", "text", "summary")
_CLAIM_KEYS = ("hypothesis_id", "example_id", "dimension", "claim_index", "kind", "claim", "verdict", "fact")
_CLUSTER_KEYS = ("dimension", "cluster_id", "name", "name_method", "size", "silhouette", "k", "representatives",
                 "medoid_text")


@dataclass
class _Plan:
    """The parameters of one seeded run, checked, and the one random generator every step draws from.

    The steps below run in a fixed order (see :func:`seed_complete_run`): each draws from ``rng``
    in turn, so the same arguments always give the same rows."""

    run_id: str
    rng: np.random.Generator
    names: list[str]
    created: datetime
    n: int           # predictions
    f: int           # failures
    h: int           # hypotheses
    n_classes: int
    n_clusters: int
    noise: bool
    epochs: int
    image_side: int
    seed: int


@dataclass
class _Predictions:
    ids: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    probs: np.ndarray
    order: np.ndarray   # top-3 classes per row
    top3p: np.ndarray
    conf: np.ndarray
    true_p: np.ndarray
    table: pa.Table


@dataclass
class _Hypotheses:
    hex_: list[str]
    cluster_of: np.ndarray
    samples: pa.Table
    table: pa.Table


@dataclass
class _Answers:
    dim_rows: dict[str, list]
    dims: pa.Table
    claims: pa.Table
    contradicted: list[tuple[str, str]]


def _plan(run_id, n_classes, n_predictions, n_failures, n_hypotheses, n_clusters, noise, epochs, image_side, seed,
          created_at) -> _Plan:
    if not 2 <= n_classes <= len(CLASS_NAMES):
        raise ValueError("n_classes must be in 2..10")
    n_hyp = n_failures if n_hypotheses is None else n_hypotheses
    if not (0 < n_failures <= n_predictions and 0 < n_hyp <= n_failures and 2 <= n_clusters <= 5):
        raise ValueError("need 0 < n_hypotheses <= n_failures <= n_predictions and 2 <= n_clusters <= 5")
    return _Plan(
        run_id=run_id, rng=np.random.default_rng(seed), names=CLASS_NAMES[:n_classes],
        created=created_at or datetime(2024, 1, 1) + timedelta(seconds=seed), n=n_predictions, f=n_failures,
        h=n_hyp, n_classes=n_classes, n_clusters=n_clusters, noise=noise, epochs=epochs, image_side=image_side,
        seed=seed,
    )


def _seed_predictions(plan: _Plan) -> _Predictions:
    """Predictions: the first ``f`` examples are wrong."""
    rng, n, n_classes, f = plan.rng, plan.n, plan.n_classes, plan.f
    ids = np.arange(n, dtype=np.int64)
    labels = rng.integers(0, n_classes, n).astype(np.int32)
    preds = labels.copy()
    shift = rng.integers(1, n_classes, f).astype(np.int32)
    preds[:f] = (labels[:f] + shift) % n_classes
    logits = rng.normal(0, 1, (n, n_classes)).astype(np.float32)
    logits[np.arange(n), preds] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    top3p = np.take_along_axis(probs, order, axis=1)
    conf = probs[np.arange(n), preds]
    true_p = probs[np.arange(n), labels]
    table = pa.table({
        "run_id": _const(plan.run_id, n), "example_id": pa.array(ids), "label": pa.array(labels),
        "pred": pa.array(preds), "confidence": pa.array(conf.astype(np.float32)),
        "probs": _list(probs.astype(np.float32), pa.float32()),
        "top3_class": _list(order.astype(np.int32), pa.int32()),
        "top3_prob": _list(top3p.astype(np.float32), pa.float32()),
        "loss": pa.array((-np.log(true_p)).astype(np.float32)),
        "image_uri": pa.array([f"synthetic:test:{i}" for i in ids]),
    })
    return _Predictions(ids, labels, preds, probs, order, top3p, conf, true_p, table)


def _seed_failures(plan: _Plan, p: _Predictions) -> tuple[pa.Table, list[bytes]]:
    """Failures with real PNGs; also returns the saliency PNGs (for the evidence)."""
    f, side = plan.f, plan.image_side
    colours = plan.rng.integers(0, 256, (f, 3))
    images = []
    salient = []
    for i in range(f):
        img = np.empty((side, side, 3), np.uint8)
        img[:] = colours[i]
        img[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 255 - colours[i]
        images.append(_png(img))
        heat = np.zeros((side, side, 3), np.uint8)
        heat[..., 0] = np.linspace(0, 255, side, dtype=np.uint8)[None, :]
        heat[..., 2] = img[..., 2] // 2
        salient.append(_png(heat))
    failures = pa.table({
        "run_id": _const(plan.run_id, f), "example_id": pa.array(p.ids[:f]), "label": pa.array(p.labels[:f]),
        "pred": pa.array(p.preds[:f]), "confidence": pa.array(p.conf[:f].astype(np.float32)),
        "true_prob": pa.array(p.true_p[:f].astype(np.float32)), "image_png": pa.array(images, pa.binary()),
        "width": pa.array(np.full(f, side, np.int32)), "height": pa.array(np.full(f, side, np.int32)),
    })
    return failures, salient


def _seed_evidence(plan: _Plan, p: _Predictions, salient: list[bytes]) -> tuple[pa.Table, pa.Table]:
    """Evidence rows for every failure, and their feature vectors."""
    rng, f, run_id = plan.rng, plan.f, plan.run_id
    k_nb = 3
    nb_labels = rng.integers(0, plan.n_classes, (f, k_nb)).astype(np.int32)
    z_true = [json.dumps({"brightness": round(float(v), 2), "contrast": round(float(w), 2)})
              for v, w in rng.normal(0, 1.5, (f, 2))]
    z_pred = [json.dumps({"brightness": round(float(v), 2)}) for v in rng.normal(0, 1, f)]
    label_quality = rng.uniform(0, 1, f).astype(np.float32)
    probs, top3p, true_p = p.probs[:f], p.top3p[:f], p.true_p[:f]
    evidence = pa.table({
        "run_id": _const(run_id, f), "example_id": pa.array(p.ids[:f]),
        "confidence": pa.array(p.conf[:f].astype(np.float32)),
        "margin": pa.array((top3p[:, 0] - top3p[:, 1]).astype(np.float32)),
        "entropy": pa.array((-(probs * np.log(probs)).sum(1)).astype(np.float32)),
        "true_prob": pa.array(true_p.astype(np.float32)),
        "true_rank": pa.array((1 + (probs > true_p[:, None]).sum(1)).astype(np.int32)),
        "label_quality": pa.array(label_quality), "label_issue": pa.array(label_quality < 0.2),
        # the diagnosis scores (lens.diagnosis): seeded, not computed; low label quality = likely error
        "label_error_score": pa.array((1 - label_quality).astype(np.float32)),
        "ambiguity_score": pa.array(rng.uniform(0, 1, f).astype(np.float32)),
        "neighbour_ids": _list(rng.integers(0, 50_000, (f, k_nb)).astype(np.int64), pa.int64()),
        "neighbour_labels": _list(nb_labels, pa.int32()),
        "neighbour_sims": _list(rng.uniform(0.5, 1, (f, k_nb)).astype(np.float32), pa.float32()),
        "neighbour_true_share": pa.array((nb_labels == p.labels[:f, None]).mean(1).astype(np.float32)),
        "neighbour_pred_share": pa.array((nb_labels == p.preds[:f, None]).mean(1).astype(np.float32)),
        "brightness": pa.array(rng.uniform(0, 1, f).astype(np.float32)),
        "contrast": pa.array(rng.uniform(0, 0.3, f).astype(np.float32)),
        "saturation": pa.array(rng.uniform(0, 1, f).astype(np.float32)),
        "sharpness": pa.array(rng.uniform(0, 500, f).astype(np.float32)),
        "border_colour": pa.array(_BORDERS[np.arange(f) % len(_BORDERS)].tolist()),
        "centre_colour": pa.array(_BORDERS[(np.arange(f) + 2) % len(_BORDERS)].tolist()),
        "fg_bg_distance": pa.array(rng.uniform(0, 60, f).astype(np.float32)),
        "z_true": pa.array(z_true), "z_pred": pa.array(z_pred),
        "saliency_method": _const("integrated_gradients", f),
        "saliency_centre_share": pa.array(rng.uniform(0, 1, f).astype(np.float32)),
        "saliency_png": pa.array(salient, pa.binary()),
        "skipped": _const("{}", f),
        "computed_at": pa.array([plan.created] * f, pa.timestamp("us")),
    })
    features = pa.table({
        "run_id": _const(run_id, f), "split": _const("eval", f), "example_id": pa.array(p.ids[:f]),
        "label": pa.array(p.labels[:f]), "vector": _list(rng.normal(0, 1, (f, 8)).astype(np.float32), pa.float32()),
    })
    return evidence, features


def _seed_hypotheses(plan: _Plan, p: _Predictions) -> _Hypotheses:
    """The sample (the first ``h`` failures), one hypothesis each, and each one's planted cluster."""
    h, run_id, fids = plan.h, plan.run_id, p.ids[:plan.h]
    hex_ = [stable_id(run_id, int(e), "measured", "measured", "seed") for e in fids]
    samples = pa.table({
        "run_id": _const(run_id, h), "example_id": pa.array(fids), "strategy": _const("per-class", h),
        "seed": pa.array(np.full(h, plan.seed, np.int32)), "rank": pa.array(np.arange(h, dtype=np.int32)),
    })
    idx = np.arange(h)
    cluster_of = idx % plan.n_clusters
    if plan.noise:
        cluster_of = np.where(idx % 7 == 6, -1, cluster_of)
    descriptions = [f"A small {plan.names[p.labels[i]]} photo." for i in range(h)]
    descriptions[0] = "A photo. " + XSS
    table = pa.table({
        "hypothesis_id": pa.array(hex_), "run_id": _const(run_id, h), "example_id": pa.array(fids),
        "backend": _const("measured", h), "model": _const("measured", h), "prompt_name": _const("reference", h),
        "prompt_sha256": _const(hashlib.sha256(b"seed").hexdigest(), h), "status": _const("ok", h),
        "description": pa.array(descriptions), "raw_response": pa.array(["{}"] * h),
        "latency_s": pa.array(np.zeros(h)), "attempts": pa.array(np.ones(h, np.int32)),
        "created_at": pa.array([plan.created] * h, pa.timestamp("us")),
    })
    return _Hypotheses(hex_, cluster_of, samples, table)


def _answer_texts(i: int, c: int, n_clusters: int, tn: str, pn: str) -> dict[str, tuple]:
    """Hypothesis ``i``'s (tag, text, summary) per dimension, for planted cluster ``c``."""
    g = c if c >= 0 else n_clusters  # noise texts use the next template
    tag = "annotation_issue" if i % 5 == 3 else _DQ_TAGS[min(max(c, 0), 2)]
    visual = _VISUAL[g % len(_VISUAL)].format(pred=pn, true=tn)
    if i == 0:
        visual = f"Looks like a {pn}: {XSS}"
    return {
        "data_quality": (tag, f"the {tn} is {'mislabelled' if tag == 'annotation_issue' else 'hard to see'}",
                         f"This is {'an annotation issue' if tag == 'annotation_issue' else 'a model error'}."),
        "visual_cause": (None, visual, None),
        "fix": (None, _FIX[g % len(_FIX)].format(pred=pn, true=tn), None),
    }


def _seed_answers(plan: _Plan, p: _Predictions, hy: _Hypotheses) -> _Answers:
    """Each hypothesis's answer on the three dimensions, and one visual_cause claim each."""
    dim_rows: dict[str, list] = {k: [] for k in _DIM_KEYS}
    claim_rows: dict[str, list] = {k: [] for k in _CLAIM_KEYS}
    contradicted = []
    for i in range(plan.h):
        hid, eid = hy.hex_[i], int(p.ids[i])
        answers = _answer_texts(i, int(hy.cluster_of[i]), plan.n_clusters, plan.names[p.labels[i]],
                                plan.names[p.preds[i]])
        for d, (t, text, summary) in answers.items():
            for k, v in zip(_DIM_KEYS, (hid, eid, d, t, text, summary)):
                dim_rows[k].append(v)
        visual = answers["visual_cause"][1]
        claim_text = "dark background" if "dark background" in visual else visual.split()[0]
        verdict = "contradicted" if i % 4 == 1 else ("unverifiable" if i % 4 == 3 else "consistent")
        if verdict == "contradicted":
            contradicted.append((hid, "visual_cause"))
        for k, v in zip(claim_rows, (hid, eid, "visual_cause", 0, "background_colour", claim_text,
                                     verdict, f"border_colour={_BORDERS[i % len(_BORDERS)]}")):
            claim_rows[k].append(v)
    h = plan.h
    dims = pa.table({"run_id": _const(plan.run_id, 3 * h), **{k: pa.array(v) for k, v in dim_rows.items()}})
    dims = dims.cast(pa.schema([(nm, pa.int64() if nm == "example_id" else pa.string()) for nm in dims.column_names]))
    claims = pa.table({"run_id": _const(plan.run_id, h), **{k: pa.array(v) for k, v in claim_rows.items()}})
    return _Answers(dim_rows, dims, claims, contradicted)


def _seed_embeddings(plan: _Plan, dim_rows: dict[str, list]) -> tuple[pa.Table, pa.Table, list[str]]:
    """One embedding per answer, the embedding cache (one row per distinct text), and the texts."""
    n3 = 3 * plan.h
    emb_vecs = plan.rng.normal(0, 1, (n3, 8)).astype(np.float32)
    emb_vecs /= np.linalg.norm(emb_vecs, axis=1, keepdims=True)
    texts = [t or "" for t in dim_rows["text"]]
    shas = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    embeddings = pa.table({
        "run_id": _const(plan.run_id, n3), "hypothesis_id": pa.array(dim_rows["hypothesis_id"]),
        "dimension": pa.array(dim_rows["dimension"]), "embedder": _const(_EMBEDDER, n3),
        "masked": pa.array([True] * n3), "text": pa.array(texts), "text_sha256": pa.array(shas),
        "dim": pa.array(np.full(n3, 8, np.int32)), "vector": _list(emb_vecs, pa.float32()),
    })
    cache_keep = sorted({s: i for i, s in enumerate(shas)}.values())
    cache = pa.table({
        "embedder": _const(_EMBEDDER, len(cache_keep)), "text_sha256": pa.array([shas[i] for i in cache_keep]),
        "dim": pa.array(np.full(len(cache_keep), 8, np.int32)), "vector": _list(emb_vecs[cache_keep], pa.float32()),
    })
    return embeddings, cache, texts


def _cluster_name(d: str, c: int) -> str:
    if c < 0:
        return "noise"
    if d == "visual_cause":
        return _VISUAL_NAMES[c % 5]
    if d == "fix":
        return _FIX_NAMES[c % 5]
    return _DQ_TAGS[min(c, 2)].replace("_", " ")


def _seed_clusters(plan: _Plan, p: _Predictions, hy: _Hypotheses, hyp_of_text: list[str], texts: list[str]):
    """Clusters per dimension (the planted ones), their members with 2-D positions, and the k scores.

    Returns (clusters, member tables, {dimension: {cluster: hypothesis ids}}, k scores)."""
    rng, h, n_clusters, cluster_of = plan.rng, plan.h, plan.n_clusters, hy.cluster_of
    clusters_info: dict[str, dict[int, list[str]]] = {}
    cl_rows: dict[str, list] = {k: [] for k in _CLUSTER_KEYS}
    mem_parts = []
    centres = rng.normal(0, 4, (n_clusters + 1, 2))
    for d in DIMENSIONS:
        members: dict[int, list[str]] = {}
        for i in range(h):
            members.setdefault(int(cluster_of[i]), []).append(hy.hex_[i])
        clusters_info[d] = members
        for c in sorted(members):
            medoid = texts[hyp_of_text.index(members[c][0]) + DIMENSIONS.index(d)]
            for k, v in zip(cl_rows, (d, c, _cluster_name(d, c), "ctfidf+medoid" if c >= 0 else "noise",
                                      len(members[c]), 0.3 if c >= 0 else None, n_clusters, members[c][:3], medoid)):
                cl_rows[k].append(v)
        xy = centres[np.where(cluster_of < 0, n_clusters, cluster_of)] + rng.normal(0, 0.7, (h, 2))
        mem_parts.append(pa.table({
            "run_id": _const(plan.run_id, h), "dimension": _const(d, h), "hypothesis_id": pa.array(hy.hex_),
            "example_id": pa.array(p.ids[:h]), "cluster_id": pa.array(cluster_of.astype(np.int32)),
            "kmeans_label": pa.array((np.arange(h) % n_clusters).astype(np.int32)),
            "distance": pa.array(rng.uniform(0, 1, h).astype(np.float32)),
            "x": pa.array(xy[:, 0].astype(np.float32)), "y": pa.array(xy[:, 1].astype(np.float32)),
        }))
    return _clusters_table(plan, cl_rows), mem_parts, clusters_info, _k_scores(plan)


def _clusters_table(plan: _Plan, cl_rows: dict[str, list]) -> pa.Table:
    m = len(cl_rows["dimension"])
    return pa.table({
        "run_id": _const(plan.run_id, m), "dimension": pa.array(cl_rows["dimension"]),
        "cluster_id": pa.array(cl_rows["cluster_id"], pa.int32()), "name": pa.array(cl_rows["name"]),
        "name_method": pa.array(cl_rows["name_method"]), "size": pa.array(cl_rows["size"], pa.int32()),
        "silhouette": pa.array(cl_rows["silhouette"], pa.float32()), "k": pa.array(cl_rows["k"], pa.int32()),
        "embedder": _const(_EMBEDDER, m), "representatives": pa.array(cl_rows["representatives"]),
        "medoid_text": pa.array(cl_rows["medoid_text"]), "created_at": pa.array([plan.created] * m, pa.timestamp("us")),
    })


def _k_scores(plan: _Plan) -> pa.Table:
    return pa.table({
        "run_id": _const(plan.run_id, 3 * 3), "dimension": pa.array([d for d in DIMENSIONS for _ in range(3)]),
        "k": pa.array([2, 3, 4] * 3, pa.int32()), "silhouette": pa.array([0.3, 0.2, 0.1] * 3, pa.float32()),
        "chosen": pa.array([k == plan.n_clusters for k in [2, 3, 4]] * 3),
    })


def _seed_training_log(plan: _Plan) -> pa.Table:
    """One row per epoch and class (class -1: all classes)."""
    rows = []
    for e in range(1, plan.epochs + 1):
        for c in range(-1, plan.n_classes):
            base = 2.0 / e + (0.1 * c if c >= 0 else 0)
            rows.append((e, c, base + 0.1, min(0.99, 0.3 + 0.2 * e), base + 0.2 + 0.05 * (c % 3),
                         min(0.95, 0.25 + 0.2 * e), 1000, plan.n, 0.1 / e, 3.0))
    cols = ["epoch", "class_id", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "n_train",
            "n_eval", "lr", "seconds"]
    log = pa.table({"run_id": _const(plan.run_id, len(rows)), **{c: pa.array([r[j] for r in rows])
                                                                 for j, c in enumerate(cols)}})
    return log.cast(pa.schema([(c, pa.int32() if c in ("epoch", "class_id") else
                                (pa.int64() if c.startswith("n_") else
                                 (pa.string() if c == "run_id" else pa.float64()))) for c in log.column_names]))


def _write(wh: Warehouse, plan: _Plan, pred_table: pa.Table, tables: list[tuple[str, pa.Table]], cache: pa.Table,
           mem_parts: list[pa.Table]) -> None:
    """Everything in one transaction; embedding_cache rows another run already stored are skipped."""
    run_id = plan.run_id
    with wh.transaction() as con:
        con.execute(
            "insert into runs (run_id, kind, created_at, dataset, eval_split, num_classes, model, config)"
            " values (?, 'train', ?, 'synthetic', 'test', ?, 'resnet18', ?)",
            [run_id, plan.created, plan.n_classes, json.dumps({"seed": plan.seed})],
        )
        insert_arrow(con, "classes", pa.table({"run_id": _const(run_id, plan.n_classes),
                                               "class_id": pa.array(np.arange(plan.n_classes, dtype=np.int32)),
                                               "class_name": pa.array(plan.names)}))
        insert_predictions(con, pred_table)
        for table, data in tables:
            insert_arrow(con, table, data)
        stored = {r[0] for r in con.execute(
            "select text_sha256 from embedding_cache where embedder = 'all-MiniLM-L6-v2'").fetchall()}
        keep = [i for i, s in enumerate(cache.column("text_sha256").to_pylist()) if s not in stored]
        insert_arrow(con, "embedding_cache", cache.take(pa.array(keep, pa.int64())))
        for part in mem_parts:
            insert_arrow(con, "cluster_members", part)
        for stage in ("train", "sample", "evidence", "hypothesize", "embed", "cluster"):
            record_stage(con, run_id, stage, details={"seeded": True})


def seed_complete_run(
    wh: Warehouse,
    run_id: str = "demo",
    *,
    n_classes: int = 4,
    n_predictions: int = 60,
    n_failures: int = 12,
    n_hypotheses: int | None = None,
    n_clusters: int = 2,
    noise: bool = True,
    epochs: int = 3,
    image_side: int = 8,
    seed: int = 0,
    created_at: datetime | None = None,
) -> Seeded:
    """Insert a complete synthetic run (see the module docstring); return its ids."""
    plan = _plan(run_id, n_classes, n_predictions, n_failures, n_hypotheses, n_clusters, noise, epochs, image_side,
                 seed, created_at)
    # the steps draw from plan.rng in this order: keep it, or the seeded rows change
    p = _seed_predictions(plan)
    failures, salient = _seed_failures(plan, p)
    evidence, features = _seed_evidence(plan, p, salient)
    hy = _seed_hypotheses(plan, p)
    ans = _seed_answers(plan, p, hy)
    embeddings, cache, texts = _seed_embeddings(plan, ans.dim_rows)
    clusters, mem_parts, clusters_info, k_scores = _seed_clusters(plan, p, hy, ans.dim_rows["hypothesis_id"], texts)
    log = _seed_training_log(plan)
    _write(wh, plan, p.table, [
        ("failures", failures), ("evidence", evidence), ("features", features), ("samples", hy.samples),
        ("hypotheses", hy.table), ("hypothesis_dimensions", ans.dims), ("claims", ans.claims),
        ("embeddings", embeddings), ("clusters", clusters), ("cluster_k_scores", k_scores), ("training_log", log),
    ], cache, mem_parts)
    return Seeded(
        run_id=run_id, class_names=plan.names, failure_ids=[int(x) for x in p.ids[:plan.f]],
        hypothesis_ids=hy.hex_, xss_hypothesis_id=hy.hex_[0], contradicted=ans.contradicted, clusters=clusters_info,
    )
