"""Diagnosis scores: how likely a failure's label is wrong, and how ambiguous it is.

Plain functions over arrays (numpy, scipy). Every failure gets two scores in [0, 1]
(higher = more likely), each a logistic model over the measured signals that are present,
with the signals it used and those it missed:

``label_error_score``
    the probability that the given label is wrong (a planted flip), from

    ===========================  ==================================================================
    signal                       meaning
    ===========================  ==================================================================
    ``log_given_prob``           log of the model's probability for the given label (cleanlab's
                                 self-confidence label quality, floored at 1e-6)
    ``log_pred_prob``            log of the model's probability for its prediction
    ``neighbour_given_share``    share of the k nearest training images (in the model's feature
                                 space) that carry the given label
    ===========================  ==================================================================

``ambiguity_score``
    the probability that people would disagree about the image, from the model's entropy
    (divided by log C), how often the run's model gets the given class wrong
    (``class_error_rate``), how often it confuses the pair in either direction
    (``pair_confusion``), and the image's brightness and border edge share. (Margin and the
    given label's probability were tried too: collinear with entropy, they added nothing out
    of fold and made the fitted signs hard to read.)

Which model applies is decided per failure by the signals present: a run with probabilities
and neighbours uses ``probs+neighbours``; an ingested run without features uses ``probs``
(and says that neighbours were missing); without probability vectors the label-error score
uses ``confidence`` alone (the predicted class's probability) and the ambiguity score the
run's confusion and the image facts. Nothing is guessed: a score whose every signal is
missing is null.

Coefficients and thresholds
---------------------------
The coefficients (``LABEL_ERROR_MODELS``, ``AMBIGUITY_MODELS``) and the tag thresholds
(:data:`LABEL_ERROR_THRESHOLD`, :data:`AMBIGUITY_THRESHOLD`) were fitted and chosen by
``benchmarks/bench_diagnosis.py --fit`` on out-of-sample predictions for the CIFAR-10
*training* split (two folds, ResNet-18 from scratch) against planted label flips and the
CIFAR-10N human labels; never on a test split, never on the run being analysed. They are
versioned by :data:`RULES_VERSION`: change any of them and bump it. docs/diagnosis.md has
the figures, including what does not work.

Tags follow from the scores: ``annotation_issue`` when ``label_error_score >=
LABEL_ERROR_THRESHOLD``; else ``ambiguous_image`` when ``ambiguity_score >=
AMBIGUITY_THRESHOLD``; else ``model_error``.

Detection power
---------------
:func:`detection_power` estimates how well the score finds label errors with *this* run's
model: it plants random flips in a copy of the evaluation labels (probabilities and features
stay as they are), scores every resulting failure, and reports recall and precision at the
tag threshold with Wilson 95% intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

#: bump when a coefficient, threshold or signal definition below changes
RULES_VERSION = "diagnosis-1"

#: floor of probabilities before the log (a probability of 0 says no more than 1e-6)
PROB_FLOOR = 1e-6

# -- fitted by benchmarks/bench_diagnosis.py --fit (see the module docstring) ---------------------
LABEL_ERROR_MODELS: dict[str, dict[str, float]] = {
    "probs+neighbours": {"intercept": -7.532, "log_given_prob": -1.007, "log_pred_prob": -0.394,
                         "neighbour_given_share": -0.865},
    "probs": {"intercept": -7.649, "log_given_prob": -1.027, "log_pred_prob": -0.387},
    "confidence": {"intercept": -2.628, "log_pred_prob": 2.199},
}
#: the entropy coefficient of the ambiguity models is fixed, not fitted: fitted alone on CIFAR-10N
#: it is ~0.07 (human disagreement among a weak model's failures is mostly class-level), which
#: would leave the score nearly constant within a class pair. At 1.0 the model's own uncertainty
#: about THIS image counts (a blend of two classes scores above a clean failure), for 0.01-0.016
#: of cross-fold AUROC (docs/diagnosis.md).
AMBIGUITY_ENTROPY_WEIGHT = 1.0
AMBIGUITY_MODELS: dict[str, dict[str, float]] = {
    "probs+image": {"intercept": -0.906, "entropy": AMBIGUITY_ENTROPY_WEIGHT, "class_error_rate": 0.972,
                    "pair_confusion": 0.318, "brightness": -1.070, "edge_share": 0.909},
    "probs": {"intercept": -1.113, "entropy": AMBIGUITY_ENTROPY_WEIGHT, "class_error_rate": 1.026,
              "pair_confusion": 0.262},
    "confusion+image": {"intercept": -0.384, "class_error_rate": 0.972, "pair_confusion": 0.318, "brightness": -1.070,
                        "edge_share": 0.909},
}
#: label_error_score at or above this: the ``annotation_issue`` tag (on the benchmark's planted
#: flips: precision 0.55, recall 0.41; the best F1 with precision >= 0.35 and recall >= 0.3)
LABEL_ERROR_THRESHOLD = 0.252
#: ambiguity_score at or above this (and not an annotation issue): the ``ambiguous_image`` tag
#: (Youden's J on CIFAR-10N disagreement among the benchmark's failures: TPR 0.50, FPR 0.43)
AMBIGUITY_THRESHOLD = 0.465

# -- detection power -------------------------------------------------------------------------------
#: share of the evaluation examples flipped per trial (capped by DETECTION_MAX_FLIPS)
DETECTION_FLIP_RATE = 0.02
DETECTION_MIN_FLIPS = 20
DETECTION_MAX_FLIPS = 200
DETECTION_TRIALS = 5
#: below either (recall or precision at the threshold), the model is too weak for the
#: candidates to be worth a look; below DETECTION_USEFUL_PRECISION it is 'weak'
DETECTION_MIN_RECALL = 0.10
DETECTION_MIN_PRECISION = 0.10
DETECTION_USEFUL_PRECISION = 0.35

# -- tag checks ------------------------------------------------------------------------------------
#: an ``annotation_issue`` tag is contradicted when the label-error score is below this AND the
#: label is well supported (given-label probability >= SUPPORTED_GIVEN_PROB or at least
#: SUPPORTED_NEIGHBOUR_SHARE of the nearest training images carry it)
CONTRADICT_LABEL_ERROR = 0.05
SUPPORTED_GIVEN_PROB = 0.10
SUPPORTED_NEIGHBOUR_SHARE = 0.50
#: an ``ambiguous_image`` tag is contradicted when the ambiguity score is below this and the model
#: is confident (margin >= CONFIDENT_MARGIN)
CONTRADICT_AMBIGUITY = 0.30
CONFIDENT_MARGIN = 0.80

LABEL_SIGNALS = ("log_given_prob", "log_pred_prob", "neighbour_given_share")
AMBIGUITY_SIGNALS = ("entropy", "class_error_rate", "pair_confusion", "brightness", "edge_share")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z)


def _apply(models: Mapping[str, Mapping[str, float]], signals: Mapping[str, np.ndarray], n: int):
    """Score each row with the first model (in order) whose signals are all present there.

    Returns
    -------
    score : ndarray of float64, shape (n,), NaN where no model applies
    model : ndarray of object, shape (n,), the model name per row (None where none applies)
    """
    score = np.full(n, np.nan)
    which = np.full(n, None, dtype=object)
    todo = np.ones(n, dtype=bool)
    for name, coef in models.items():
        needed = [k for k in coef if k != "intercept"]
        have = np.ones(n, dtype=bool)
        for k in needed:
            v = signals.get(k)
            have &= np.isfinite(v) if v is not None else False
        rows = todo & have
        if not rows.any():
            continue
        z = np.full(int(rows.sum()), float(coef.get("intercept", 0.0)))
        for k in needed:
            z = z + float(coef[k]) * np.asarray(signals[k], dtype=np.float64)[rows]
        score[rows] = _sigmoid(z)
        which[rows] = name
        todo &= ~rows
    return score, which


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def neighbour_share(neighbour_labels: np.ndarray | None, classes: np.ndarray) -> np.ndarray:
    """Share of each row's neighbour labels equal to ``classes`` (NaN for rows without neighbours).

    Parameters
    ----------
    neighbour_labels : ndarray of int, shape (N, k), or None; rows of -1 mean "no neighbours"
    classes : ndarray of int, shape (N,)
    """
    classes = np.asarray(classes)
    if neighbour_labels is None:
        return _nan(len(classes))
    nl = np.asarray(neighbour_labels)
    if nl.ndim != 2 or nl.shape[1] == 0:
        return _nan(len(classes))
    share = (nl == classes[:, None]).mean(axis=1)
    return np.where((nl >= 0).all(axis=1), share, np.nan)


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


def label_error_signals(*, labels: np.ndarray, probs: np.ndarray | None = None, confidence: np.ndarray | None = None,
                        neighbour_labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The label-error signals of N examples (NaN where a signal is missing).

    Parameters
    ----------
    labels : ndarray of int, shape (N,), the given labels
    probs : ndarray of float, shape (N, C), out-of-sample probabilities, or None
    confidence : ndarray of float, shape (N,), the predicted class's probability (used without probs)
    neighbour_labels : ndarray of int, shape (N, k), labels of the nearest training images, or None
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    out = {k: _nan(n) for k in LABEL_SIGNALS}
    if probs is not None:
        p = np.asarray(probs, dtype=np.float64)
        out["log_given_prob"] = np.log(np.maximum(p[np.arange(n), labels], PROB_FLOOR))
        out["log_pred_prob"] = np.log(np.maximum(p.max(axis=1), PROB_FLOOR))
    elif confidence is not None:
        c = np.asarray(confidence, dtype=np.float64)
        out["log_pred_prob"] = np.log(np.maximum(np.where(np.isfinite(c), c, np.nan), PROB_FLOOR))
    out["neighbour_given_share"] = neighbour_share(neighbour_labels, labels)
    return out


def confusion_rates(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class error rate and symmetric pair confusion of a whole evaluation split.

    Returns
    -------
    class_error : ndarray, shape (C,): share of class-c examples predicted as another class
    pair : ndarray, shape (C, C): (n[a->b] + n[b->a]) / (n_a + n_b), 0 on the diagonal
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    cm = np.zeros((num_classes, num_classes))
    np.add.at(cm, (labels, pred), 1.0)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_error = np.where(support > 0, 1.0 - np.diag(cm) / np.where(support > 0, support, 1), np.nan)
        denom = support[:, None] + support[None, :]
        pair = np.where(denom > 0, (cm + cm.T) / np.where(denom > 0, denom, 1), np.nan)
    np.fill_diagonal(pair, 0.0)
    return class_error, pair


def ambiguity_signals(*, labels: np.ndarray, pred: np.ndarray, class_error: np.ndarray, pair: np.ndarray,
                      probs: np.ndarray | None = None, brightness: np.ndarray | None = None,
                      edge_share: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The ambiguity signals of N failures (NaN where a signal is missing).

    Parameters
    ----------
    labels, pred : ndarray of int, shape (N,)
    class_error, pair : from :func:`confusion_rates` over the run's whole evaluation split
    probs : ndarray, shape (N, C), or None
    brightness, edge_share : ndarray, shape (N,), image facts (NaN where unmeasured), or None
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    n = len(labels)
    out = {k: _nan(n) for k in AMBIGUITY_SIGNALS}
    if probs is not None:
        from scipy.stats import entropy

        p = np.asarray(probs, dtype=np.float64)
        c = p.shape[1]
        out["entropy"] = entropy(p, axis=1) / math.log(c) if c > 1 else np.zeros(n)
    out["class_error_rate"] = np.asarray(class_error, dtype=np.float64)[labels]
    out["pair_confusion"] = np.asarray(pair, dtype=np.float64)[labels, pred]
    if brightness is not None:
        out["brightness"] = np.asarray(brightness, dtype=np.float64)
    if edge_share is not None:
        out["edge_share"] = np.asarray(edge_share, dtype=np.float64)
    return out


def label_error_score(signals: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(score, model name) per row from :func:`label_error_signals`; NaN / None where no model applies."""
    n = len(next(iter(signals.values())))
    return _apply(LABEL_ERROR_MODELS, signals, n)


