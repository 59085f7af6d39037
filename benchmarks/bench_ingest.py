"""Benchmark `lens ingest` of 1,000,000 predictions against a bare DuckDB insert of the same Arrow table.

Prints, side by side in one run:
  * bare: `insert into predictions select ... from arrow` of the file's table (read once, in memory);
  * lens: the whole ingest stage (read + validate + top-3/loss + predictions + failures rows);
  * the ratio lens / bare (target <= 3x), best and median of the tries after one warm-up
    try of each (the first ingest in a process pays one-time imports and allocations);
  * class_metrics and confusion over the 1M rows (target < 0.5 s each).

Usage: .venv/bin/python benchmarks/bench_ingest.py [--rows 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lens.stages import ingest
from lens.warehouse import Warehouse


def make_file(path: Path, n: int, k: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), labels] += 2.5
    probs = np.exp(logits)
    probs /= probs.sum(1, keepdims=True)
    cols = {"id": np.arange(n), "label": labels}
    flat = pa.array(probs.reshape(-1))
    cols["probs"] = pa.FixedSizeListArray.from_arrays(flat, k).cast(pa.list_(pa.float32()))
    pq.write_table(pa.table(cols), path)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed tries of each before the timed ones")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-ingest-"))
    src = tmp / "preds.parquet"
    make_file(src, args.rows)
    print(f"rows: {args.rows:,} with 10-class probabilities ({src.stat().st_size / 1e6:.0f} MB Parquet)")

    ratios, bares, lenses = [], [], []
    for i in range(args.warmup + args.repeat):
        # bare baseline: the same Arrow table inserted by DuckDB into a table of the same shape
        table = pq.read_table(src)
        con = duckdb.connect(str(tmp / f"bare{i}.duckdb"))
        con.execute("create table predictions (id bigint, label integer, probs float[])")
        con.register("src", table)
        t_bare, _ = timed(lambda: con.execute("insert into predictions select id, label, probs from src"))
        con.close()
        wh = Warehouse(tmp / f"lens{i}.duckdb")
        with wh.connect():
            pass  # schema creation is not part of the ingest
        t_lens, res = timed(lambda: ingest.run(wh, predictions=src, run_id="bench"))
        if i < args.warmup:
            print(f"  warm-up: bare insert {t_bare:.2f} s | lens ingest {t_lens:.2f} s")
            continue
        bares.append(t_bare)
        lenses.append(t_lens)
        ratios.append(t_lens / t_bare)
        print(f"  try {len(ratios)}: bare insert {t_bare:.2f} s | lens ingest {t_lens:.2f} s "
              f"({res.failures:,} failures) | ratio {t_lens / t_bare:.2f}x")
    best_bare, best_lens = min(bares), min(lenses)
    print(f"best: bare {best_bare:.2f} s, lens {best_lens:.2f} s, ratio {best_lens / best_bare:.2f}x (target <= 3x)")
    print(f"median ratio of the tries: {float(np.median(ratios)):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}x)")

    with wh.connect(read_only=True) as con:
        for view in ("class_metrics", "confusion", "run_metrics"):
            times = []
            for _ in range(3):
                t, _ = timed(lambda: con.execute(f"select * from {view}").fetchall())
                times.append(t)
            print(f"{view}: {min(times):.3f} s over {args.rows:,} rows (target < 0.5 s)")
        # the predictions view computes confidence, top3_prob and loss from probs on read
        derived = "select avg(confidence), avg(loss), sum(top3_prob[2]) from predictions"
        t = min(timed(lambda: con.execute(derived).fetchall())[0] for _ in range(3))
        print(f"predictions view, derived columns over all rows: {t:.3f} s")


if __name__ == "__main__":
    main()
