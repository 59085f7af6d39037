"""The `measured` backend: tag rules, sentences that cite numbers, honesty about gaps."""

from __future__ import annotations

import re

import numpy as np

from lens import measure
from lens.backends import base
from lens.backends.base import HypothesisRequest
from lens.grounding import check_answer
from lens.prompts import load as load_prompt

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
AUTOMOBILE, FROG = 1, 6


def _evidence(**over) -> dict:
    """A failure: automobile predicted as frog, with ordinary measurements."""
    ev = dict(
        example_id=7, label=AUTOMOBILE, pred=FROG, confidence=0.68, true_prob=0.12, margin=0.56, entropy=1.0,
        true_rank=2, label_quality=0.12, label_issue=False,
        neighbour_ids=list(range(10)), neighbour_labels=[FROG] * 7 + [AUTOMOBILE] * 2 + [3],
        neighbour_true_share=0.2, neighbour_pred_share=0.7,
        brightness=0.45, contrast=0.2, saturation=0.3, sharpness=0.9, fg_bg_distance=25.0, edge_share=0.33,
        border_colour="green", centre_colour="brown",
        border_colours={"green": 0.7, "brown": 0.2}, centre_colours={"brown": 0.6, "green": 0.2},
        z_true={"brightness": 0.3, "contrast": -0.2, "saturation": 0.5, "sharpness": 0.1, "fg_bg_distance": 0.4,
                "edge_share": 0.2},
        z_pred={"brightness": 0.1},
        colour_share_true={"border": 0.05, "centre": 0.1}, colour_share_pred={"border": 0.34, "centre": 0.3},
        saliency_method="gradcam-layer1", saliency_centre_share=0.32, skipped=None,
    )
    ev.update(over)
    return ev


def _answer(ev: dict, prompt="reference"):
    req = HypothesisRequest(
        key="k", run_id="r", example_id=ev["example_id"], true_class=NAMES[ev["label"]],
        pred_class=NAMES[ev["pred"]], true_prob=ev["true_prob"], confidence=ev["confidence"],
        top3=[], class_names=NAMES, evidence=ev,
    )
    backend = base.create("measured")
    p = load_prompt(prompt) if isinstance(prompt, str) else prompt
    return backend.answer(req, p)


def test_registered_without_image_with_evidence():
    cls = base.get("measured")
    assert cls.needs_image is False and cls.needs_evidence is True
    assert "measured" in base.backend_names()


def _scored(ev: dict) -> dict:
    """The evidence with its diagnosis scores computed by lens.diagnosis from its own signals."""
    from lens import diagnosis

    probs = np.full((1, len(NAMES)), np.nan)
    probs[0] = (1 - ev["confidence"] - ev["true_prob"]) / (len(NAMES) - 2)
    probs[0, ev["label"]], probs[0, ev["pred"]] = ev["true_prob"], ev["confidence"]
    nl = None if ev.get("neighbour_labels") is None else np.array([ev["neighbour_labels"]])
    labels, pred = np.array([ev["label"]]), np.array([ev["pred"]])
    le, le_model = diagnosis.label_error_score(diagnosis.label_error_signals(labels=labels, probs=probs,
                                                                             neighbour_labels=nl))
    ce, pair = np.full(len(NAMES), 0.3), np.full((len(NAMES), len(NAMES)), 0.02)
    am, _ = diagnosis.ambiguity_score(diagnosis.ambiguity_signals(
        labels=labels, pred=pred, class_error=ce, pair=pair, probs=probs, brightness=np.array([ev["brightness"]]),
        edge_share=np.array([ev["edge_share"]])))
    missing = [] if le_model[0] == "probs+neighbours" else ["neighbour_given_share"]
    return {**ev, "label_error_score": float(le[0]), "ambiguity_score": float(am[0]),
            "diagnosis": {"label_error": {"model": le_model[0], "missing": missing}}}


def test_annotation_issue_follows_the_label_error_score():
    from lens import diagnosis

    wrong = _scored(_evidence(label_issue=True, label_quality=0.0005, neighbour_labels=[FROG] * 9 + [3],
                              neighbour_pred_share=0.9, neighbour_true_share=0.0, confidence=0.99,
                              true_prob=0.0005))
    assert wrong["label_error_score"] >= diagnosis.LABEL_ERROR_THRESHOLD
    ans = _answer(wrong)
    dq = ans.dimensions["data_quality"]
    assert ans.status == "ok" and dq.tag == "annotation_issue"
    assert f"label-error score {wrong['label_error_score']:.2f}" in dq.text
    assert "automobile 0.001 and frog 0.99" in dq.text and "9 of the 10 nearest training images" in dq.text
    assert dq.summary.startswith("The label may be wrong")  # a score, not a certainty
    assert "Relabel" in ans.dimensions["fix"].text and "audit the training split" in ans.dimensions["fix"].text
    # a supported label scores low and is no annotation issue
    for change in (dict(true_prob=0.2, confidence=0.7), dict(true_prob=0.02, confidence=0.9)):
        ev = _scored({**wrong, **change})
        assert ev["label_error_score"] < wrong["label_error_score"]
        assert _answer(ev).dimensions["data_quality"].tag != "annotation_issue", change
    # without neighbours the probs-only model is used, and the reason says what was missing
    bare = _scored({**wrong, "neighbour_labels": None, "neighbour_pred_share": None, "neighbour_true_share": None})
    text = _answer(bare).dimensions["data_quality"].text
    assert "Not used (missing for this run): neighbour given share" in text