def ambiguity_score(signals: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(score, model name) per row from :func:`ambiguity_signals`; NaN / None where no model applies."""
    n = len(next(iter(signals.values())))
    return _apply(AMBIGUITY_MODELS, signals, n)


def tags(label_error: np.ndarray, ambiguity: np.ndarray) -> np.ndarray:
    """The ``data_quality`` tag per failure from its two scores (NaN scores never fire).

    Returns
    -------
    ndarray of object (str), shape (N,)
    """
    le = np.nan_to_num(np.asarray(label_error, dtype=np.float64), nan=-1.0)
    am = np.nan_to_num(np.asarray(ambiguity, dtype=np.float64), nan=-1.0)
    return np.where(le >= LABEL_ERROR_THRESHOLD, "annotation_issue",
                    np.where(am >= AMBIGUITY_THRESHOLD, "ambiguous_image", "model_error")).astype(object)


def tag_of(label_error: float | None, ambiguity: float | None) -> str:
    """:func:`tags` for one failure."""
    return str(tags(np.array([np.nan if label_error is None else label_error]),
                    np.array([np.nan if ambiguity is None else ambiguity]))[0])


def explain(models: Mapping[str, Mapping[str, float]], model: str | None, signals: Mapping[str, float]) -> dict:
    """The JSON-able record of one score: the model used, its signals (rounded) and what was missing."""
    all_signals = sorted({k for coef in models.values() for k in coef if k != "intercept"})
    used = [k for k in models.get(model or "", {}) if k != "intercept"]
    present = {k: round(float(signals[k]), 4) for k in used if k in signals and np.isfinite(signals[k])}
    return {"model": model, "signals": present, "missing": [k for k in all_signals if k not in used]}


# -- detection power ---------------------------------------------------------------------------------


def wilson(successes: int, n: int) -> tuple[float | None, float | None]:
    """Wilson score 95% interval of successes / n (scipy); (None, None) when n == 0."""
    if n <= 0:
        return None, None
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass
class DetectionPower:
    """How well :func:`label_error_score` finds planted flips with one run's model."""

    signals: str
    eval_examples: int
    flips_per_trial: int
    trials: int
    threshold: float
    recall: float | None
    recall_low: float | None
    recall_high: float | None
    precision: float | None
    precision_low: float | None
    precision_high: float | None
    average_precision: float | None
    candidates: float
    verdict: str
    message: str
    per_trial: list[dict] = field(default_factory=list)


def _flip(labels: np.ndarray, num_classes: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    chosen = rng.choice(len(labels), size=m, replace=False)
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, size=m)) % num_classes
    mask = np.zeros(len(labels), dtype=bool)
    mask[chosen] = True
    return noisy, mask


