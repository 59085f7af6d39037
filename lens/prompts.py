"""Prompt files: the questions a hypothesis backend answers, and the JSON they answer in.

A prompt is a TOML file in ``prompts/`` (or any path). Its dimensions are data: a user
can write a domain prompt with other questions and storage, embedding, clustering and
the dashboard follow. Format::

    name = "reference"
    describe_first = false          # true: ask for a literal description before the answers
    system = "You are ..."          # optional system message
    template = '''...{true_class}...{dimension_questions}...'''

    [[dimensions]]
    name = "data_quality"           # [a-z_]+, unique
    question = "Is this a data problem or a model problem? ..."
    tags = ["ambiguous_image", "model_error", "annotation_issue"]   # optional vocabulary
    summary = true                  # optional: also ask for a one-sentence verdict

Template fields: ``true_class``, ``pred_class``, ``true_prob``, ``confidence``, ``top3``
(a formatted list), ``evidence`` (measured facts, empty when none) and
``dimension_questions`` (the numbered questions). The sha256 of the file's bytes is
stored with every answer.

The answer JSON is an object with one key per dimension; a dimension with tags or a
summary answers an object ``{"tag": ..., "reason": ..., "verdict": ...}``, any other a
string. :meth:`Prompt.json_schema` generates the schema and :meth:`Prompt.parse`
validates an answer into :class:`DimensionAnswer` objects.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lens.errors import LensError
from lens.resources import data_dir

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
TEMPLATE_FIELDS = {"true_class", "pred_class", "true_prob", "confidence", "top3", "evidence", "dimension_questions"}


class AnswerError(ValueError):
    """An answer that does not match the prompt's schema (the message says where)."""


@dataclass(frozen=True)
class Dimension:
    name: str
    question: str
    tags: tuple[str, ...] = ()
    summary: bool = False

    @property
    def structured(self) -> bool:
        """Whether the answer is an object (tag / reason / verdict) rather than a string."""
        return bool(self.tags) or self.summary


@dataclass(frozen=True)
class DimensionAnswer:
    """One dimension of an answer: ``text`` always, ``tag`` and ``summary`` when asked for."""

    text: str
    tag: str | None = None
    summary: str | None = None

    @property
    def embed_text(self) -> str:
        """The text that gets embedded and clustered: the one-sentence verdict when there is one."""
        return self.summary or self.text


