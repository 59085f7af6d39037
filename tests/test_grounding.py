"""Grounding: planted true and false claims about known images, facts for prompts, the views."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from lens import measure
from lens.grounding import Claim, check_answer, extract_claims, format_facts
from lens.prompts import DimensionAnswer
from lens.warehouse import insert_arrow, utcnow

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _evidence_of(image: np.ndarray, **extra) -> dict:
    """An evidence row measured from one image (what the evidence stage stores)."""
    f = measure.image_facts(image[None])
    ev = {key: float(f[key][0]) for key in measure.NUMERIC_FACTS}
    ev.update(
        border_colour=f["border_colour"][0], centre_colour=f["centre_colour"][0],
        border_colours=json.dumps(measure.shares_dict(f["border_shares"][0])),
        centre_colours=json.dumps(measure.shares_dict(f["centre_shares"][0])),
        label=3, pred=6, confidence=0.7, true_prob=0.2,
    )
    ev.update(extra)
    return ev


def _image(border_rgb, centre_rgb, *, scale: float = 1.0) -> np.ndarray:
    img = np.zeros((32, 32, 3), np.float64)
    img[:] = border_rgb
    img[8:24, 8:24] = centre_rgb
    rng = np.random.default_rng(0)
    img = img * scale + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _claims(text: str, ev: dict, dim: str = "visual_cause") -> list[Claim]:
    return check_answer({dim: DimensionAnswer(text=text)}, None, ev, NAMES)


def _verdict(text: str, ev: dict) -> str:
    claims = _claims(text, ev)
    assert len(claims) == 1, claims
    return claims[0].verdict


GREY_ROCK = _image((128, 128, 125), (120, 85, 50))  # grey surroundings, brown object
BLUE_SKY = _image((90, 150, 230), (235, 235, 235))  # blue sky, white plane


def test_background_colour_claims():
    grey = _evidence_of(GREY_ROCK)
    assert grey["border_colour"] == "grey"  # the planted image measures as designed
    assert _verdict("The uniform blue background suggests the sky.", grey) == "contradicted"
    assert _verdict("It sits against a grey background.", grey) == "consistent"
    assert _verdict("The background is mostly gray.", grey) == "consistent"  # synonym
    assert _verdict("A green background dominates.", grey) == "contradicted"
    sky = _evidence_of(BLUE_SKY)
    assert _verdict("The uniform blue background suggests the sky.", sky) == "consistent"
    assert _verdict("The background is grey.", sky) == "contradicted"
    claim = _claims("The uniform blue background suggests the sky.", grey)[0]
    assert claim.kind == "background_colour" and claim.claim == "uniform blue background"
    assert "grey" in claim.fact


def test_foreground_colour_and_class_nouns():
    grey = _evidence_of(GREY_ROCK)
    assert grey["centre_colour"] == "brown"
    assert _verdict("A brown cat sits on a rock.", grey) == "consistent"
    assert _verdict("The object is red.", grey) == "contradicted"
    sky = _evidence_of(BLUE_SKY)
    assert _verdict("A white airplane.", sky) == "consistent"


def test_brightness_contrast_blur_claims():
    dark = _evidence_of(_image((128, 128, 125), (120, 85, 50), scale=0.15))
    bright = _evidence_of(_image((200, 200, 190), (170, 140, 100)))
    assert dark["brightness"] < measure.DARK_BRIGHTNESS < bright["brightness"]
    assert _verdict("The image is very dark.", dark) == "consistent"
    assert _verdict("The image is very dark.", bright) == "contradicted"
    assert _verdict("The scene is poorly lit.", bright) == "contradicted"
    assert _verdict("Overexposed photo.", dark) == "contradicted"
    flat = _evidence_of(_image((128, 128, 128), (134, 130, 126)))
    assert flat["contrast"] < measure.LOW_CONTRAST
    assert _verdict("A low-contrast image.", flat) == "consistent"
    assert _verdict("A low-contrast image.", _evidence_of(_image((20, 20, 20), (240, 240, 240)))) == "contradicted"
    blurry = dict(bright, z_true={"sharpness": -2.5})
    sharp = dict(bright, z_true=json.dumps({"sharpness": 1.8}))  # JSON text works too
    assert _verdict("The photo is blurry.", blurry) == "consistent"
    assert _verdict("The photo is blurry.", sharp) == "contradicted"
    assert _verdict("The photo is blurry.", bright) == "unverifiable"  # no class statistics: no verdict
    # cropping can be supported, never ruled out
    assert _verdict("The object is cut off.", dict(bright, z_true={"edge_share": 2.0})) == "consistent"
    assert _verdict("The object is cut off.", dict(bright, z_true={"edge_share": -1.0})) == "unverifiable"


def test_looks_like_checked_against_neighbours():
    ev = _evidence_of(GREY_ROCK, neighbour_labels=[6] * 7 + [3] * 3)
    assert _verdict("It looks like a frog.", ev) == "consistent"
    assert _verdict("It resembles a cat.", ev) == "consistent"  # 3 of 10 >= LOOKS_LIKE_SHARE
    assert _verdict("It looks like a ship.", ev) == "contradicted"  # no neighbour, not the prediction
    assert _verdict("It looks like a ship.", {k: v for k, v in ev.items() if k != "neighbour_labels"}) == "unverifiable"


def test_negations_and_numbering_and_missing_evidence():
    grey = _evidence_of(GREY_ROCK)
    assert _claims("The image is not dark and has no blue background.", grey) == []
    dims = {
        "visual_cause": DimensionAnswer(text="A blue background and a dark scene."),
        "data_quality": DimensionAnswer(text="Looks like a frog.", tag="ambiguous_image", summary="Blurry image."),
    }
    claims = check_answer(dims, "A brown cat on grey rock.", grey, NAMES)
    by_dim = {}
    for c in claims:
        by_dim.setdefault(c.dimension, []).append(c.claim_index)
    assert by_dim == {"description": [0], "visual_cause": [0, 1], "data_quality": [0, 1, 2]}
    assert [c.kind for c in claims if c.dimension == "data_quality"][-1] == "tag"  # the tag, after the text claims
    assert {c.verdict for c in check_answer(dims, None, None, NAMES)} == {"unverifiable"}
    assert [k for k, _, _ in extract_claims("dark brown fur", NAMES)] == ["foreground_colour"]  # not lighting


def test_format_facts_states_numbers_and_gaps():
    ev = _evidence_of(
        GREY_ROCK, margin=0.5, entropy=0.9, true_rank=2, label_quality=0.04, label_issue=True,
        neighbour_labels=[6] * 7 + [3] * 3, z_true={"brightness": -0.4}, z_pred={"brightness": 1.1},
        colour_share_true={"border": 0.3, "centre": 0.1}, colour_share_pred={"border": 0.05, "centre": 0.2},
        saliency_centre_share=0.32, saliency_method="gradcam-layer1",
        skipped=json.dumps({"z_scores": "dataset unavailable"}),
    )
    text = format_facts(ev, NAMES)
    for expected in ("frog 0.70", "cat 0.20 (rank 2)", "Label quality (confident learning, 0-1, low = suspicious): 0.04; flagged", "7 labelled frog", "3 of 10 labelled cat",
                     "mostly grey", "mostly brown", "z=-0.4 vs cat", "z=+1.1 vs frog", "32% in the centre",
                     "Not measured: z_scores (dataset unavailable)", "30% of cat"):
        assert expected in text, (expected, text)
    assert format_facts(None, NAMES) == ""


def _hyp(hid, backend, prompt, example_id):
    return dict(hypothesis_id=hid, run_id="r", example_id=example_id, backend=backend, model=backend,
                prompt_name=prompt, prompt_sha256="x", status="ok", attempts=1, created_at=utcnow())


def test_views_count_contradictions(mem_wh):
    hyps = [_hyp("h1", "ollama", "reference", 1), _hyp("h2", "ollama", "reference", 2),
            _hyp("h3", "measured", "reference", 1)]
    verdicts = {"h1": ["contradicted", "consistent", "unverifiable"], "h2": ["consistent"], "h3": []}
    claims = [
        dict(hypothesis_id=h, run_id="r", example_id=1, dimension="visual_cause", claim_index=i, kind="dark",
             claim="dark", verdict=v, fact="brightness 0.5")
        for h, vs in verdicts.items() for i, v in enumerate(vs)
    ]
    with mem_wh.transaction() as con:
        insert_arrow(con, "hypotheses", pa.Table.from_pylist(hyps))
        insert_arrow(con, "claims", pa.Table.from_pylist(claims))
        summary = con.execute("select backend, answers, claims, contradicted, contradiction_rate, "
                              "share_answers_contradicted from grounding_summary order by backend").fetchall()
        per = con.execute("select hypothesis_id, claims, contradicted, unverifiable, contradicted_claims "
                          "from failure_claims order by hypothesis_id").fetchall()
    # independent: ollama has 1 contradicted of 3 checkable (1 contradicted + 2 consistent)
    assert summary[0] == ("measured", 1, 0, 0, None, 0.0)
    assert summary[1][:4] == ("ollama", 2, 4, 1)
    assert summary[1][4] == pytest.approx(1 / 3) and summary[1][5] == pytest.approx(0.5)
    assert per == [("h1", 3, 1, 1, ["dark (vs brightness 0.5)"]), ("h2", 1, 0, 0, []), ("h3", 0, 0, 0, [])]


def test_tags_are_checked_against_the_diagnosis_scores():
    from lens import diagnosis
    from lens.grounding import check_tag

    t_le, t_am = diagnosis.LABEL_ERROR_THRESHOLD, diagnosis.AMBIGUITY_THRESHOLD
    # a clean, confidently labelled failure: low label-error score, the label well supported
    clean = {"label_error_score": 0.01, "ambiguity_score": t_am - 0.2, "true_prob": 0.35,
             "neighbour_true_share": 0.7, "margin": 0.1}
    flip = {"label_error_score": t_le + 0.3, "ambiguity_score": 0.3, "true_prob": 0.0004,
            "neighbour_true_share": 0.0, "margin": 0.98}
    assert check_tag("annotation_issue", clean)[0] == "contradicted"
    assert "label_error_score 0.01" in check_tag("annotation_issue", clean)[1]
    assert check_tag("annotation_issue", flip)[0] == "consistent"
    assert check_tag("model_error", flip)[0] == "contradicted"  # the label, not the model, looks wrong
    assert check_tag("model_error", clean)[0] == "consistent"
    # a low score with an unsupported label is not enough to contradict
    assert check_tag("annotation_issue", {**clean, "true_prob": 0.02, "neighbour_true_share": 0.1})[0] == "unverifiable"
    # ambiguity: consistent at the threshold, contradicted only when the model is also confident
    assert check_tag("ambiguous_image", {**clean, "ambiguity_score": t_am})[0] == "consistent"
    assert check_tag("ambiguous_image", {**flip, "ambiguity_score": 0.1})[0] == "contradicted"
    assert check_tag("ambiguous_image", {**clean, "ambiguity_score": 0.1})[0] == "unverifiable"  # margin 0.1
    # no scores, or a tag outside the vocabulary: unverifiable
    assert check_tag("annotation_issue", {"true_prob": 0.3})[0] == "unverifiable"
    assert check_tag("blurry_photo", flip)[0] == "unverifiable"
    # check_answer stores the tag check as a claim of kind 'tag' for any backend's answer
    dims = {"data_quality": DimensionAnswer(text="The label is wrong.", tag="annotation_issue")}
    tag_claims = [c for c in check_answer(dims, None, clean, NAMES) if c.kind == "tag"]
    assert [(c.claim, c.verdict) for c in tag_claims] == [("annotation_issue", "contradicted")]
