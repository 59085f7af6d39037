"""A features file (a model's embeddings), validated against the run's predictions (format in the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lens.errors import DataError
from lens.predictions import feature_table
from lens.stages.ingest.columns import _check_column_names, _class_ids, _integers, _which_rows

#: longest feature vector accepted by ``features=`` (ResNet-18 gives 512, ViT-H 1,280)
MAX_FEATURE_DIM = 16_384
FEATURE_SPLITS = ("train", "eval")


@dataclass
class FeatureCounts:
    train: int
    eval: int
    dim: int


def _load_features(path: Path) -> dict[str, pa.ChunkedArray | pa.Array]:
    """The columns of a features file (.parquet or .npz) by name."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            _check_column_names(pq.read_schema(path).names, path)
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        return {name: table.column(name) for name in table.column_names}
    if suffix == ".npz":
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npz of plain arrays ({exc})") from exc
        out: dict[str, pa.Array] = {}
        for name, arr in arrays.items():
            if name == "vector":
                if arr.ndim != 2:
                    raise DataError(f"{path}: 'vector' must be a 2-D array (rows, dimensions), got shape {arr.shape}")
                if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                    raise DataError(f"{path}: 'vector' must hold numbers, found dtype {arr.dtype}")
                flat = pa.array(np.ascontiguousarray(arr, dtype=np.float64).reshape(-1))
                out[name] = pa.FixedSizeListArray.from_arrays(flat, arr.shape[1]) if arr.shape[1] else pa.array(
                    [[] for _ in range(arr.shape[0])], pa.list_(pa.float64()))
            else:
                if arr.ndim != 1:
                    raise DataError(f"{path}: {name!r} must be a 1-D array, got shape {arr.shape}")
                out[name] = pa.array(arr.tolist() if arr.dtype.kind in "US" else arr)
        return out
    raise DataError(f"{path}: unsupported features format {suffix!r}; use .parquet or .npz (see `lens ingest --help`)")


def read_features(
    features: str | Path,
    *,
    run_id: str,
    class_names: Sequence[str],
    example_ids: np.ndarray,
    labels: np.ndarray,
    source_ids: Sequence[str] | None = None,
) -> tuple[pa.Table, FeatureCounts]:
    """Validate a features file against a run's predictions; ``features`` rows and counts.

    Parameters
    ----------
    features : path to .parquet or .npz (format in the module docstring)
    class_names : the run's classes (``label`` of train rows is a name or an id of these)
    example_ids, labels : ndarray, shape (N,)
        The run's predictions: every ``eval`` id must be one of them, and its label is taken
        from here.
    source_ids : text ids of the predictions, when the predictions file had text ids

    Nothing is written; every problem raises DataError naming the file and rows.
    """
    path = Path(features)
    cols = _feature_columns(path)
    n = len(cols["id"])
    splits, is_train = _feature_splits(cols["split"], path)
    matrix, dim = _feature_matrix(cols["vector"], n, path)
    ids = _feature_ids(cols["id"], is_train, path, example_ids=example_ids, source_ids=source_ids)
    out_labels = _feature_labels(cols.get("label"), is_train, ids, path, class_names=class_names,
                                 example_ids=example_ids, labels=labels)
    table = feature_table(run_id, splits, ids, out_labels, matrix)
    return table, FeatureCounts(train=int(is_train.sum()), eval=int((~is_train).sum()), dim=dim)


def _feature_columns(path: Path) -> dict[str, pa.ChunkedArray | pa.Array]:
    """The file's columns (``example_id`` read as ``id``): the required ones present, all of one length."""
    cols = _load_features(path)
    if "id" in cols and "example_id" in cols:
        raise DataError(f"{path}: has both 'id' and 'example_id'; keep one (they name the same thing)")
    if "example_id" in cols:
        cols["id"] = cols.pop("example_id")
    missing = [c for c in ("id", "split", "vector") if c not in cols]
    if missing:
        raise DataError(f"{path}: required columns missing: {', '.join(missing)} (have: {', '.join(cols)}); "
                        f"a features file has id, split ('train'/'eval'), vector and label")
    n = len(cols["id"])
    if n == 0:
        raise DataError(f"{path}: no rows")
    if any(len(c) != n for c in cols.values()):
        raise DataError(f"{path}: arrays of different lengths: {({k: len(v) for k, v in cols.items()})}")
    return cols


