"""`lens compare`: per-class F1 deltas against scikit-learn, and per-cluster outcomes on a planted pair of runs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from sklearn.metrics import f1_score

from lens.predictions import failure_table, prediction_table, store_results, write_run
from lens.warehouse import insert_arrow


def _run(con, run_id, labels, preds, k=3):
    probs = np.full((len(labels), k), 0.1 / (k - 1))
    probs[np.arange(len(labels)), preds] = 0.9
    write_run(con, run_id, kind="ingest", class_names=["cat", "dog", "frog"][:k])
    t = prediction_table(run_id, np.arange(len(labels)), labels, probs=probs)
    store_results(con, run_id, t, failure_table(run_id, t))


def test_compare_planted_runs(cli):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    pred_a = labels.copy()
    wrong = np.arange(0, 20)  # the first 20 examples are failures of run A
    pred_a[wrong] = (labels[wrong] + 1) % 3
    pred_b = labels.copy()
    pred_b[10:15] = pred_a[10:15]             # cluster 1: 5 of 10 still wrong the same way
    pred_b[15:20] = (labels[15:20] + 2) % 3    # ... and 5 wrong another way; cluster 0 (0..9) all fixed
    with cli.wh.transaction() as con:
        _run(con, "a", labels, pred_a)
        _run(con, "b", labels, pred_b)
        members = pa.table({
            "run_id": ["a"] * 20, "dimension": ["fix"] * 20,
            "hypothesis_id": [f"h{i}" for i in range(20)], "example_id": np.arange(20),
            "cluster_id": [0] * 10 + [1] * 10, "kmeans_label": [0] * 10 + [1] * 10,
        })
        insert_arrow(con, "cluster_members", members)
        con.execute("insert into clusters (run_id, dimension, cluster_id, name, size) values"
                    " ('a', 'fix', 0, 'colour jitter', 10), ('a', 'fix', 1, 'random erasing', 10)")
    out = json.loads(cli("compare", "a", "b", "--format", "json").output)
    per_class = {c["class_name"]: c for c in out["classes"]}
    f1a = f1_score(labels, pred_a, average=None, labels=[0, 1, 2])
    f1b = f1_score(labels, pred_b, average=None, labels=[0, 1, 2])
    for i, name in enumerate(["cat", "dog", "frog"]):
        assert abs(per_class[name]["f1_delta"] - (f1b[i] - f1a[i])) < 1e-9
    clusters = {c["cluster_id"]: c for c in out["clusters"]}
    assert clusters[0]["fixed_in_b"] == 10 and clusters[0]["fixed_share"] == 1.0
    assert clusters[1]["fixed_in_b"] == 0
    assert clusters[1]["same_mistake_in_b"] == 5 and clusters[1]["other_mistake_in_b"] == 5
    assert out["shared_examples"] == 60
    text = cli("compare", "a", "b").output
    assert "colour jitter" in text and "accuracy" in text
    assert "Give two different runs" in cli("compare", "a", "a", expect=1).output
    assert "No run named" in cli("compare", "a", "zzz", expect=1).output
