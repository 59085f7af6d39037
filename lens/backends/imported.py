"""The ``import`` backend: hypotheses produced elsewhere, read from a JSON Lines file.

``lens hypothesize --backend import --from FILE.jsonl``. One JSON object per line, keyed
by the dataset index of the failure (``failures.example_id``)::

    {"example_id": 17, "answer": {"data_quality": {"tag": "ambiguous_image",
                                                   "reason": "tiny, dark object",
                                                   "verdict": "The object is too small and dark to read."},
                                  "visual_cause": "dark fur on a dark background",
                                  "fix": "brightness and scale augmentation"}}
    {"example_id": 23, "text": "1. DATA ISSUE? Yes, annotation issue: this is a truck. The label looks wrong.
                               2. VISUAL CAUSE: boxy shape 3. FIX: relabel"}
    {"example_id": 40, "model": "gpt-4o", "answer": {...}}

* ``answer``: the structured answer, validated like a model's JSON against the prompt's
  schema (``--prompt``; for a ``describe_first`` prompt it also holds ``"description"``);
* ``text``: raw text, parsed like a model's reply (JSON if it holds any, else the
  numbered three-part form mapped onto the prompt's dimensions in order, see
  :mod:`lens.backends.parsing`);
* ``model`` (optional): who produced it. Without ``--model`` every line must name the
  same model (or none: then ``import``); with ``--model`` only the lines of that model
  (and lines naming none) are imported.

An answer that does not validate is stored with status ``invalid`` and the reason (there
is no repair to ask for); so is one over :data:`~lens.backends.base.MAX_ANSWER_CHARS`
characters (the limit of every backend; only its first ``KEPT_CHARS`` are kept). Text that
cannot be stored (a lone surrogate, ``"\\ud800"``) is repaired when stored and the repair
recorded (:func:`lens.backends.base.stored_answer`). Blank lines and lines starting with
``#`` are ignored. The file must be UTF-8 (a byte-order mark is allowed). A line that is not
UTF-8, not a JSON object (or nested too deeply to read), has no ``example_id`` that fits a
64-bit integer, a ``model`` that is not a string, or is a second line for the same example,
stops the import before anything is written, naming the file and line; so does a file with
no answers at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lens.backends.base import (
    BackendOptions,
    HypothesisAnswer,
    HypothesisRequest,
    Hypothesizer,
    clean_text,
    option,
    oversized,
)
from lens.backends.parsing import parse_answer
from lens.errors import DataError, LensError
from lens.prompts import AnswerError, Prompt

DEFAULT_MODEL = "import"


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_MODEL_CHARS = 200
_JSON_TYPES = {dict: "an object", list: "an array", int: "a number", float: "a number", bool: "a boolean"}
_BOM = b"\xef\xbb\xbf"


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every record of the file; DataError naming the first bad line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (--from)")
    records = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path} line {lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            records.append((lineno, _record(path, lineno, s)))
    if not records:
        raise DataError(f"{path}: no answers (every line is blank or a # comment)")
    return records


def _record(path: Path, lineno: int, s: str) -> dict[str, Any]:
    where = f"{path} line {lineno}"
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc.msg})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object")
    eid = obj.get("example_id")
    if isinstance(eid, bool) or not isinstance(eid, int):
        raise DataError(f"{where}: 'example_id' must be an integer (the failure's dataset index)")
    if not INT64_MIN <= eid <= INT64_MAX:
        raise DataError(f"{where}: 'example_id' {_short(eid)} does not fit a 64-bit integer (no failure has it)")
    if ("answer" in obj) == ("text" in obj):
        raise DataError(f"{where}: give exactly one of 'answer' (structured) or 'text' (raw)")
    if "text" in obj and not isinstance(obj["text"], str):
        raise DataError(f"{where}: 'text' must be a string")
    model = obj.get("model")
    if model is not None:
        problem = None
        if not isinstance(model, str):
            problem = f"got {_JSON_TYPES.get(type(model), type(model).__name__)}"
        elif not model.strip():
            problem = "got an empty string"
        elif len(model) > MAX_MODEL_CHARS:
            problem = f"got {len(model):,} characters (at most {MAX_MODEL_CHARS})"
        elif clean_text(model)[1]:
            problem = "it holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is no text"
        if problem:
            raise DataError(f"{where}: 'model' must be a short string naming who produced the answer; {problem}")
    return obj


def _short(n: int) -> str:
    text = str(n)
    return text if len(text) <= 30 else f"{text[:12]}…({len(text)} digits)"


@dataclass(frozen=True)
class ImportOptions(BackendOptions):
    from_path: str | None = option("--from", "JSONL file of answers for --backend import.", is_file=True)


class ImportBackend(Hypothesizer):
    """Answers read from a JSONL file (format in the module docstring)."""

    name = "import"
    Options = ImportOptions
    needs_image = False

    def __init__(self, options: ImportOptions | None = None, *, model: str | None = None, **tuning: Any):
        path = options.from_path if options is not None else None
        if path is None:
            raise LensError("--backend import needs --from FILE.jsonl")
        self.path = Path(path)
        records = read_jsonl(self.path)
        models = {r.get("model") for _, r in records if r.get("model")}
        if model:
            records = [(n, r) for n, r in records if r.get("model") in (None, model)]
        elif len(models) > 1:
            raise DataError(
                f"{self.path}: lines name several models ({', '.join(sorted(models))}); "
                "import one at a time with --model NAME"
            )
        else:
            model = next(iter(models), None) or DEFAULT_MODEL
        super().__init__(options, model=model, **tuning)
        self.records: dict[int, tuple[int, dict[str, Any]]] = {}
        for lineno, rec in records:
            eid = rec["example_id"]
            if eid in self.records:
                raise DataError(
                    f"{self.path} lines {self.records[eid][0]} and {lineno}: two answers for example {eid}"
                )
            self.records[eid] = (lineno, rec)

    @classmethod
    def default_model(cls) -> str:
        return DEFAULT_MODEL

    def example_ids(self) -> set[int]:
        """The failures this file answers (the stage asks only for these)."""
        return set(self.records)

    def answer(self, request: HypothesisRequest, prompt: Prompt) -> HypothesisAnswer:
        found = self.records.get(request.example_id)
        if found is None:
            return HypothesisAnswer(status="error", error=f"{self.path} has no line for example {request.example_id}")
        lineno, rec = found
        where = f"{self.path.name} line {lineno}"
        if "text" in rec:
            raw = rec["text"]
            big = oversized(raw, what=f"imported answer ({where})")
            if big is not None:
                return big
            try:
                dims, description = parse_answer(raw, prompt)
            except AnswerError as exc:
                return HypothesisAnswer(status="invalid", raw_response=raw, error=f"{where}: {exc}")
        else:
            raw = json.dumps(rec["answer"], ensure_ascii=False)
            big = oversized(raw, what=f"imported answer ({where})")
            if big is not None:
                return big
            try:
                dims, description = prompt.parse(rec["answer"])
            except AnswerError as exc:
                return HypothesisAnswer(status="invalid", raw_response=raw, error=f"{where}: {exc}")
        return HypothesisAnswer(status="ok", dimensions=dims, description=description, raw_response=raw)