def _feature_splits(split_col: pa.ChunkedArray | pa.Array, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(split of each row, whether it is a train row); both splits present."""
    if not (pa.types.is_string(split_col.type) or pa.types.is_large_string(split_col.type)
            or pa.types.is_dictionary(split_col.type)):
        raise DataError(f"{path}: 'split' must be text ('train' or 'eval'), found {split_col.type}")
    splits = pc.cast(split_col, pa.string()).to_numpy(zero_copy_only=False)
    bad = np.array([v not in FEATURE_SPLITS for v in splits])
    if bad.any():
        raise DataError(f"{path}: 'split' must be 'train' or 'eval': {_which_rows(bad, splits)}")
    is_train = splits == "train"
    if not is_train.any():
        raise DataError(f"{path}: no 'train' rows: neighbours are searched among the training examples' vectors")
    if is_train.all():
        raise DataError(f"{path}: no 'eval' rows: give the vectors of the run's evaluated examples too")
    return splits, is_train


def _feature_matrix(vec: pa.ChunkedArray | pa.Array, n: int, path: Path) -> tuple[np.ndarray, int]:
    """(vectors as float32 (n, dim), dim): the same length on every row, all finite as float32 (what is stored)."""
    vec = vec.combine_chunks() if isinstance(vec, pa.ChunkedArray) else vec
    t = vec.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise DataError(f"{path}: 'vector' must be a list of numbers per row, found {t}")
    if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        raise DataError(f"{path}: 'vector' must be a list of numbers per row, found a list of {t.value_type}")
    if vec.null_count:
        raise DataError(f"{path}: 'vector' is empty at {_which_rows(vec.is_null().to_numpy(zero_copy_only=False))}")
    lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
    dim = int(lengths[0])
    if dim == 0:
        raise DataError(f"{path}: 'vector' has no values (row 1)")
    if dim > MAX_FEATURE_DIM:
        raise DataError(f"{path}: vectors of {dim:,} values, more than MAX_FEATURE_DIM = {MAX_FEATURE_DIM:,}")
    bad = lengths != dim
    if bad.any():
        raise DataError(f"{path}: every vector must have the {dim} values of row 1: {_which_rows(bad, lengths)}")
    values = vec.flatten()
    if values.null_count:
        rows = np.repeat(np.arange(n), dim)[values.is_null().to_numpy(zero_copy_only=False)]
        raise DataError(f"{path}: empty values inside vectors at {_which_rows(np.unique(rows))}")
    with np.errstate(over="ignore", invalid="ignore"):
        matrix = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, dim)
    bad = ~np.isfinite(matrix @ np.ones(dim, dtype=np.float32))  # NaN/inf anywhere, or beyond float32
    if bad.any():
        bad = ~np.isfinite(matrix).all(axis=1)  # exact rows (the sum can also overflow)
        if bad.any():
            raise DataError(f"{path}: NaN, infinite or beyond-float32 values in vectors at {_which_rows(bad)}")
    return matrix, dim


def _feature_ids(ids_col: pa.ChunkedArray | pa.Array, is_train: np.ndarray, path: Path, *,
                 example_ids: np.ndarray, source_ids: Sequence[str] | None) -> np.ndarray:
    """Example ids of the rows: eval rows' among the run's predictions (text ids mapped to them), none twice per split."""
    if ids_col.null_count:
        raise DataError(f"{path}: 'id' is empty at {_which_rows(ids_col.is_null().to_numpy(zero_copy_only=False))}")
    text_ids = pa.types.is_string(ids_col.type) or pa.types.is_large_string(ids_col.type)
    n = len(ids_col)
    ids = np.zeros(n, dtype=np.int64)
    eval_pos, train_pos = np.flatnonzero(~is_train), np.flatnonzero(is_train)
    if source_ids is not None:
        if not text_ids:
            raise DataError(f"{path}: the run's predictions have text ids (e.g. {source_ids[0]!r}): "
                            f"give the same text in 'id' for the eval rows")
        text = np.asarray(pc.cast(ids_col, pa.string()).to_numpy(zero_copy_only=False))
        lookup = {v: int(e) for v, e in zip(source_ids, example_ids)}
        found = np.array([lookup.get(v, -1) for v in text[eval_pos]], dtype=np.int64)
        unknown = np.zeros(n, bool)
        unknown[eval_pos[found < 0]] = True
        if unknown.any():
            raise DataError(f"{path}: eval ids not among the run's predictions: {_which_rows(unknown, text)}")
        ids[eval_pos] = found
        # train rows: whole numbers written as text (eval rows filled in, so errors name file rows)
        train_text = pc.if_else(pa.array(is_train), pc.cast(ids_col, pa.string()), pa.scalar("0", pa.string()))
        ids[train_pos] = _integers(train_text, "id", path, what="ids of train rows")[train_pos]
    else:
        if text_ids:
            raise DataError(f"{path}: 'id' is text but the run's predictions have integer ids: write them as integers")
        ids = _integers(ids_col, "id", path)
        pos_of = {int(e): i for i, e in enumerate(example_ids)}
        found = np.array([pos_of.get(int(e), -1) for e in ids[eval_pos]], dtype=np.int64)
        unknown = np.zeros(n, bool)
        unknown[eval_pos[found < 0]] = True
        if unknown.any():
            raise DataError(f"{path}: eval ids not among the run's predictions: {_which_rows(unknown, ids)}")
    key = np.where(is_train, 1, 0)
    order = np.lexsort((ids, key))
    same = (ids[order][1:] == ids[order][:-1]) & (key[order][1:] == key[order][:-1])
    if same.any():
        dup_keys = {(int(key[order][i]), int(ids[order][i])) for i in np.flatnonzero(same)}
        rows = np.array([(int(k), int(i)) in dup_keys for k, i in zip(key, ids)])
        raise DataError(f"{path}: duplicate ids within a split at {_which_rows(rows, ids)}")
    return ids


def _feature_labels(lab: pa.ChunkedArray | pa.Array | None, is_train: np.ndarray, ids: np.ndarray, path: Path, *,
                    class_names: Sequence[str], example_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Class ids of the rows: train rows' from the file (``lab``, names or ids), eval rows' from the
    predictions (and checked against the file's where it gives them)."""
    eval_pos, train_pos = np.flatnonzero(~is_train), np.flatnonzero(is_train)
    label_of = {int(e): int(c) for e, c in zip(example_ids, labels)}
    out_labels = np.zeros(len(ids), dtype=np.int64)
    out_labels[eval_pos] = [label_of[int(e)] for e in ids[eval_pos]]
    if lab is None:
        raise DataError(f"{path}: 'label' is missing: the train rows need their class (name or id)")
    lab = lab.combine_chunks() if isinstance(lab, pa.ChunkedArray) else lab
    if not pa.types.is_integer(lab.type):
        if not (pa.types.is_string(lab.type) or pa.types.is_large_string(lab.type)
                or pa.types.is_dictionary(lab.type) or pa.types.is_null(lab.type)):
            raise DataError(f"{path}: 'label' must hold class names or class ids, found {lab.type}")
        lab = pc.cast(lab, pa.string())
    has = ~lab.is_null().to_numpy(zero_copy_only=False)
    if (is_train & ~has).any():
        raise DataError(f"{path}: 'label' is empty on train rows at {_which_rows(is_train & ~has)}")
    filler = pa.scalar(0, lab.type) if pa.types.is_integer(lab.type) else pa.scalar(class_names[0], pa.string())
    mapped = _class_ids(pc.if_else(pa.array(has), lab, filler), list(class_names), "label", path)
    out_labels[train_pos] = mapped[train_pos]
    differ = ~is_train & has & (mapped != out_labels)
    if differ.any():
        raise DataError(f"{path}: 'label' of eval rows differs from the run's predictions (is the file for "
                        f"another run?): {_which_rows(differ, ids)}")
    return out_labels
