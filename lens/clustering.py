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
scikit-learn is imported inside the functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: Words that say nothing about a cluster of failure explanations (added to English stop words).
GENERIC_WORDS = frozenset({
    "image", "images", "photo", "photos", "picture", "pictures", "model", "models", "class", "classes",
    "classifier", "predicted", "prediction",
})


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

# -- short names: keyphrases that the members share and the siblings do not --------------------

#: most words in an offline cluster name (:func:`keyphrase_names`)
NAME_WORDS = 6
#: characters of each member's text read for naming (answers can be 256K characters long)
NAME_TEXT_CHARS = 2000
#: longest keyphrase candidate, in words
PHRASE_WORDS = 3
#: candidates per cluster that are embedded and ranked against the centroid
PHRASE_CANDIDATES = 20
#: MMR trade-off for the second phrase of a name: 0 = relevance only, 1 = difference only
DIVERSITY = 0.6

#: Function words: a keyphrase neither starts nor ends with one (inside it they may stand:
#: "out of focus"). Deliberately shorter than scikit-learn's list, which drops words that carry
#: a cause ("back", "behind", "front", "top", "side", "full", "fire").
PHRASE_STOP_WORDS = frozenset("""
a about after again against all also am an and any are as at be because been before being both but by
can could did do does doing down during each either else even ever every few for from had has have having
he her here hers him his how however i if in into is it its itself just may me might more most much must
my neither nor of off on once one only or our ours over own per perhaps possibly probably quite rather
same shall she should since so some such than that the their theirs them then there these they this those
though through thus to too under until up upon us very via was we were what when where whether which while
who whom whose why will with within without would yet you your
another other others two three like between among rather than instead e.g i.e etc
""".split()) | GENERIC_WORDS

_SEGMENT = re.compile(r"[.,;:!?()\[\]{}\"“”‘’/|<>=+*&#…]+|\s-\s|\s–\s|\s—\s")
_TOKEN = re.compile(r"[a-z][a-z'-]*[a-z]")
#: a phrase does not run across these ("blurry and out" is two phrases)
_JOINERS = frozenset({"and", "or", "but", "nor", "yet", "so"})
#: may open a phrase ("no measured signal") but not end one or stand alone
_NEGATIONS = frozenset({"no", "not", "never"})


def _phrases(text: str, exclude: Sequence[str], max_words: int = PHRASE_WORDS) -> set[str]:
    """The keyphrase candidates of one text: 1..max_words-word runs inside one clause.

    Class placeholders and punctuation end a run; a candidate neither starts nor ends with a
    function word (:data:`PHRASE_STOP_WORDS`) and has no numbers.
    """
    text = text[:NAME_TEXT_CHARS].lower()
    for e in exclude:
        text = text.replace(e.lower(), " . ")
    out: set[str] = set()
    for segment in _SEGMENT.split(text):
        words = segment.split()
        ok = [_TOKEN.fullmatch(w) is not None and w not in _JOINERS for w in words]
        edge = [w not in PHRASE_STOP_WORDS for w in words]  # may open a phrase
        end = [e and w not in _NEGATIONS for w, e in zip(words, edge)]  # may close one
        for start, first in enumerate(words):
            if not ok[start] or not edge[start] or (start and words[start - 1] in _NEGATIONS):
                continue  # "sharp" of "not sharp" says the opposite: only "not sharp" counts
            for n in range(1, max_words + 1):
                last = start + n - 1
                if last >= len(words) or not ok[last]:
                    break
                if not end[last] or (n > 1 and len(set(words[start:last + 1])) < n):
                    continue  # ends on a function word; or "word word"
                out.add(" ".join(words[start:last + 1]))
    return out


@dataclass
class ClusterName:
    """A short name of one cluster (:func:`keyphrase_names`).

    Attributes
    ----------
    name : str
        At most :data:`NAME_WORDS` words, distinct from the sibling clusters' names.
    phrases : list of str
        The keyphrases it is made of, best first.
    support : list of float
        Share of the cluster's members whose text holds each phrase.
    """

    name: str
    phrases: list[str]
    support: list[float]


