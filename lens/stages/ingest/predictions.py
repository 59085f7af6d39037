"""``lens ingest``: bring predictions from any model into the warehouse.

Input: a Parquet or CSV file with one row per evaluation example:

=================  ===========================================================
``id``             integer id (or any text: then rows are numbered and the text
                   kept in ``predictions.source_id``)
``label``          true class: a class name or a class id
probabilities      a list column ``probs``, or one column per class named
                   ``prob_<class name>`` (or ``prob_<class id>``)
  -- or --
``pred``,          predicted class (name or id) and its probability, when the
``confidence``     full vector is not available
``image``          optional: image path (relative to the predictions file) or URI;
                   confined to the predictions file's folder and the ``--images``
                   folder unless ``allow_images_anywhere``
``index``          optional: the example's index in the ``--images`` dataset source
=================  ===========================================================

Everything is validated before anything is written (unknown classes, probability rows
not summing to 1 within 1e-3, NaN, text where numbers belong, duplicate ids and column
names, ids that do not fit a signed 64-bit integer, more than ``MAX_CLASSES`` classes,
missing, oversized or out-of-folder images); the error lists the first offending rows.
Ids are stored exactly as given, or refused: never wrapped, rounded or renumbered (text ids
are numbered by row and kept verbatim in ``predictions.source_id``). Then one transaction
writes ``runs``, ``classes``, ``predictions`` and ``failures``.

**Features** (``features=FILE``, :func:`read_features`): a model's embeddings, so that
``lens evidence`` finds nearest neighbours for an ingested run. A Parquet file with columns

=================  ===========================================================
``id``             the example's id (``example_id`` is accepted as the name too).
                   ``eval`` rows: an id of the run's predictions (the same text, for
                   a predictions file with text ids). ``train`` rows: whole numbers,
                   the training examples' own ids (neighbours are shown by them)
``split``          ``train`` (the neighbours' pool) or ``eval`` (the evaluated examples)
``vector``         list of numbers, the same length on every row, all finite
``label``          the training example's class (name or id); required on ``train``
                   rows; on ``eval`` rows optional and then it must equal the
                   predictions' label
=================  ===========================================================

or a ``.npz`` (``numpy.savez``) with the same names as arrays: ``id`` (N,), ``split``
(N,), ``vector`` (N, D), ``label`` (N,); it is loaded with ``allow_pickle=False``.
Features come with the predictions (one transaction writes both), or later for an
existing run (``run_id`` and ``features``, no ``predictions``): then they replace the
run's features only with ``force`` when it has some, and the run's evidence rows (computed
without them) are deleted in the same transaction, so the next ``lens evidence`` computes
neighbours for every failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lens.datasets import MAX_IMAGE_FILE_BYTES, DatasetSource, open_source, read_image_file
from lens.errors import DataError
from lens.predictions import failure_table, feature_table, prediction_table, store_results, write_run
from lens.warehouse import Warehouse, delete_rows, record_stage, replace_rows, utcnow

PROB_TOLERANCE = 1e-3
#: most classes a run may have: label ids, probability vectors and --classes beyond it are
#: refused before anything is allocated (a stray label id of 10**12 would otherwise make a run
#: of 10**12 classes). ImageNet-21k has 21,841.
MAX_CLASSES = 100_000
#: longest feature vector accepted by ``features=`` (ResNet-18 gives 512, ViT-H 1,280)
MAX_FEATURE_DIM = 16_384
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
FEATURE_SPLITS = ("train", "eval")
#: CSV columns read as text and then parsed as 64-bit integers when every value is one, so an
#: id of 2**63 or more is named and refused rather than read as a float
_CSV_INTEGER_COLUMNS = ("id", "label", "pred", "index")
_INTEGER_TEXT = r"^-?[0-9]+$"
#: what a CSV header holds when it was saved with another delimiter
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
#: what `--force` replaces: everything derived from the old predictions. Hypotheses,
#: embeddings, clusters and verdicts (people's work) are kept, as `lens train --force` does.
REPLACED_TABLES = ("prediction_rows", "failures", "samples", "training_log", "features", "evidence", "stage_runs")
_SHOW = 5


@dataclass
class FeatureCounts:
    train: int
    eval: int
    dim: int


@dataclass
class IngestResult:
    run_id: str
    rows: int
    failures: int
    classes: list[str]
    images: int
    features: FeatureCounts | None = None
    #: evidence rows deleted because new features make them stale (features-only ingest)
    evidence_cleared: int = 0


def _which_rows(mask_or_positions, values=None) -> str:
    pos = np.flatnonzero(mask_or_positions) if np.asarray(mask_or_positions).dtype == bool else mask_or_positions
    shown = []
    for p in list(pos)[:_SHOW]:
        # row numbers as a user sees them in the file: 1-based data rows
        v = values[int(p)] if values is not None else None
        v = v.item() if hasattr(v, "item") else v
        shown.append(f"row {int(p) + 1}" + (f" ({v!r})" if values is not None else ""))
    more = f" and {len(pos) - _SHOW} more" if len(pos) > _SHOW else ""
    return ", ".join(shown) + more


def _check_header(path: Path, delimiter: str) -> None:
    """Refuse a CSV whose header is split by another delimiter, naming it."""
    with open(path, "rb") as f:
        head = f.read(65536).split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if delimiter in head:
        return
    for other, name in _OTHER_DELIMITERS.items():
        other = other.encode().decode("unicode_escape")
        if other in head and other != delimiter:
            want = "comma-separated .csv" + (" or tab-separated .tsv" if other != "\t" else "")
            hint = "rename it to .tsv" if other == "\t" else f"save it with commas as the delimiter"
            raise DataError(
                f"{path}: line 1 has no {'tab' if delimiter == chr(9) else 'comma'}s but has {name}s "
                f"({head[:80]!r}): this looks like a {name}-delimited file. Lens reads {want}; {hint}"
            )


def _check_column_names(names: Sequence[str], path: Path) -> None:
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        seen.setdefault(name, []).append(i + 1)
    dupes = {n: cols for n, cols in seen.items() if len(cols) > 1}
    if dupes:
        name, cols = next(iter(dupes.items()))
        raise DataError(
            f"{path}: column name {name!r} appears {len(cols)} times (columns {', '.join(map(str, cols))}); "
            f"rename or drop the extra ones"
        )


def _csv_integers(table: pa.Table, path: Path) -> pa.Table:
    """Columns read as text that hold only whole numbers become int64; beyond int64 is refused."""
    for name in _CSV_INTEGER_COLUMNS:
        if name not in table.column_names:
            continue
        col = table.column(name)
        if not pa.types.is_string(col.type) or col.null_count == len(col):
            continue
        if not pc.all(pc.match_substring_regex(col, _INTEGER_TEXT)).as_py():
            continue
        try:
            ints = pc.cast(col, pa.int64())
        except pa.ArrowInvalid:
            _integers(col, name, path)  # names the rows beyond int64
            raise
        table = table.set_column(table.column_names.index(name), name, ints)
    return table


def read_table(path: Path) -> pa.Table:
    """Read a Parquet or CSV predictions file into Arrow, with clear errors."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            _check_column_names(pq.read_schema(path).names, path)
            return pq.read_table(path)
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            delimiter = "\t" if suffix == ".tsv" else ","
            _check_header(path, delimiter)
            convert = pcsv.ConvertOptions(
                column_types={c: pa.string() for c in _CSV_INTEGER_COLUMNS}, strings_can_be_null=True
            )
            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter), convert_options=convert)
            _check_column_names(table.column_names, path)
            binary = [f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
            if binary:
                raise DataError(f"{path}: not valid UTF-8 text (in column {binary[0]!r}); save the CSV as UTF-8")
            return _csv_integers(table, path)
    except pa.ArrowInvalid as exc:
        msg = str(exc)
        if "UTF8" in msg.upper() or "utf-8" in msg.lower():
            raise DataError(f"{path}: not valid UTF-8 text ({msg}); save the CSV as UTF-8") from exc
        raise DataError(f"{path}: cannot parse ({msg})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    raise DataError(f"{path}: unsupported format {suffix!r}; use .parquet or .csv")


def _integers(values: pa.ChunkedArray | pa.Array, column: str, path: Path, what: str = "ids") -> np.ndarray:
    """An integer column as int64, exactly, or DataError naming the rows that are not one.

    Unsigned values over 2**63 - 1, text over the int64 range, decimals and words are refused,
    never wrapped or rounded.
    """
    t = values.type
    if values.null_count:
        raise DataError(f"{path}: {column!r} is empty at {_which_rows(values.is_null().to_numpy(zero_copy_only=False))}")
    if pa.types.is_integer(t):
        if pa.types.is_unsigned_integer(t) and t.bit_width == 64:
            big = pc.greater(values, pa.scalar(INT64_MAX, pa.uint64())).to_numpy(zero_copy_only=False)
            if big.any():
                raise DataError(
                    f"{path}: {column!r} {what} must fit a signed 64-bit integer (at most {INT64_MAX}): "
                    f"{_which_rows(big, values.to_numpy())}"
                )
        return values.to_numpy().astype(np.int64)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = values.to_numpy(zero_copy_only=False)
        whole = pc.match_substring_regex(values, _INTEGER_TEXT).to_numpy(zero_copy_only=False)
        if not whole.all():
            raise DataError(f"{path}: {column!r} {what} must be whole numbers, found text: {_which_rows(~whole, text)}")
        big = np.array([not (INT64_MIN <= int(v) <= INT64_MAX) for v in text])
        if big.any():
            raise DataError(
                f"{path}: {column!r} {what} must fit a signed 64-bit integer (at most {INT64_MAX}): {_which_rows(big, text)}"
            )
        return pc.cast(values, pa.int64()).to_numpy()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        raise DataError(
            f"{path}: {column!r} {what} must be whole numbers (an integer column), found {t}: "
            f"{_which_rows(np.ones(len(values), bool), values.to_numpy(zero_copy_only=False))}"
        )
    raise DataError(f"{path}: {column!r} {what} must be whole numbers, found a column of type {t}")


def _floats(values: pa.ChunkedArray, column: str, path: Path) -> np.ndarray:
    """A probability / confidence column as float64, or DataError naming text values."""
    t = values.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = values.to_numpy(zero_copy_only=False)
        number = r"^\s*[-+]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|nan|NaN|NAN|inf|-inf|Inf|-Inf)\s*$"
        ok = pc.fill_null(pc.match_substring_regex(values, number), True).to_numpy(zero_copy_only=False)
        bad = ~ok
        if bad.any():
            pct = any(str(text[i]).strip().endswith("%") for i in np.flatnonzero(bad)[:_SHOW])
            hint = (" (percentages: give fractions in [0, 1], e.g. 0.037 for 3.7%)" if pct
                    else " (numbers in [0, 1] expected)")
            raise DataError(f"{path}: {column!r} must be numbers, found text{hint}: {_which_rows(bad, text)}")
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    raise DataError(f"{path}: {column!r} must be numbers, found a column of type {t}")


def _class_ids(values: pa.ChunkedArray, class_names: list[str], column: str, path: Path) -> np.ndarray:
    """Map a label/pred column (names or ids) to class ids; DataError on unknown values."""
    if values.null_count:
        raise DataError(f"{path}: column {column!r} is empty at {_which_rows(values.is_null().to_numpy(zero_copy_only=False))}")
    if pa.types.is_integer(values.type):
        raw = values.to_numpy()  # compared in its own dtype: a uint64 is never wrapped to -1
        bad = (raw < 0) | (raw >= len(class_names))
        if bad.any():
            raise DataError(
                f"{path}: unknown classes in {column!r} (expected ids 0..{len(class_names) - 1}): {_which_rows(bad, raw)}"
            )
        return raw.astype(np.int64)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            or pa.types.is_floating(values.type) or pa.types.is_dictionary(values.type)):
        raise DataError(f"{path}: {column!r} must hold class names or class ids, found a column of type {values.type}")
    text = pc.cast(values, pa.string()).to_numpy(zero_copy_only=False)
    lookup = {name: i for i, name in enumerate(class_names)}
    lookup.update({str(i): i for i in range(len(class_names))})
    ids = np.array([lookup.get(v, -1) for v in text], dtype=np.int64)
    bad = ids < 0
    if bad.any():
        shown = ", ".join(class_names[:20]) + (f", ... ({len(class_names)} in all)" if len(class_names) > 20 else "")
        raise DataError(f"{path}: unknown classes in {column!r} (classes: {shown}): {_which_rows(bad, text)}")
    return ids


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


def run(
    warehouse: Warehouse,
    *,
    predictions: str | Path | None = None,
    run_id: str | None = None,
    images: str | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    force: bool = False,
    features: str | Path | None = None,
    allow_images_anywhere: bool = False,
) -> IngestResult:
    """Validate a predictions file (and features) and store it as a run (see the module docstring).

    With ``features`` and no ``predictions``, add features to the existing run ``run_id``
    (:func:`add_features`).
    """
    if predictions is None:
        if features is None:
            raise DataError("Nothing to ingest: give --predictions FILE (and optionally --features FILE), "
                            "or --run RUN --features FILE to add features to an existing run")
        if run_id is None:
            raise DataError("--features without --predictions adds features to an existing run: name it with --run")
        return add_features(warehouse, run_id=run_id, features=features, force=force)
    started = utcnow()
    path = Path(predictions)
    table = read_table(path)
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    missing = [c for c in ("id", "label") if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: required columns missing: {', '.join(missing)} (have: {', '.join(table.column_names)})")
    _check_probs_column(table, path)
    _check_class_columns(table, path)

    source = open_source(images, classes=classes) if images else None
    class_names = _resolve_classes(table, classes, source, path)
    if len(set(class_names)) != len(class_names):
        dupes = sorted({c for c in class_names if class_names.count(c) > 1})[:_SHOW]
        raise DataError(f"{path}: duplicate class names: {dupes}")
    if len(class_names) < 2:
        raise DataError(f"{path}: need at least 2 classes, found {class_names}")

    # ids
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

    labels = _class_ids(table.column("label"), class_names, "label", path)
    probs = _probabilities(table, class_names, path)
    pred = confidence = None
    if probs is None:
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

    # images
    image_uris: list[str | None] | None = None
    image_for = None
    if "image" in table.column_names:
        col = table.column("image")
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or col.null_count == len(col)):
            raise DataError(f"{path}: 'image' must hold file paths (text), found a column of type {col.type}")
        raw = pc.cast(col, pa.string()).to_numpy(zero_copy_only=False)
        resolved = _image_paths(raw, path, images, allow_images_anywhere)
        image_uris = resolved

        def image_for(pos: int):
            r = resolved[pos]
            return None if r is None else read_image_file(r, where=f"{r} ({path} row {pos + 1})")

    elif "index" in table.column_names:
        if source is None:
            raise DataError(f"{path}: has an 'index' column; pass --images SOURCE to say which dataset it indexes")
        split = split or ("test" if "test" in source.splits() else source.splits()[0])
        index = _integers(table.column("index"), "index", path, what="dataset positions")
        try:
            positions = source.find(split, index)
        except DataError as exc:
            raise DataError(f"{path}: 'index' does not match {source.spec} [{split}]: {exc}") from exc
        image_uris = [source.uri(split, None, int(i)) for i in index]
        # decode failures only, lazily, from the source
        _, _, raw_records = source._records(split)

        def image_for(pos: int):
            return source._decode(split, raw_records[positions[pos]], int(index[pos]))

    run_id = run_id or path.stem
    preds = prediction_table(
        run_id,
        example_ids,
        labels,
        probs=probs,
        pred=pred,
        confidence=confidence,
        image_uris=image_uris,
        source_ids=source_ids,
    )
    # Decode failure images before opening the warehouse: a bad image errors with nothing written.
    failures = failure_table(run_id, preds, image_for)
    feats = counts = None
    if features is not None:
        feats, counts = read_features(
            features, run_id=run_id, class_names=class_names, example_ids=example_ids, labels=labels,
            source_ids=source_ids,
        )

    with warehouse.transaction() as con:
        exists = con.execute("select count(*) from runs where run_id = ?", [run_id]).fetchone()[0]
        if exists and not force:
            raise DataError(f"Run {run_id!r} already exists; pick another --run name or pass --force to replace it")
        if exists:
            for table_name in REPLACED_TABLES:
                delete_rows(con, table_name, {"run_id": run_id})
        write_run(
            con,
            run_id,
            kind="ingest",
            class_names=class_names,
            dataset=images,
            eval_split=split,
            config={"predictions": str(path), "images": images, "split": split},
        )
        store_results(con, run_id, preds, failures)
        record_stage(
            con, run_id, "ingest", started_at=started,
            details={"rows": preds.num_rows, "failures": failures.num_rows, "file": str(path)},
        )
        if feats is not None:
            _store_features(con, run_id, feats, counts, features, started)
    n_img = int(pc.sum(pc.invert(pc.is_null(failures.column("image_png")))).as_py() or 0)
    return IngestResult(run_id, preds.num_rows, failures.num_rows, class_names, n_img, features=counts)


# -- features ---------------------------------------------------------------------------


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

    # split
    split_col = cols["split"]
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

    # vectors: same length everywhere, finite as float32 (what is stored)
    vec = cols["vector"]
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

    # ids
    ids_col = cols["id"]
    if ids_col.null_count:
        raise DataError(f"{path}: 'id' is empty at {_which_rows(ids_col.is_null().to_numpy(zero_copy_only=False))}")
    text_ids = pa.types.is_string(ids_col.type) or pa.types.is_large_string(ids_col.type)
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

    # labels: train rows from the file, eval rows from the predictions (and checked against them)
    label_of = {int(e): int(lab) for e, lab in zip(example_ids, labels)}
    out_labels = np.zeros(n, dtype=np.int64)
    out_labels[eval_pos] = [label_of[int(e)] for e in ids[eval_pos]]
    if "label" not in cols:
        raise DataError(f"{path}: 'label' is missing: the train rows need their class (name or id)")
    lab = cols["label"]
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

    table = feature_table(run_id, splits, ids, out_labels, matrix)
    return table, FeatureCounts(train=int(is_train.sum()), eval=int((~is_train).sum()), dim=dim)


def _store_features(con, run_id: str, feats: pa.Table, counts: FeatureCounts, file, started) -> None:
    replace_rows(con, "features", {"run_id": run_id}, feats)
    record_stage(con, run_id, "features", started_at=started,
                 details={"file": str(file), "train": counts.train, "eval": counts.eval, "dim": counts.dim})


def add_features(warehouse: Warehouse, *, run_id: str, features: str | Path, force: bool = False) -> IngestResult:
    """Add (or with ``force`` replace) the features of an existing run.

    The run's evidence rows are deleted in the same transaction: they were computed without
    these vectors, and ``lens evidence`` recomputes failures that have none.
    """
    started = utcnow()
    with warehouse.connect(read_only=True) as con:
        row = con.execute("select count(*) from runs where run_id = ?", [run_id]).fetchone()
        if not row[0]:
            runs = [r[0] for r in con.execute("select run_id from runs order by created_at").fetchall()]
            raise DataError(f"No run named {run_id!r} to add features to. Runs: {', '.join(runs) or 'none'}")
        names = [r[0] for r in con.execute(
            "select class_name from classes where run_id = ? order by class_id", [run_id]).fetchall()]
        preds = con.execute(
            "select example_id, label, source_id from prediction_rows where run_id = ? order by example_id", [run_id]
        ).to_arrow_table()
        have = con.execute("select count(*) from features where run_id = ?", [run_id]).fetchone()[0]
        n_fail = con.execute("select count(*) from failures where run_id = ?", [run_id]).fetchone()[0]
    if have and not force:
        raise DataError(f"Run {run_id!r} already has {have:,} feature rows; pass --force to replace them")
    src = preds.column("source_id")
    source_ids = src.to_pylist() if src.null_count < len(src) else None
    feats, counts = read_features(
        features, run_id=run_id, class_names=names, example_ids=preds.column("example_id").to_numpy(),
        labels=preds.column("label").to_numpy(), source_ids=source_ids,
    )
    with warehouse.transaction() as con:
        now = con.execute("select count(*) from prediction_rows where run_id = ?", [run_id]).fetchone()[0]
        if now != preds.num_rows:
            raise DataError(f"Run {run_id!r} changed while its features were read; run the command again")
        cleared = con.execute("select count(*) from evidence where run_id = ?", [run_id]).fetchone()[0]
        delete_rows(con, "evidence", {"run_id": run_id})
        delete_rows(con, "stage_runs", {"run_id": run_id, "stage": "evidence"})
        _store_features(con, run_id, feats, counts, features, started)
    return IngestResult(run_id, preds.num_rows, n_fail, names, 0, features=counts, evidence_cleared=cleared)
