"""``lens cluster``: group each dimension's answers by meaning, name the groups, map them.

Input: a run's ``embeddings`` for one embedder (default: the only one the run has).
Each dimension is clustered on its own (see :mod:`lens.clustering` for the steps):

* KMeans (seeded, fixed ``n_init``) for every k in ``k_min..k_max``, keeping the k with
  the best cosine silhouette (measured on a seeded sample of ``sample_size`` answers
  when there are more). The range is clipped to ``n // min_size`` so every cluster can
  reach ``min_size``; with fewer than ``2 * min_size`` answers everything goes in one
  cluster. Both are reported in :attr:`DimensionResult.notes`.
* Members of clusters smaller than ``min_size`` become noise: ``cluster_id = -1``, their
  ``kmeans_label`` kept. Kept clusters are numbered 0, 1, ... by size.
* Names: offline (``labeler='keyphrase'``, the default), at most 6 words saying what the
  members share and their siblings do not (:func:`lens.clustering.keyphrase_names`: 1-3 word
  phrases of the embedded texts weighted by class-based TF-IDF, ranked against the cluster
  centroid with the run's own embedder, the second phrase picked by maximal marginal
  relevance), e.g. ``"motion blur, out of focus"``; name_method ``'keyphrase+centroid'``
  (``'keyphrase'`` with ``labeler='ctfidf'``, or when the embedder cannot be loaded, which
  ``warnings`` says). Siblings never share a name. The medoid answer, the example, is kept
  apart in ``medoid_text``. With ``labeler='ollama'`` an Ollama text model (at ``ollama_host``,
  else ``$OLLAMA_HOST``, else Ollama's default) names each cluster from its representatives
  (name_method ``'ollama:<model>'``); if the server cannot be reached the stage falls back to
  keyphrases and says so in ``warnings``.
* ``representatives``: the 5 members nearest the centroid, nearest first (the first is
  the medoid); ``distance``: cosine distance to the KMeans centroid; ``x``, ``y``: PCA map.

Output, replacing the run's rows (only the given dimensions when ``dimensions`` is set):
``clusters`` (one row per cluster, plus ``-1`` for noise when there is any),
``cluster_members`` and ``cluster_k_scores`` (silhouette of every k tried, the chosen
one marked).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from lens import clustering
from lens import defaults as D
from lens.backends.embedders import canonical_name
from lens.errors import LensError
from lens.warehouse import Warehouse, delete_rows, insert_arrow, record_stage, require_run, utcnow

LABELERS = ("keyphrase", "ctfidf", "ollama")
N_REPRESENTATIVES = 5
PLACEHOLDER = "[CLASS]"


@dataclass
class DimensionResult:
    dimension: str
    n: int
    k_tried: list[int]
    k: int
    silhouette: float | None
    clusters: int               # kept clusters (not counting noise)
    noise: int                  # answers marked noise
    names: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    examples: dict[int, str] = field(default_factory=dict)  # the medoid answer of each cluster


@dataclass
class ClusterResult:
    run_id: str
    embedder: str
    dimensions: list[DimensionResult]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _clean_name(text: str) -> str:
    for line in text.splitlines():
        line = re.sub(r"^(name|cluster name|label)\s*:\s*", "", line.strip(), flags=re.IGNORECASE)
        line = line.strip().strip("\"'*`#.").strip()
        if line:
            return line[:80]
    return ""


class _OllamaNamer:
    """Names clusters with an Ollama text model; remembers the first failure and stops asking."""

    def __init__(self, model: str, host: str | None, seed: int):
        import ollama

        from lens.backends.ollama_backend import resolve_host

        self.model = model
        self.host = resolve_host(host)  # --ollama-host, else $OLLAMA_HOST, else Ollama's default
        self.client = ollama.Client(host=self.host, timeout=60)
        self.seed = seed
        self.failed: str | None = None

    def __call__(self, texts: Sequence[str]) -> str | None:
        if self.failed:
            return None
        listing = "\n".join(f"- {t}" for t in texts)
        prompt = (
            "These sentences explain why an image classifier got images wrong; they were grouped "
            "together because they say similar things. [CLASS] stands for a class name.\n"
            f"{listing}\n\nGive this group a short name (3 to 6 words) that says what kind of problem "
            "it is, without class names. Answer with the name only."
        )
        try:
            resp = self.client.chat(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                options={"temperature": 0, "seed": self.seed},
            )
        except Exception as exc:  # connection refused, model missing, HTTP error: fall back
            self.failed = f"{type(exc).__name__}: {str(exc)[:200]}"
            return None
        name = _clean_name(resp["message"]["content"] or "")
        return name or None


def _phrase_encoder(embedder: str, dim: int) -> tuple[Callable[[list[str]], np.ndarray] | None, str | None]:
    """(encode, None) with the run's embedder for ranking keyphrases, or (None, why not).

    ``dim``: the length of the stored vectors; an embedder of another size (the name now
    loads a different model) cannot be compared with their centroids.
    """
    from lens.backends import embedders

    try:
        model = embedders.create(embedder)
    except (LensError, OSError, ValueError) as exc:
        return None, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if model.dim != dim:
        return None, f"it makes {model.dim}-d vectors, the stored embeddings are {dim}-d"
    return (lambda phrases: model.encode(phrases, batch_size=256)), None


def _load(con, run_id: str, embedder: str | None, dimensions: Sequence[str] | None):
    have = [r[0] for r in con.execute(
        "select distinct embedder from embeddings where run_id = ? order by embedder", [run_id]
    ).fetchall()]
    if not have:
        raise LensError(f"Run {run_id!r} has no embeddings: run `lens embed --run {run_id}` first.")
    if embedder is None:
        if len(have) > 1:
            raise LensError(f"Run {run_id!r} has embeddings from several embedders; pick one with --embedder: {', '.join(have)}")
        embedder = have[0]
    else:
        embedder = canonical_name(embedder)
        if embedder not in have:
            raise LensError(f"Run {run_id!r} has no embeddings from {embedder!r}; it has: {', '.join(have)}")
    tbl = con.execute(
        """
        select e.dimension, e.hypothesis_id, h.example_id, e.text, e.vector
        from embeddings e
        join hypotheses h on h.hypothesis_id = e.hypothesis_id
        where e.run_id = ? and e.embedder = ?
        order by e.dimension, e.hypothesis_id
        """,
        [run_id, embedder],
    ).to_arrow_table()
    present = sorted(set(tbl.column("dimension").to_pylist()))
    if dimensions:
        unknown = sorted(set(dimensions) - set(present))
        if unknown:
            raise LensError(f"No embeddings for dimension(s) {', '.join(unknown)}; embedded: {', '.join(present)}")
    return embedder, tbl, [d for d in present if not dimensions or d in dimensions]


def cluster_dimension(
    X: np.ndarray,
    texts: Sequence[str],
    *,
    k_min: int,
    k_max: int,
    min_size: int,
    seed: int,
    n_init: int,
    sample_size: int,
    namer: Callable[[Sequence[str]], str | None] | None = None,
    encode: Callable[[list[str]], np.ndarray] | None = None,
    progress=None,
) -> dict:
    """Cluster one dimension's vectors; returns arrays and per-cluster facts (no warehouse).

    Names: :func:`lens.clustering.keyphrase_names` (``encode`` = the embedder of ``X``, to rank
    phrases against the centroids; without it c-TF-IDF alone), or ``namer(representative
    texts)`` when given and it answers. ``name_method`` is None for names the caller labels.
    """
    n = len(X)
    n_distinct = len(np.unique(np.round(X, 6), axis=0)) if n else 0
    rng = clustering.k_range(n, k_min=k_min, k_max=k_max, min_size=min_size, n_distinct=n_distinct)
    notes = [rng.note] if rng.note else []
    choice = clustering.choose_k(X, rng.ks, seed=seed, n_init=n_init, sample_size=sample_size, progress=progress)
    if choice.k == 1:
        cluster_ids = np.zeros(n, dtype=np.int64)
    else:
        cluster_ids = clustering.noise_filter(choice.labels, min_size)
    noise = int((cluster_ids == -1).sum())
    if n and noise > n / 2:
        notes.append(
            f"{noise} of {n} answers are noise (clusters under --min-size {min_size}); "
            f"lower --min-size or --k-max to keep more"
        )
    dist = clustering.centroid_distances(X, choice.labels, choice.centers)
    xy = clustering.map_2d(X, seed=seed)
    kept = sorted(int(c) for c in np.unique(cluster_ids) if c >= 0)
    clusters = {}
    for cid in kept:
        members = np.flatnonzero(cluster_ids == cid)
        reps = clustering.representatives(dist, members, N_REPRESENTATIVES)
        sil = choice.point_silhouette[members]
        sil = sil[~np.isnan(sil)]
        clusters[cid] = {
            "members": members, "reps": reps, "medoid": int(reps[0]),
            "silhouette": float(sil.mean()) if len(sil) else None,
        }
    short = clustering.keyphrase_names(
        texts, cluster_ids, vectors=X, encode=encode, exclude=(PLACEHOLDER,),
        fallback={c: texts[clusters[c]["medoid"]] for c in kept},
    )
    for cid in kept:
        clusters[cid]["name"] = clustering.cap_name(short[cid].name)
        clusters[cid]["name_method"] = "keyphrase" if encode is None else "keyphrase+centroid"
        if namer is not None:
            named = namer([texts[i] for i in clusters[cid]["reps"]])
            if named:
                clusters[cid]["name"] = clustering.cap_name(named)
                clusters[cid]["name_method"] = None  # filled by the caller (labeler's method)
    if noise:
        members = np.flatnonzero(cluster_ids == -1)
        sil = choice.point_silhouette[members]
        sil = sil[~np.isnan(sil)]
        clusters[-1] = {"members": members, "reps": None, "medoid": None, "name": "noise",
                        "name_method": "noise", "silhouette": float(sil.mean()) if len(sil) else None}
    return {
        "k_tried": rng.ks if choice.k != 1 else [], "choice": choice, "cluster_ids": cluster_ids,
        "distance": dist, "xy": xy, "clusters": clusters, "notes": notes, "noise": noise,
    }


def _check_options(k_min: int, k_max: int, min_size: int, labeler: str, label_model: str | None) -> None:
    if not 2 <= k_min <= k_max:
        raise LensError(f"Need 2 <= --k-min <= --k-max, got {k_min} and {k_max}.")
    if min_size < 1:
        raise LensError("--min-size must be at least 1.")
    if labeler not in LABELERS:
        raise LensError(f"Unknown labeler {labeler!r}; choose one of {', '.join(LABELERS)}.")
    if labeler == "ollama" and not label_model:
        raise LensError("--labeler ollama needs --label-model NAME (an Ollama text model, e.g. qwen3:8b).")


def _vectors(tbl: pa.Table, run_id: str, embedder: str) -> np.ndarray:
    """The ``vector`` column as one (n, d) float32 array; mixed lengths are an error."""
    vec_col = tbl.column("vector").combine_chunks()
    dims_len = pa.compute.list_value_length(vec_col).to_numpy(zero_copy_only=False)
    if len(set(dims_len.tolist())) > 1:
        raise LensError(f"Embeddings of {embedder!r} in run {run_id!r} have mixed lengths: rerun `lens embed`.")
    flat = vec_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(tbl), -1)


def _tables(run_id: str, dim: str, embedder: str, method: str | None, out: dict, texts: list[str],
            hyp: np.ndarray, ex: np.ndarray, now) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The ``clusters``, ``cluster_members`` and ``cluster_k_scores`` rows of one dimension."""
    choice, cl = out["choice"], out["clusters"]
    ids = sorted(cl)
    clusters_tbl = pa.table({
        "run_id": pa.array([run_id] * len(ids), pa.string()),
        "dimension": pa.array([dim] * len(ids), pa.string()),
        "cluster_id": pa.array(ids, pa.int32()),
        "name": pa.array([cl[c]["name"] for c in ids], pa.string()),
        "name_method": pa.array([cl[c]["name_method"] or method for c in ids], pa.string()),
        "size": pa.array([len(cl[c]["members"]) for c in ids], pa.int32()),
        "silhouette": pa.array([cl[c]["silhouette"] for c in ids], pa.float32()),
        "k": pa.array([choice.k] * len(ids), pa.int32()),
        "embedder": pa.array([embedder] * len(ids), pa.string()),
        "representatives": pa.array(
            [None if cl[c]["reps"] is None else [str(hyp[i]) for i in cl[c]["reps"]] for c in ids],
            pa.list_(pa.string()),
        ),
        "medoid_text": pa.array([None if cl[c]["medoid"] is None else texts[cl[c]["medoid"]] for c in ids], pa.string()),
        "created_at": pa.array([now] * len(ids), pa.timestamp("us")),
    })
    n = len(texts)
    members_tbl = pa.table({
        "run_id": pa.array([run_id] * n, pa.string()),
        "dimension": pa.array([dim] * n, pa.string()),
        "hypothesis_id": pa.array([str(h) for h in hyp], pa.string()),
        "example_id": pa.array(ex.astype(np.int64), pa.int64()),
        "cluster_id": pa.array(out["cluster_ids"].astype(np.int32), pa.int32()),
        "kmeans_label": pa.array(choice.labels.astype(np.int32), pa.int32()),
        "distance": pa.array(out["distance"], pa.float32()),
        "x": pa.array(out["xy"][:, 0], pa.float32()),
        "y": pa.array(out["xy"][:, 1], pa.float32()),
    })
    ks = sorted(choice.scores)
    scores_tbl = pa.table({
        "run_id": pa.array([run_id] * len(ks), pa.string()),
        "dimension": pa.array([dim] * len(ks), pa.string()),
        "k": pa.array(ks, pa.int32()),
        "silhouette": pa.array([choice.scores[k] for k in ks], pa.float32()),
        "chosen": pa.array([k == choice.k for k in ks], pa.bool_()),
    })
    return clusters_tbl, members_tbl, scores_tbl


