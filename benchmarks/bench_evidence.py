"""Benchmark `lens evidence`: 3,000 failures, neighbours over 50,000 training features, saliency.

Setup (not timed): a warehouse in a temporary folder with one run of 10,000 evaluation
predictions (synthetic probabilities) of which 3,000 are failures carrying real CIFAR-10
test images, 50,000 synthetic 512-d training features (class centroids + noise) and
10,000 evaluation features, and a real (randomly initialised) ResNet-18 checkpoint.

Timed: the evidence stage end to end (first run: class statistics from 10,000 CIFAR-10
training images; then a second run with --force reusing nothing but the stored stats is
not done, to keep the figure honest for a first run), broken down per part, next to bare
baselines: the same top-10 search as one numpy pass with no warehouse, a plain forward
pass of the model over the 3,000 images, and cleanlab alone.

Run: ``.venv/bin/python benchmarks/bench_evidence.py [--data ../shared/data/cifar10]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--failures", type=int, default=3000)
    ap.add_argument("--eval", type=int, default=10_000)
    ap.add_argument("--train", type=int, default=50_000)
    args = ap.parse_args()

    import torch

    from lens.datasets import open_source
    from lens.models import build_resnet18, channel_stats, normalize, save_checkpoint
    from lens.predictions import _list_column, failure_table, prediction_table, store_results, write_run
    from lens import diagnosis
    from lens.stages import evidence as stage
    from lens.warehouse import Warehouse, insert_arrow

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    src = open_source(args.data)
    names = src.class_names
    c = len(names)
    test = src.load("test", limit=args.failures, seed=0)
    n_eval, n_fail = args.eval, args.failures
    labels = np.concatenate([test.labels, rng.integers(0, c, n_eval - n_fail)])
    probs = rng.dirichlet(np.full(c, 0.3), size=n_eval).astype(np.float32)
    # first n_fail rows are failures: the argmax is another class; the rest are correct
    top = np.where(np.arange(n_eval) < n_fail, (labels + 1 + rng.integers(0, c - 1, n_eval)) % c, labels)
    probs[np.arange(n_eval), top] += 1.5
    probs /= probs.sum(axis=1, keepdims=True)
    centroids = rng.normal(0, 1, (c, 512)).astype(np.float32)
    tr_lab = rng.integers(0, c, args.train)
    tr_feat = centroids[tr_lab] + rng.normal(0, 1.5, (args.train, 512)).astype(np.float32)
    ev_feat = centroids[top] + rng.normal(0, 1.5, (n_eval, 512)).astype(np.float32)

    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-evidence-"))
    wh = Warehouse(tmp / "lens.duckdb")
    mean, std = channel_stats(test.images)
    model = build_resnet18(c).eval()
    ckpt = save_checkpoint(tmp / "ckpt.pt", model, class_names=names, mean=mean, std=std, image_size=32)
    preds = prediction_table("bench", np.arange(n_eval), labels, probs=probs)
    fails = failure_table("bench", preds, lambda pos: test.images[pos] if pos < n_fail else None)

    def feats(split, ids, lab, vec):
        k = len(ids)
        return pa.table({
            "run_id": pa.array(["bench"] * k), "split": pa.array([split] * k),
            "example_id": pa.array(np.asarray(ids, np.int64)), "label": pa.array(np.asarray(lab, np.int32)),
            "vector": _list_column(vec, pa.float32()),
        })

    with wh.transaction() as con:
        write_run(con, "bench", kind="train", class_names=names, dataset=args.data, eval_split="test",
                  model="resnet18", checkpoint_path=str(ckpt))
        store_results(con, "bench", preds, fails)
        insert_arrow(con, "features", feats("train", np.arange(args.train), tr_lab, tr_feat))
        insert_arrow(con, "features", feats("eval", np.arange(n_eval), labels, ev_feat))
    print(f"setup: {n_eval:,} eval predictions, {fails.num_rows:,} failures, {args.train:,} training features "
          f"(torch threads {torch.get_num_threads()})")

    t = time.perf_counter()
    res = stage.run(wh, run_id="bench", progress=False)
    total = time.perf_counter() - t
    assert res.computed == n_fail

    # bare baselines
    t = time.perf_counter()
    # the stage searches neighbours for EVERY evaluation example (detection power needs them), so
    # the baseline searches all of them too
    q = ev_feat / np.linalg.norm(ev_feat, axis=1, keepdims=True)
    tt = tr_feat / np.linalg.norm(tr_feat, axis=1, keepdims=True)
    for s in range(0, len(q), 512):
        np.argpartition(-(q[s : s + 512] @ tt.T), 9, axis=1)[:, :10]
    bare_nn = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, n_fail, 256):
            model(normalize(test.images[s : s + 256], mean, std))
    bare_fwd = time.perf_counter() - t
    t = time.perf_counter()
    diagnosis.label_signals(labels, probs)
    bare_cl = time.perf_counter() - t

    print(f"\nevidence for {res.computed:,} failures: {total:.1f} s total (target < 120 s)")
    print(f"{'part':<16}{'seconds':>9}   bare baseline")
    bare = {"neighbours": ("numpy top-10 of all eval only", bare_nn), "saliency": ("forward pass only", bare_fwd),
            "label_quality": ("cleanlab only", bare_cl)}
    for part, sec in res.timings.items():
        b = bare.get(part)
        extra = f"   {b[0]} {b[1]:.1f} s (x{sec / max(b[1], 1e-9):.1f})" if b else ""
        print(f"{part:<16}{sec:>9.1f}{extra}")
    print(f"class stats: {res.stats_source} ({stage.DEFAULT_STATS_LIMIT:,} training images when computed)")
    print(f"label issues flagged: {res.label_issues_eval:,} of {res.eval_rows:,} eval rows, "
          f"{res.label_issues_failures:,} among the failures; skipped: {res.skipped or 'nothing'}")


if __name__ == "__main__":
    main()
