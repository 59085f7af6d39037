"""Text that models and files produce is stored whatever it holds (docs/reliability.md).

* a lone UTF-16 surrogate (``"\\ud800"`` in JSON) in an imported answer or in a model
  server's reply is stored repaired (U+FFFD), the repair recorded in ``error``, and the run
  goes on; so does a rerun;
* one answer that cannot be stored never loses the batch it is in: it is stored as
  ``error`` with the reason and the others as they are;
* every backend's answers are capped at ``MAX_ANSWER_CHARS``: a 1 MB imported answer is
  ``invalid`` with the reason, never a 1 MB hypothesis (and so never a 1 MB cluster name);
* cluster names are cut to ``NAME_CHARS`` whatever the medoid answer holds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lens.backends.base import (
    KEPT_CHARS,
    MAX_ANSWER_CHARS,
    HypothesisAnswer,
    Hypothesizer,
    clean_text,
    register,
    stored_answer,
)
from lens.prompts import DimensionAnswer
from lens.stages import hypothesize as stage
from tests._hypothesize_helpers import seed_run
from tests._servers import OllamaServer, OpenAIServer, Reply, answer_from_schema
from tests.contracts import check_contracts

FAST = {"retry_backoff": 0.01}
LONE = "\ud800"
GOOD = {"data_quality": {"tag": "ambiguous_image", "reason": "dark and tiny",
                         "verdict": "The object is too small and dark to read."},
        "visual_cause": "dark fur", "fix": "brightness augmentation"}


def _rows(wh, sql, params=()):
    with wh.connect() as con:
        return con.execute(sql, list(params)).to_arrow_table().to_pylist()


def _hyps(wh):
    return {r["example_id"]: r for r in _rows(wh, "select * from hypotheses order by example_id")}


def _texts(wh, example_id):
    return {r["dimension"]: r for r in _rows(
        wh, "select d.* from hypothesis_dimensions d join hypotheses h using (hypothesis_id)"
            " where h.example_id = ?", [example_id])}


def test_clean_text_joins_pairs_and_replaces_lone_halves():
    assert clean_text("plain é 😀") == ("plain é 😀", 0)
    assert clean_text("a\ud83d\ude00b") == ("a😀b", 0)  # a valid pair given as two halves
    assert clean_text(f"x{LONE}y\udc00\ud83d") == ("x\ufffdy\ufffd\ufffd", 3)
    ans = stored_answer(HypothesisAnswer("ok", {"fix": DimensionAnswer(text=f"crop{LONE}")},
                                         description=LONE, raw_response=f'"{LONE}"'))
    assert ans.dimensions["fix"].text == "crop\ufffd" and ans.description == "\ufffd"
    assert ans.error == ("repaired before storing: 3 lone UTF-16 surrogates (unstorable) replaced by U+FFFD in "
                         "fix.text, description, raw_response")
    untouched = HypothesisAnswer("ok", {"fix": DimensionAnswer(text="crop")}, raw_response="crop")
    assert stored_answer(untouched) is untouched


def test_deeply_nested_or_brace_heavy_replies_are_unusable_answers_not_crashes():
    import time

    from lens.backends.parsing import parse_answer
    from lens.prompts import AnswerError, load

    ref = load("reference")
    with pytest.raises(AnswerError, match="nested too deeply"):
        parse_answer("[" * 100_000 + "]" * 100_000, ref)  # was a RecursionError
    loose = ('{"a": ' * 900 + "x ") * 48  # 259,296 characters: 43,200 places an object could start
    start = time.perf_counter()
    with pytest.raises(AnswerError, match="not JSON"):
        parse_answer(loose, ref)
    assert time.perf_counter() - start < 1.0  # was 3 s per reply: each "{" read 900 levels deep


# -- import ----------------------------------------------------------------------------------


def test_lone_surrogate_in_imported_answers_is_stored_repaired_and_the_run_goes_on(cli, tmp_path):
    ids = seed_run(cli.wh, 5, sample=False, images=False)
    bad = {**GOOD, "visual_cause": f"dark fur {LONE} on a dark sofa"}
    text = f"1. DATA ISSUE? ambiguous image, far too dark{LONE}.\n2. VISUAL CAUSE: dark\n3. FIX: brighten"
    lines = [{"example_id": ids[0], "answer": GOOD},
             {"example_id": ids[1], "answer": bad},                    # written as "\ud800" by json.dumps
             {"example_id": ids[2], "text": text},
             {"example_id": ids[3], "answer": {**GOOD, "fix": "more 😀 photos"}},  # a real pair: no repair
             {"example_id": ids[4], "answer": GOOD}]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert "\\ud800" in path.read_text()
    out = cli("hypothesize", "--backend", "import", "--from", str(path))
    assert "5 ok, 0 invalid, 0 error" in out.output
    h = _hyps(cli.wh)
    assert sorted(h) == ids and {r["status"] for r in h.values()} == {"ok"}
    assert _texts(cli.wh, ids[1])["visual_cause"]["text"] == "dark fur \ufffd on a dark sofa"
    assert h[ids[1]]["error"] == ("repaired before storing: 2 lone UTF-16 surrogates (unstorable) replaced by "
                                  "U+FFFD in visual_cause.text, raw_response")
    assert "\ufffd" in _texts(cli.wh, ids[2])["data_quality"]["text"] and "data_quality.text" in h[ids[2]]["error"]
    assert _texts(cli.wh, ids[3])["fix"]["text"] == "more 😀 photos" and h[ids[3]]["error"] is None
    assert [h[i]["error"] for i in (ids[0], ids[4])] == [None, None]
    with cli.wh.connect() as con:
        check_contracts(con)
        assert con.execute("select status from stage_runs where stage = 'hypothesize'").fetchone()[0] == "done"
    # a rerun neither crashes nor asks again; --force stores the same repaired answers
    assert "Nothing to ask" in cli("hypothesize", "--backend", "import", "--from", str(path)).output
    assert "5 ok" in cli("hypothesize", "--backend", "import", "--from", str(path), "--force").output


def test_oversized_imported_answer_is_invalid_with_the_reason(cli, tmp_path):
    ids = seed_run(cli.wh, 3, sample=False, images=False)
    huge = "dark " * 200_000  # 1 MB
    lines = [{"example_id": ids[0], "answer": {**GOOD, "visual_cause": huge}},
             {"example_id": ids[1], "text": f"1. DATA ISSUE? ambiguous image. {huge}\n2. VISUAL CAUSE: x\n3. FIX: y"},
             {"example_id": ids[2], "answer": {**GOOD, "visual_cause": "x" * (MAX_ANSWER_CHARS // 2)}}]
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = cli("hypothesize", "--backend", "import", "--from", str(path))
    assert "1 ok, 2 invalid, 0 error" in out.output
    h = _hyps(cli.wh)
    for eid, line in ((ids[0], 1), (ids[1], 2)):
        assert h[eid]["status"] == "invalid" and len(h[eid]["raw_response"]) == KEPT_CHARS
        assert f"big.jsonl line {line}" in h[eid]["error"] and "over the 262,144-character limit" in h[eid]["error"]
        assert _texts(cli.wh, eid) == {}
    assert h[ids[2]]["status"] == "ok"  # under the limit: stored whole
    assert len(_texts(cli.wh, ids[2])["visual_cause"]["text"]) == MAX_ANSWER_CHARS // 2


# -- model servers -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_lone_surrogate_in_a_server_reply_is_stored_repaired_and_the_run_goes_on(wh, kind):
    ids = seed_run(wh, 6)  # failure 100 + i has true class CLASSES[i]
    srv = OllamaServer() if kind == "ollama" else OpenAIServer()
    with srv:
        # escaped in the JSON answer ("\\ud800" inside the content string)
        srv.script(Reply.valid({**GOOD, "fix": f"crop {LONE} tighter"}), match="True class: airplane")
        # a raw lone surrogate in a reply that is no JSON: repaired, then sent back in the repair turn
        srv.script(Reply.text(f"I cannot tell {LONE}"), Reply.valid(GOOD), match="True class: automobile")
        # raw in a JSON reply (the content itself holds the surrogate)
        srv.script(Reply.text(json.dumps({**GOOD, "visual_cause": f"fur{LONE}"}, ensure_ascii=False)),
                   match="True class: bird")
        where = {"ollama_host": srv.url} if kind == "ollama" else {"base_url": srv.url + "/v1"}
        res = stage.run(wh, backend=kind, concurrency=2, progress=False, backend_options=FAST, **where)
        repair_turns = [b for b in srv.chat_requests if "could not be used" in json.dumps(b)]
    assert (res.ok, res.invalid, res.error, res.stage_status) == (6, 0, 0, "done"), res.errors
    h = _hyps(wh)
    assert sorted(h) == ids
    assert _texts(wh, ids[0])["fix"]["text"] == "crop \ufffd tighter"
    assert h[ids[0]]["error"] == ("repaired before storing: 1 lone UTF-16 surrogate (unstorable) replaced by "
                                  "U+FFFD in fix.text")
    assert h[ids[1]]["attempts"] == 2 and len(repair_turns) == 1
    assert "I cannot tell \ufffd" in json.dumps(repair_turns[0], ensure_ascii=False)  # sent back repaired
    assert h[ids[1]]["error"] == ("repaired before storing: 1 lone UTF-16 surrogate (unstorable) replaced by "
                                  "U+FFFD in the reply")
    assert _texts(wh, ids[2])["visual_cause"]["text"] == "fur\ufffd" and "in the reply" in h[ids[2]]["error"]
    assert [h[i]["error"] for i in ids[3:]] == [None] * 3
    with wh.connect() as con:
        check_contracts(con)


# -- the writer: one bad answer never loses the batch -------------------------------------------------


@register
class _Odd(Hypothesizer):
    """A plug-in backend whose answers for some failures cannot be stored as they are."""

    name = "test-odd-answers"
    needs_image = False

    def answer(self, request, prompt):
        dims, _ = prompt.parse(answer_from_schema(prompt.json_schema(), request.example_id))
        i = request.example_id - 100
        if i == 1:  # attempts do not fit the INTEGER column
            return HypothesisAnswer("ok", dims, raw_response="r", attempts=2**40)
        if i == 2:  # a dimension text that is no string
            return HypothesisAnswer("ok", {**dims, "fix": DimensionAnswer(text=12345)}, raw_response="r")
        if i == 3:  # a lone surrogate in the error of a failed answer
            return HypothesisAnswer("error", error=f"server said {LONE}")
        if i == 4:  # an answer over the limit from a backend that does not check it
            return HypothesisAnswer("ok", {**dims, "fix": DimensionAnswer(text="x" * (MAX_ANSWER_CHARS + 1))},
                                    raw_response="r")
        return HypothesisAnswer("ok", dims, raw_response="fine")


def test_one_unstorable_answer_never_loses_the_batch(wh):
    ids = seed_run(wh, 8)
    res = stage.run(wh, backend="test-odd-answers", progress=False)  # 8 answers: one batch
    h = _hyps(wh)
    assert sorted(h) == ids
    assert [h[i]["status"] for i in ids] == ["ok", "error", "error", "error", "invalid", "ok", "ok", "ok"]
    assert (res.ok, res.invalid, res.error) == (4, 1, 3)
    for i in (ids[1], ids[2]):
        assert h[i]["error"].startswith("the backend's answer could not be stored (") and _texts(wh, i) == {}
    assert h[ids[3]]["error"].startswith("server said \ufffd; repaired before storing: 1 lone")
    assert "over the 262,144-character limit" in h[ids[4]]["error"]
    assert all(len(_texts(wh, i)) == 3 for i in (ids[0], *ids[5:]))
    with wh.connect() as con:
        check_contracts(con)
        assert con.execute("select status from stage_runs where stage = 'hypothesize'").fetchone()[0] == "partial"


# -- cluster names ---------------------------------------------------------------------------------


def test_cluster_names_are_capped_whatever_the_medoid_holds():
    from lens import clustering
    from lens.stages.cluster import cluster_dimension

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    texts = [("word " * 50_000 + f"answer {i}.") for i in range(12)]  # 250,000 characters each
    out = cluster_dimension(X, texts, k_min=2, k_max=3, min_size=2, seed=0, n_init=2, sample_size=100)
    names = [c["name"] for cid, c in out["clusters"].items() if cid >= 0]
    # offline names are short keyphrases (at most 6 words) whatever the answers hold
    assert names and all(len(n) <= clustering.NAME_CHARS and len(n.split()) <= 6 for n in names)
    long_word = "x" * 1_000_000
    assert len(clustering.cap_name(long_word)) == clustering.NAME_CHARS
    assert clustering.cap_name("short\nname  here") == "short name here"
    named = cluster_dimension(X, texts, k_min=2, k_max=3, min_size=2, seed=0, n_init=2, sample_size=100,
                              namer=lambda reps: "y" * 500)
    assert all(len(c["name"]) == clustering.NAME_CHARS for cid, c in named["clusters"].items() if cid >= 0)
