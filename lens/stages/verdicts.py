"""Human review verdicts: append, export, import.

``verdicts`` is append-only: a reviewer who changes their mind appends a newer row, and
the view ``latest_verdicts`` keeps the latest per (hypothesis_id, dimension, reviewer).
Every write validates first and then inserts in one transaction, so a bad batch writes
nothing. A write waits for a held warehouse (``Warehouse.connect`` retries with backoff
for ``lock_timeout`` seconds) rather than failing at once.

A verdict is one of ``agree`` / ``disagree`` / ``skip`` on one dimension of one hypothesis
(a dimension that hypothesis answered) or on ``overall``.

Exchange files (``lens verdicts export`` / ``lens verdicts import``), CSV or Parquet by
the file's suffix (``.csv``, ``.parquet`` / ``.pq``), one row per verdict with the columns
of the ``verdicts`` table::

    verdict_id, run_id, hypothesis_id, example_id, dimension, verdict, reviewer, note,
    created_at, source

Export writes the whole append-only log (optionally one run's), oldest first. In CSV,
text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``,
``@``, tab or carriage return) are prefixed with a single quote ``'``; import removes that
quote again, so a round trip gives back the same text.

Import needs ``hypothesis_id``, ``dimension``, ``verdict`` and ``reviewer``; ``note``,
``verdict_id`` (default: a new uuid4) and ``created_at`` (default: now, UTC) are optional;
``run_id`` and ``example_id`` come from the hypothesis (a file value that disagrees is an
error). Rows whose ``verdict_id`` is already stored are skipped, so importing the same file
twice adds nothing. Unknown hypothesis ids, bad verdict values or dimensions, empty
reviewers and duplicate verdict ids are reported (first rows shown) and nothing is written.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from lens.errors import DataError, LensError
from lens.warehouse import Warehouse, insert_arrow, utcnow

VERDICTS = ("agree", "disagree", "skip")
OVERALL = "overall"
SOURCES = ("review", "import")
COLUMNS = [
    "verdict_id", "run_id", "hypothesis_id", "example_id", "dimension", "verdict",
    "reviewer", "note", "created_at", "source",
]
REQUIRED = ("hypothesis_id", "dimension", "verdict", "reviewer")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SHOW = 5


@dataclass
class ImportResult:
    rows: int       # rows in the file
    written: int    # new verdicts appended
    skipped: int    # rows whose verdict_id was already stored


def _schema() -> pa.Schema:
    return pa.schema([
        ("verdict_id", pa.string()), ("run_id", pa.string()), ("hypothesis_id", pa.string()),
        ("example_id", pa.int64()), ("dimension", pa.string()), ("verdict", pa.string()),
        ("reviewer", pa.string()), ("note", pa.string()), ("created_at", pa.timestamp("us")),
        ("source", pa.string()),
    ])


def _hypothesis_info(con, ids: Iterable[str]) -> dict[str, tuple[str, int, set[str]]]:
    """hypothesis_id -> (run_id, example_id, its dimensions) for the ids that exist."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    rows = con.execute(
        "select h.hypothesis_id, h.run_id, h.example_id, list(d.dimension) filter (where d.dimension is not null)"
        " from hypotheses as h left join hypothesis_dimensions as d on d.hypothesis_id = h.hypothesis_id"
        " where h.hypothesis_id in (select unnest(?::varchar[]))"
        " group by h.hypothesis_id, h.run_id, h.example_id",
        [ids],
    ).fetchall()
    return {h: (r, int(e), set(dims or [])) for h, r, e, dims in rows}


#: hypothesis_id -> (run_id, example_id, its dimensions), kept by a caller between writes
HypothesisInfo = dict[str, tuple[str, int, set[str]]]


def _lookup(con, ids: Iterable[str], known: HypothesisInfo | None) -> HypothesisInfo:
    """The hypotheses' info: from ``known`` where it holds them, the rest read (and added to it)."""
    if known is None:
        return _hypothesis_info(con, ids)
    missing = set(ids) - known.keys()
    if missing:
        known.update(_hypothesis_info(con, missing))
    return known


