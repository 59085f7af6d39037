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
is no repair to ask for). Blank lines and lines starting with ``#`` are ignored; a line
that is not a JSON object, or has no integer ``example_id``, or a second line for the
same example, stops the import before anything is written, naming the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lens.backends.base import HypothesisAnswer, HypothesisRequest, Hypothesizer, register
from lens.backends.parsing import parse_answer
from lens.errors import DataError, LensError
from lens.prompts import AnswerError, Prompt

DEFAULT_MODEL = "import"


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every record of the file; DataError naming bad lines."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (--from)")
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {lineno}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path} line {lineno}: expected a JSON object")
            eid = obj.get("example_id")
            if isinstance(eid, bool) or not isinstance(eid, int):
                raise DataError(f"{path} line {lineno}: 'example_id' must be an integer (the failure's dataset index)")
            if ("answer" in obj) == ("text" in obj):
                raise DataError(f"{path} line {lineno}: give exactly one of 'answer' (structured) or 'text' (raw)")
            if "text" in obj and not isinstance(obj["text"], str):
                raise DataError(f"{path} line {lineno}: 'text' must be a string")
            records.append((lineno, obj))
    return records


@register
class ImportBackend(Hypothesizer):
    """Answers read from a JSONL file (format in the module docstring)."""

    name = "import"
    needs_image = False

    def __init__(self, *, path: str | Path | None = None, model: str | None = None, **options: Any):
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
        super().__init__(model=model, **options)
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
            try:
                dims, description = parse_answer(raw, prompt)
            except AnswerError as exc:
                return HypothesisAnswer(status="invalid", raw_response=raw, error=f"{where}: {exc}")
        else:
            raw = json.dumps(rec["answer"], ensure_ascii=False)
            try:
                dims, description = prompt.parse(rec["answer"])
            except AnswerError as exc:
                return HypothesisAnswer(status="invalid", raw_response=raw, error=f"{where}: {exc}")
        return HypothesisAnswer(status="ok", dimensions=dims, description=description, raw_response=raw)
