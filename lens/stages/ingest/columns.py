"""Reading a predictions or features table, and its columns as checked arrays.

Every error is a DataError naming the file and its first offending rows (1-based, as a user
sees them in the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lens.errors import DataError

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
#: CSV columns read as text and then parsed as 64-bit integers when every value is one, so an
#: id of 2**63 or more is named and refused rather than read as a float
_CSV_INTEGER_COLUMNS = ("id", "label", "pred", "index")
_INTEGER_TEXT = r"^-?[0-9]+$"
#: what a CSV header holds when it was saved with another delimiter
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
_SHOW = 5


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
            hint = "rename it to .tsv" if other == "\t" else "save it with commas as the delimiter"
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
