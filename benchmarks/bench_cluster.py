"""Benchmark: `lens cluster` on 20,000 x 384-d vectors with the full k sweep 15-30.

Synthetic unit vectors around 22 overlapping centres (plus per-cluster words for the
c-TF-IDF names) are written as embeddings of one run; ``lens.stages.cluster.run`` then does
the full job (16 KMeans fits, silhouettes on a 5,000 sample, noise, names, PCA map, writes).
Side by side: a bare scikit-learn sweep (the same KMeans fits and sklearn's own
``silhouette_score(..., sample_size=5000)``). Target: lens under 60 s.

``--threads`` (default 1) caps the OpenMP/BLAS threads of both sides with threadpoolctl: on
a machine shared with other jobs (load above the core count) OpenMP's spinning barriers make
KMeans several times slower with 2 threads than with 1 (measured here: 13.7 s vs 1.8 s for
one k=20 fit); pass ``--threads 0`` for the library default.

Run: .venv/bin/python benchmarks/bench_cluster.py [--n 20000] [--k-min 15] [--k-max 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _cluster_helpers import CLASSES  # noqa: E402

from lens.predictions import insert_predictions, write_run  # noqa: E402
from lens.stages import cluster as cluster_stage  # noqa: E402
from lens.stages.embed import vector_array  # noqa: E402
from lens.warehouse import Warehouse, insert_arrow, stable_id  # noqa: E402

WORDS = ("dark blurry water snow grass fence cropped tiny angle fur label sky road night shadow "
         "texture colour metal wings wheels legs ears tail shape").split()


def vectors(n: int, d: int, centres: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    y = rng.integers(0, centres, n)
    X = c[y] + rng.normal(scale=1.3, size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def seed(wh: Warehouse, X: np.ndarray, y: np.ndarray) -> None:
    n = len(X)
    ids = [stable_id("bench", i) for i in range(n)]
    texts = [f"The {WORDS[k % len(WORDS)]} and {WORDS[(k * 7 + 3) % len(WORDS)]} cause it, case {i}." for i, k in enumerate(y)]
    with wh.transaction() as con:
        write_run(con, "bench", kind="ingest", class_names=CLASSES)
        insert_predictions(con, pa.table({
            "run_id": ["bench"] * n, "example_id": pa.array(range(n), pa.int64()),
            "label": pa.array(np.arange(n) % 10, pa.int32()), "pred": pa.array((np.arange(n) + 1) % 10, pa.int32()),
            "confidence": pa.array(np.full(n, 0.9), pa.float32()),
        }))
        insert_arrow(con, "hypotheses", pa.table({
            "hypothesis_id": ids, "run_id": ["bench"] * n, "example_id": pa.array(range(n), pa.int64()),
            "backend": ["measured"] * n, "model": ["measured"] * n, "prompt_name": ["reference"] * n,
            "prompt_sha256": ["p" * 64] * n, "status": ["ok"] * n, "attempts": pa.array([1] * n, pa.int32()),
            "created_at": pa.array([datetime(2024, 1, 1)] * n, pa.timestamp("us")),
        }))
        insert_arrow(con, "embeddings", pa.table({
            "run_id": ["bench"] * n, "hypothesis_id": ids, "dimension": ["visual_cause"] * n,
            "embedder": ["all-MiniLM-L6-v2"] * n, "masked": [True] * n, "text": texts,
            "text_sha256": ids, "dim": pa.array([X.shape[1]] * n, pa.int32()), "vector": vector_array(X),
        }))


def bare_sweep(X: np.ndarray, ks: range, seed_: int = 0) -> tuple[int, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best = (-2.0, 0)
    for k in ks:
        labels = KMeans(n_clusters=k, n_init=3, random_state=seed_).fit(X).labels_
        s = silhouette_score(X, labels, metric="cosine", sample_size=5000, random_state=seed_)
        best = max(best, (s, k))
    return best[1], best[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--centres", type=int, default=22)
    ap.add_argument("--k-min", type=int, default=15)
    ap.add_argument("--k-max", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="OpenMP/BLAS threads (0 = library default)")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads or None):
        run(args)


def run(args) -> None:
    X, y = vectors(args.n, args.dim, args.centres)

    t = time.perf_counter()
    bare_k, bare_s = bare_sweep(X, range(args.k_min, args.k_max + 1))
    bare = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(Path(tmp) / "lens.duckdb")
        seed(wh, X, y)
        t = time.perf_counter()
        res = cluster_stage.run(wh, run_id="bench", k_min=args.k_min, k_max=args.k_max, min_size=15, progress=False)
        lens = time.perf_counter() - t
    (d,) = res.dimensions

    print(f"{args.n:,} x {args.dim}-d vectors, {args.centres} planted centres, k {args.k_min}-{args.k_max}, "
          f"n_init 3, threads {args.threads or 'default'}")
    print(f"{'':34}{'seconds':>9}{'chosen k':>10}{'silhouette':>12}")
    print(f"{'bare sklearn sweep':34}{bare:9.1f}{bare_k:10d}{bare_s:12.3f}")
    print(f"{'lens cluster (stage, all writes)':34}{lens:9.1f}{d.k:10d}{d.silhouette:12.3f}")
    print(f"lens / bare time: {lens / bare:.2f}x; lens under 60 s: {'OK' if lens < 60 else 'NO'}; "
          f"clusters {d.clusters}, noise {d.noise}")


if __name__ == "__main__":
    main()
