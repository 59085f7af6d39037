"""`lens cluster` and its views on planted failure explanations (real all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from _cluster_helpers import CLASSES, GROUPS, TINY, pair_texts, planted, seed_run
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

from lens.backends import embedders
from lens.stages import cluster as cluster_stage
from lens.stages import embed as embed_stage

TAGS = ["ambiguous_image", "model_error", "annotation_issue"]


@pytest.fixture(scope="module")
def model():
    return embedders.create()


def _members(wh, run_id="r1", dimension="visual_cause"):
    return wh.query(
        "select m.*, e.vector from cluster_members m join embeddings e using (hypothesis_id, dimension)"
        " where m.run_id = ? and m.dimension = ? order by m.example_id",
        [run_id, dimension],
    )


def _seed_planted(wh, model, groups, run_id="r1"):
    texts, y = planted(groups)
    rng = np.random.default_rng(0)
    pairs = [(int(a), int(b)) for a, b in zip(rng.integers(0, 3, len(texts)), rng.integers(3, 5, len(texts)))]
    tags = [TAGS[i % 3] for i in range(len(texts))]
    seed_run(wh, run_id, texts, pairs=pairs, tags=tags)
    embed_stage.run(wh, run_id=run_id, embedder=model, dimensions=["visual_cause"], progress=False)
    return texts, y, pairs, tags


def test_planted_groups_recovered_and_k_chosen_by_silhouette(wh, model):
    texts, y, _, _ = _seed_planted(wh, model, GROUPS)
    res = cluster_stage.run(wh, run_id="r1", k_min=3, k_max=10, min_size=3, progress=False)
    (d,) = res.dimensions
    assert d.k == len(GROUPS) and d.k_tried == list(range(3, 11)) and d.noise == 0 and not d.notes
    m = _members(wh)
    assert adjusted_rand_score(y, m.cluster_id) >= 0.8

    scores = wh.query("select k, silhouette, chosen from cluster_k_scores order by k")
    assert scores.k.tolist() == list(range(3, 11))
    assert scores.k[scores.chosen].tolist() == [scores.k[scores.silhouette.idxmax()]] == [len(GROUPS)]
    # the stored silhouette of the chosen k, recomputed independently from the stored vectors
    X = np.stack(m.vector.to_numpy())
    expected = silhouette_score(X, m.kmeans_label, metric="cosine")
    assert scores.silhouette[scores.chosen].iloc[0] == pytest.approx(expected, abs=1e-4)

    # names: short keyphrases (tests/test_names.py); the medoid sentence, the example, is kept
    # apart; the medoid is the member with the least total cosine distance to the others, and
    # the first representative
    cl = wh.query("select * from clusters order by cluster_id")
    key_words = {"blur": "blur", "label": "label", "water": "water", "pose": "", "colour": "fur"}  # "" = any
    for row in cl.itertuples():
        members = m[m.cluster_id == row.cluster_id]
        group = list(GROUPS)[Counter(y[members.example_id]).most_common(1)[0][0]]
        assert key_words[group] in row.name and row.name_method == "keyphrase+centroid"
        V = np.stack(members.vector.to_numpy())
        medoid = members.hypothesis_id.iloc[int(np.argmax((V @ V.T).sum(axis=1)))]
        assert row.representatives[0] == medoid and row.medoid_text == texts[int(members.example_id[members.hypothesis_id == medoid].iloc[0])]
        assert len(row.name.split()) <= 6 and len(row.representatives) == 5
        dist = members.set_index("hypothesis_id").distance[list(row.representatives)]
        assert list(dist) == sorted(dist) and dist.max() <= members.distance.nsmallest(5).max() + 1e-7

    # 2-D map: PCA of the vectors (up to the sign of each axis)
    xy = PCA(n_components=2, random_state=0).fit_transform(X)
    for axis, col in enumerate(("x", "y")):
        np.testing.assert_allclose(np.abs(m[col]), np.abs(xy[:, axis]), atol=1e-4)


def test_min_size_turns_tiny_groups_into_noise(wh, model):
    texts, y, _, _ = _seed_planted(wh, model, {**GROUPS, **TINY})
    tiny = y >= len(GROUPS)
    res = cluster_stage.run(wh, run_id="r1", k_min=3, k_max=10, min_size=5, progress=False)
    (d,) = res.dimensions
    assert d.k_tried == list(range(3, 9))  # 44 answers fill at most 8 clusters of 5
    m = _members(wh)
    assert (m.cluster_id[tiny] == -1).all() and (m.cluster_id[~tiny] >= 0).all() and d.noise == tiny.sum()
    assert adjusted_rand_score(y[~tiny], m.cluster_id[~tiny]) >= 0.8
    # noise keeps its KMeans label: the tiny groups had KMeans cluster(s) of their own
    assert set(m.kmeans_label[tiny]).isdisjoint(m.kmeans_label[~tiny])
    noise = wh.query("select * from clusters where cluster_id = -1")
    assert noise["size"].tolist() == [tiny.sum()] and noise.name_method.tolist() == ["noise"]
    sizes = wh.query("select size from clusters where cluster_id >= 0 order by cluster_id")["size"]
    assert sizes.is_monotonic_decreasing and sizes.min() >= 5


def test_same_seed_same_clusters(wh, model):
    _seed_planted(wh, model, {**GROUPS, **TINY})
    runs = []
    for _ in range(2):
        cluster_stage.run(wh, run_id="r1", k_min=3, k_max=10, min_size=3, seed=7, progress=False)
        runs.append((
            wh.query("select hypothesis_id, cluster_id, kmeans_label, distance, x, y from cluster_members order by all"),
            wh.query("select cluster_id, name, representatives, silhouette from clusters order by cluster_id"),
            wh.query("select k, silhouette, chosen from cluster_k_scores order by k"),
        ))
    for a, b in zip(*runs):
        assert a.equals(b)
    assert wh.query("select count(*) as n from cluster_members").n[0] == len(runs[0][0])  # replaced


def test_class_mask_groups_by_cause_not_by_pair(wh, model):
    texts, pair_y, cause_y, ids = pair_texts()
    seed_run(wh, "r1", texts, pairs=ids)
    found = {}
    for mask in (False, True):
        embed_stage.run(wh, run_id="r1", embedder=model, mask=mask, progress=False)
        cluster_stage.run(wh, run_id="r1", k_min=3, k_max=3, min_size=3, progress=False)
        labels = wh.query("select cluster_id from cluster_members order by example_id").cluster_id
        found[mask] = (adjusted_rand_score(pair_y, labels), adjusted_rand_score(cause_y, labels))
    assert found[False][0] >= 0.8 and found[False][1] < 0.2  # unmasked: by class pair
    assert found[True][1] >= 0.8 and found[True][0] < 0.2  # masked: by cause
    # and the masked names never show a class name
    names = " ".join(wh.query("select name from clusters").name).lower()
    assert not any(c in names for c in CLASSES)


def test_small_n_clips_k_range_and_says_so(cli, model):
    texts, _ = planted(GROUPS)
    seed_run(cli.wh, "r1", texts)  # 40 answers
    embed_stage.run(cli.wh, run_id="r1", embedder=model, progress=False)
    out = cli("cluster", "--run", "r1").output
    assert "k range 15-30 clipped to 2-2: 40 answers fill at most 2 clusters of --min-size 15" in out
    assert "chose k=2" in out
    assert cli.wh.query("select count(*) as n from cluster_members where cluster_id = -1").n[0] < 20

    seed_run(cli.wh, "r2", texts[:20])
    embed_stage.run(cli.wh, run_id="r2", embedder=model, progress=False)
    out = cli("cluster", "--run", "r2").output
    assert "cannot fill 2 clusters of --min-size 15: all put in one cluster" in out
    cl = cli.wh.query("select cluster_id, size, k from clusters where run_id = 'r2'")
    assert cl.values.tolist() == [[0, 20, 1]]
    assert cli.wh.query("select count(*) as n from cluster_k_scores where run_id = 'r2'").n[0] == 0


def test_cluster_summary_and_spotlight_views(wh, model):
    texts, y, pairs, tags = _seed_planted(wh, model, {**GROUPS, **TINY})
    # an older, different hypothesis set of the same run must not count in the spotlight
    seed_run(wh, "r1", ["old answer"] * 3, tags=["annotation_issue"] * 3, backend="import", model="old",
             prompt_sha256="c" * 64, created_at=datetime(2023, 1, 1), new_run=False)
    cluster_stage.run(wh, run_id="r1", k_min=3, k_max=10, min_size=5, progress=False)
    summary = wh.query("select * from cluster_summary where run_id = 'r1' order by cluster_id")
    m = _members(wh)
    assert not summary.duplicated(["run_id", "dimension", "cluster_id"]).any()
    assert summary.share.sum() == pytest.approx(1.0)
    for row in summary.itertuples():
        members = m[m.cluster_id == row.cluster_id]
        assert row.size == len(members) and row.share == pytest.approx(len(members) / len(m))
        pair_counts = Counter(f"{CLASSES[pairs[e][0]]}→{CLASSES[pairs[e][1]]}" for e in members.example_id)
        expected = [f"{p} ({n})" for p, n in sorted(pair_counts.items(), key=lambda kv: (-kv[1], kv[0]))][:3]
        assert list(row.top_pairs) == expected
        tag_counts = Counter(tags[e] for e in members.example_id)
        assert list(row.tag_distribution) == [f"{t} ({n})" for t, n in sorted(tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        if row.cluster_id >= 0:
            reps = wh.query("select representatives from clusters where cluster_id = ?", [row.cluster_id]).representatives[0]
            by_id = dict(zip(m.hypothesis_id, m.example_id))
            assert list(row.representative_failures) == [by_id[h] for h in reps]
        else:
            assert row.name == "noise" and list(row.representative_failures) == []

    spot = wh.query("select * from data_quality_spotlight where run_id = 'r1' order by class_id, tag")
    expected = Counter((pairs[i][0], tags[i]) for i in range(len(texts)))
    assert {(r.class_id, r.tag): r.count for r in spot.itertuples()} == dict(expected)
    assert (spot.class_name == [CLASSES[c] for c in spot.class_id]).all()
    assert not spot.duplicated(["run_id", "class_id", "tag"]).any()
    assert spot.groupby("class_id").share.sum().round(6).eq(1.0).all()


class _FakeOllama(BaseHTTPRequestHandler):
    """Answers /api/chat like Ollama: a name built from the words of the first sentence sent."""

    prompts: list[str] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        type(self).prompts.append(prompt)
        first = next(line[2:] for line in prompt.splitlines() if line.startswith("- "))
        reply = {"model": body["model"], "created_at": "2024-01-01T00:00:00Z",
                 "message": {"role": "assistant", "content": f'Name: "Group of {first[:20]}"\n'},
                 "done": True, "done_reason": "stop"}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_ollama_labeler_and_fallback(wh, model):
    _seed_planted(wh, model, GROUPS)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        res = cluster_stage.run(wh, run_id="r1", k_min=5, k_max=5, min_size=3, labeler="ollama",
                                label_model="fake:1b", ollama_host=host, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert not res.warnings and len(_FakeOllama.prompts) == 5
    cl = wh.query("select name, name_method, medoid_text from clusters order by cluster_id")
    assert (cl.name_method == "ollama:fake:1b").all()
    assert [n for n in cl.name] == [f"Group of {t[:20]}".strip() for t in cl.medoid_text]

    # nothing listens on that port any more: keyphrase names and a warning
    res = cluster_stage.run(wh, run_id="r1", k_min=5, k_max=5, min_size=3, labeler="ollama",
                            label_model="fake:1b", ollama_host=host, progress=False)
    assert len(res.warnings) == 1 and "unavailable" in res.warnings[0] and "keyphrases" in res.warnings[0]
    assert (wh.query("select name_method from clusters").name_method == "keyphrase+centroid").all()


def test_ollama_labeler_finds_the_server_through_ollama_host(cli, model, monkeypatch):
    """`lens cluster --labeler ollama` without --ollama-host asks the server $OLLAMA_HOST names
    (here without a scheme, as Ollama's own CLI accepts it), not the default port."""
    _seed_planted(cli.wh, model, GROUPS)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _FakeOllama.prompts = []
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.server_address[1]}")
    try:
        out = cli("cluster", "--run", "r1", "--k-min", "5", "--k-max", "5", "--min-size", "3",
                  "--labeler", "ollama", "--label-model", "fake:1b").output
    finally:
        server.shutdown()
        server.server_close()
    assert "unavailable" not in out and len(_FakeOllama.prompts) == 5
    cl = cli.wh.query("select name, name_method, medoid_text from clusters order by cluster_id")
    assert (cl.name_method == "ollama:fake:1b").all()
    assert [n for n in cl.name] == [f"Group of {t[:20]}".strip() for t in cl.medoid_text]


def test_k_range_clipping_keeps_a_silhouette_choice():
    from lens.clustering import k_range

    # the reference: 150 answers, min size 15 -> at most 10 clusters; 15-30 is out of reach,
    # so silhouette chooses among 2..10 instead of being forced to k = 10
    r = k_range(150, k_min=15, k_max=30, min_size=15)
    assert (r.k_min, r.k_max) == (2, 10) and "clipped to 2-10" in r.note
    r = k_range(600, k_min=15, k_max=30, min_size=15)
    assert (r.k_min, r.k_max, r.note) == (15, 30, None)
    r = k_range(300, k_min=15, k_max=30, min_size=15)
    assert (r.k_min, r.k_max) == (15, 20)