def _dimension_result(dim: str, out: dict, texts: list[str]) -> DimensionResult:
    choice, cl = out["choice"], out["clusters"]
    kept = [c for c in sorted(cl) if c >= 0]
    return DimensionResult(
        dimension=dim, n=len(texts), k_tried=out["k_tried"], k=choice.k,
        silhouette=choice.scores.get(choice.k), clusters=len(kept), noise=out["noise"],
        names={c: cl[c]["name"] for c in kept}, notes=out["notes"],
        examples={c: texts[cl[c]["medoid"]] for c in kept},
    )


def _write(warehouse: Warehouse, run_id: str, dims: list[str], only_given: bool, writes: list, details: dict,
           started) -> None:
    """One transaction: replace the run's rows (only ``dims`` when ``only_given``) and record the stage."""
    with warehouse.transaction() as con:
        for table in ("clusters", "cluster_members", "cluster_k_scores"):
            if only_given:
                for dim in dims:
                    delete_rows(con, table, {"run_id": run_id, "dimension": dim})
            else:
                delete_rows(con, table, {"run_id": run_id})
        for clusters_tbl, members_tbl, scores_tbl in writes:
            insert_arrow(con, "clusters", clusters_tbl)
            insert_arrow(con, "cluster_members", members_tbl)
            insert_arrow(con, "cluster_k_scores", scores_tbl)
        record_stage(con, run_id, "cluster", started_at=started, details=details)


