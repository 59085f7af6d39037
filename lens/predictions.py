"""Predictions and failures as Arrow tables, and the one way to store a run's results.

Both ``lens train`` and ``lens ingest`` end here, so every later stage sees the same
shape whichever way a run came in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lens.warehouse import delete_rows, insert_arrow, replace_rows, utcnow

#: images up to this many pixels a side are stored whole; larger ones as a thumbnail + URI
MAX_STORED_SIDE = 256


def _list_column(matrix: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """An Arrow fixed-size-list column from a 2-D array of shape (N, K).

    DuckDB inserts fixed-size lists about twice as fast as variable lists and casts them to
    the table's ``FLOAT[]`` / ``INTEGER[]`` on insert.
    """
    n, k = matrix.shape
    flat = pa.array(np.ascontiguousarray(matrix).reshape(-1), type=value_type)
    return pa.FixedSizeListArray.from_arrays(flat, k)


#: up to this many classes :func:`top_k` merges columns of packed keys; wider rows use argmax passes
_PACKED_MAX_CLASSES = 32
_TOPK_CHUNK = 16384  # rows per block: a (C, 16384) int64 block stays in L2 cache


def top_k(probs: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest probabilities per row, largest first.

    Ties go to the lower class id, as ``argmax`` does.

    Parameters
    ----------
    probs : ndarray, shape (N, C)

    Returns
    -------
    classes : ndarray of int32, shape (N, min(k, C))
    values : ndarray of float32, shape (N, min(k, C))
    """
    probs = np.asarray(probs, dtype=np.float32)
    n, c = probs.shape
    k = min(k, c)
    if n and c <= _PACKED_MAX_CLASSES and probs.min() >= 0:
        return _top_k_packed(probs, k)
    # k argmax passes: O(k * C) per row (a full stable argsort is ~3x slower on (1M, 10))
    work = np.array(probs, copy=True)
    flat = work.reshape(-1)
    base = np.arange(n) * c
    order = np.empty((n, k), dtype=np.int64)
    for j in range(k):
        best = work.argmax(axis=1)
        order[:, j] = best
        flat[base + best] = -np.inf
    return order.astype(np.int32), np.take_along_axis(probs, order, axis=1)


