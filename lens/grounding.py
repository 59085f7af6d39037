"""Grounding: checkable claims in a hypothesis, compared with the measured evidence.

INTERFACE (implemented by the evidence work, issue 5):

``check_answer(dimensions, description, evidence, class_names) -> list[Claim]``
    Extract claims (background/foreground colour, dark/bright, low contrast, blurry,
    cropped/partial, "looks like a <class>") from every dimension's text (and the
    description), compare each with the evidence dict (a row of the ``evidence`` table),
    and return them with verdict 'consistent' | 'contradicted' | 'unverifiable'.

``format_facts(evidence, class_names) -> str``
    The measured facts as plain lines for prompts that include ``{evidence}``.
"""

from __future__ import annotations

from dataclasses import dataclass

VERDICTS = ("consistent", "contradicted", "unverifiable")


@dataclass(frozen=True)
class Claim:
    dimension: str  # a prompt dimension, or 'description'
    claim_index: int
    kind: str
    claim: str
    verdict: str
    fact: str | None = None
