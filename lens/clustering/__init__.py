"""Clustering of sentence vectors: plain functions over arrays, no warehouse.

The ``cluster`` stage (:mod:`lens.stages.cluster`) strings these together per dimension:

1. :func:`k_range` clips the requested k range so that every cluster can reach the
   minimum size (``k_max <= n // min_size``), and says so;
2. :func:`choose_k` runs seeded KMeans (fixed ``n_init``) for every k of the range and
   keeps the k with the best cosine silhouette, measured on a fixed seeded sample of at
   most ``sample_size`` vectors (one pairwise-distance matrix shared by all k);
3. :func:`noise_filter` turns clusters below ``min_size`` into noise (-1) and numbers the
   rest by size;
4. :func:`centroid_distances`, :func:`representatives` (nearest the centroid, the first
   is the medoid), :func:`keyphrase_names` (short names: keyphrases weighted by class-based
   TF-IDF, ranked against the centroid with the run's embedder, diverse by MMR, distinct
   among siblings; cut by :func:`cap_name` to :data:`NAME_CHARS`) and :func:`map_2d` (PCA)
   describe the result.

Vectors are expected L2-normalised (as ``lens embed`` stores them): Euclidean KMeans on
unit vectors is spherical KMeans, which is what a cosine silhouette measures.
scikit-learn is imported inside the functions. The naming functions live in
:mod:`lens.clustering.names` and are importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

@dataclass
class KRange:
    """The k values to try: ``k_min..k_max`` inclusive; ``k_max == 1`` means one cluster."""

    k_min: int
    k_max: int
    note: str | None = None

    @property
    def ks(self) -> list[int]:
        return list(range(self.k_min, self.k_max + 1))


def k_range(n: int, *, k_min: int, k_max: int, min_size: int, n_distinct: int | None = None) -> KRange:
    """Clip a requested k range to what ``n`` vectors can fill.

    Parameters
    ----------
    n : int
        Number of vectors.
    k_min, k_max : int
        Requested range (inclusive), ``2 <= k_min <= k_max``.
    min_size : int
        Smallest cluster that is not noise: at most ``n // min_size`` clusters can reach it.
    n_distinct : int, optional
        Number of distinct vectors (KMeans cannot make more clusters than that).

    Returns
    -------
    KRange
        The range to try, with a note saying what was clipped and why (None if nothing was).
        ``k_max == 1`` when even k=2 cannot be reached: put everything in one cluster.
    """
    if k_min < 2 or k_max < k_min:
        raise ValueError(f"need 2 <= k_min <= k_max, got {k_min}..{k_max}")
    cap = n // max(min_size, 1)
    # silhouette needs k <= n - 1; KMeans needs k <= distinct points
    cap = min(cap, n - 1, n if n_distinct is None else n_distinct)
    if cap < 2:
        why = f"n={n} answers" + (f" ({n_distinct} distinct)" if n_distinct is not None and n_distinct < n else "")
        return KRange(1, 1, f"{why} cannot fill 2 clusters of --min-size {min_size}: all put in one cluster")
    if k_max <= cap:
        return KRange(k_min, k_max, None)
    # when even k_min is out of reach, let silhouette choose among every feasible k (2..cap)
    # rather than force k = cap, which would leave most clusters just under --min-size
    lo = k_min if k_min <= cap else 2
    return KRange(
        lo, cap,
        f"k range {k_min}-{k_max} clipped to {lo}-{cap}: {n} answers fill at most {cap} clusters "
        f"of --min-size {min_size}",
    )


def silhouette_sample(n: int, sample_size: int, seed: int) -> np.ndarray:
    """Indices (sorted) of a seeded sample of ``min(n, sample_size)`` out of ``n``; all when n is small."""
    if n <= sample_size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False))


@dataclass
class KChoice:
    """Result of :func:`choose_k`.

    Attributes
    ----------
    k : int
        Chosen k.
    labels : ndarray of int, shape (n,)
        KMeans labels of the chosen k, 0..k-1.
    centers : ndarray of float, shape (k, d)
    scores : dict int -> float
        Mean cosine silhouette (on the sample) of every k tried.
    point_silhouette : ndarray of float, shape (n,)
        Silhouette of each sampled point under the chosen k; NaN outside the sample.
    sample : ndarray of int
        Indices the silhouettes were measured on.
    """

    k: int
    labels: np.ndarray
    centers: np.ndarray
    scores: dict[int, float] = field(default_factory=dict)
    point_silhouette: np.ndarray | None = None
    sample: np.ndarray | None = None


def choose_k(
    X: np.ndarray,
    ks: Sequence[int],
    *,
    seed: int = 0,
    n_init: int = 3,
    sample_size: int = 5000,
    progress=None,
) -> KChoice:
    """KMeans for every k in ``ks``; keep the k with the highest mean cosine silhouette.

    Parameters
    ----------
    X : ndarray of float, shape (n, d)
        L2-normalised vectors.
    ks : sequence of int
        k values to try (each ``2 <= k < n``); ``[1]`` puts everything in one cluster.
    seed : int
        Seeds KMeans and the silhouette sample: same inputs, same result.
    n_init : int
        KMeans restarts per k (fixed, so the result does not depend on sklearn's default).
    sample_size : int
        Silhouettes are measured on a seeded sample of this many vectors when n is larger.
    progress : callable, optional
        Called with 1 after each k.

    Returns
    -------
    KChoice
        Ties in silhouette go to the smaller k.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances, silhouette_samples

    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    ks = list(ks)
    if ks == [1] or n < 3:
        center = X.mean(axis=0, keepdims=True) if n else np.zeros((1, X.shape[1]), np.float32)
        return KChoice(1, np.zeros(n, dtype=np.int64), center, {}, np.full(n, np.nan), np.arange(n))
    sample = silhouette_sample(n, sample_size, seed)
    dist = pairwise_distances(X[sample], metric="cosine").astype(np.float32)
    np.fill_diagonal(dist, 0.0)
    best: tuple[float, int, np.ndarray, np.ndarray, np.ndarray] | None = None
    scores: dict[int, float] = {}
    for k in ks:
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(X)
        labels = km.labels_.astype(np.int64)
        if len(np.unique(labels[sample])) < 2:
            point = np.zeros(len(sample))
            score = -1.0
        else:
            point = silhouette_samples(dist, labels[sample], metric="precomputed")
            score = float(point.mean())
        scores[k] = score
        if best is None or score > best[0]:
            best = (score, k, labels, km.cluster_centers_.astype(np.float32), point)
        if progress is not None:
            progress(1)
    assert best is not None
    _, k, labels, centers, point = best
    full = np.full(n, np.nan)
    full[sample] = point
    return KChoice(k, labels, centers, scores, full, sample)


def noise_filter(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Cluster ids after dropping small clusters: -1 for members of clusters below ``min_size``.

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
        KMeans labels.
    min_size : int

    Returns
    -------
    ndarray of int, shape (n,)
        Kept clusters renumbered 0, 1, ... by size (largest first, ties by KMeans label);
        -1 for noise.
    """
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    order = np.lexsort((values, -counts))
    mapping = {}
    next_id = 0
    for i in order:
        if counts[i] >= min_size:
            mapping[int(values[i])] = next_id
            next_id += 1
    return np.array([mapping.get(int(v), -1) for v in labels], dtype=np.int64)


def centroid_distances(X: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Cosine distance of each vector to its cluster's centroid.

    Parameters
    ----------
    X : ndarray, shape (n, d)
    labels : ndarray of int, shape (n,)
        Index into ``centers``.
    centers : ndarray, shape (k, d)

    Returns
    -------
    ndarray of float32, shape (n,)
        ``1 - cos(x_i, centers[labels[i]])``, in [0, 2].
    """
    X = np.asarray(X, dtype=np.float32)
    c = np.asarray(centers, dtype=np.float32)[labels]
    num = np.einsum("ij,ij->i", X, c)
    den = np.linalg.norm(X, axis=1) * np.linalg.norm(c, axis=1)
    cos = np.divide(num, den, out=np.ones_like(num), where=den > 0)
    return (1.0 - np.clip(cos, -1.0, 1.0)).astype(np.float32)


def representatives(distances: np.ndarray, members: np.ndarray, n: int = 5) -> np.ndarray:
    """The ``n`` members nearest their centroid, nearest first (ties by position).

    For unit vectors the nearest member to the centroid is also the medoid: the member
    with the least total cosine distance to the others (``sum_j 1 - x_i.x_j = m - x_i.sum_j x_j``).

    Parameters
    ----------
    distances : ndarray, shape (n_all,)
        From :func:`centroid_distances`.
    members : ndarray of int, shape (m,)
        Positions of one cluster's members.
    n : int

    Returns
    -------
    ndarray of int, shape (min(n, m),)
        Positions (into the full arrays), nearest first.
    """
    members = np.asarray(members)
    order = np.lexsort((members, distances[members]))
    return members[order[:n]]


#: longest cluster name stored: a name is read in tables, dropdowns and legends
NAME_CHARS = 160


def cap_name(text: str, limit: int = NAME_CHARS) -> str:
    """``text`` on one line, cut to at most ``limit`` characters (at a word when one is near) with "…".

    Cluster names are made from answers (the medoid sentence), which can be as long as an
    answer may be; the full answer stays in ``hypothesis_dimensions`` (and ``medoid_text``).

    Parameters
    ----------
    text : str
    limit : int
        At least 2.

    Returns
    -------
    str
        Whitespace runs collapsed to one space; unchanged when it fits.
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def map_2d(X: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """A 2-D map of the vectors for a scatter plot (PCA).

    Parameters
    ----------
    X : ndarray, shape (n, d)
    seed : int

    Returns
    -------
    ndarray of float32, shape (n, 2)
        Zeros when there are fewer than 2 vectors.
    """
    X = np.asarray(X, dtype=np.float32)
    out = np.zeros((len(X), 2), dtype=np.float32)
    if len(X) < 2:
        return out
    from sklearn.decomposition import PCA

    n_comp = min(2, X.shape[1], len(X))
    out[:, :n_comp] = PCA(n_components=n_comp, random_state=seed).fit_transform(X)
    return out


from lens.clustering.names import (  # noqa: E402  (names uses nothing above; re-exported here)
    DIVERSITY,
    GENERIC_WORDS,
    NAME_TEXT_CHARS,
    NAME_WORDS,
    PHRASE_CANDIDATES,
    PHRASE_STOP_WORDS,
    PHRASE_WORDS,
    ClusterName,
    keyphrase_names,
)

__all__ = ["KRange", "k_range", "silhouette_sample", "KChoice", "choose_k", "noise_filter", "centroid_distances",
           "representatives", "NAME_CHARS", "cap_name", "map_2d", "DIVERSITY", "GENERIC_WORDS", "NAME_TEXT_CHARS",
           "NAME_WORDS", "PHRASE_CANDIDATES", "PHRASE_STOP_WORDS", "PHRASE_WORDS", "ClusterName", "keyphrase_names"]