def keyphrase_names(
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    vectors: np.ndarray | None = None,
    encode=None,
    max_words: int = NAME_WORDS,
    exclude: Sequence[str] = ("[CLASS]",),
    candidates: int = PHRASE_CANDIDATES,
    diversity: float = DIVERSITY,
    fallback: dict[int, str] | None = None,
) -> dict[int, ClusterName]:
    """Short names that say what each cluster's members share and its siblings do not.

    KeyBERT-style keyphrases, ranked with class-based TF-IDF weights:

    1. candidates are 1-3 word runs of the members' texts (:func:`_phrases`);
    2. each candidate gets ``support`` (share of the cluster's members that say it) times
       ``exclusivity`` (its support here over the sum of its supports in all clusters):
       a template phrase every cluster says scores 1/k, a phrase only these members say 1;
       a phrase is dropped for a longer one holding it that nearly as many members say;
    3. with ``encode`` (the run's own embedder) the best ``candidates`` of each cluster are
       embedded, and their cosine to the cluster's centroid is added, less the cosine to the
       nearest sibling centroid (relevance to this cluster rather than to the others);
    4. the name is the best phrase, plus the phrase with the best maximal-marginal-relevance
       score (``(1 - diversity) * score - diversity * similarity to the first``) that shares
       no word with it, when both fit in ``max_words`` words and it is distinctive too (a
       quarter of the members say it, with exclusivity at least ``max(1.5 / k, 0.4)``);
    5. siblings never share a name: clusters are named largest first, and a phrase another
       cluster already leads with is not used to lead again; the last resort appends
       ``#<cluster id>``.

    Parameters
    ----------
    texts : sequence of str, length n
        The embedded texts (class names masked as ``[CLASS]``).
    labels : ndarray of int, shape (n,)
        Cluster id of each text; -1 (noise) is left out and not named.
    vectors : ndarray of float, shape (n, d), optional
        The texts' unit vectors (for the centroids); needed with ``encode``.
    encode : callable, optional
        ``encode(list_of_phrases) -> ndarray (m, d)`` of unit vectors, the same embedder as
        ``vectors``. Without it the ranking is steps 1, 2, 4, 5 (similarity: shared words).
    max_words : int
    exclude : sequence of str
        Literal strings that end a phrase (the class placeholder).
    candidates : int
        Candidates per cluster carried into steps 3 and 4.
    diversity : float
        In [0, 1].
    fallback : dict int -> str, optional
        Text to name a cluster by when it has no candidate at all (e.g. its medoid answer);
        cut to ``max_words`` words.

    Returns
    -------
    dict int -> ClusterName
        One per cluster id >= 0, names distinct.
    """
    labels = np.asarray(labels)
    ids = [int(c) for c in np.unique(labels) if c >= 0]
    if not ids:
        return {}
    sizes = {c: int((labels == c).sum()) for c in ids}
    order = sorted(ids, key=lambda c: (-sizes[c], c))
    # document frequency of each phrase per cluster
    df: dict[int, dict[str, int]] = {c: {} for c in ids}
    for text, c in zip(texts, labels):
        if c < 0:
            continue
        counts = df[int(c)]
        for p in _phrases(text or "", exclude):
            counts[p] = counts.get(p, 0) + 1
    support = {c: {p: n / sizes[c] for p, n in df[c].items()} for c in ids}
    total: dict[str, float] = {}
    for c in ids:
        for p, s in support[c].items():
            total[p] = total.get(p, 0.0) + s
    min_count = {c: 2 if sizes[c] >= 4 else 1 for c in ids}
    scored: dict[int, list[tuple[str, float]]] = {}
    for c in ids:
        cand = {p: s * (s / total[p]) for p, s in support[c].items() if df[c][p] >= min_count[c]}
        ranked = sorted(cand.items(), key=lambda kv: (-kv[1], -len(kv[0].split()), kv[0]))[:4 * candidates]
        # prefer "motion blur" to "motion" when (nearly) the same members say both
        kept = []
        for p, score in ranked:
            sp = support[c][p]
            if len(p.split()) < PHRASE_WORDS and any(
                    len(q) > len(p) and f" {p} " in f" {q} " and support[c][q] >= 0.8 * sp for q, _ in ranked):
                continue
            kept.append((p, score))
        scored[c] = kept[:candidates]

    emb: dict[str, np.ndarray] = {}
    if encode is not None and vectors is not None:
        V = np.asarray(vectors, dtype=np.float32)
        cent = np.stack([V[labels == c].mean(axis=0) for c in ids])
        cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        phrases = sorted({p for c in ids for p, _ in scored[c]})
        if phrases:
            E = np.asarray(encode(phrases), dtype=np.float32)
            if E.shape[1] != V.shape[1]:
                raise ValueError(f"encode gives {E.shape[1]}-d vectors, the texts' vectors are {V.shape[1]}-d")
            E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
            emb = dict(zip(phrases, E))
            sims = E @ cent.T  # (phrases, clusters)
            row = {p: i for i, p in enumerate(phrases)}
            for j, c in enumerate(ids):
                others = [k for k in range(len(ids)) if k != j]
                rescored = []
                for p, s in scored[c]:
                    rel = float(sims[row[p], j])
                    near = float(sims[row[p], others].max()) if others else 0.0
                    rescored.append((p, s + rel - near))
                scored[c] = sorted(rescored, key=lambda kv: (-kv[1], -len(kv[0].split()), kv[0]))

    def similarity(p: str, q: str) -> float:
        if p in emb and q in emb:
            return float(emb[p] @ emb[q])
        a, b = set(p.split()), set(q.split())
        return len(a & b) / len(a | b)

    # the second phrase must be distinctive too: said here well above a sibling's share
    second_min = max(1.5 / len(ids), 0.4)
    names: dict[int, ClusterName] = {}
    used_lead: set[str] = set()
    used_names: set[str] = set()
    for c in order:
        ranked = [(p, s) for p, s in scored[c] if len(p.split()) <= max_words]
        lead_options = [(p, s) for p, s in ranked if p not in used_lead] or ranked
        if not lead_options:
            words = " ".join((fallback or {}).get(c, "").split()[:max_words]) or f"cluster {c}"
            name = ClusterName(words, [], [])
        else:
            first, s1 = lead_options[0]
            chosen = [first]
            best, best_mmr = None, None
            for p, s in ranked:
                if p == first or set(p.split()) & set(first.split()):
                    continue
                if len(first.split()) + len(p.split()) > max_words:
                    continue
                mmr = (1 - diversity) * s - diversity * similarity(p, first)
                if best_mmr is None or mmr > best_mmr:
                    best, best_mmr = p, mmr
            if best is not None and support[c][best] >= 0.25 and support[c][best] / total[best] >= second_min:
                chosen.append(best)
            name = ClusterName(", ".join(chosen), chosen, [support[c][p] for p in chosen])
            used_lead.add(first)
        if name.name in used_names:
            name.name = f"{' '.join(name.name.split()[:max_words - 1])} #{c}"
        used_names.add(name.name)
        names[c] = name
    return names



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
