"""Short cluster names offline: keyphrases that a cluster's members share and its siblings do not.

:func:`keyphrase_names` (the ``cluster`` stage's default labeler) in steps: candidates
(:func:`_phrases`), support x exclusivity (:func:`_candidates`), ranking against the centroids
with the run's embedder (:func:`_rank_by_centroid`), and one distinct name per cluster
(:func:`_name_clusters`). Plain functions over texts and arrays, no warehouse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Words that say nothing about a cluster of failure explanations (added to English stop words).
GENERIC_WORDS = frozenset({
    "image", "images", "photo", "photos", "picture", "pictures", "model", "models", "class", "classes",
    "classifier", "predicted", "prediction",
})

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
    df, support, total = _phrase_support(texts, labels, ids, sizes, exclude)
    scored = {c: _candidates(df[c], support[c], total, sizes[c], candidates) for c in ids}
    emb: dict[str, np.ndarray] = {}
    if encode is not None and vectors is not None:
        emb = _rank_by_centroid(scored, ids, labels, vectors, encode)
    order = sorted(ids, key=lambda c: (-sizes[c], c))
    return _name_clusters(order, scored, support, total, emb, max_words=max_words, diversity=diversity,
                          fallback=fallback or {})


def _phrase_support(texts, labels, ids, sizes, exclude):
    """Per cluster: document frequency and support (share of members) of each phrase; summed support."""
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
    return df, support, total


def _by_score(kv: tuple[str, float]) -> tuple[float, int, str]:
    return -kv[1], -len(kv[0].split()), kv[0]


def _candidates(df: dict[str, int], support: dict[str, float], total: dict[str, float], size: int,
                candidates: int) -> list[tuple[str, float]]:
    """One cluster's best phrases by support x exclusivity, a phrase dropped for a longer one
    holding it that nearly as many members say."""
    min_count = 2 if size >= 4 else 1
    cand = {p: s * (s / total[p]) for p, s in support.items() if df[p] >= min_count}
    ranked = sorted(cand.items(), key=_by_score)[:4 * candidates]
    # prefer "motion blur" to "motion" when (nearly) the same members say both
    kept = []
    for p, score in ranked:
        sp = support[p]
        if len(p.split()) < PHRASE_WORDS and any(
                len(q) > len(p) and f" {p} " in f" {q} " and support[q] >= 0.8 * sp for q, _ in ranked):
            continue
        kept.append((p, score))
    return kept[:candidates]


def _rank_by_centroid(scored: dict[int, list[tuple[str, float]]], ids: list[int], labels: np.ndarray,
                      vectors: np.ndarray, encode: Callable[[list[str]], np.ndarray]) -> dict[str, np.ndarray]:
    """Add each phrase's cosine to its cluster's centroid less its cosine to the nearest sibling
    centroid (``scored`` is re-ranked in place); returns the phrases' unit vectors."""
    V = np.asarray(vectors, dtype=np.float32)
    cent = np.stack([V[labels == c].mean(axis=0) for c in ids])
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    phrases = sorted({p for c in ids for p, _ in scored[c]})
    if not phrases:
        return {}
    E = np.asarray(encode(phrases), dtype=np.float32)
    if E.shape[1] != V.shape[1]:
        raise ValueError(f"encode gives {E.shape[1]}-d vectors, the texts' vectors are {V.shape[1]}-d")
    E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    sims = E @ cent.T  # (phrases, clusters)
    row = {p: i for i, p in enumerate(phrases)}
    for j, c in enumerate(ids):
        others = [k for k in range(len(ids)) if k != j]
        rescored = []
        for p, s in scored[c]:
            rel = float(sims[row[p], j])
            near = float(sims[row[p], others].max()) if others else 0.0
            rescored.append((p, s + rel - near))
        scored[c] = sorted(rescored, key=_by_score)
    return dict(zip(phrases, E))


def _similarity(p: str, q: str, emb: dict[str, np.ndarray]) -> float:
    """Cosine of the phrases' vectors when both were embedded, else the share of words they share."""
    if p in emb and q in emb:
        return float(emb[p] @ emb[q])
    a, b = set(p.split()), set(q.split())
    return len(a & b) / len(a | b)


def _second_phrase(first: str, ranked: list[tuple[str, float]], emb: dict[str, np.ndarray], *,
                   max_words: int, diversity: float) -> str | None:
    """The best phrase by maximal marginal relevance sharing no word with ``first``."""
    best, best_mmr = None, None
    for p, s in ranked:
        if p == first or set(p.split()) & set(first.split()):
            continue
        if len(first.split()) + len(p.split()) > max_words:
            continue
        mmr = (1 - diversity) * s - diversity * _similarity(p, first, emb)
        if best_mmr is None or mmr > best_mmr:
            best, best_mmr = p, mmr
    return best


def _name_clusters(order, scored, support, total, emb, *, max_words: int, diversity: float,
                   fallback: dict[int, str]) -> dict[int, ClusterName]:
    """Name clusters largest first; a phrase another cluster leads with does not lead again."""
    # the second phrase must be distinctive too: said here well above a sibling's share
    second_min = max(1.5 / len(order), 0.4)
    names: dict[int, ClusterName] = {}
    used_lead: set[str] = set()
    used_names: set[str] = set()
    for c in order:
        ranked = [(p, s) for p, s in scored[c] if len(p.split()) <= max_words]
        lead_options = [(p, s) for p, s in ranked if p not in used_lead] or ranked
        if not lead_options:
            words = " ".join(fallback.get(c, "").split()[:max_words]) or f"cluster {c}"
            name = ClusterName(words, [], [])
        else:
            first = lead_options[0][0]
            chosen = [first]
            best = _second_phrase(first, ranked, emb, max_words=max_words, diversity=diversity)
            if best is not None and support[c][best] >= 0.25 and support[c][best] / total[best] >= second_min:
                chosen.append(best)
            name = ClusterName(", ".join(chosen), chosen, [support[c][p] for p in chosen])
            used_lead.add(first)
        if name.name in used_names:
            name.name = f"{' '.join(name.name.split()[:max_words - 1])} #{c}"
        used_names.add(name.name)
        names[c] = name
    return names
