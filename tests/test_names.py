"""Short cluster names offline (issue 18, point 1): keyphrases the members share, not the medoid.

Planted clusters: each group's answers are worded differently but all say one planted phrase;
the name must contain it, be at most 6 words, and differ from every sibling's name. The medoid
answer is kept apart in ``medoid_text``. Real all-MiniLM-L6-v2 (the bundled offline default).
"""

from __future__ import annotations

import numpy as np
import pytest
from _cluster_helpers import seed_run

from lens import clustering
from lens.backends import embedders
from lens.stages import cluster as cluster_stage
from lens.stages import embed as embed_stage

# Each group: a planted phrase said by every member, in sentences that otherwise share a template
# with the other groups (as the measured analyst's answers do), so only the phrase tells them apart.
PLANTED = {
    "motion blur": [
        "The [CLASS] shows motion blur, so its outline is lost.",
        "Heavy motion blur hides the shape of the [CLASS].",
        "Motion blur smears the whole photo of the [CLASS].",
        "The camera moved: motion blur across the frame.",
        "Because of motion blur the edges are soft.",
        "There is motion blur over the body.",
        "Strong motion blur, as if taken from a moving car.",
        "Motion blur makes the details unreadable.",
    ],
    "snowy background": [
        "The [CLASS] stands on a snowy background, so its outline is lost.",
        "A snowy background hides the shape of the [CLASS].",
        "The snowy background fills the whole photo of the [CLASS].",
        "White snowy background across the frame.",
        "Because of the snowy background the edges are soft.",
        "There is a snowy background behind the body.",
        "A snowy background, as if taken on a winter field.",
        "The snowy background makes the details unreadable.",
    ],
    "wrong label": [
        "The [CLASS] has a wrong label, so its outline does not matter.",
        "A wrong label: the shape is clearly another [CLASS].",
        "The wrong label explains the whole photo of the [CLASS].",
        "Wrong label in the dataset for this frame.",
        "Because of a wrong label the edges do not matter.",
        "There is a wrong label on this body.",
        "A wrong label, as if the annotator clicked too fast.",
        "The wrong label makes the details irrelevant.",
    ],
    "tiny object": [
        "The [CLASS] is a tiny object, so its outline is lost.",
        "A tiny object: the shape of the [CLASS] is a few pixels.",
        "The tiny object fills little of the photo of the [CLASS].",
        "Only a tiny object in the frame.",
        "Because it is a tiny object the edges are soft.",
        "There is a tiny object far away, the body barely visible.",
        "A tiny object, as if taken from a great distance.",
        "The tiny object makes the details unreadable.",
    ],
}


@pytest.fixture(scope="module")
def model():
    return embedders.create()


def _planted():
    texts, y = [], []
    for gi, lines in enumerate(PLANTED.values()):
        texts += lines
        y += [gi] * len(lines)
    return texts, np.array(y)


def _check_names(names: dict[int, str], members: dict[int, np.ndarray], y: np.ndarray) -> None:
    assert len(set(names.values())) == len(names), f"siblings share a name: {names}"
    for cid, name in names.items():
        group = list(PLANTED)[np.bincount(y[members[cid]]).argmax()]
        assert group in name.lower(), f"cluster {cid} ({group}) named {name!r}"
        assert 1 <= len(name.split()) <= 6  # the issue: "a name of at most 6 words"


def test_planted_clusters_are_named_by_their_planted_phrase(wh, model):
    texts, y = _planted()
    seed_run(wh, "r1", texts)
    embed_stage.run(wh, run_id="r1", embedder=model, progress=False)
    res = cluster_stage.run(wh, run_id="r1", k_min=4, k_max=4, min_size=3, progress=False)
    assert not res.warnings
    cl = wh.query("select cluster_id, name, name_method, medoid_text from clusters where cluster_id >= 0")
    m = wh.query("select example_id, cluster_id from cluster_members order by example_id")
    members = {c: m.example_id[m.cluster_id == c].to_numpy() for c in cl.cluster_id}
    _check_names(dict(zip(cl.cluster_id, cl.name)), members, y)
    assert (cl.name_method == "keyphrase+centroid").all()
    # the medoid answer is the example, stored apart from the name
    for row in cl.itertuples():
        assert row.medoid_text in texts and not row.name.endswith(row.medoid_text)