def _top_k_packed(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` for non-negative float32 rows of few classes, about 3x faster at C = 10.

    Non-negative IEEE floats order like their bit patterns, so each value becomes one int64
    key ``bits << s | (2**s - 1 - class)``: the larger key is the larger value, and among equal
    values the lower class. A block of rows is transposed so that every step is an
    element-wise max/min over a contiguous column (numpy reduces short rows slowly), and the
    k best keys are kept by a small insertion network.
    """
    n, c = probs.shape
    shift = max(1, (c - 1).bit_length())
    low = (1 << shift) - 1
    tag = (low - np.arange(c, dtype=np.int64))[:, None]
    best = np.empty((k, n), dtype=np.int64)
    for s in range(0, n, _TOPK_CHUNK):
        block = np.ascontiguousarray(probs[s : s + _TOPK_CHUNK].T)  # (C, m)
        keys = (block.view(np.int32) & 0x7FFFFFFF).astype(np.int64)  # & clears the sign of -0.0
        keys <<= shift
        keys |= tag
        top = best[:, s : s + _TOPK_CHUNK]
        top.fill(-1)
        scratch = np.empty(block.shape[1], dtype=np.int64)
        for x in keys:
            for j in range(k - 1, 0, -1):  # top[j] = max(top[j], min(top[j-1], x)), bottom up
                np.minimum(top[j - 1], x, out=scratch)
                np.maximum(top[j], scratch, out=top[j])
            np.maximum(top[0], x, out=top[0])
    best = best.T
    classes = (low - (best & low)).astype(np.int32)
    values = (best >> shift).astype(np.int32).view(np.float32)
    return classes, values


def prediction_table(
    run_id: str,
    example_ids: np.ndarray,
    labels: np.ndarray,
    *,
    probs: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    image_uris: Sequence[str | None] | None = None,
    source_ids: Sequence[str] | None = None,
) -> pa.Table:
    """Build the ``predictions`` rows of a run: the columns of ``prediction_rows``.

    ``confidence`` is filled for every row (:func:`failure_table` reads it);
    :func:`insert_predictions` stores it only where there are no probs, and the
    ``predictions`` view derives it, ``top3_prob`` and ``loss`` from probs.

    Parameters
    ----------
    example_ids, labels : ndarray, shape (N,)
    probs : ndarray of float, shape (N, C), optional
        Rows summing to 1. When given, ``pred``/``confidence`` are derived from it.
    pred, confidence : ndarray, shape (N,), optional
        Used when no probabilities are available.
    """
    n = len(example_ids)
    labels = np.asarray(labels, dtype=np.int32)
    cols: dict[str, Any] = {
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "example_id": pa.array(np.asarray(example_ids, dtype=np.int64)),
        "label": pa.array(labels),
    }
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float32)
        t3c, t3p = top_k(probs, 3)
        cols["pred"] = pa.array(np.ascontiguousarray(t3c[:, 0]))
        cols["confidence"] = pa.array(np.ascontiguousarray(t3p[:, 0]))
        cols["probs"] = _list_column(probs, pa.float32())
        cols["top3_class"] = _list_column(t3c, pa.int32())
    else:
        if pred is None or confidence is None:
            raise ValueError("need probs, or pred and confidence")
        pred = np.asarray(pred, dtype=np.int32)
        confidence = np.asarray(confidence, dtype=np.float32)
        cols["pred"] = pa.array(pred)
        cols["confidence"] = pa.array(confidence)
        cols["top3_class"] = _list_column(pred[:, None], pa.int32())
    if image_uris is not None:
        cols["image_uri"] = pa.array(list(image_uris), type=pa.string())
    if source_ids is not None:
        cols["source_id"] = pa.array(list(source_ids), type=pa.string())
    return pa.table(cols)


def image_record(image) -> tuple[bytes, int, int]:
    """(PNG bytes, width, height) of a PIL image or uint8 array; big images as a thumbnail."""
    from PIL import Image

    from lens.datasets import encode_png

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    w, h = image.size
    if max(w, h) > MAX_STORED_SIDE:
        image = image.copy()
        image.thumbnail((MAX_STORED_SIDE, MAX_STORED_SIDE))
    return encode_png(image), w, h


def failure_table(
    run_id: str,
    preds: pa.Table,
    image_for: Callable[[int], Any] | None = None,
) -> pa.Table:
    """Every misclassification in ``preds`` (a :func:`prediction_table`), with its image.

    ``image_for(position)`` returns a PIL image / uint8 array for the row at that position
    of ``preds``, or None when no image is available.
    """
    label = preds.column("label").to_numpy()
    pred = preds.column("pred").to_numpy()
    pos = np.flatnonzero(label != pred)
    sub = preds.take(pa.array(pos))
    true_prob = pa.nulls(len(pos), pa.float32())
    if "probs" in preds.column_names and len(pos) and sub.column("probs").null_count == 0:
        probs = sub.column("probs").combine_chunks()
        k = probs.type.list_size if pa.types.is_fixed_size_list(probs.type) else len(probs[0])
        matrix = probs.flatten().to_numpy(zero_copy_only=False).reshape(len(pos), k)
        true_prob = pa.array(matrix[np.arange(len(pos)), label[pos]].astype(np.float32))
    pngs, widths, heights = [None] * len(pos), [None] * len(pos), [None] * len(pos)
    if image_for is not None:
        for i, p in enumerate(pos):
            img = image_for(int(p))
            if img is not None:
                pngs[i], widths[i], heights[i] = image_record(img)
    uris = sub.column("image_uri") if "image_uri" in sub.column_names else pa.nulls(len(pos), pa.string())
    return pa.table(
        {
            "run_id": sub.column("run_id"),
            "example_id": sub.column("example_id"),
            "label": sub.column("label"),
            "pred": sub.column("pred"),
            "confidence": sub.column("confidence"),
            "true_prob": true_prob,
            "image_png": pa.array(pngs, type=pa.binary()),
            "image_uri": uris,
            "width": pa.array(widths, type=pa.int32()),
            "height": pa.array(heights, type=pa.int32()),
        }
    )


def feature_table(
    run_id: str,
    splits: str | Sequence[str] | np.ndarray,
    example_ids: np.ndarray,
    labels: np.ndarray,
    vectors: np.ndarray,
) -> pa.Table:
    """``features`` rows: one ``FLOAT[]`` vector per example, built as Arrow.

    Parameters
    ----------
    splits : str, or sequence of str of shape (N,)
        ``'train'`` or ``'eval'``, for all rows or per row.
    example_ids, labels : ndarray, shape (N,)
    vectors : ndarray of float, shape (N, D)
    """
    n = len(example_ids)
    split_values = np.full(n, splits, dtype=object) if isinstance(splits, str) else np.asarray(splits, dtype=object)
    return pa.table({
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "split": pa.array(split_values, type=pa.string()),
        "example_id": pa.array(np.asarray(example_ids, dtype=np.int64)),
        "label": pa.array(np.asarray(labels, dtype=np.int32)),
        "vector": _list_column(np.asarray(vectors, dtype=np.float32), pa.float32()),
    })


def write_run(
    con,
    run_id: str,
    *,
    kind: str,
    class_names: Sequence[str],
    dataset: str | None = None,
    eval_split: str | None = None,
    model: str | None = None,
    checkpoint_path: str | None = None,
    parent_run_id: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Insert (or replace) a run's row and its class names. Call inside a transaction."""
    if kind not in {"train", "ingest"}:
        raise ValueError(f"bad run kind {kind!r}")
    delete_rows(con, "runs", {"run_id": run_id})
    con.execute(
        "insert into runs (run_id, kind, created_at, dataset, eval_split, num_classes, model,"
        " checkpoint_path, parent_run_id, config) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            kind,
            utcnow(),
            dataset,
            eval_split,
            len(class_names),
            model,
            checkpoint_path,
            parent_run_id,
            json.dumps(dict(config or {}), default=str),
        ],
    )
    classes = pa.table(
        {
            "run_id": pa.array([run_id] * len(class_names), type=pa.string()),
            "class_id": pa.array(range(len(class_names)), type=pa.int32()),
            "class_name": pa.array(list(class_names), type=pa.string()),
        }
    )
    replace_rows(con, "classes", {"run_id": run_id}, classes)


#: columns of the ``prediction_rows`` table (sql/migrations/040_prediction_rows.sql)
STORED_COLUMNS = ("run_id", "example_id", "label", "pred", "confidence", "probs", "top3_class", "image_uri", "source_id")
#: columns the ``predictions`` view derives from probs (sql/views/predictions.sql); accepted
#: and dropped by :func:`stored_rows`, for tables shaped like the view
DERIVED_COLUMNS = ("top3_prob", "loss")


def stored_rows(preds: pa.Table) -> pa.Table:
    """The ``prediction_rows`` form of a predictions table: derived columns dropped.

    ``confidence`` is kept only for rows without ``probs``; with ``probs`` the view reads it
    as ``probs[pred]``.
    """
    unknown = set(preds.column_names) - set(STORED_COLUMNS) - set(DERIVED_COLUMNS)
    if unknown:
        raise ValueError(f"not columns of predictions: {sorted(unknown)}")
    rows = preds.select([c for c in preds.column_names if c in STORED_COLUMNS])
    if "probs" in rows.column_names and "confidence" in rows.column_names:
        probs = rows.column("probs")
        if probs.null_count == 0:
            given = pa.nulls(rows.num_rows, pa.float32())
        else:
            given = pc.if_else(pc.is_null(probs), rows.column("confidence"), pa.scalar(None, pa.float32()))
        rows = rows.set_column(rows.column_names.index("confidence"), "confidence", given)
    return rows


def insert_predictions(con, preds: pa.Table) -> int:
    """Append predictions (any subset of the ``predictions`` view's columns) to ``prediction_rows``."""
    return insert_arrow(con, "prediction_rows", stored_rows(preds))


def store_results(con, run_id: str, preds: pa.Table, failures: pa.Table) -> None:
    """Replace a run's predictions and failures (inside the caller's transaction)."""
    delete_rows(con, "prediction_rows", {"run_id": run_id})
    insert_predictions(con, preds)
    replace_rows(con, "failures", {"run_id": run_id}, failures)


__all__ = [
    "failure_table",
    "feature_table",
    "image_record",
    "insert_arrow",
    "insert_predictions",
    "prediction_table",
    "store_results",
    "stored_rows",
    "top_k",
    "write_run",
]
