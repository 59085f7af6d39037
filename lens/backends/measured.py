"""The ``measured`` backend: answers from the evidence alone, citing its numbers.

No model server and no image: every sentence restates a measurement of ``lens evidence``
(model signals, label quality, nearest training images, image facts and their z-scores
against class training images, colour typicality, saliency). It never describes what
was not measured and never says how a person would see the image.

Dimensions
----------
It answers ``data_quality`` (tag + reason + one-sentence verdict), ``visual_cause`` and
``fix``. In a prompt with other dimensions, those get the text "Not measured: ..." (and
no tag), so the answer is honest about what it covers; a prompt with none of the three
is answered with status ``invalid`` and an error saying so. A prompt that asks for a
description (``describe_first``) gets a "Measured, not seen: ..." line of image facts.

Tags follow the diagnosis scores of the evidence (:mod:`lens.diagnosis`, their thresholds
and RULES_VERSION): ``annotation_issue`` when ``label_error_score`` reaches
LABEL_ERROR_THRESHOLD; else ``ambiguous_image`` when ``ambiguity_score`` reaches
AMBIGUITY_THRESHOLD; else ``model_error``. Every data_quality reason states both scores, the
signals behind them and which were missing; the verdicts say "may" and "possibly", never more
than the scores carry. Image facts (dark, low contrast, blurred, similar colours) and a torn
model are reported as measurements, and decide the visual cause below, not the tag.

The cause chosen for ``visual_cause`` and its ``fix`` (first that holds):

=========================  ==========================================================
measured cause             fix
=========================  ==========================================================
annotation_issue           relabel; audit the training split for the same pair
dark / low contrast        brightness / contrast jitter
blurred or upscaled        blur and rescaling augmentation (random resized crop)
similar colours / colour   colour jitter; backgrounds from other classes
background typical of      colour jitter; backgrounds from other classes
the predicted class
saliency outside centre    random erasing; random crops
edges reach the frame      random resized crop (partial views)
torn between the pair      more examples of the pair; mixup between them
none of these              hard-example mining for the true class
=========================  ==========================================================
"""

from __future__ import annotations

import json

from lens.backends.base import HypothesisAnswer, HypothesisRequest, Hypothesizer
from lens.prompts import DimensionAnswer, Prompt

KNOWN_DIMENSIONS = ("data_quality", "visual_cause", "fix")
#: bump when the wording or the thresholds in lens.measure change what the analyst answers
RULES_VERSION = "3"
NOT_MEASURED = "Not measured: the measured backend answers only data_quality, visual_cause and fix from the evidence."


class MeasuredBackend(Hypothesizer):
    """Writes every answer from ``request.evidence`` (run ``lens evidence`` first)."""

    name = "measured"
    needs_image = False
    needs_evidence = True
    auto_rank = 100  # `--backend auto`: when no model server is usable

    @classmethod
    def probe(cls, options, model: str | None) -> tuple[bool, str]:
        return True, "using the measured analyst instead"

    @classmethod
    def default_model(cls) -> str:
        # the "model" is the rule set: a new version of the rules is a new model, so a rerun of
        # `lens hypothesize` answers again instead of keeping answers made by older rules
        return f"measured-{RULES_VERSION}"

    def answer(self, request: HypothesisRequest, prompt: Prompt) -> HypothesisAnswer:
        if not request.evidence:
            return HypothesisAnswer(status="invalid",
                                    error="no evidence for this failure: run `lens evidence` for the run first")
        if not any(d.name in KNOWN_DIMENSIONS for d in prompt.dimensions):
            return HypothesisAnswer(
                status="invalid",
                error=(f"prompt {prompt.name!r} asks for {', '.join(prompt.dimension_names)}; the measured backend "
                       f"answers only {', '.join(KNOWN_DIMENSIONS)}"),
            )
        from lens.backends.measured_rules import Analysis

        a = Analysis(request)
        reason, verdict = a.data_quality()
        key, cause = a.cause()
        fix = a.fix(key)
        dims: dict[str, DimensionAnswer] = {}
        for d in prompt.dimensions:
            if d.name == "data_quality" and (not d.tags or a.tag in d.tags):
                dims[d.name] = DimensionAnswer(text=reason, tag=a.tag if d.tags else None,
                                               summary=verdict if d.summary else None)
            elif d.name == "visual_cause":
                dims[d.name] = DimensionAnswer(text=cause, summary=cause.split(". ")[0].rstrip(".") + "." if d.summary else None)
            elif d.name == "fix":
                dims[d.name] = DimensionAnswer(text=fix, summary=fix if d.summary else None)
            else:
                dims[d.name] = DimensionAnswer(text=NOT_MEASURED, summary="Not measured." if d.summary else None)
        description = a.description() if prompt.describe_first else None
        raw = {name: {"tag": v.tag, "text": v.text, "summary": v.summary} for name, v in dims.items()}
        if description:
            raw["description"] = description
        return HypothesisAnswer(status="ok", dimensions=dims, description=description,
                                raw_response=json.dumps(raw), latency_s=0.0)
