"""`lens embed`: masking, the hypothesis set it picks, vectors, the cache (real all-MiniLM-L6-v2)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from _cluster_helpers import GROUPS, planted, seed_run

from lens.backends import embedders
from lens.errors import LensError
from lens.stages import embed as embed_stage
from lens.stages.embed import mask_classes, text_sha256


class CountingEmbedder(embedders.SentenceTransformerEmbedder):
    """The real default model, counting the texts it is asked to embed."""

    def __init__(self):
        super().__init__(embedders.DEFAULT_EMBEDDER, str(embedders.bundled_model_path()))
        self.calls = 0
        self.texts: list[str] = []
        self.batch_sizes: list[int] = []

    def encode(self, texts, *, batch_size=64, progress=None):
        self.calls += 1
        self.texts += list(texts)
        self.batch_sizes.append(batch_size)
        return super().encode(texts, batch_size=batch_size, progress=progress)


@pytest.fixture(scope="module")
def model():
    return CountingEmbedder()


def test_mask_classes_words_plurals_multiword_case():
    names = ["cat", "pickup_truck", "truck", "aquarium fish", "bus"]
    assert mask_classes("A Cats' face like a pickup-truck's grille", names) == "A [CLASS]' face like a [CLASS]'s grille"
    assert mask_classes("two Aquarium_Fish and buses; a truck.", names) == "two [CLASS] and [CLASS]; a [CLASS]."
    # whole words only: no match inside other words
    assert mask_classes("catalogue, concatenate, trucker", names) == "catalogue, concatenate, trucker"
    # the placeholder is not masked again
    assert mask_classes(mask_classes("cat", ["cat", "class"]), ["cat", "class"]) == "[CLASS]"


def test_embed_vectors_match_bare_model_and_use_summary(wh, model):
    texts = ["The cat looks like a dog in the dark.", "A blurry ship.", "Ignored: invalid answer."]
    summaries = ["The Cats are too dark to see.", None, None]
    seed_run(wh, "r1", texts, dimension="data_quality", tags=["ambiguous_image"] * 3, summaries=summaries,
             status=["ok", "ok", "invalid"])
    res = embed_stage.run(wh, run_id="r1", embedder=model, progress=False)
    assert (res.rows, res.dim, res.encoded, res.cache_hits) == (2, 384, 2, 0)
    df = wh.query("select text, masked, dim, vector, text_sha256, embedder from embeddings order by text")
    assert df.text.tolist() == ["A blurry [CLASS].", "The [CLASS] are too dark to see."]
    assert df.masked.all() and (df.dim == 384).all() and (df.embedder == "all-MiniLM-L6-v2").all()
    assert df.text_sha256.tolist() == [text_sha256(t) for t in df.text]
    bare = model.model.encode(df.text.tolist(), normalize_embeddings=True)
    got = np.stack(df.vector.to_numpy()).astype(np.float32)
    np.testing.assert_allclose(got, bare, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    embed_stage.run(wh, run_id="r1", embedder=model, mask=False, progress=False)
    df = wh.query("select text, masked from embeddings order by text")
    assert df.text.tolist() == ["A blurry ship.", "The Cats are too dark to see."] and not df.masked.any()


def test_cache_hits_on_rerun_and_repeated_texts(wh, model):
    texts, _ = planted(GROUPS)
    texts = texts[:12] + texts[:4]  # 4 repeated texts
    seed_run(wh, "r1", texts)
    model.calls, model.texts, model.batch_sizes = 0, [], []
    first = embed_stage.run(wh, run_id="r1", embedder=model, batch_size=5, progress=False)
    assert (first.rows, first.unique_texts, first.encoded, first.cache_hits) == (16, 12, 12, 0)
    assert len(model.texts) == 12 and model.batch_sizes == [5]  # the unique texts, in sentence-transformers' batches of 5
    assert wh.query("select count(*) as n from embedding_cache").n[0] == 12

    model.calls, model.texts = 0, []
    again = embed_stage.run(wh, run_id="r1", embedder=model, progress=False)
    assert model.calls == 0 and (again.encoded, again.cache_hits) == (0, 12)
    counts = wh.query("select (select count(*) from embeddings) as e, (select count(*) from embedding_cache) as c")
    assert (counts.e[0], counts.c[0]) == (16, 12)  # replaced, not appended

    # another run sharing 6 texts: only its 2 new texts are embedded
    seed_run(wh, "r2", texts[:6] + ["Completely new explanation one.", "Another new explanation."])
    third = embed_stage.run(wh, run_id="r2", embedder=model, progress=False)
    assert (third.encoded, third.cache_hits) == (2, 6) and sorted(model.texts) == sorted(
        ["Completely new explanation one.", "Another new explanation."]
    )


def test_default_is_most_recent_hypothesis_set_with_filters(wh, model):
    seed_run(wh, "r1", ["Old answer about water."], backend="measured", model="measured",
             prompt_sha256="a" * 64, created_at=datetime(2024, 1, 1))
    seed_run(wh, "r1", ["New answer about blur."], backend="ollama", model="qwen3-vl:8b",
             prompt_sha256="b" * 64, created_at=datetime(2024, 2, 1), new_run=False)
    res = embed_stage.run(wh, run_id="r1", embedder=model, progress=False)
    assert (res.backend, res.prompt_sha256) == ("ollama", "b" * 64)
    assert wh.query("select text from embeddings").text.tolist() == ["New answer about blur."]
    res = embed_stage.run(wh, run_id="r1", embedder=model, backend="measured", progress=False)
    assert wh.query("select text from embeddings").text.tolist() == ["Old answer about water."]
    res = embed_stage.run(wh, run_id="r1", embedder=model, prompt="aaaa", progress=False)
    assert res.backend == "measured"
    with pytest.raises(LensError, match="--backend measured --model measured"):
        embed_stage.run(wh, run_id="r1", embedder=model, model="nope", progress=False)


def test_embedder_names_and_offline_error(tmp_path):
    assert embedders.canonical_name("sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert embedders.canonical_name(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(LensError, match="offline"):
        embedders.create("lens-test/no-such-embedder")


def test_cli_embed_prints_cache_hits(cli):
    texts, _ = planted(GROUPS)
    seed_run(cli.wh, "demo", texts[:10], pairs=[(3, 5)] * 10)
    out = cli("embed", "--run", "demo").output
    assert "10 answers (visual_cause 10)" in out and "0 cache hits, 10 encoded" in out
    out = cli("embed", "--run", "demo").output
    assert "10 cache hits, 0 encoded" in out
    out = cli("embed", "--run", "demo", "--embedder", "lens-test/no-such-embedder", expect=1).output
    assert "Cannot load embedder" in out and "offline" in out
