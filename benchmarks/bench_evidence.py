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
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--failures", type=int, default=3000)
    ap.add_argument("--eval", type=int, default=10_000)
    ap.add_argument("--train", type=int, default=50_000)
    return ap.parse_args()


def _synthetic_run(args: argparse.Namespace, src) -> SimpleNamespace:
    """Real test images for the failures; synthetic labels, probabilities and features around them."""
    rng = np.random.default_rng(0)
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
    return SimpleNamespace(names=names, test=test, n_eval=n_eval, n_fail=n_fail, labels=labels, probs=probs,
                           tr_lab=tr_lab, tr_feat=tr_feat, ev_feat=ev_feat)


def _features(split: str, ids, lab, vec) -> pa.Table:
    from lens.predictions import _list_column

    k = len(ids)
    return pa.table({
        "run_id": pa.array(["bench"] * k), "split": pa.array([split] * k),
        "example_id": pa.array(np.asarray(ids, np.int64)), "label": pa.array(np.asarray(lab, np.int32)),
        "vector": _list_column(vec, pa.float32()),
    })


def _setup(args: argparse.Namespace, d: SimpleNamespace):
    """A warehouse in a temporary folder holding the run, its features and a real checkpoint;
    returns it with the model and its normalisation."""
    import torch

    from lens.models import build_resnet18, channel_stats, save_checkpoint
    from lens.predictions import failure_table, prediction_table, store_results, write_run
    from lens.warehouse import Warehouse, insert_arrow

    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-evidence-"))
    wh = Warehouse(tmp / "lens.duckdb")
    mean, std = channel_stats(d.test.images)
    model = build_resnet18(len(d.names)).eval()
    ckpt = save_checkpoint(tmp / "ckpt.pt", model, class_names=d.names, mean=mean, std=std, image_size=32)
    preds = prediction_table("bench", np.arange(d.n_eval), d.labels, probs=d.probs)
    fails = failure_table("bench", preds, lambda pos: d.test.images[pos] if pos < d.n_fail else None)

    with wh.transaction() as con:
        write_run(con, "bench", kind="train", class_names=d.names, dataset=args.data, eval_split="test",
                  model="resnet18", checkpoint_path=str(ckpt))
        store_results(con, "bench", preds, fails)
        insert_arrow(con, "features", _features("train", np.arange(args.train), d.tr_lab, d.tr_feat))
        insert_arrow(con, "features", _features("eval", np.arange(d.n_eval), d.labels, d.ev_feat))
    print(f"setup: {d.n_eval:,} eval predictions, {fails.num_rows:,} failures, {args.train:,} training features "
          f"(torch threads {torch.get_num_threads()})")
    return wh, model, mean, std


def _bare_baselines(d: SimpleNamespace, model, mean, std) -> dict[str, tuple[str, float]]:
    """Seconds of the bare baselines, by the evidence part they stand beside."""
    import torch

    from lens import diagnosis
    from lens.models import normalize

    t = time.perf_counter()
    # the stage searches neighbours for EVERY evaluation example (detection power needs them), so
    # the baseline searches all of them too
    q = d.ev_feat / np.linalg.norm(d.ev_feat, axis=1, keepdims=True)
    tt = d.tr_feat / np.linalg.norm(d.tr_feat, axis=1, keepdims=True)
    for s in range(0, len(q), 512):
        np.argpartition(-(q[s : s + 512] @ tt.T), 9, axis=1)[:, :10]
    bare_nn = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, d.n_fail, 256):
            model(normalize(d.test.images[s : s + 256], mean, std))
    bare_fwd = time.perf_counter() - t
    t = time.perf_counter()
    diagnosis.label_signals(d.labels, d.probs)
    bare_cl = time.perf_counter() - t
    return {"neighbours": ("numpy top-10 of all eval only", bare_nn), "saliency": ("forward pass only", bare_fwd),
            "label_quality": ("cleanlab only", bare_cl)}


def _report(res, total: float, bare: dict[str, tuple[str, float]]) -> None:
    from lens.stages import evidence as stage

    print(f"\nevidence for {res.computed:,} failures: {total:.1f} s total (target < 120 s)")
    print(f"{'part':<16}{'seconds':>9}   bare baseline")
    for part, sec in res.timings.items():
        b = bare.get(part)
        extra = f"   {b[0]} {b[1]:.1f} s (x{sec / max(b[1], 1e-9):.1f})" if b else ""
        print(f"{part:<16}{sec:>9.1f}{extra}")
    print(f"class stats: {res.stats_source} ({stage.DEFAULT_STATS_LIMIT:,} training images when computed)")
    print(f"label issues flagged: {res.label_issues_eval:,} of {res.eval_rows:,} eval rows, "
          f"{res.label_issues_failures:,} among the failures; skipped: {res.skipped or 'nothing'}")


def main() -> None:
    args = _parse_args()

    import torch

    from lens.datasets import open_source
    from lens.stages import evidence as stage

    torch.manual_seed(0)
    d = _synthetic_run(args, open_source(args.data))
    wh, model, mean, std = _setup(args, d)

    t = time.perf_counter()
    res = stage.run(wh, run_id="bench", progress=False)
    total = time.perf_counter() - t
    assert res.computed == d.n_fail

    _report(res, total, _bare_baselines(d, model, mean, std))


if __name__ == "__main__":
    main()
