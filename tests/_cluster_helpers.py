"""Planted failure explanations and a warehouse seeded with them (for test_embed / test_cluster).

No model is trained: runs, classes, predictions, hypotheses and hypothesis_dimensions are
written directly, as `lens hypothesize` would.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from lens.predictions import insert_predictions, write_run
from lens.warehouse import insert_arrow, stable_id

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Planted groups: paraphrases of one kind of cause each, no class names.
GROUPS: dict[str, list[str]] = {
    "blur": [
        "The image is blurry and out of focus.",
        "Motion blur makes the photo blurry and indistinct.",
        "The photo is badly blurred and out of focus.",
        "Strong blur: the image is fuzzy and not sharp.",
        "The picture is blurry, with no sharp edges.",
        "Out-of-focus, blurry image that hides the details.",
        "Blurred photo; everything is fuzzy and unsharp.",
        "The image is very blurry, as if the camera moved.",
    ],
    "label": [
        "The ground-truth label looks wrong; the annotation is a mistake.",
        "This is a labelling error: the dataset label is incorrect.",
        "The annotator assigned the wrong label to this image.",
        "The given label is wrong; the image is mislabelled.",
        "An annotation mistake: the true label is incorrect.",
        "The dataset label is wrong for this example.",
        "Mislabelled example: the recorded label is incorrect.",
        "The label appears to be an annotation error.",
    ],
    "water": [
        "The object is surrounded by blue water, like the sea.",
        "A water background: the sea fills the scene around it.",
        "The background is blue water with waves.",
        "It is on the water, with the ocean all around.",
        "The scene has a lake of blue water behind the object.",
        "Water and waves dominate the background.",
        "The object sits on the sea, surrounded by water.",
        "A blue sea background with water everywhere.",
    ],
    "pose": [
        "The object is seen from an unusual angle, upside down.",
        "An odd viewpoint: the object is shown from directly above.",
        "The pose is unusual, the object is turned sideways.",
        "Strange camera angle shows the object from below.",
        "The object is rotated and seen from an uncommon viewpoint.",
        "Unusual pose: the object lies on its back.",
        "The viewpoint is atypical, from behind and above.",
        "An unusual orientation and viewing angle.",
    ],
    "colour": [
        "Its brown fur colour and texture resemble the other animal.",
        "The fur texture and brownish colour look like the other species.",
        "Similar colour and fur pattern to the predicted animal.",
        "The coat colour and texture match the other animal.",
        "Brown fur of similar texture misleads the model.",
        "The animal's colour and fur look like the confused one.",
        "Its fur colour and pattern are shared with the other animal.",
        "Colour and texture of the fur resemble the predicted species.",
    ],
}

# Two tiny planted groups (far from the others) for the --min-size test.
TINY: dict[str, list[str]] = {
    "text": [
        "A watermark and printed text overlay cover the picture.",
        "Large printed letters and a logo are stamped over it.",
    ],
    "cartoon": [
        "It is a cartoon drawing, not a real photograph.",
        "This is an illustration in a comic style rather than a photo.",
    ],
}

# Texts built to group by class pair unless class names are masked: each names the pair
# and gives one of three causes in a few words.
PAIRS = [("cat", "dog"), ("ship", "airplane"), ("truck", "automobile")]
CAUSES = {
    "label": ["the label is wrong", "annotation error", "mislabelled in the dataset"],
    "blur": ["blurry, out of focus", "motion blur", "fuzzy and unsharp"],
    "water": ["water background", "surrounded by sea water", "blue water and waves behind"],
}


def pair_texts() -> tuple[list[str], list[int], list[int], list[tuple[int, int]]]:
    """Texts for every (pair, cause, phrase): texts, pair labels, cause labels, (true, pred) ids."""
    texts, pairs, causes, ids = [], [], [], []
    for pi, (a, b) in enumerate(PAIRS):
        for ci, phrases in enumerate(CAUSES.values()):
            for phrase in phrases:
                texts.append(f"The {a} looks like a {b}: {phrase}.")
                pairs.append(pi)
                causes.append(ci)
                ids.append((CLASSES.index(a), CLASSES.index(b)))
    return texts, pairs, causes, ids


def planted(groups: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for gi, lines in enumerate(groups.values()):
        texts += lines
        labels += [gi] * len(lines)
    return texts, np.array(labels)


def seed_run(
    wh,
    run_id: str,
    texts: list[str],
    *,
    dimension: str = "visual_cause",
    tags: list[str | None] | None = None,
    pairs: list[tuple[int, int]] | None = None,
    summaries: list[str | None] | None = None,
    backend: str = "measured",
    model: str = "measured",
    prompt_sha256: str = "p" * 64,
    created_at: datetime | None = None,
    status: list[str] | None = None,
    new_run: bool = True,
) -> list[str]:
    """Write a run with one failure and one hypothesis per text; returns the hypothesis ids.

    ``pairs[i] = (true class id, predicted class id)`` (default: cycling through pairs);
    ``tags[i]`` becomes the data_quality tag (a data_quality row is added when the
    dimension is not data_quality).
    """
    n = len(texts)
    pairs = pairs or [(i % 10, (i + 1) % 10) for i in range(n)]
    created_at = created_at or datetime(2024, 1, 1)
    ids = [stable_id(run_id, i, backend, model, prompt_sha256) for i in range(n)]
    with wh.transaction() as con:
        if new_run:
            write_run(con, run_id, kind="ingest", class_names=CLASSES)
            insert_predictions(con, pa.table({
                "run_id": [run_id] * n,
                "example_id": pa.array(range(n), pa.int64()),
                "label": pa.array([p[0] for p in pairs], pa.int32()),
                "pred": pa.array([p[1] for p in pairs], pa.int32()),
                "confidence": pa.array([0.9] * n, pa.float32()),
            }))
        insert_arrow(con, "hypotheses", pa.table({
            "hypothesis_id": ids,
            "run_id": [run_id] * n,
            "example_id": pa.array(range(n), pa.int64()),
            "backend": [backend] * n,
            "model": [model] * n,
            "prompt_name": ["reference"] * n,
            "prompt_sha256": [prompt_sha256] * n,
            "status": status or ["ok"] * n,
            "attempts": pa.array([1] * n, pa.int32()),
            "created_at": pa.array([created_at + timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
        }))
        rows = {
            "hypothesis_id": ids, "run_id": [run_id] * n, "example_id": pa.array(range(n), pa.int64()),
            "dimension": [dimension] * n, "tag": pa.array(tags if dimension == "data_quality" and tags else [None] * n, pa.string()),
            "text": texts, "summary": pa.array(summaries or [None] * n, pa.string()),
        }
        insert_arrow(con, "hypothesis_dimensions", pa.table(rows))
        if tags and dimension != "data_quality":
            insert_arrow(con, "hypothesis_dimensions", pa.table({
                "hypothesis_id": ids, "run_id": [run_id] * n, "example_id": pa.array(range(n), pa.int64()),
                "dimension": ["data_quality"] * n, "tag": pa.array(tags, pa.string()),
                "text": ["reason"] * n, "summary": pa.array([None] * n, pa.string()),
            }))
    return ids
