"""``lens sample``: choose the failures to analyse (the ``samples`` table).

Strategies (all deterministic for a given ``seed`` and set of failures):

====================  =====================================================================
``per-class``         up to ``per_class`` failures of each *true* class, drawn at random
                      (the reference: 15 per class = 150 failures on CIFAR-10). A class
                      with fewer failures contributes all it has (reported in ``short``).
``per-pair``          ``n`` failures spread over the confused (true, predicted) pairs:
                      round-robin, one random failure per pair per round, pairs with more
                      failures first, so the most pairs are covered.
``lowest-confidence`` the ``n`` failures the model was least sure of (lowest confidence
                      in its prediction; ties by example id).
``all``               every failure.
====================  =====================================================================

``n`` defaults to ``per_class`` x the number of classes. Ranks are 1-based: per-class
samples are ordered by class then example id, per-pair by round then pair, lowest-
confidence by confidence, ``all`` by example id.

Sampling a run again replaces its ``samples`` rows (one transaction, recorded as stage
'sample'); hypotheses already made for failures stay where they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lens.errors import LensError
from lens.warehouse import Warehouse, class_names, record_stage, replace_rows, require_run, utcnow

if TYPE_CHECKING:
    import numpy as np

# numpy and pyarrow are imported where they are used: `lens sample --help` (which shows the
# defaults below) stays light.

STRATEGIES = ("per-class", "per-pair", "lowest-confidence", "all")
DEFAULT_STRATEGY = "per-class"
DEFAULT_PER_CLASS = 15


@dataclass
class SampleResult:
    run_id: str
    strategy: str
    seed: int
    n: int
    failures: int
    per_class: dict[str, int] = field(default_factory=dict)
    #: classes that had fewer failures than asked for: name -> (available, requested)
    short: dict[str, tuple[int, int]] = field(default_factory=dict)


def choose(
    example_ids: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    confidence: np.ndarray,
    *,
    strategy: str = DEFAULT_STRATEGY,
    per_class: int = DEFAULT_PER_CLASS,
    n: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> np.ndarray:
    """Positions (into the given failure arrays) of the sample, in rank order.

    Parameters
    ----------
    example_ids, labels, preds, confidence : ndarray, shape (N,)
        The failures. Results do not depend on their input order (they are sorted by
        example id first).
    strategy : one of :data:`STRATEGIES`
    per_class : int
        Failures per true class (``per-class``).
    n : int, optional
        Sample size for the other strategies; default ``per_class * num_classes``.
    """
    import numpy as np

    if strategy not in STRATEGIES:
        raise LensError(f"Unknown sampling strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    example_ids = np.asarray(example_ids)
    labels = np.asarray(labels)
    base = np.argsort(example_ids, kind="stable")
    rng = np.random.default_rng(seed)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    if n is None:
        n = per_class * max(num_classes, 1)
    if strategy == "all":
        return base
    if strategy == "per-class":
        out = []
        for c in range(num_classes):
            pos = base[labels[base] == c]
            k = min(per_class, len(pos))
            picked = rng.choice(pos, size=k, replace=False) if k else pos[:0]
            out.append(picked[np.argsort(example_ids[picked], kind="stable")])
        return np.concatenate(out) if out else base[:0]
    if strategy == "lowest-confidence":
        conf = np.asarray(confidence, dtype=np.float64)[base]
        return base[np.argsort(conf, kind="stable")][:n]
    # per-pair
    preds = np.asarray(preds)
    pairs: dict[tuple[int, int], list[int]] = {}
    for p in base:
        pairs.setdefault((int(labels[p]), int(preds[p])), []).append(int(p))
    order = sorted(pairs, key=lambda key: (-len(pairs[key]), key))
    queues = {key: list(rng.permutation(pairs[key])) for key in order}
    out: list[int] = []
    while len(out) < n and any(queues.values()):
        for key in order:
            if queues[key] and len(out) < n:
                out.append(int(queues[key].pop(0)))
    return np.array(out, dtype=np.int64)


def run(
    warehouse: Warehouse,
    *,
    run_id: str | None = None,
    strategy: str = DEFAULT_STRATEGY,
    per_class: int = DEFAULT_PER_CLASS,
    n: int | None = None,
    seed: int = 0,
) -> SampleResult:
    """Sample a run's failures and replace its ``samples`` rows (see the module docstring)."""
    import numpy as np
    import pyarrow as pa

    if strategy not in STRATEGIES:
        raise LensError(f"Unknown sampling strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if per_class < 1:
        raise LensError(f"--per-class must be at least 1, got {per_class}")
    if n is not None and n < 1:
        raise LensError(f"--n must be at least 1, got {n}")
    started = utcnow()
    with warehouse.connect() as con:
        run_id = require_run(con, run_id)
        names = class_names(con, run_id)
        fails = con.execute(
            "select example_id, label, pred, confidence from failures where run_id = ? order by example_id",
            [run_id],
        ).fetchnumpy()
    if len(fails["example_id"]) == 0:
        raise LensError(f"Run {run_id!r} has no failures to sample")
    ids = np.asarray(fails["example_id"], dtype=np.int64)
    labels = np.asarray(fails["label"], dtype=np.int64)
    picked = choose(
        ids, labels, np.asarray(fails["pred"]), np.asarray(fails["confidence"]),
        strategy=strategy, per_class=per_class, n=n, seed=seed, num_classes=len(names),
    )
    table = pa.table({
        "run_id": pa.array([run_id] * len(picked), type=pa.string()),
        "example_id": pa.array(ids[picked]),
        "strategy": pa.array([strategy] * len(picked), type=pa.string()),
        "seed": pa.array([seed] * len(picked), type=pa.int32()),
        "rank": pa.array(np.arange(1, len(picked) + 1, dtype=np.int32)),
    })
    available = np.bincount(labels, minlength=len(names))
    taken = np.bincount(labels[picked], minlength=len(names))
    short = {}
    if strategy == "per-class":
        short = {names[c]: (int(available[c]), per_class) for c in range(len(names)) if available[c] < per_class}
    with warehouse.transaction() as con:
        replace_rows(con, "samples", {"run_id": run_id}, table)
        record_stage(con, run_id, "sample", started_at=started, details={
            "strategy": strategy, "seed": seed, "per_class": per_class, "n": n, "sampled": len(picked),
            "failures": len(ids), "short": {k: v[0] for k, v in short.items()},
        })
    return SampleResult(
        run_id, strategy, seed, len(picked), len(ids),
        per_class={names[c]: int(taken[c]) for c in range(len(names))}, short=short,
    )


__all__ = ["STRATEGIES", "SampleResult", "choose", "run"]