def _validate(con, frame: pd.DataFrame, known: HypothesisInfo | None = None) -> pd.DataFrame:
    """Check every row; return the rows completed with run_id/example_id. Raise DataError."""
    problems: list[str] = []
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"Verdicts need the columns {', '.join(REQUIRED)}; missing: {', '.join(missing)}.")
    info = _lookup(con, frame["hypothesis_id"].dropna().astype(str), known)

    def report(title: str, bad: list[str]) -> None:
        if bad:
            more = f" (and {len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
            problems.append(f"{title}: {'; '.join(bad[:_SHOW])}{more}")

    unknown, bad_verdict, bad_dim, no_reviewer, mismatch = [], [], [], [], []
    run_ids, example_ids = [], []
    for i, row in enumerate(frame.itertuples(index=False)):
        line = f"row {i + 1}"
        hyp = None if pd.isna(row.hypothesis_id) else str(row.hypothesis_id)
        known = info.get(hyp) if hyp is not None else None
        if known is None:
            unknown.append(f"{line} {hyp!r}")
            run_ids.append(None)
            example_ids.append(None)
        else:
            run_ids.append(known[0])
            example_ids.append(known[1])
            dim = row.dimension
            if not isinstance(dim, str) or (dim != OVERALL and dim not in known[2]):
                allowed = ", ".join(sorted(known[2]) + [OVERALL])
                bad_dim.append(f"{line} {dim!r} (hypothesis {hyp} has: {allowed})")
            for col, idx in (("run_id", 0), ("example_id", 1)):
                if col in frame.columns:
                    given = getattr(row, col)
                    if not pd.isna(given) and str(given) != str(known[idx]):
                        mismatch.append(f"{line} {col} {given!r} but hypothesis {hyp} has {known[idx]!r}")
        if row.verdict not in VERDICTS:
            bad_verdict.append(f"{line} {row.verdict!r}")
        if not isinstance(row.reviewer, str) or not row.reviewer.strip():
            no_reviewer.append(line)
    report("Unknown hypothesis ids", unknown)
    report(f"Bad verdict values (expected {' / '.join(VERDICTS)})", bad_verdict)
    report("Bad dimensions", bad_dim)
    report("Empty reviewer", no_reviewer)
    report("run_id / example_id disagree with the hypothesis", mismatch)
    if "verdict_id" in frame.columns:
        ids = frame["verdict_id"].dropna().astype(str)
        dup = ids[ids.duplicated()].unique().tolist()
        report("Duplicate verdict ids in the file", [repr(d) for d in dup])
    if problems:
        raise DataError("Verdicts rejected, nothing written.\n  " + "\n  ".join(problems))
    out = frame.copy()
    out["run_id"] = run_ids
    out["example_id"] = example_ids
    return out


def _to_table(frame: pd.DataFrame, source: str) -> pa.Table:
    n = len(frame)
    now = utcnow()

    def col(name: str, default):
        if name in frame.columns:
            return [default() if pd.isna(v) or v == "" else v for v in frame[name]]
        return [default() for _ in range(n)]

    created = [pd.Timestamp(v).to_pydatetime().replace(tzinfo=None) if not isinstance(v, datetime) else v
               for v in col("created_at", lambda: now)]
    notes = [None if (v is None or (not isinstance(v, str) and pd.isna(v)) or v == "") else str(v)
             for v in (frame["note"] if "note" in frame.columns else [None] * n)]
    data = {
        "verdict_id": [str(v) for v in col("verdict_id", lambda: str(uuid.uuid4()))],
        "run_id": list(frame["run_id"]),
        "hypothesis_id": [str(v) for v in frame["hypothesis_id"]],
        "example_id": [int(v) for v in frame["example_id"]],
        "dimension": list(frame["dimension"]),
        "verdict": list(frame["verdict"]),
        "reviewer": [str(v).strip() for v in frame["reviewer"]],
        "note": notes,
        "created_at": created,
        "source": [source] * n,
    }
    return pa.table(data, schema=_schema())


