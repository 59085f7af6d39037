"""Out-of-sample predictions on the CIFAR-10 *training* split, for the diagnosis benchmark.

The training split (50,000 images) is cut into two stratified halves A and B (seed 0).
``PLANTED_FLIPS`` labels, spread evenly over the halves, are replaced by a uniformly drawn
other class before anything is trained ("planted flips"). Two real Lens runs are then made
with ``lens.stages.train.run`` and ``lens.stages.evidence.run``:

* ``fold-a``: trained on half A, evaluated on half B (its predictions, failures, features
  and evidence cover B);
* ``fold-b``: trained on half B, evaluated on half A.

So every training image gets a prediction from a model that never saw it, and every planted
flip is judged by the next run. The folds are Parquet datasets in the Hugging Face layout
that keep the original ``index`` column, so ``example_id`` is the image's index in
``train.parquet`` and joins ``train_human_labels.parquet``. The test split is never read.

Everything lives in a cache folder (default ``benchmarks/.cache/diagnosis``; git-ignored)
and is reused: a complete run is not trained again, and evidence is only computed where it
is missing. Two folds x 3 epochs on 25,000 images take about 8-10 minutes on 2 cores.

Run on its own: ``.venv/bin/python benchmarks/diagnosis_data.py [--data DIR] [--cache DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("LENS_DATA") or REPO.parent / "shared" / "data" / "cifar10")
DEFAULT_CACHE = REPO / "benchmarks" / ".cache" / "diagnosis"
PLANTED_FLIPS = 400  # 200 in each half
SEED = 0
FOLDS = ("fold-a", "fold-b")


def split_halves(labels: np.ndarray, seed: int = SEED) -> np.ndarray:
    """A stratified 50/50 split: True for half A.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)

    Returns
    -------
    ndarray of bool, shape (N,)
    """
    rng = np.random.default_rng(seed)
    in_a = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        in_a[idx[: len(idx) // 2]] = True
    return in_a


def plant_flips(labels: np.ndarray, in_a: np.ndarray, n: int, num_classes: int, seed: int = SEED):
    """Replace ``n`` labels (half in each half) by a uniformly drawn *other* class.

    Returns
    -------
    noisy : ndarray of int64, shape (N,)
    flipped : ndarray of int64, the positions changed (sorted)
    """
    rng = np.random.default_rng(seed + 1)
    chosen = np.concatenate([
        rng.choice(np.flatnonzero(in_a), n // 2, replace=False),
        rng.choice(np.flatnonzero(~in_a), n - n // 2, replace=False),
    ])
    noisy = labels.astype(np.int64).copy()
    noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, len(chosen))) % num_classes
    return noisy, np.sort(chosen)


def prepare(data: Path, cache: Path, *, epochs: int = 3, evidence: bool = True, echo=print) -> dict:
    """Write the fold datasets, train both folds and compute their evidence (all cached).

    Returns a dict with ``warehouse`` (path), ``flipped`` (original indices), ``runs``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lens.datasets import ParquetSource
    from lens.stages import evidence as evidence_stage
    from lens.stages import train as train_stage
    from lens.warehouse import Warehouse

    cache.mkdir(parents=True, exist_ok=True)
    meta_path = cache / "folds.json"
    table = pq.read_table(data / "train.parquet")
    names = ParquetSource(data).class_names
    index = table.column("index").to_numpy().astype(np.int64)
    labels = table.column("label").to_numpy().astype(np.int64)
    in_a = split_halves(labels)
    noisy, flipped = plant_flips(labels, in_a, PLANTED_FLIPS, len(names))
    info = {"planted_flips": PLANTED_FLIPS, "seed": SEED, "flipped_index": index[flipped].tolist(),
            "flipped_from": labels[flipped].tolist(), "flipped_to": noisy[flipped].tolist()}
    if not meta_path.exists() or json.loads(meta_path.read_text()) != info:
        schema_meta = dict(table.schema.metadata)
        noisy_table = table.set_column(table.column_names.index("label"), "label", pa.array(noisy, pa.int64()))
        for fold, train_mask in (("fold-a", in_a), ("fold-b", ~in_a)):
            d = cache / fold
            d.mkdir(exist_ok=True)
            for split, mask in (("train", train_mask), ("test", ~train_mask)):
                part = noisy_table.filter(pa.array(mask)).replace_schema_metadata(schema_meta)
                pq.write_table(part, d / f"{split}.parquet")
        meta_path.write_text(json.dumps(info))
    wh = Warehouse(cache / "diagnosis.duckdb")
    for fold in FOLDS:
        t0 = time.perf_counter()
        res = train_stage.run(wh, data=str(cache / fold), run_id=fold, epochs=epochs, pretrained=False, seed=SEED,
                              device="cpu", echo=echo)
        echo(f"{fold}: {'cached' if res.skipped else 'trained'} in {time.perf_counter() - t0:.0f} s")
        if evidence:
            t0 = time.perf_counter()
            ev = evidence_stage.run(wh, run_id=fold, saliency=False)
            echo(f"{fold}: evidence for {ev.computed} failures ({ev.already} cached) in {time.perf_counter() - t0:.0f} s")
    return {"warehouse": wh.path, "flipped": np.asarray(info["flipped_index"]), "runs": list(FOLDS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-evidence", action="store_true")
    args = ap.parse_args()
    prepare(args.data, args.cache, epochs=args.epochs, evidence=not args.no_evidence)


if __name__ == "__main__":
    main()
