"""A small synthetic run for hypothesis tests: runs/classes/predictions/failures/samples.

``seed_run(wh, n_failures)`` stores a run whose failure ``i`` (example_id ``100 + i``) has
true class ``i % 10`` and predicted class ``(i + 3) % 10``, a 32x32 PNG (seeded noise), and
ranks in example order; plus as many correct predictions. No model is trained.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lens.predictions import failure_table, prediction_table, store_results, write_run
from lens.warehouse import Warehouse, insert_arrow, replace_rows

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def failure_ids(n_failures: int) -> list[int]:
    return [100 + i for i in range(n_failures)]


def seed_run(wh: Warehouse, n_failures: int, *, run_id: str = "r1", sample: bool = True,
             images: bool = True, evidence: bool = False, seed: int = 0) -> list[int]:
    """Store the run; return the failures' example ids in sample order."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    n = 2 * n_failures
    ids = np.array([100 + i for i in range(n)], dtype=np.int64)
    labels = np.array([i % k for i in range(n)], dtype=np.int64)
    probs = np.full((n, k), 0.02, dtype=np.float64)
    for i in range(n):
        target = (i + 3) % k if i < n_failures else labels[i]
        probs[i, target] = 0.6
        probs[i, labels[i]] += 0.1 if i < n_failures else 0.0
        probs[i] /= probs[i].sum()
    pics = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    preds = prediction_table(run_id, ids, labels, probs=probs)
    fails = failure_table(run_id, preds, (lambda p: pics[p]) if images else None)
    with wh.transaction() as con:
        write_run(con, run_id, kind="ingest", class_names=CLASSES, dataset="synthetic", eval_split="test")
        store_results(con, run_id, preds, fails)
        fids = failure_ids(n_failures)
        if sample:
            replace_rows(con, "samples", {"run_id": run_id}, pa.table({
                "run_id": [run_id] * n_failures, "example_id": pa.array(fids, pa.int64()),
                "strategy": ["all"] * n_failures, "seed": pa.array([0] * n_failures, pa.int32()),
                "rank": pa.array(list(range(1, n_failures + 1)), pa.int32())}))
        if evidence:
            insert_arrow(con, "evidence", pa.table({
                "run_id": [run_id] * n_failures, "example_id": pa.array(fids, pa.int64()),
                "label": pa.array([i % 10 for i in range(n_failures)], pa.int32()),
                "pred": pa.array([(i + 3) % 10 for i in range(n_failures)], pa.int32()),
                "confidence": pa.array([0.6] * n_failures, pa.float32()),
                "brightness": pa.array([0.1] * n_failures, pa.float32()),
                "contrast": pa.array([0.05] * n_failures, pa.float32()),
                "border_colour": ["green"] * n_failures, "centre_colour": ["brown"] * n_failures,
                "z_true": ['{"brightness": -2.5}'] * n_failures, "z_pred": ['{"brightness": 0.1}'] * n_failures,
                "skipped": ['{"saliency": "no checkpoint"}'] * n_failures}))
    return fids