def append(wh: Warehouse, records: Iterable[Mapping[str, Any]], *, source: str = "review",
           skip_existing: bool = False, known: HypothesisInfo | None = None) -> list[str]:
    """Validate and append verdicts in one transaction; return the ids appended.

    Each record has ``hypothesis_id``, ``dimension`` (a dimension of that hypothesis or
    ``'overall'``), ``verdict`` (agree / disagree / skip), ``reviewer`` and optionally
    ``note``, ``verdict_id`` and ``created_at``. Waits for a held warehouse (up to the
    warehouse's ``lock_timeout``), then raises :class:`~lens.errors.WarehouseLockedError`.
    With ``skip_existing``, records whose ``verdict_id`` is already stored are left out
    (a retried write after a lost answer appends nothing twice). ``known``: hypothesis info a
    caller keeps between writes (the review app, for a minute): hypotheses found there are
    not read again, the others are read in the transaction and added (on a DuckLake lake the
    read is ~40 ms of a ~85 ms save).
    """
    if source not in SOURCES:
        raise ValueError(f"bad verdict source {source!r}")
    frame = pd.DataFrame(list(records))
    if frame.empty:
        return []
    with wh.transaction() as con:
        checked = _validate(con, frame, known)
        if skip_existing:
            checked = _drop_stored(con, checked)[0]
        table = _to_table(checked, source)
        insert_arrow(con, "verdicts", table)
    return table.column("verdict_id").to_pylist()


def _drop_stored(con, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows whose verdict_id is not stored yet, and how many were dropped."""
    if "verdict_id" not in frame.columns:
        return frame, 0
    ids = [str(v) for v in frame["verdict_id"].dropna()]
    if not ids:
        return frame, 0
    stored = {r[0] for r in con.execute(
        "select verdict_id from verdicts where verdict_id in (select unnest(?::varchar[]))", [ids]).fetchall()}
    keep = ~frame["verdict_id"].astype(str).isin(stored)
    return frame[keep], int((~keep).sum())


def record(wh: Warehouse, hypothesis_id: str, dimension: str, verdict: str, reviewer: str,
           note: str | None = None) -> str:
    """Append one verdict from the review form; return its verdict id."""
    return append(wh, [{"hypothesis_id": hypothesis_id, "dimension": dimension, "verdict": verdict,
                        "reviewer": reviewer, "note": note}])[0]


# -- exchange files ----------------------------------------------------------------------


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise LensError(f"Cannot tell the format of {path}: use a .csv or .parquet file name.")


def neutralise(value: Any) -> Any:
    """Prefix text a spreadsheet would run as a formula with a single quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def unneutralise(value: Any) -> Any:
    """Undo :func:`neutralise` (a quote followed by a formula character)."""
    if isinstance(value, str) and len(value) > 1 and value[0] == "'" and value[1:].startswith(_FORMULA_START):
        return value[1:]
    return value


def export(wh: Warehouse, path: str | Path, *, run_id: str | None = None) -> int:
    """Write the verdict log (of one run, or all) to CSV or Parquet; return the row count."""
    path = Path(path)
    fmt = _format(path)
    sql = "select " + ", ".join(COLUMNS) + " from verdicts"
    params: list[Any] = []
    if run_id is not None:
        sql += " where run_id = ?"
        params.append(run_id)
    sql += " order by created_at, verdict_id"
    with wh.connect() as con:
        table = con.execute(sql, params).to_arrow_table()
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        frame = table.to_pandas()
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for row in frame.itertuples(index=False):
                cells = []
                for name, value in zip(COLUMNS, row):
                    if value is None or (not isinstance(value, str) and pd.isna(value)):
                        cells.append("")
                    elif name == "created_at":
                        cells.append(pd.Timestamp(value).isoformat())
                    else:
                        cells.append(neutralise(value) if isinstance(value, str) else value)
                writer.writerow(cells)
    return table.num_rows


def read_file(path: str | Path) -> pd.DataFrame:
    """Read an exchange file into a DataFrame of text columns (CSV cells un-neutralised)."""
    path = Path(path)
    fmt = _format(path)
    if not path.exists():
        raise LensError(f"No such file: {path}")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pandas()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for c in frame.columns:
        frame[c] = [unneutralise(v) if v != "" else None for v in frame[c]]
    return frame


def import_file(wh: Warehouse, path: str | Path) -> ImportResult:
    """Validate a CSV/Parquet file of verdicts and append the new ones (all or nothing)."""
    frame = read_file(path)
    rows = len(frame)
    if rows == 0:
        return ImportResult(0, 0, 0)
    with wh.transaction() as con:
        checked, skipped = _drop_stored(con, _validate(con, frame))
        written = insert_arrow(con, "verdicts", _to_table(checked, "import")) if len(checked) else 0
    return ImportResult(rows, written, skipped)