def run(
    warehouse: Warehouse,
    *,
    run_id: str | None = None,
    embedder: str | None = None,
    dimensions: Sequence[str] | None = None,
    k_min: int = D.K_MIN,
    k_max: int = D.K_MAX,
    min_size: int = D.MIN_SIZE,
    seed: int = D.CLUSTER_SEED,
    n_init: int = D.N_INIT,
    sample_size: int = D.SILHOUETTE_SAMPLE,
    labeler: str = D.LABELER,
    label_model: str | None = None,
    ollama_host: str | None = None,
    progress: bool = True,
) -> ClusterResult:
    """Cluster every embedded dimension of a run (see the module docstring)."""
    started = utcnow()
    t0 = time.perf_counter()
    _check_options(k_min, k_max, min_size, labeler, label_model)
    with warehouse.connect() as con:
        run_id = require_run(con, run_id)
        embedder, tbl, dims = _load(con, run_id, embedder, dimensions)

    namer = _OllamaNamer(label_model, ollama_host, seed) if labeler == "ollama" else None
    method = f"ollama:{label_model}" if labeler == "ollama" else None
    warnings: list[str] = []
    all_dims = tbl.column("dimension").to_numpy(zero_copy_only=False)
    hyp = np.asarray(tbl.column("hypothesis_id").to_pylist(), dtype=object)
    ex = tbl.column("example_id").to_numpy(zero_copy_only=False)
    texts_all = tbl.column("text").to_pylist()
    all_X = _vectors(tbl, run_id, embedder)
    encode = None
    if labeler in ("keyphrase", "ollama") and len(tbl):  # ollama's fallback names are keyphrases too
        encode, why = _phrase_encoder(embedder, all_X.shape[1])
        if why:
            warnings.append(f"Cluster names ranked by c-TF-IDF alone: the embedder {embedder!r} could not be "
                            f"used to rank keyphrases against the centroids ({why}).")

    from tqdm.auto import tqdm

    results: list[DimensionResult] = []
    writes = []
    now = utcnow()
    for dim in dims:
        pos = np.flatnonzero(all_dims == dim)
        texts = [texts_all[i] for i in pos]
        with tqdm(desc=f"cluster {dim}", unit="k", disable=None if progress else True) as bar:
            out = cluster_dimension(
                all_X[pos], texts, k_min=k_min, k_max=k_max, min_size=min_size, seed=seed, n_init=n_init,
                sample_size=sample_size, namer=namer, encode=encode, progress=bar.update,
            )
        writes.append(_tables(run_id, dim, embedder, method, out, texts, hyp[pos], ex[pos], now))
        results.append(_dimension_result(dim, out, texts))

    if namer is not None and namer.failed:
        warnings.append(
            f"Ollama labeler unavailable at {namer.host} with model {label_model!r} ({namer.failed}); "
            f"clusters after that were named by keyphrases (c-TF-IDF) instead. Start it with `ollama serve` "
            f"and `ollama pull {label_model}`, or use --labeler keyphrase."
        )
    _write(warehouse, run_id, dims, bool(dimensions), writes, started=started, details={
        "embedder": embedder, "k_min": k_min, "k_max": k_max, "min_size": min_size, "seed": seed,
        "n_init": n_init, "sample_size": sample_size, "labeler": labeler, "label_model": label_model,
        "warnings": warnings,
        "dimensions": {r.dimension: {"n": r.n, "k": r.k, "k_tried": r.k_tried, "silhouette": r.silhouette,
                                     "clusters": r.clusters, "noise": r.noise, "notes": r.notes}
                       for r in results},
    })
    return ClusterResult(run_id, embedder, results, warnings, time.perf_counter() - t0)