def test_ambiguous_when_the_score_says_so_worded_as_measured():
    from lens import diagnosis

    ev = {**_evidence(confidence=0.41, true_prob=0.38), "label_error_score": 0.01,
          "ambiguity_score": diagnosis.AMBIGUITY_THRESHOLD + 0.05}
    ans = _answer(ev)
    dq = ans.dimensions["data_quality"]
    assert dq.tag == "ambiguous_image"
    assert "split between frog 0.41 and automobile 0.38" in dq.text
    assert f"ambiguity score {ev['ambiguity_score']:.2f}" in dq.text
    assert dq.summary.startswith("Possibly ambiguous")
    assert "automobile" not in dq.summary and "frog" not in dq.summary  # verdict without class names
    low = {**ev, "ambiguity_score": diagnosis.AMBIGUITY_THRESHOLD - 0.05}
    assert _answer(low).dimensions["data_quality"].tag == "model_error"


def test_hard_image_decides_the_cause_and_fix():
    ev = _evidence(brightness=0.12, contrast=0.05, z_true={"brightness": -2.6, "contrast": -2.2})
    ans = _answer({**ev, "label_error_score": 0.01, "ambiguity_score": 0.9})
    assert ans.dimensions["data_quality"].tag == "ambiguous_image"
    cause = ans.dimensions["visual_cause"].text
    assert "dark: brightness 0.12 (z=-2.6)" in cause and "low contrast: contrast 0.050 (z=-2.2)" in cause
    assert "ColorJitter(brightness" in ans.dimensions["fix"].text


def test_model_error_cites_the_issue_example_numbers():
    ans = _answer({**_evidence(), "label_error_score": 0.01, "ambiguity_score": 0.2})
    dq, fix = ans.dimensions["data_quality"], ans.dimensions["fix"]
    cause = ans.dimensions["visual_cause"].text
    assert dq.tag == "model_error"
    # the example of the issue: neighbours, typical background, saliency outside the centre
    assert "7 of the 10 nearest training images in the model's feature space are labelled frog" in cause
    assert "background (border) is mostly green (70% of its pixels)" in cause
    assert "34% of frog training images and 5% of automobile" in cause
    assert "68% of the saliency for frog lies outside the centre" in cause
    assert cause.index("background") < cause.index("saliency")  # the background is the lead cause here
    assert "green backgrounds" in fix.text and "Colour jitter" in fix.text
    assert "No measured image fact is unusual for automobile" in dq.text
    assert "label-error score 0.01" in dq.text and "ambiguity score 0.20" in dq.text
    # without scores (evidence from before them) it says so and falls back to model_error
    unscored = _answer(_evidence()).dimensions["data_quality"]
    assert unscored.tag == "model_error" and "rerun `lens evidence`" in unscored.text


def test_never_speaks_for_humans_or_unmeasured_parts():
    rng = np.random.default_rng(0)
    banned = re.compile(r"\b(human|people|person|annotator would|struggle|occlu|texture|pose)\w*", re.I)
    for _ in range(60):
        ev = _evidence(
            confidence=float(rng.uniform(0.3, 1.0)), true_prob=float(rng.uniform(0, 0.3)),
            brightness=float(rng.uniform(0.05, 0.9)), contrast=float(rng.uniform(0.02, 0.3)),
            fg_bg_distance=float(rng.uniform(2, 40)), saliency_centre_share=float(rng.uniform(0, 1)),
            label_issue=bool(rng.random() < 0.3), label_quality=float(rng.uniform(0, 1)),
            z_true={f: float(rng.normal(0, 2)) for f in measure.NUMERIC_FACTS},
        )
        ans = _answer(_scored(ev))
        text = " ".join(x for d in ans.dimensions.values() for x in (d.text, d.summary) if x)
        assert not banned.search(text), text
        claims = check_answer(ans.dimensions, ans.description, ev, NAMES)
        assert not [c for c in claims if c.verdict == "contradicted"], claims
    # without neighbours or saliency, it does not mention them
    bare = _evidence(neighbour_labels=None, neighbour_pred_share=None, neighbour_true_share=None,
                     saliency_centre_share=None, z_true=None,
                     skipped={"neighbours": "no features", "z_scores": "no dataset"})
    text = " ".join(d.text for d in _answer(bare).dimensions.values())
    assert "nearest" not in text and "saliency" not in text
    assert "not compared with training images (no dataset)" in text


def test_other_prompts(tmp_path):
    extra = tmp_path / "extra.toml"
    extra.write_text(
        'name = "extra"\ndescribe_first = true\ntemplate = "{true_class} {dimension_questions}"\n'
        '[[dimensions]]\nname = "visual_cause"\nquestion = "why?"\n'
        '[[dimensions]]\nname = "lighting"\nquestion = "How is the light?"\nsummary = true\n'
    )
    ans = _answer(_evidence(), load_prompt(str(extra)))
    assert ans.status == "ok"
    assert ans.dimensions["lighting"].text.startswith("Not measured")
    assert ans.description.startswith("Measured, not seen:") and "border mostly green" in ans.description
    only = tmp_path / "only.toml"
    only.write_text('name = "only"\ntemplate = "{dimension_questions}"\n[[dimensions]]\nname = "lighting"\n'
                    'question = "How is the light?"\n')
    ans = _answer(_evidence(), load_prompt(str(only)))
    assert ans.status == "invalid" and "answers only data_quality" in ans.error


def test_missing_evidence_is_invalid():
    req = HypothesisRequest(key="k", run_id="r", example_id=1, true_class="cat", pred_class="dog", true_prob=0.1,
                            confidence=0.8, top3=[], class_names=NAMES, evidence=None)
    ans = base.create("measured").answer(req, load_prompt("reference"))
    assert ans.status == "invalid" and "lens evidence" in ans.error
