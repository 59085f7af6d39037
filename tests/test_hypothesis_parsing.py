"""Parsing model replies: <think> blocks, JSON in prose and fences, the numbered three-part form."""

from __future__ import annotations

import pytest

from lens import prompts
from lens.backends.chat import prepare_image
from lens.backends.parsing import extract_json, find_tag, parse_answer, parse_three_part, split_numbered, strip_think
from lens.prompts import AnswerError

REF = prompts.load("reference")
GOOD = {
    "data_quality": {"tag": "model_error", "reason": "clear image", "verdict": "The model missed an obvious object."},
    "visual_cause": "blue background",
    "fix": "colour jitter",
}


def test_strip_think_removes_closed_and_unclosed_blocks():
    assert strip_think("<think>a\nb</think>\n{\"x\": 1}") == '{"x": 1}'
    assert strip_think("<THINK>x</THINK>answer<think>y</think>") == "answer"
    assert strip_think("reasoning without opening</think> final") == "final"
    assert strip_think("<think>never closed {\"x\": 1}") == ""


def test_extract_json_whole_fenced_and_embedded():
    assert extract_json('{"a": [1, 2]}') == {"a": [1, 2]}
    assert extract_json('Here you go:\n```json\n{"a": 1}\n```\nthanks') == {"a": 1}
    assert extract_json('Sure! {"a": {"b": "}"}} trailing {bad') == {"a": {"b": "}"}}
    with pytest.raises(ValueError, match="not JSON"):
        extract_json("no braces here")
    with pytest.raises(ValueError, match="empty"):
        extract_json("   ")


def test_parse_answer_json_after_think_and_fence():
    import json

    text = "<think>let me see</think>\n```json\n" + json.dumps(GOOD) + "\n```"
    dims, desc = parse_answer(text, REF)
    assert desc is None
    assert dims["data_quality"].tag == "model_error"
    assert dims["data_quality"].summary == "The model missed an obvious object."
    assert dims["fix"].text == "colour jitter"


def test_parse_answer_schema_violation_names_the_problem():
    bad = {**GOOD, "data_quality": {**GOOD["data_quality"], "tag": "blurry"}}
    import json

    with pytest.raises(AnswerError, match="data_quality.tag must be one of"):
        parse_answer(json.dumps(bad), REF)


def test_three_part_maps_parts_to_dimensions_in_order_with_tag_by_keyword():
    text = (
        "1. DATA ISSUE? Yes, annotation issue: the animal is clearly a dog. The label says cat.\n"
        "2. VISUAL CAUSE: pointed ears and a long snout\n"
        "3. FIX: relabel the example; audit the cat class"
    )
    dims = parse_three_part(text, REF)
    assert list(dims) == ["data_quality", "visual_cause", "fix"]
    assert dims["data_quality"].tag == "annotation_issue"
    assert dims["data_quality"].summary == "Annotation issue: the animal is clearly a dog."
    assert dims["data_quality"].text.startswith("Yes, annotation issue: the animal")
    assert dims["visual_cause"].text == "pointed ears and a long snout"
    assert dims["visual_cause"].tag is None and dims["visual_cause"].summary is None
    assert dims["fix"].text == "relabel the example; audit the cat class"


@pytest.mark.parametrize(
    ("phrase", "tag"),
    [
        ("The image is ambiguous: dark and tiny.", "ambiguous_image"),
        ("No. This is a model error; the object is clear.", "model_error"),
        ("Probably mislabelled, it shows a truck.", "annotation_issue"),
        ("model_error", "model_error"),
        ("It is unclear what this is.", "ambiguous_image"),
    ],
)
def test_find_tag_keywords(phrase, tag):
    assert find_tag(phrase, ("ambiguous_image", "model_error", "annotation_issue")) == tag


def test_three_part_refuses_incomplete_or_untagged_answers():
    with pytest.raises(AnswerError, match="3 parts, found 2"):
        parse_three_part("1. DATA ISSUE? ambiguous image\n2. VISUAL CAUSE: dark", REF)
    with pytest.raises(AnswerError, match="names none of the tags"):
        parse_three_part("1. DATA ISSUE? hmm, who knows\n2. VISUAL CAUSE: dark\n3. FIX: more data", REF)
    # numbers must run 1, 2, 3: a stray "5." inside a part does not split it
    assert split_numbered("1. a 5. b\n2. c\n3. d") == ["a 5. b", "c", "d"]
    # a prompt that asks for a description first needs JSON
    with pytest.raises(AnswerError, match="description"):
        parse_answer("1. DATA ISSUE? ambiguous\n2. VISUAL CAUSE: x\n3. FIX: y", prompts.load("grounded"))


def test_prepare_image_upscales_small_images_only():
    import io

    import numpy as np
    from PIL import Image

    def png(w, h):
        buf = io.BytesIO()
        Image.fromarray(np.arange(w * h * 3, dtype=np.uint8).reshape(h, w, 3)).save(buf, format="PNG")
        return buf.getvalue()

    small = png(32, 16)
    out = Image.open(io.BytesIO(prepare_image(small, 128, "nearest")))
    assert out.size == (128, 64)
    # nearest keeps the exact pixel values of the original in 4x4 blocks
    src = np.asarray(Image.open(io.BytesIO(small)))
    assert (np.asarray(out)[::4, ::4] == src).all()
    big = png(200, 150)
    assert prepare_image(big, 128) is big
