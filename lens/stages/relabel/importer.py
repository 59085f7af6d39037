"""``lens labels import`` (:func:`import_labels`): the annotators' labels checked against the run
and appended to ``label_corrections``.

One step per function: read the file (:mod:`.readers`), settle its run, check each labelled
row (split, example id, class), look up the labels the examples have now, turn the rows into
correction records (refusing mismatched given labels and contradictions), and store the new
ones in one transaction. Any problem refuses the whole file and nothing is written."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lens.errors import DataError, LensError
from lens.warehouse import Warehouse, class_names, insert_arrow, require_run, stable_id, utcnow

from .common import ImportResult
from .readers import _example_id, _read_csv, _read_label_studio, _Row

_SHOW = 5


@dataclass
class _File:
    """The file being imported: its rows, format and digest (the stamp of undated rows)."""
    path: Path
    rows: list[_Row]
    fmt: str                        # "csv" | "label-studio"
    digest: str


@dataclass
class _Run:
    """The run the file is for, with what the row checks need."""
    run_id: str
    dataset: str | None
    eval_split: str
    names: list[str]
    by_lower: dict[str, list[int]]  # lower-cased class name -> class indices


@dataclass
class _Problems:
    """Refused rows, reported in file order."""
    order: dict[int, int]           # id(row) -> position in the file
    found: list[tuple[int, str]] = field(default_factory=list)

    def add(self, r: _Row, message: str) -> None:
        self.found.append((self.order[id(r)], f"{r.where}: {message}"))

    def raise_if_any(self, path: Path) -> None:
        if not self.found:
            return
        problems = [m for _, m in sorted(self.found)]
        shown = "; ".join(problems[:_SHOW]) + (f"; and {len(problems) - _SHOW} more" if len(problems) > _SHOW else "")
        raise DataError(f"{path}: {len(problems)} row(s) refused, nothing written: {shown}")


def _read(path: Path) -> _File:
    """Read the file and parse it as a Label Studio export (JSON) or the exported CSV."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if path.suffix.lower() == ".json" or head in (b"[", b"{"):
        rows, fmt = _read_label_studio(path, data), "label-studio"
    else:
        rows, fmt = _read_csv(path, data), "csv"
    return _File(path, rows, fmt, hashlib.sha256(data).hexdigest())


def _file_run(path: Path, rows: list[_Row], run_id: str | None) -> str:
    """The one run the file is for (its rows' ``run_id`` and ``--run`` must agree)."""
    runs = {r.run_id for r in rows if r.run_id} | ({run_id} if run_id else set())
    if len(runs) > 1:
        raise DataError(f"{path}: rows of several runs ({', '.join(sorted(runs))}); import one run's file at a time")
    if not runs:
        raise DataError(f"{path}: the file names no run_id: say which run it is for with --run")
    return runs.pop()


def _open_run(con, run_id: str) -> _Run:
    run = require_run(con, run_id)
    dataset, eval_split = con.execute("select dataset, eval_split from runs where run_id = ?", [run]).fetchone()
    names = class_names(con, run)
    by_lower: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_lower.setdefault(n.lower(), []).append(i)
    return _Run(run, dataset, eval_split or "eval", names, by_lower)


def _class_index(label: str, target: _Run) -> int | None:
    """The class an annotator named: exactly, else case aside when that is unambiguous."""
    if label in target.names:
        return target.names.index(label)
    matches = target.by_lower.get(label.lower(), [])
    return matches[0] if len(matches) == 1 else None


def _parse(labelled: list[_Row], target: _Run, who: str | None, problems: _Problems) -> list[tuple]:
    """``(row, split, example id, class index, who)`` of each labelled row that passes the checks
    needing no lookup (split, example id, class name, annotator); the others go to ``problems``."""
    eval_split = target.eval_split
    parsed = []
    for r in labelled:
        split = r.split or eval_split
        ex = _example_id(r.example_id)
        err = []
        if split not in ("train", eval_split):
            err.append(f"split {split!r} is neither 'train' nor the run's evaluation split {eval_split!r}")
        if ex is None:
            err.append(f"example_id {r.example_id!r} is not a 64-bit integer")
        new = _class_index(r.label, target)
        if new is None:
            err.append(f"unknown class {r.label!r}")
        person = r.who or who
        if not person:
            err.append("no annotator (fill the annotator column, or pass --who NAME)")
        if err:
            problems.add(r, ", ".join(err))
            continue
        parsed.append((r, split, ex, new, person))
    return parsed


def _train_labels(con, run_id: str, dataset: str | None, ids: list[int]) -> tuple[dict[int, int], str | None]:
    """Label of each training example id: from the run's features, else its dataset."""
    found = dict(con.execute(
        "select example_id, label from features where run_id = ? and split = 'train' and list_contains(?, example_id)",
        [run_id, ids],
    ).fetchall())
    missing = [i for i in ids if i not in found]
    if not missing:
        return {int(k): int(v) for k, v in found.items()}, None
    try:
        from lens.datasets import open_source

        if not dataset:
            raise LensError("the run names no dataset")
        idx, labels = open_source(dataset).labels("train")
        lookup = dict(zip(np.asarray(idx).tolist(), np.asarray(labels).tolist()))
        found.update({i: lookup[i] for i in missing if i in lookup})
        return {int(k): int(v) for k, v in found.items()}, None
    except LensError as exc:
        return {int(k): int(v) for k, v in found.items()}, str(exc)


def _old_labels(con, target: _Run, parsed: list[tuple]) -> tuple[dict, dict, str | None]:
    """The current labels of the rows' evaluation and training examples, and why training
    labels could not all be found (or None)."""
    eval_ids = [ex for _, s, ex, _, _ in parsed if s == target.eval_split]
    old_eval = dict(con.execute(
        "select example_id, label from predictions where run_id = ? and list_contains(?, example_id)",
        [target.run_id, eval_ids],
    ).fetchall()) if eval_ids else {}
    train_ids = sorted({ex for _, s, ex, _, _ in parsed if s == "train"})
    old_train, train_why = _train_labels(con, target.run_id, target.dataset, train_ids) if train_ids else ({}, None)
    return old_eval, old_train, train_why


def _record(r: _Row, split: str, ex: int, old: int, new: int, person: str, target: _Run,
            file: _File) -> dict[str, Any]:
    """One ``label_corrections`` row (without ``imported_at``); its id is deterministic."""
    run, names = target.run_id, target.names
    stamp = r.annotated_at.isoformat() if r.annotated_at else file.digest
    return {
        "correction_id": stable_id(run, split, ex, new, person, stamp), "run_id": run, "dataset": target.dataset,
        "split": split, "example_id": ex, "old_label": old, "new_label": new, "old_name": names[old],
        "new_name": names[new], "who": person, "annotated_at": r.annotated_at, "source_file": str(file.path),
        "source_format": file.fmt, "note": r.note,
    }


def _records(parsed: list[tuple], target: _Run, file: _File, old_eval: dict, old_train: dict,
             train_why: str | None, problems: _Problems) -> list[dict[str, Any]]:
    """The corrections of the parsed rows; rows of unknown examples, with a given label other
    than the run's, or contradicting an earlier row go to ``problems``."""
    run, names, eval_split = target.run_id, target.names, target.eval_split
    seen: dict[tuple[str, int], tuple[int, str]] = {}
    records = []
    for r, split, ex, new, person in parsed:
        old = (old_eval if split == eval_split else old_train).get(ex)
        if old is None:
            problems.add(r, f"no evaluation example {ex} in run {run!r}" if split == eval_split else
                         f"no training example {ex} in the features or dataset of run {run!r}"
                         + (f" ({train_why})" if train_why else ""))
            continue
        if r.given and r.given != names[old] and r.given.lower() != names[old].lower():
            problems.add(r, f"given label {r.given!r}, but run {run!r} has "
                         f"{names[old]!r} for {split} example {ex} (a file for another run or dataset?)")
            continue
        key = (split, ex)
        if key in seen and seen[key][0] != new:
            problems.add(r, f"{split} example {ex} is labelled {names[new]!r} here "
                         f"and {names[seen[key][0]]!r} at {seen[key][1]}")
            continue
        seen[key] = (new, r.where)
        records.append(_record(r, split, ex, old, new, person, target, file))
    return records


def _store(warehouse: Warehouse, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append the records not stored yet, in one transaction; returns those appended."""
    now = utcnow()
    with warehouse.transaction() as con:
        stored = {r[0] for r in con.execute(
            "select correction_id from label_corrections where list_contains(?, correction_id)",
            [[r["correction_id"] for r in records]],
        ).fetchall()}
        new_records = list({r["correction_id"]: r for r in records if r["correction_id"] not in stored}.values())
        if new_records:
            insert_arrow(con, "label_corrections", pa.Table.from_pylist(
                [{**r, "imported_at": now} for r in new_records], schema=_schema()))
    return new_records


def import_labels(warehouse: Warehouse, path: str | os.PathLike, *, run_id: str | None = None,
                  who: str | None = None) -> ImportResult:
    """Append the corrections of a CSV or Label Studio export (see the package docstring)."""
    file = _read(Path(path))
    rows = file.rows
    wanted = _file_run(file.path, rows, run_id)
    labelled = [r for r in rows if r.label]
    blank = len(rows) - len(labelled)
    problems = _Problems({id(r): i for i, r in enumerate(rows)})
    with warehouse.connect() as con:
        target = _open_run(con, wanted)
        parsed = _parse(labelled, target, who, problems)
        old_eval, old_train, train_why = _old_labels(con, target, parsed)
        records = _records(parsed, target, file, old_eval, old_train, train_why, problems)
    problems.raise_if_any(file.path)
    if not records:
        raise DataError(f"{file.path}: no labelled rows ({len(rows)} rows, none with a corrected label); "
                        "nothing written")

    new_records = _store(warehouse, records)
    by_split: dict[str, int] = {}
    for r in new_records:
        by_split[r["split"]] = by_split.get(r["split"], 0) + 1
    return ImportResult(target.run_id, len(rows), len(new_records), len(records) - len(new_records), blank,
                        sum(1 for r in new_records if r["old_label"] != r["new_label"]), by_split)


def _schema() -> pa.Schema:
    return pa.schema([
        ("correction_id", pa.string()), ("run_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()),
        ("example_id", pa.int64()), ("old_label", pa.int32()), ("new_label", pa.int32()), ("old_name", pa.string()),
        ("new_name", pa.string()), ("who", pa.string()), ("annotated_at", pa.timestamp("us")),
        ("imported_at", pa.timestamp("us")), ("source_file", pa.string()), ("source_format", pa.string()),
        ("note", pa.string()),
    ])
