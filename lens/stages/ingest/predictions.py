"""A predictions file's classes, ids, model outputs and images, validated (format in the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lens.datasets import MAX_IMAGE_FILE_BYTES, DatasetSource, read_image_file
from lens.errors import DataError
from lens.stages.ingest.columns import _SHOW, _class_ids, _floats, _integers, _which_rows, read_table

PROB_TOLERANCE = 1e-3
#: most classes a run may have: label ids, probability vectors and --classes beyond it are
#: refused before anything is allocated (a stray label id of 10**12 would otherwise make a run
#: of 10**12 classes). ImageNet-21k has 21,841.
MAX_CLASSES = 100_000


def read_predictions_table(path: Path) -> pa.Table:
    """The predictions file as a table whose columns have the right kinds (not yet the right values)."""
    table = read_table(path)
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    missing = [c for c in ("id", "label") if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: required columns missing: {', '.join(missing)} (have: {', '.join(table.column_names)})")
    _check_probs_column(table, path)
    _check_class_columns(table, path)
    return table


def class_names_of(table: pa.Table, classes: Sequence[str] | None, source: DatasetSource | None,
                   path: Path) -> list[str]:
    """The run's class names (:func:`_resolve_classes`): at least two, none twice."""
    class_names = _resolve_classes(table, classes, source, path)
    if len(set(class_names)) != len(class_names):
        dupes = sorted({c for c in class_names if class_names.count(c) > 1})[:_SHOW]
        raise DataError(f"{path}: duplicate class names: {dupes}")
    if len(class_names) < 2:
        raise DataError(f"{path}: need at least 2 classes, found {class_names}")
    return class_names


def example_ids_of(table: pa.Table, path: Path) -> tuple[np.ndarray, list[str] | None]:
    """(example ids, text ids or None): integer ids as given; text ids numbered by row and kept."""
    ids_col = table.column("id")
    if ids_col.null_count:
        raise DataError(f"{path}: 'id' is empty at {_which_rows(ids_col.is_null().to_numpy(zero_copy_only=False))}")
    source_ids = None
    if pa.types.is_integer(ids_col.type):
        example_ids = _integers(ids_col, "id", path)
    else:
        t = ids_col.type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_floating(t)
                or pa.types.is_dictionary(t)):
            raise DataError(f"{path}: 'id' must hold whole numbers or text, found a column of type {t}")
        text = pc.cast(ids_col, pa.string()).to_numpy(zero_copy_only=False)
        example_ids = np.arange(len(text), dtype=np.int64)
        source_ids = list(text)
        ids_for_dupes = text
    increasing = source_ids is None and bool(np.all(example_ids[1:] > example_ids[:-1]))
    uniq, counts = (None, None) if increasing else np.unique(
        example_ids if source_ids is None else ids_for_dupes, return_counts=True
    )
    if not increasing and (counts > 1).any():
        dup_vals = set(uniq[counts > 1].tolist())
        values = example_ids if source_ids is None else ids_for_dupes
        dup_rows = np.array([v in dup_vals for v in values.tolist()])
        raise DataError(f"{path}: duplicate ids at {_which_rows(dup_rows, values)}")
    return example_ids, source_ids


