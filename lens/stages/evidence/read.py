"""Reading a run for ``lens evidence``: one short connection, everything as Arrow / numpy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lens import diagnosis
from lens.errors import LensError
from lens.warehouse import Warehouse, class_names as run_class_names, require_run


def list_matrix(col: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A list<float> Arrow column of equal-length rows as a 2-D numpy array."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    if flat.size % n:
        raise LensError("stored vectors have different lengths; rerun the stage that wrote them")
    return flat.reshape(n, flat.size // n)


def _floats(col) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in col.to_pylist()], np.float64)


@dataclass
class EvalSplit:
    """Every evaluation example of the run (predictions order)."""

    ids: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64
    pred: np.ndarray  # (N,) int64
    probs: np.ndarray | None  # (N, C) float64, None when the run stored no probability vectors
    confidence: np.ndarray  # (N,) float64, p(pred) (NaN where unknown)

    @classmethod
    def from_arrow(cls, preds: pa.Table) -> "EvalSplit":
        probs_col = preds.column("probs")
        probs = list_matrix(probs_col, np.float64) if preds.num_rows and probs_col.null_count == 0 else None
        return cls(ids=preds.column("example_id").to_numpy().astype(np.int64),
                   labels=preds.column("label").to_numpy().astype(np.int64),
                   pred=preds.column("pred").to_numpy().astype(np.int64), probs=probs,
                   confidence=_floats(preds.column("confidence")))

    def positions(self, example_ids: np.ndarray) -> np.ndarray:
        """Rows of ``example_ids`` in this split."""
        pos_of = {int(e): i for i, e in enumerate(self.ids)}
        return np.array([pos_of[int(e)] for e in example_ids], dtype=np.int64)


@dataclass
class RunData:
    """What ``lens evidence`` reads of a run."""

    run_id: str
    kind: str
    checkpoint_path: str | None
    num_classes: int
    names: list[str]
    dataset: str | None  # the run's dataset source (or --data)
    failures: pa.Table  # example_id, label, pred, confidence, true_prob, image_png
    have: set[int]  # failures with evidence by the current rules (skipped unless force)
    split: EvalSplit
    eval_feats: pa.Table  # example_id, vector of every evaluation example
    train_feats: pa.Table  # example_id, label, vector of the training examples
    stored_stats: Any  # class_image_stats rows of the dataset (DataFrame) or None


def read(wh: Warehouse, run_id: str | None, force: bool, data: str | None) -> RunData:
    with wh.connect() as con:
        run_id = require_run(con, run_id)
        kind, dataset, ckpt, num_classes = con.execute(
            "select kind, dataset, checkpoint_path, num_classes from runs where run_id = ?", [run_id]).fetchone()
        names = run_class_names(con, run_id)
        failures = con.execute(
            "select example_id, label, pred, confidence, true_prob, image_png from failures"
            " where run_id = ? order by example_id", [run_id]).to_arrow_table()
        have: set[int] = set()
        if not force:
            # rows scored by older diagnosis rules count as missing: a rerun brings them up to date
            have = {r[0] for r in con.execute(
                "select example_id from evidence where run_id = ? and diagnosis_version = ?",
                [run_id, diagnosis.RULES_VERSION]).fetchall()}
        preds = con.execute(
            "select example_id, label, pred, confidence, probs from predictions where run_id = ? order by example_id",
            [run_id]).to_arrow_table()
        # every evaluation example's vector: failures get neighbours, and detection power plants
        # flips among all of them
        eval_feats = con.execute(
            "select example_id, vector from features where run_id = ? and split = 'eval' order by example_id",
            [run_id]).to_arrow_table()
        train_feats = con.execute(
            "select example_id, label, vector from features where run_id = ? and split = 'train' order by example_id",
            [run_id]).to_arrow_table()
        dataset = data or dataset
        stats = None
        if dataset:
            stats = con.execute(
                "select image_side, class_id, fact, n, mean, std from class_image_stats where dataset = ?", [dataset]
            ).df()
    return RunData(run_id=run_id, kind=kind, checkpoint_path=ckpt, num_classes=num_classes, names=names,
                   dataset=dataset, failures=failures, have=have, split=EvalSplit.from_arrow(preds),
                   eval_feats=eval_feats, train_feats=train_feats, stored_stats=stats)