def detection_power(*, labels: np.ndarray, probs: np.ndarray | None = None, confidence: np.ndarray | None = None,
                    pred: np.ndarray | None = None, neighbour_labels: np.ndarray | None = None,
                    num_classes: int | None = None, trials: int = DETECTION_TRIALS,
                    flip_rate: float = DETECTION_FLIP_RATE, seed: int = 0,
                    threshold: float = LABEL_ERROR_THRESHOLD) -> DetectionPower | None:
    """Plant random flips in copies of the evaluation labels and score them (see the module docstring).

    Parameters
    ----------
    labels : ndarray of int, shape (N,), the run's evaluation labels
    probs : ndarray, shape (N, C), or None (then ``confidence`` and ``pred``)
    neighbour_labels : ndarray of int, shape (N, k), labels of each example's nearest training
        images, or None
    trials : copies, each with its own random flips (``seed`` + trial)

    Returns
    -------
    DetectionPower, or None when fewer than 2 classes or too few examples to plant flips among
    """
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        num_classes = num_classes or probs.shape[1]
        pred = probs.argmax(axis=1)
    if pred is None or not num_classes or num_classes < 2 or n < 2 * DETECTION_MIN_FLIPS:
        return None
    pred = np.asarray(pred, dtype=np.int64)
    m = int(min(DETECTION_MAX_FLIPS, max(DETECTION_MIN_FLIPS, round(flip_rate * n))))
    found = planted = tagged = 0
    aps, per_trial = [], []
    model_used = None
    for t in range(trials):
        noisy, flipped = _flip(labels, num_classes, m, np.random.default_rng(seed + t))
        fail = pred != noisy
        sig = label_error_signals(labels=noisy[fail], probs=None if probs is None else probs[fail],
                                  confidence=None if confidence is None else np.asarray(confidence)[fail],
                                  neighbour_labels=None if neighbour_labels is None else neighbour_labels[fail])
        score, which = label_error_score(sig)
        s = np.nan_to_num(score, nan=-1.0)
        hit = s >= threshold
        truth = flipped[fail]
        found += int((hit & truth).sum())
        tagged += int(hit.sum())
        planted += m
        if truth.any() and (~truth).any():
            aps.append(float(average_precision_score(truth, s)))
        per_trial.append({"flips": m, "tagged": int(hit.sum()), "found": int((hit & truth).sum())})
        names = [w for w in which if w]
        model_used = max(set(names), key=names.count) if names else model_used
    recall = found / planted if planted else None
    precision = found / tagged if tagged else None
    r_lo, r_hi = wilson(found, planted)
    p_lo, p_hi = wilson(found, tagged)
    if recall is None or recall < DETECTION_MIN_RECALL or precision is None or precision < DETECTION_MIN_PRECISION:
        verdict = "too weak"
    elif precision < DETECTION_USEFUL_PRECISION:
        verdict = "weak"
    else:
        verdict = "useful"
    message = detection_message(verdict, recall, precision, m, n)
    return DetectionPower(
        signals=model_used or "none", eval_examples=n, flips_per_trial=m, trials=trials, threshold=threshold,
        recall=recall, recall_low=r_lo, recall_high=r_hi, precision=precision, precision_low=p_lo,
        precision_high=p_hi, average_precision=float(np.mean(aps)) if aps else None,
        candidates=tagged / trials, verdict=verdict, message=message, per_trial=per_trial,
    )


def detection_message(verdict: str, recall: float | None, precision: float | None, flips: int, n: int) -> str:
    """The sentence shown beside the annotation candidates."""
    rate = f"{flips} random flips planted among {n:,} evaluation labels"
    if recall is None or precision is None or not precision:
        return (f"With this model Lens cannot find label errors: of {rate}, none was tagged. The candidates "
                f"are not worth a look; a stronger model (or its probabilities, via lens ingest) is.")
    one_in = max(1, round(1 / precision))
    core = (f"With this model, about 1 in {one_in} candidates is a real flip and {recall:.0%} of flips are found "
            f"({rate}).")
    if verdict == "too weak":
        return core + " That is too weak: the candidates are not worth a look; train a stronger model first."
    if verdict == "weak":
        return core + " Check candidates with that in mind."
    return core
