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
``image``          optional: image path (relative to the predictions file) or URI
``index``          optional: the example's index in the ``--images`` dataset source
=================  ===========================================================

Everything is validated before anything is written (unknown classes, probability rows
not summing to 1 within 1e-3, NaN, duplicate ids, missing images); the error lists the
first offending rows. Then one transaction writes ``runs``, ``classes``,
``predictions`` and ``failures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lens.datasets import DatasetSource, decode_image, open_source
from lens.errors import DataError
from lens.predictions import failure_table, prediction_table, store_results, write_run
from lens.warehouse import Warehouse, delete_rows, record_stage, utcnow

PROB_TOLERANCE = 1e-3
#: what `--force` replaces: everything derived from the old predictions. Hypotheses,
#: embeddings, clusters and verdicts (people's work) are kept, as `lens train --force` does.
REPLACED_TABLES = ("prediction_rows", "failures", "samples", "training_log", "features", "evidence", "stage_runs")
_SHOW = 5


@dataclass
class IngestResult:
    run_id: str
    rows: int
    failures: int
    classes: list[str]
    images: int


def _rows(mask_or_positions, values=None) -> str:
    pos = np.flatnonzero(mask_or_positions) if np.asarray(mask_or_positions).dtype == bool else mask_or_positions
    shown = []
    for p in list(pos)[:_SHOW]:
        # row numbers as a user sees them in the file: 1-based data rows
        v = values[int(p)] if values is not None else None
        v = v.item() if hasattr(v, "item") else v
        shown.append(f"row {int(p) + 1}" + (f" ({v!r})" if values is not None else ""))
    more = f" and {len(pos) - _SHOW} more" if len(pos) > _SHOW else ""
    return ", ".join(shown) + more


