"""The annotators' files, read into uniform rows (:class:`_Row`) before any check: the exported
CSV (:func:`_read_csv`) and Label Studio's JSON and JSON-MIN exports (:func:`_read_label_studio`),
plus the cell parsers they share (times, strings, annotators, 64-bit example ids)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lens.corrections import csv_unsafe
from lens.errors import DataError

from .common import FROM_NAME, NEW_LABEL_COLUMNS, WHO_COLUMNS

_INT64 = (-(2**63), 2**63 - 1)


@dataclass
class _Row:
    where: str                      # "line 4" / "task 3 (id 17)"
    run_id: str | None
    split: str | None
    example_id: Any
    label: str | None               # the annotator's class name
    given: str | None
    who: str | None
    annotated_at: datetime | None
    note: str | None


def _time(v) -> datetime | None:
    if not v or not isinstance(v, str):
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t


def _str(v) -> str | None:
    if v is None:
        return None
    v = str(v).strip()
    return v or None


def _read_csv(path: Path, data: bytes) -> list[_Row]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    cols = set(reader.fieldnames or [])
    label_col = next((c for c in NEW_LABEL_COLUMNS if c in cols), None)
    if "example_id" not in cols or label_col is None:
        raise DataError(f"{path}: a CSV of corrections needs the columns example_id and corrected_label "
                        f"(found: {', '.join(sorted(cols)) or 'none'})")
    who_col = next((c for c in WHO_COLUMNS if c in cols), None)
    rows = []
    for i, rec in enumerate(reader, start=2):
        def cell(name):
            v = rec.get(name) if name else None
            return _str(csv_unsafe(v)) if isinstance(v, str) else None

        rows.append(_Row(f"line {i}", cell("run_id"), cell("split"), cell("example_id"), cell(label_col),
                         cell("given_label"), cell(who_col), _time(cell("annotated_at")), cell("note")))
    return rows


def _choice(result: list) -> str | None:
    for item in result or []:
        if isinstance(item, dict) and item.get("type") == "choices":
            choices = (item.get("value") or {}).get("choices") or []
            if choices:
                return _str(choices[0])
    return None


def _who(v) -> str | None:
    if isinstance(v, dict):
        return _str(v.get("email")) or (f"label-studio user {v['id']}" if v.get("id") is not None else None)
    if isinstance(v, (int, str)) and str(v).strip():
        return _str(v) if isinstance(v, str) and not str(v).isdigit() else f"label-studio user {v}"
    return None


def _read_label_studio(path: Path, data: bytes) -> list[_Row]:
    try:
        tasks = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a Label Studio JSON export ({exc})") from exc
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise DataError(f"{path}: a Label Studio export is a JSON list of tasks")
    rows = []
    for i, t in enumerate(tasks, start=1):
        where = f"task {i}" + (f" (id {t['id']})" if t.get("id") is not None else "")
        if "data" in t or "annotations" in t:  # the JSON export
            d = t.get("data") or {}
            done = [a for a in (t.get("annotations") or [])
                    if isinstance(a, dict) and not a.get("was_cancelled") and _choice(a.get("result"))]
            done.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), str(a.get("id"))))
            last = done[-1] if done else None
            label = _choice(last.get("result")) if last else None
            who = _who(last.get("completed_by")) if last else None
            when = _time(last.get("updated_at") or last.get("created_at")) if last else None
        else:  # JSON-MIN: the data fields and the choice (under its from_name) on one level
            d = t
            v = t.get(FROM_NAME)
            if isinstance(v, dict):
                v = v.get("choices")
            if isinstance(v, list):
                v = v[0] if v else None
            label = _str(v) if isinstance(v, (str, int)) else None
            who = _who(t.get("annotator"))
            when = _time(t.get("updated_at") or t.get("created_at"))
        rows.append(_Row(where, _str(d.get("run_id")), _str(d.get("split")), d.get("example_id"), label,
                         _str(d.get("given_label")), who, when, _str(d.get("note"))))
    return rows


def _example_id(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if _INT64[0] <= v <= _INT64[1] else None
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        n = int(v.strip())
        return n if _INT64[0] <= n <= _INT64[1] else None
    return None