@dataclass(frozen=True)
class Prompt:
    name: str
    path: Path
    sha256: str
    template: str
    dimensions: tuple[Dimension, ...]
    system: str = ""
    describe_first: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    # -- schema ------------------------------------------------------------------------

    def json_schema(self) -> dict[str, Any]:
        """JSON schema of a full answer (used for structured output and validation)."""
        props: dict[str, Any] = {}
        required: list[str] = []
        if self.describe_first:
            props["description"] = {
                "type": "string",
                "description": "Literal description: foreground, background, where the object is, what is cut off, "
                "and what you are unsure of.",
            }
            required.append("description")
        for d in self.dimensions:
            if d.structured:
                sub_props: dict[str, Any] = {}
                sub_req: list[str] = []
                if d.tags:
                    sub_props["tag"] = {"type": "string", "enum": list(d.tags)}
                    sub_req.append("tag")
                sub_props["reason"] = {"type": "string"}
                sub_req.append("reason")
                if d.summary:
                    sub_props["verdict"] = {"type": "string", "description": "one sentence"}
                    sub_req.append("verdict")
                props[d.name] = {
                    "type": "object",
                    "properties": sub_props,
                    "required": sub_req,
                    "additionalProperties": False,
                }
            else:
                props[d.name] = {"type": "string"}
            required.append(d.name)
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    def parse(self, obj: Any) -> tuple[dict[str, DimensionAnswer], str | None]:
        """Validate a decoded JSON answer; return ({dimension: answer}, description).

        Raises :class:`AnswerError` naming the first problem. Extra keys are ignored.
        """
        if not isinstance(obj, dict):
            raise AnswerError(f"expected a JSON object, got {type(obj).__name__}")
        description = None
        if self.describe_first:
            description = obj.get("description")
            if not isinstance(description, str) or not description.strip():
                raise AnswerError("'description' is missing or empty")
        out: dict[str, DimensionAnswer] = {}
        for d in self.dimensions:
            if d.name not in obj:
                raise AnswerError(f"dimension {d.name!r} is missing")
            value = obj[d.name]
            if not d.structured:
                if isinstance(value, dict):  # lenient: a model that nests a plain answer
                    value = value.get("reason") or value.get("text") or value.get("answer")
                if not isinstance(value, str) or not value.strip():
                    raise AnswerError(f"{d.name!r} must be a non-empty string")
                out[d.name] = DimensionAnswer(text=value.strip())
                continue
            if not isinstance(value, dict):
                raise AnswerError(f"{d.name!r} must be an object with {'tag, ' if d.tags else ''}reason"
                                  f"{', verdict' if d.summary else ''}")
            tag = value.get("tag")
            if d.tags:
                if not isinstance(tag, str) or tag.strip() not in d.tags:
                    raise AnswerError(f"{d.name}.tag must be one of {list(d.tags)}, got {tag!r}")
                tag = tag.strip()
            reason = value.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise AnswerError(f"{d.name}.reason must be a non-empty string")
            summary = value.get("verdict")
            if d.summary and (not isinstance(summary, str) or not summary.strip()):
                raise AnswerError(f"{d.name}.verdict must be a non-empty sentence")
            out[d.name] = DimensionAnswer(
                text=reason.strip(), tag=tag if d.tags else None, summary=summary.strip() if d.summary else None
            )
        return out, description

    # -- rendering ---------------------------------------------------------------------

    def dimension_questions(self) -> str:
        lines = []
        for i, d in enumerate(self.dimensions, 1):
            line = f"{i}. {d.name}: {d.question}"
            if d.tags:
                line += f" Tag it as one of: {', '.join(d.tags)}; give a short reason"
                line += " and a one-sentence verdict." if d.summary else "."
            elif d.summary:
                line += " Give a short reason and a one-sentence verdict."
            lines.append(line)
        return "\n".join(lines)

    def render(
        self,
        *,
        true_class: str,
        pred_class: str,
        true_prob: float | None,
        confidence: float,
        top3: list[tuple[str, float]],
        evidence: str = "",
    ) -> str:
        """The user message for one failure."""
        top3_text = ", ".join(f"{name} {p:.2f}" for name, p in top3)
        return self.template.format(
            true_class=true_class,
            pred_class=pred_class,
            true_prob="unknown" if true_prob is None else f"{true_prob:.2f}",
            confidence=f"{confidence:.2f}",
            top3=top3_text,
            evidence=evidence,
            dimension_questions=self.dimension_questions(),
        ).strip()


def available() -> list[str]:
    """Names of the prompts shipped with Lens."""
    return sorted(p.stem for p in data_dir("prompts").glob("*.toml"))


def load(name_or_path: str | Path) -> Prompt:
    """Load a prompt by shipped name (``reference``, ``grounded``) or by file path."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".toml" and path.exists()):
        path = data_dir("prompts") / f"{text}.toml"
        if not path.exists():
            raise LensError(f"No prompt {text!r}: give a .toml path or one of {', '.join(available())}")
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LensError(f"{path}: not a valid TOML prompt file ({exc})") from exc
    dims = []
    for i, d in enumerate(doc.get("dimensions", [])):
        name = d.get("name", "")
        if not _NAME.match(name) or name in ("description", "overall"):
            raise LensError(f"{path}: dimension {i + 1} has a bad name {name!r} (lowercase letters, digits, _)")
        if not d.get("question"):
            raise LensError(f"{path}: dimension {name!r} has no question")
        dims.append(Dimension(name, d["question"].strip(), tuple(d.get("tags", ())), bool(d.get("summary", False))))
    if not dims:
        raise LensError(f"{path}: a prompt needs at least one [[dimensions]] entry")
    if len({d.name for d in dims}) != len(dims):
        raise LensError(f"{path}: dimension names must be unique")
    template = doc.get("template")
    if not template:
        raise LensError(f"{path}: 'template' is missing")
    used = set(re.findall(r"{([a-z_0-9]+)[^}]*}", template))
    unknown = used - TEMPLATE_FIELDS
    if unknown:
        raise LensError(f"{path}: unknown template fields {sorted(unknown)} (allowed: {sorted(TEMPLATE_FIELDS)})")
    return Prompt(
        name=doc.get("name", path.stem),
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        template=template,
        dimensions=tuple(dims),
        system=doc.get("system", "").strip(),
        describe_first=bool(doc.get("describe_first", False)),
        extra={k: v for k, v in doc.items() if k not in {"name", "template", "dimensions", "system", "describe_first"}},
    )