def read_table(path: Path) -> pa.Table:
    """Read a Parquet or CSV predictions file into Arrow, with clear errors."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            parse = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            table = pcsv.read_csv(path, parse_options=parse)
            binary = [f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
            if binary:
                raise DataError(f"{path}: not valid UTF-8 text (in column {binary[0]!r}); save the CSV as UTF-8")
            return table
    except pa.ArrowInvalid as exc:
        msg = str(exc)
        if "UTF8" in msg.upper() or "utf-8" in msg.lower():
            raise DataError(f"{path}: not valid UTF-8 text ({msg}); save the CSV as UTF-8") from exc
        raise DataError(f"{path}: cannot parse ({msg})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    raise DataError(f"{path}: unsupported format {suffix!r}; use .parquet or .csv")


def _class_ids(values: pa.ChunkedArray, class_names: list[str], column: str, path: Path) -> np.ndarray:
    """Map a label/pred column (names or ids) to class ids; DataError on unknown values."""
    if values.null_count:
        raise DataError(f"{path}: column {column!r} is empty at {_rows(values.is_null().to_numpy(zero_copy_only=False))}")
    if pa.types.is_integer(values.type):
        ids = values.to_numpy().astype(np.int64)
        bad = (ids < 0) | (ids >= len(class_names))
        if bad.any():
            raise DataError(
                f"{path}: unknown classes in {column!r} (expected ids 0..{len(class_names) - 1}): {_rows(bad, ids)}"
            )
        return ids
    text = pc.cast(values, pa.string()).to_numpy(zero_copy_only=False)
    lookup = {name: i for i, name in enumerate(class_names)}
    lookup.update({str(i): i for i in range(len(class_names))})
    ids = np.array([lookup.get(v, -1) for v in text], dtype=np.int64)
    bad = ids < 0
    if bad.any():
        raise DataError(f"{path}: unknown classes in {column!r} (classes: {', '.join(class_names)}): {_rows(bad, text)}")
    return ids


def _prob_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if c.startswith("prob_")]


def _resolve_classes(table: pa.Table, classes: Sequence[str] | None, source: DatasetSource | None, path: Path) -> list[str]:
    if classes:
        return list(classes)
    if source is not None:
        return list(source.class_names)
    if "probs" in table.column_names:
        width = int(pc.max(pc.list_value_length(table.column("probs"))).as_py() or 0)
        return [str(i) for i in range(width)]
    cols = _prob_columns(table)
    if cols:
        names = [c[len("prob_"):] for c in cols]
        if all(n.isdigit() for n in names):
            return [str(i) for i in range(len(names))]
        return names
    label = table.column("label")
    if pa.types.is_integer(label.type):
        hi = int(pc.max(label).as_py() or 0)
        if "pred" in table.column_names and pa.types.is_integer(table.column("pred").type):
            hi = max(hi, int(pc.max(table.column("pred")).as_py() or 0))
        return [str(i) for i in range(hi + 1)]
    names = set(pc.unique(pc.cast(label, pa.string())).to_pylist())
    if "pred" in table.column_names:
        names |= set(pc.unique(pc.cast(table.column("pred"), pa.string())).to_pylist())
    return sorted(n for n in names if n is not None)


def _probabilities(table: pa.Table, class_names: list[str], path: Path) -> np.ndarray | None:
    if "probs" in table.column_names:
        col = table.column("probs").combine_chunks()
        if col.null_count:
            raise DataError(f"{path}: 'probs' is empty at {_rows(col.is_null().to_numpy(zero_copy_only=False))}")
        lengths = pc.list_value_length(col).to_numpy()
        bad = lengths != len(class_names)
        if bad.any():
            raise DataError(f"{path}: 'probs' must have {len(class_names)} values per row: {_rows(bad, lengths)}")
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
        probs = np.column_stack(
            [pc.cast(table.column(c), pa.float64()).to_numpy(zero_copy_only=False) for c in order]
        )
    # a matrix-vector product sums short rows ~10x faster than .sum(axis=1); float32 rounding
    # (~1e-6 at 10 classes) is far inside the tolerance
    sums = probs @ np.ones(probs.shape[1], dtype=probs.dtype)
    nan = ~np.isfinite(sums)  # a NaN or infinity anywhere in a row makes its sum non-finite
    if nan.any():
        raise DataError(f"{path}: NaN or infinite probabilities at {_rows(nan)}")
    neg = probs.min(axis=1) < 0 if probs.min() < 0 else None  # per row only when some value is negative
    if neg is not None and neg.any():
        raise DataError(f"{path}: negative probabilities at {_rows(neg)}")
    off = np.abs(sums - 1.0) > PROB_TOLERANCE
    if off.any():
        raise DataError(
            f"{path}: probability rows must sum to 1 (±{PROB_TOLERANCE}): {_rows(off, np.round(sums, 4))}"
        )
    return probs


def run(
    warehouse: Warehouse,
    *,
    predictions: str | Path,
    run_id: str | None = None,
    images: str | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    force: bool = False,
) -> IngestResult:
    """Validate a predictions file and store it as a run (see the module docstring)."""
    started = utcnow()
    path = Path(predictions)
    table = read_table(path)
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    missing = [c for c in ("id", "label") if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: required columns missing: {', '.join(missing)} (have: {', '.join(table.column_names)})")

    source = open_source(images, classes=classes) if images else None
    class_names = _resolve_classes(table, classes, source, path)
    if len(set(class_names)) != len(class_names):
        raise DataError(f"{path}: duplicate class names: {class_names}")
    if len(class_names) < 2:
        raise DataError(f"{path}: need at least 2 classes, found {class_names}")

    # ids
    ids_col = table.column("id")
    if ids_col.null_count:
        raise DataError(f"{path}: 'id' is empty at {_rows(ids_col.is_null().to_numpy(zero_copy_only=False))}")
    source_ids = None
    if pa.types.is_integer(ids_col.type):
        example_ids = ids_col.to_numpy().astype(np.int64)
    else:
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
        raise DataError(f"{path}: duplicate ids at {_rows(dup_rows, values)}")

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
        confidence = pc.cast(table.column("confidence"), pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(confidence) | (confidence < 0) | (confidence > 1)
        if bad.any():
            raise DataError(f"{path}: 'confidence' must be a number in [0, 1]: {_rows(bad, confidence)}")

    # images
    image_uris: list[str | None] | None = None
    image_for = None
    if "image" in table.column_names:
        raw = pc.cast(table.column("image"), pa.string()).to_numpy(zero_copy_only=False)
        resolved = []
        for v in raw:
            if v is None or v == "":
                resolved.append(None)
                continue
            p = Path(v.removeprefix("file://"))
            resolved.append(str(p if p.is_absolute() else (path.parent / p)))
        gone = np.array([r is not None and not Path(r).is_file() for r in resolved])
        if gone.any():
            raise DataError(f"{path}: images not found at {_rows(gone, resolved)}")
        image_uris = resolved

        def image_for(pos: int):
            r = resolved[pos]
            return None if r is None else decode_image(Path(r).read_bytes(), where=f"{r} ({path} row {pos + 1})")

    elif "index" in table.column_names:
        if source is None:
            raise DataError(f"{path}: has an 'index' column; pass --images SOURCE to say which dataset it indexes")
        split = split or ("test" if "test" in source.splits() else source.splits()[0])
        index = pc.cast(table.column("index"), pa.int64()).to_numpy(zero_copy_only=False)
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
    n_img = int(pc.sum(pc.invert(pc.is_null(failures.column("image_png")))).as_py() or 0)
    return IngestResult(run_id, preds.num_rows, failures.num_rows, class_names, n_img)