def model_outputs(table: pa.Table, class_names: list[str],
                  path: Path) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(probs, pred, confidence): the probability vectors, or else the predicted class and its probability."""
    probs = _probabilities(table, class_names, path)
    if probs is not None:
        return probs, None, None
    if "pred" not in table.column_names or "confidence" not in table.column_names:
        raise DataError(
            f"{path}: give per-class probabilities (a 'probs' list column or prob_<class> columns) "
            f"or both 'pred' and 'confidence' columns"
        )
    pred = _class_ids(table.column("pred"), class_names, "pred", path)
    confidence = _floats(table.column("confidence"), "confidence", path)
    bad = ~np.isfinite(confidence) | (confidence < 0) | (confidence > 1)
    if bad.any():
        raise DataError(f"{path}: 'confidence' must be a number in [0, 1]: {_which_rows(bad, confidence)}")
    return None, pred, confidence


def image_reader(table: pa.Table, path: Path, *, images: str | None, source: DatasetSource | None,
                 split: str | None, allow_anywhere: bool) -> tuple[list[str | None] | None, Callable | None, str | None]:
    """(image URIs, a function decoding the image of a row position, the dataset split), each None
    when the file names no images: from the 'image' column (files), or 'index' into ``source``."""
    if "image" in table.column_names:
        col = table.column("image")
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or col.null_count == len(col)):
            raise DataError(f"{path}: 'image' must hold file paths (text), found a column of type {col.type}")
        raw = pc.cast(col, pa.string()).to_numpy(zero_copy_only=False)
        resolved = _image_paths(raw, path, images, allow_anywhere)

        def image_for(pos: int):
            r = resolved[pos]
            return None if r is None else read_image_file(r, where=f"{r} ({path} row {pos + 1})")

        return resolved, image_for, split
    if "index" not in table.column_names:
        return None, None, split
    if source is None:
        raise DataError(f"{path}: has an 'index' column; pass --images SOURCE to say which dataset it indexes")
    split = split or ("test" if "test" in source.splits() else source.splits()[0])
    index = _integers(table.column("index"), "index", path, what="dataset positions")
    try:
        positions = source.find(split, index)
    except DataError as exc:
        raise DataError(f"{path}: 'index' does not match {source.spec} [{split}]: {exc}") from exc
    # decode failures only, lazily, from the source
    _, _, raw_records = source._records(split)

    def decode(pos: int):
        return source._decode(split, raw_records[positions[pos]], int(index[pos]))

    return [source.uri(split, None, int(i)) for i in index], decode, split

def _prob_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if c.startswith("prob_")]


def _check_probs_column(table: pa.Table, path: Path) -> None:
    """'probs' must be a list of numbers (a CSV cannot hold one: it arrives as text)."""
    if "probs" not in table.column_names:
        return
    t = table.column("probs").type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        raise DataError(
            f"{path}: 'probs' is text ({table.column('probs')[0].as_py()!r} in row 1): a CSV cannot hold a list "
            f"column. Give one column per class named prob_<class name> (or prob_<class id>), or write Parquet"
        )
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise DataError(f"{path}: 'probs' must be a list of numbers per row, found a column of type {t}")
    v = t.value_type
    if not (pa.types.is_floating(v) or pa.types.is_integer(v) or pa.types.is_decimal(v)):
        raise DataError(f"{path}: 'probs' must be a list of numbers per row, found a list of {v}")


def _check_class_columns(table: pa.Table, path: Path) -> None:
    """'label' and 'pred' hold class names or ids: text, integers (or whole floats)."""
    for column in ("label", "pred"):
        if column not in table.column_names:
            continue
        t = table.column(column).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_floating(t) or pa.types.is_dictionary(t) or pa.types.is_null(t)):
            raise DataError(f"{path}: {column!r} must hold class names or class ids, found a column of type {t}")


def _too_many_classes(path: Path, count: int, where: str) -> DataError:
    return DataError(
        f"{path}: {where} would make {count:,} classes, more than Lens accepts (MAX_CLASSES = {MAX_CLASSES:,}). "
        f"Class ids must be 0..K-1; give the class names with --classes"
    )


def _resolve_classes(table: pa.Table, classes: Sequence[str] | None, source: DatasetSource | None, path: Path) -> list[str]:
    """Class names from --classes, the dataset source, the probability columns or the labels.

    Bounded by ``MAX_CLASSES`` before anything the size of the class count is allocated.
    """
    if classes:
        if len(classes) > MAX_CLASSES:
            raise _too_many_classes(path, len(classes), "--classes")
        return list(classes)
    if source is not None:
        return list(source.class_names)
    if "probs" in table.column_names:
        width = int(pc.max(pc.list_value_length(table.column("probs"))).as_py() or 0)
        if width > MAX_CLASSES:
            raise _too_many_classes(path, width, "a 'probs' list of that many values")
        return [str(i) for i in range(width)]
    cols = _prob_columns(table)
    if cols:
        names = [c[len("prob_"):] for c in cols]
        if len(names) > MAX_CLASSES:
            raise _too_many_classes(path, len(names), "that many prob_ columns")
        if all(n.isdigit() for n in names):
            return [str(i) for i in range(len(names))]
        return names
    label = table.column("label")
    if pa.types.is_integer(label.type):
        hi = 0
        for column in ("label", "pred"):
            if column not in table.column_names or not pa.types.is_integer(table.column(column).type):
                continue
            values = table.column(column)
            top = pc.max(values).as_py()
            if top is not None and top >= MAX_CLASSES:  # Python ints: a uint64 of 2**64-1 stays itself
                at = values.to_numpy() >= MAX_CLASSES
                raise DataError(
                    f"{path}: class id too large in {column!r} (at most {MAX_CLASSES - 1:,} = MAX_CLASSES - 1; "
                    f"class ids are 0..K-1, or give the class names with --classes): {_which_rows(at, values.to_numpy())}"
                )
            hi = max(hi, int(top or 0))
        return [str(i) for i in range(hi + 1)]
    names = set(pc.unique(pc.cast(label, pa.string())).to_pylist())
    if "pred" in table.column_names:
        names |= set(pc.unique(pc.cast(table.column("pred"), pa.string())).to_pylist())
    if len(names) > MAX_CLASSES:
        raise _too_many_classes(path, len(names), "that many distinct label names")
    return sorted(n for n in names if n is not None)


def _probabilities(table: pa.Table, class_names: list[str], path: Path) -> np.ndarray | None:
    if "probs" in table.column_names:
        col = table.column("probs").combine_chunks()
        if col.null_count:
            raise DataError(f"{path}: 'probs' is empty at {_which_rows(col.is_null().to_numpy(zero_copy_only=False))}")
        lengths = pc.list_value_length(col).to_numpy()
        bad = lengths != len(class_names)
        if bad.any():
            raise DataError(f"{path}: 'probs' must have {len(class_names)} values per row: {_which_rows(bad, lengths)}")
        probs = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, len(class_names))
        if probs.dtype not in (np.float32, np.float64):
            probs = probs.astype(np.float64)
    else:
        cols = _prob_columns(table)
        if not cols:
            return None
        by_name = {c[len("prob_"):]: c for c in cols}
        order = []
        for i, name in enumerate(class_names):
            key = name if name in by_name else str(i) if str(i) in by_name else None
            if key is None:
                raise DataError(f"{path}: no probability column for class {name!r} (expected prob_{name})")
            order.append(by_name[key])
        extra = sorted(set(cols) - set(order))
        if extra:
            raise DataError(f"{path}: probability columns for unknown classes: {', '.join(extra)}")
        probs = np.column_stack([_floats(table.column(c), c, path) for c in order])
    # a matrix-vector product sums short rows ~10x faster than .sum(axis=1); float32 rounding
    # (~1e-6 at 10 classes) is far inside the tolerance
    sums = probs @ np.ones(probs.shape[1], dtype=probs.dtype)
    nan = ~np.isfinite(sums)  # a NaN or infinity anywhere in a row makes its sum non-finite
    if nan.any():
        raise DataError(f"{path}: NaN or infinite probabilities at {_which_rows(nan)}")
    neg = probs.min(axis=1) < 0 if probs.min() < 0 else None  # per row only when some value is negative
    if neg is not None and neg.any():
        raise DataError(f"{path}: negative probabilities at {_which_rows(neg)}")
    off = np.abs(sums - 1.0) > PROB_TOLERANCE
    if off.any():
        raise DataError(
            f"{path}: probability rows must sum to 1 (±{PROB_TOLERANCE}): {_which_rows(off, np.round(sums, 4))}"
        )
    return probs


def _image_roots(path: Path, images: str | None) -> list[Path]:
    """Folders the 'image' column may read from: the predictions file's and --images'."""
    roots = [path.resolve().parent]
    if images and Path(images).is_dir():
        roots.append(Path(images).resolve())
    return roots


def _image_paths(raw: np.ndarray, path: Path, images: str | None, allow_anywhere: bool) -> list[str | None]:
    """Resolve the 'image' column: paths confined to :func:`_image_roots`, existing, not oversized."""
    resolved: list[str | None] = []
    real: list[Path | None] = []
    for v in raw:
        if v is None or v == "":
            resolved.append(None)
            real.append(None)
            continue
        p = Path(v.removeprefix("file://"))
        full = p if p.is_absolute() else (path.parent / p)
        resolved.append(str(full))
        real.append(full.resolve())  # follows symlinks and '..': what would really be opened
    if not allow_anywhere:
        roots = _image_roots(path, images)
        outside = np.array([r is not None and not any(r.is_relative_to(root) for root in roots) for r in real])
        if outside.any():
            where = " or ".join(str(r) for r in roots)
            raise DataError(
                f"{path}: images outside {where}: {_which_rows(outside, resolved)}. Image paths are confined to the "
                f"predictions file's folder (and the --images folder); pass --allow-images-anywhere to read them"
            )
    gone = np.array([r is not None and not r.is_file() for r in real])
    if gone.any():
        raise DataError(f"{path}: images not found at {_which_rows(gone, resolved)}")
    sizes = [0 if r is None else r.stat().st_size for r in real]
    big = np.array(sizes) > MAX_IMAGE_FILE_BYTES
    if big.any():
        shown = [f"{r}: {b / 2**20:,.0f} MiB" for r, b in zip(resolved, sizes)]
        raise DataError(
            f"{path}: image files over {MAX_IMAGE_FILE_BYTES / 2**20:,.0f} MiB (MAX_IMAGE_FILE_BYTES), not read: "
            f"{_which_rows(big, shown)}"
        )
    return resolved
