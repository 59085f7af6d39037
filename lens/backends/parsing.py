"""Turn what a model (or a file) says into a prompt's dimensions.

Models do not always answer in clean JSON. In order, :func:`parse_answer`:

1. strips ``<think>...</think>`` blocks (reasoning models; an unclosed block is
   dropped up to its ``</think>``);
2. looks for JSON: the whole text, then a fenced ```` ```json ... ``` ```` block, then the
   first ``{...}`` object that decodes, and validates it with :meth:`Prompt.parse`;
3. when there is no JSON at all, tries the numbered three-part form::

       1. DATA ISSUE? Yes, ambiguous image: the cat is tiny and dark. The image is hard to read.
       2. VISUAL CAUSE: dark fur against a dark sofa
       3. FIX: brightness augmentation; more night-time photos

   Part *i* answers the prompt's *i*-th dimension (a leading ``HEADING?``/``HEADING:`` is
   dropped). For a dimension with a tag vocabulary the tag is found by keyword
   (``annotation``/``mislabel`` -> ``annotation_issue``, ``ambiguous``/``unclear`` ->
   ``ambiguous_image``, ``model`` -> ``model_error``, or any tag named literally with
   spaces or underscores); its verdict is the part's first sentence and its reason the
   whole part.

A JSON answer that breaks the schema raises :class:`~lens.prompts.AnswerError` (the
backends then ask once for a repair); so does text that is neither JSON nor a complete
numbered answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lens.prompts import AnswerError, DimensionAnswer, Prompt

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_PART = re.compile(r"^\s*(?:\*\*)?\s*(\d{1,2})\s*[.)]\s*", re.MULTILINE)
_HEADING = re.compile(r"^\s*(?:\*\*)?([A-Z][A-Z _/-]{1,40}[?:])(?:\*\*)?\s*")
_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)", re.DOTALL)

#: keywords that name a tag in free text, checked in this order (first match wins)
TAG_KEYWORDS: dict[str, tuple[str, ...]] = {
    "annotation_issue": ("annotation", "mislabel", "wrong label", "label is wrong", "incorrect label",
                         "labelling error", "labeling error", "label noise", "wrongly labelled", "wrongly labeled"),
    "ambiguous_image": ("ambiguous", "unclear", "hard to read", "hard to tell", "hard to see", "occluded",
                        "too dark", "blurry"),
    "model_error": ("model error", "model problem", "model failure", "model mistake", "model"),
}


class NotJSONError(ValueError):
    """The text holds no decodable JSON value."""


def strip_think(text: str) -> str:
    """Remove ``<think>...</think>`` blocks (and an unclosed one's head up to ``</think>``)."""
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text.lower():
        text = text[text.lower().rindex("</think>") + len("</think>"):]
    if text.lstrip().lower().startswith("<think>"):  # never closed: nothing usable inside
        return ""
    return text.strip()


#: ``{`` positions tried by :func:`extract_json` in loose text (each try may read far ahead)
MAX_OBJECT_STARTS = 200


def extract_json(text: str) -> Any:
    """The JSON value in ``text``: whole, fenced, or the first decodable ``{...}`` object.

    JSON nested too deeply for Python's decoder (``RecursionError``) is no JSON; so is loose
    text whose first :data:`MAX_OBJECT_STARTS` ``{`` start no object.
    """
    stripped = text.strip()
    if not stripped:
        raise NotJSONError("the answer is empty")
    try:
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            pass
        for m in _FENCE.finditer(stripped):
            try:
                return json.loads(m.group(1).strip())
            except json.JSONDecodeError:
                continue
        decoder = json.JSONDecoder()
        pos = stripped.find("{")
        for _ in range(MAX_OBJECT_STARTS):
            if pos == -1:
                break
            try:
                value, _ = decoder.raw_decode(stripped, pos)
                return value
            except json.JSONDecodeError:
                pos = stripped.find("{", pos + 1)
    except RecursionError:
        raise NotJSONError("the answer's JSON is nested too deeply to read") from None
    raise NotJSONError("the answer is not JSON")


def find_tag(text: str, tags: tuple[str, ...]) -> str | None:
    """The tag of ``tags`` that ``text`` names, by literal name first, then by keyword."""
    low = text.lower()
    for tag in tags:
        if tag.lower() in low or tag.lower().replace("_", " ") in low:
            return tag
    for tag, words in TAG_KEYWORDS.items():
        if tag in tags and any(w in low for w in words):
            return tag
    for tag in tags:  # a user's vocabulary: any word of the tag (longer than 3 letters)
        if any(len(w) > 3 and re.search(rf"\b{re.escape(w)}", low) for w in tag.lower().split("_")):
            return tag
    return None


def split_numbered(text: str) -> list[str]:
    """The parts of a ``1. ... 2. ... 3. ...`` answer, in order (numbers must run 1, 2, 3...)."""
    marks = list(_PART.finditer(text))
    parts: list[str] = []
    expected = 1
    starts: list[tuple[int, int]] = []
    for m in marks:
        if int(m.group(1)) == expected:
            starts.append((m.start(), m.end()))
            expected += 1
    for i, (_, body_start) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        parts.append(text[body_start:end].strip())
    return parts


def _first_sentence(text: str) -> str:
    m = _SENTENCE.match(text.strip())
    return (m.group(1) if m else text).strip()


def parse_three_part(text: str, prompt: Prompt) -> dict[str, DimensionAnswer]:
    """Map a numbered answer's parts onto the prompt's dimensions in order.

    Raises AnswerError when there are fewer parts than dimensions, a part is empty, or a
    tagged dimension's part names none of its tags.
    """
    parts = split_numbered(strip_think(text))
    dims = prompt.dimensions
    if len(parts) < len(dims):
        raise AnswerError(f"expected a numbered answer with {len(dims)} parts, found {len(parts)}")
    out: dict[str, DimensionAnswer] = {}
    for d, part in zip(dims, parts):
        body = _HEADING.sub("", part, count=1).strip().replace("**", "")
        body = re.sub(r"\s+", " ", body)
        if not body:
            raise AnswerError(f"part for {d.name!r} is empty")
        tag = None
        if d.tags:
            tag = find_tag(body, d.tags)
            if tag is None:
                raise AnswerError(f"part for {d.name!r} names none of the tags {list(d.tags)}")
        summary = None
        if d.summary:
            # the verdict: the first sentence that says more than a yes/no and the tag
            plain = re.sub(r"^(?:yes|no)\b[\s,.:;-]*", "", body, flags=re.IGNORECASE) or body
            sentences = [s.strip() for s in re.findall(r"[^.!?]+[.!?]?", plain) if s.strip()]
            summary = next((s for s in sentences if len(s.split()) >= 4), _first_sentence(plain))
            summary = summary[:1].upper() + summary[1:]
        if not d.structured:
            out[d.name] = DimensionAnswer(text=body)
        else:
            out[d.name] = DimensionAnswer(text=body, tag=tag, summary=summary)
    return out


def parse_answer(text: str | None, prompt: Prompt) -> tuple[dict[str, DimensionAnswer], str | None]:
    """Parse a model's reply into ({dimension: answer}, description); AnswerError if unusable."""
    if text is None:
        raise AnswerError("the answer is empty")
    cleaned = strip_think(text)
    try:
        obj = extract_json(cleaned)
    except NotJSONError as exc:
        if prompt.describe_first:
            raise AnswerError(f"{exc} (expected a JSON object with a description)") from None
        try:
            return parse_three_part(cleaned, prompt), None
        except AnswerError as exc2:
            raise AnswerError(f"{exc}, nor a numbered answer ({exc2})") from None
    return prompt.parse(obj)


__all__ = [
    "NotJSONError",
    "extract_json",
    "find_tag",
    "parse_answer",
    "parse_three_part",
    "split_numbered",
    "strip_think",
]
