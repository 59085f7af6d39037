"""Benchmark: `lens embed` vs bare sentence-transformers `encode` on the same texts and model.

10,000 distinct short failure explanations are embedded with all-MiniLM-L6-v2 twice, side by
side: once with ``SentenceTransformer.encode`` (batch 64, normalised) and once through
``lens.stages.embed.run`` on a fresh warehouse (reading hypotheses, masking class names,
hashing, cache lookup, batched encoding, writing embeddings and the cache). Target: lens at
>= 90% of the bare throughput. A rerun (all cache hits) is timed too.

Both wall time and process CPU time are printed: on a machine shared with other jobs the wall
time of one side can swing by 20% with the load, CPU time much less. ``--threads`` (default 1)
sets torch's threads for both sides (``0`` = torch's default); one thread is the fairest
comparison on a loaded machine.

Run: .venv/bin/python benchmarks/bench_embed.py [--n 10000] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _cluster_helpers import seed_run  # noqa: E402

from lens.backends import embedders  # noqa: E402
from lens.stages import embed as embed_stage  # noqa: E402
from lens.warehouse import Warehouse  # noqa: E402

# no class names in the subjects: masking must not merge texts (class names still appear in CAUSES' "other class")
SUBJECTS = ["The animal", "The object", "This vehicle", "The subject", "A small creature", "The main object",
            "The thing shown", "This machine", "The figure", "A large object"]
CAUSES = ["is too dark to see", "is blurry and out of focus", "sits on a blue water background",
          "is seen from an unusual angle", "is tiny and far away", "is partly hidden behind a fence",
          "has fur that looks like the other class", "is cropped at the image border",
          "is mislabelled in the dataset", "stands against bright snow"]
EXTRAS = ["", " at night", " in the rain", " near a road", " on grass", " under trees", " in a city",
          " in a field", " by the sea", " indoors"]
TAILS = ["", "; the model confused it", ", so the shape is lost", ", hiding key features",
         ", a common failure", ", which misleads the model", ", as in many photos", ", unusually",
         ", clearly", ", it seems"]


def texts(n: int) -> list[str]:
    combos = itertools.product(SUBJECTS, CAUSES, EXTRAS, TAILS)
    return [f"{s} {c}{e}{t}." for s, c, e, t in itertools.islice(combos, n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = texts(args.n)
    assert len(set(data)) == len(data) == args.n

    emb = embedders.create()  # loads the model once; both sides share it
    st = emb.model
    st.encode(data[:256], batch_size=args.batch_size)  # warm-up

    t, c = time.perf_counter(), time.process_time()
    st.encode(data, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    bare, bare_cpu = time.perf_counter() - t, time.process_time() - c

    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(Path(tmp) / "lens.duckdb")
        seed_run(wh, "bench", data)
        t, c = time.perf_counter(), time.process_time()
        res = embed_stage.run(wh, run_id="bench", embedder=emb, batch_size=args.batch_size, progress=False)
        lens, lens_cpu = time.perf_counter() - t, time.process_time() - c
        assert res.encoded == args.n
        t = time.perf_counter()
        again = embed_stage.run(wh, run_id="bench", embedder=emb, batch_size=args.batch_size, progress=False)
        cached = time.perf_counter() - t
        assert again.encoded == 0 and again.cache_hits == args.n

    print(f"all-MiniLM-L6-v2, {args.n:,} distinct short texts, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':32}{'wall s':>9}{'texts/s':>9}{'cpu s':>9}")
    print(f"{'bare SentenceTransformer.encode':32}{bare:9.2f}{args.n / bare:9.0f}{bare_cpu:9.2f}")
    print(f"{'lens embed (cold cache)':32}{lens:9.2f}{args.n / lens:9.0f}{lens_cpu:9.2f}")
    print(f"{'lens embed (rerun, all cached)':32}{cached:9.2f}{args.n / cached:9.0f}")
    ratio, cpu_ratio = bare / lens, bare_cpu / lens_cpu
    print(f"lens throughput = {ratio:.1%} of bare by wall time, {cpu_ratio:.1%} by CPU time "
          f"(target >= 90%): {'OK' if ratio >= 0.9 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