@pytest.mark.parametrize("with_embedder", [True, False])
def test_names_from_arrays_with_and_without_the_embedder(model, with_embedder):
    texts, y = _planted()
    X = model.encode(texts)
    encode = (lambda phrases: model.encode(phrases)) if with_embedder else None
    names = clustering.keyphrase_names(texts, y, vectors=X, encode=encode)
    assert sorted(names) == list(range(len(PLANTED)))
    _check_names({c: n.name for c, n in names.items()}, {c: np.flatnonzero(y == c) for c in names}, y)
    for n in names.values():  # every phrase of a name is said by a good share of the members
        assert n.phrases and all(s >= 0.25 for s in n.support)


def test_template_words_shared_by_every_cluster_never_name_one():
    # every answer shares the template; the groups differ in one word only
    words = ["dark", "blurred", "cropped", "grainy", "tilted"]
    texts, y = [], []
    for gi, w in enumerate(words):
        for j in range(6):
            texts.append(f"Model error: no measured signal points to the data, yet the photo is {w} ({j}).")
            y.append(gi)
    names = clustering.keyphrase_names(texts, np.array(y))
    assert [names[i].name.split(", ")[0] for i in range(len(words))] == words
    assert all("measured signal" not in n.name for n in names.values())


def test_siblings_never_share_a_name_even_with_the_same_answers():
    texts = ["The photo is too dark to see anything."] * 6 + ["The photo is too dark to see anything."] * 4
    labels = np.array([0] * 6 + [1] * 4)
    names = clustering.keyphrase_names(texts, labels)
    assert names[0].name != names[1].name
    assert all(len(n.name.split()) <= 6 for n in names.values())
    # answers with no content words at all: named from the fallback text, still distinct
    names = clustering.keyphrase_names(["It is that.", "It is that."] * 2, np.array([0, 0, 1, 1]),
                                       fallback={0: "It is that.", 1: "It is that."})
    assert names[0].name != names[1].name and names[0].name == "It is that."


def test_negated_words_do_not_name_a_cluster():
    texts = ["The photo is not sharp at all.", "Edges are not sharp here.", "It is not sharp, blurry.",
             "Not sharp: everything soft."]
    (name,) = clustering.keyphrase_names(texts, np.zeros(4, dtype=int)).values()
    assert name.phrases[0] == "not sharp" and "sharp" not in name.phrases[1:]


def test_cli_prints_short_names_and_the_example_apart(cli, model):
    texts, _ = _planted()
    seed_run(cli.wh, "r1", texts)
    embed_stage.run(cli.wh, run_id="r1", embedder=model, progress=False)
    out = cli("cluster", "--run", "r1", "--k-min", "4", "--k-max", "4", "--min-size", "3").output
    for phrase in PLANTED:
        assert phrase in out.lower()
    assert out.count("e.g. ") == 4


def test_an_embedder_that_no_longer_matches_the_vectors_falls_back_to_ctfidf(wh):
    # the seeded run's "all-MiniLM-L6-v2" vectors are 8-d: the real model (384-d) cannot rank
    # phrases against their centroids, so names come from c-TF-IDF alone, with a warning
    from _seed import seed_complete_run

    seed_complete_run(wh)
    res = cluster_stage.run(wh, run_id="demo", k_min=2, k_max=3, min_size=2, progress=False)
    assert any("c-TF-IDF alone" in w and "384-d" in w and "8-d" in w for w in res.warnings)
    cl = wh.query("select dimension, name, name_method from clusters where cluster_id >= 0")
    assert (cl.name_method == "keyphrase").all()
    assert not cl.duplicated(["dimension", "name"]).any()
