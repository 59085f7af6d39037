"""`lens hypothesize` against loopback servers speaking Ollama's and OpenAI's HTTP APIs.

Every backend is driven through its real client over real sockets; the warehouse is a
real DuckDB file seeded with a small synthetic run (tests/_hypothesize_helpers.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from lens import prompts
from lens.backends.base import HypothesisAnswer, Hypothesizer, register
from lens.errors import LensError
from lens.measure import decode_evidence
from lens.stages import hypothesize as stage
from lens.warehouse import Warehouse
from tests._hypothesize_helpers import CLASSES, seed_run
from tests._servers import OllamaServer, OpenAIServer, Reply, answer_from_schema, free_port
from tests.contracts import check_contracts

REF = prompts.load("reference")
FAST = {"retry_backoff": 0.01}


def _records(wh, sql, params=()):
    with wh.connect() as con:
        return [SimpleNamespace(**r) for r in con.execute(sql, list(params)).to_arrow_table().to_pylist()]


def _stored(wh, **where):
    clause = " and ".join(f"{k} = ?" for k in where) or "true"
    rows = _records(wh, f"select * from hypotheses where {clause} order by example_id", where.values())
    return {r.example_id: r for r in rows}


def _dims(wh, example_id, backend="ollama"):
    rows = _records(
        wh,
        "select d.dimension, d.tag, d.text, d.summary from hypothesis_dimensions d join hypotheses h"
        " using (hypothesis_id) where h.example_id = ? and h.backend = ? order by d.dimension",
        [example_id, backend],
    )
    return {r.dimension: (r.tag, r.text, r.summary) for r in rows}


def _expected_dims(answer: dict) -> dict:
    dq = answer["data_quality"]
    return {"data_quality": (dq["tag"], dq["reason"], dq["verdict"]),
            "fix": (None, answer["fix"], None), "visual_cause": (None, answer["visual_cause"], None)}


# -- faults: exactly what is stored --------------------------------------------------------


def test_each_scripted_fault_is_stored_exactly(wh):
    ids = seed_run(wh, 9)
    good = answer_from_schema(REF.json_schema(), 0)
    broken = {k: v for k, v in good.items() if k != "fix"}
    three_part = ("1. DATA ISSUE? Yes, annotation issue: the photo shows a ship. The label is wrong.\n"
                  "2. VISUAL CAUSE: water all around\n3. FIX: relabel it")
    with OllamaServer() as srv:
        srv.script(
            Reply.valid(good),                                   # 100 ok
            Reply.text("Sure! {not json"), Reply.text("still not json"),  # 101 invalid after repair
            Reply.json(broken), Reply.valid(good),               # 102 schema violation, repaired
            Reply.slow(2), Reply.slow(2), Reply.slow(2),         # 103 timeouts -> error
            Reply.http(500), Reply.http(500), Reply.http(500),   # 104 HTTP 500 -> error
            Reply.drop(), Reply.drop(), Reply.drop(),            # 105 dropped connection -> error
            Reply.http(500), Reply.drop(), Reply.valid(good),    # 106 recovers on the third attempt
            Reply.text("<think>hmm</think>\n```json\n" + json.dumps(good) + "\n```"),  # 107 ok
            Reply.text(three_part),                              # 108 rescued numbered answer
        )
        res = stage.run(wh, backend="ollama", ollama_host=srv.url, concurrency=1, queue_ahead=0, timeout=0.4,
                        backend_options=FAST, progress=False)  # one at a time: replies in script order
        assert (res.ok, res.invalid, res.error) == (5, 1, 3)
        assert res.stage_status == "partial"
        h = _stored(wh)
        assert sorted(h) == ids
        expect = {100: ("ok", 1), 101: ("invalid", 2), 102: ("ok", 2), 103: ("error", 3), 104: ("error", 3),
                  105: ("error", 3), 106: ("ok", 3), 107: ("ok", 1), 108: ("ok", 1)}
        assert {i: (h[i].status, h[i].attempts) for i in ids} == expect
        assert h[100].raw_response == json.dumps(good) and h[100].error is None
        assert h[101].raw_response == "still not json"
        assert "not JSON" in h[101].error and "after repair" in h[101].error
        assert "timeout after 0.4s" in h[103].error and h[103].latency_s >= 3 * 0.4
        assert "HTTP 500" in h[104].error and "after 3 attempts" in h[104].error
        assert "connection failed" in h[105].error
        assert all(h[i].raw_response is None for i in (103, 104, 105))
        assert h[107].raw_response.startswith("<think>hmm</think>")
        for i in (100, 102, 106, 107):
            assert _dims(wh, i) == _expected_dims(good)
        assert _dims(wh, 108) == {
            "data_quality": ("annotation_issue", "Yes, annotation issue: the photo shows a ship. The label is wrong.",
                             "Annotation issue: the photo shows a ship."),
            "visual_cause": (None, "water all around", None), "fix": (None, "relabel it", None)}
        for i in (101, 103, 104, 105):
            assert _dims(wh, i) == {}
        # the repair request: the first reply as the assistant turn, then the validation error
        repair = srv.chat_requests[4]["messages"]
        assert repair[-2] == {"role": "assistant", "content": json.dumps(broken)}
        assert "'fix' is missing" in repair[-1]["content"]
        # every request: schema as format, think off, low temperature, the image upscaled to 128 px
        first = srv.chat_requests[0]
        assert first["format"] == REF.json_schema() and first["think"] is False
        assert first["options"]["temperature"] == pytest.approx(0.1)
        import base64
        import io

        from PIL import Image

        img = Image.open(io.BytesIO(base64.b64decode(first["messages"][1]["images"][0])))
        assert img.size == (128, 128)
        assert "True class: airplane" in first["messages"][1]["content"]
        assert "Predicted class: cat" in first["messages"][1]["content"]

        # resume: nothing to ask; --retry-errors asks exactly the four failed ones again
        n = len(srv.chat_requests)
        again = stage.run(wh, backend="ollama", ollama_host=srv.url, progress=False)
        assert (again.requested, again.skipped, len(srv.chat_requests)) == (0, 9, n)
        retry = stage.run(wh, backend="ollama", ollama_host=srv.url, retry_errors=True, progress=False)
        assert retry.requested == 4 and retry.ok == 4 and retry.stage_status == "done"
        assert len(srv.chat_requests) == n + 4
        h2 = _stored(wh)
        assert all(r.status == "ok" for r in h2.values())
        assert all(h2[i].created_at == h[i].created_at for i in (100, 102, 106, 107, 108))
        forced = stage.run(wh, backend="ollama", ollama_host=srv.url, force=True, limit=2, progress=False)
        assert forced.requested == 2 and len(srv.chat_requests) == n + 6
    with wh.connect() as con:
        counts = check_contracts(con)
    assert counts["hypotheses"] == 9 and counts["hypothesis_dimensions"] == 27
    status = json.loads(wh.query("select details from stage_runs where stage = 'hypothesize'").details[0])
    assert status["stored"] == {"ok": 9}


def test_faults_under_concurrency_are_stored_per_failure(wh):
    """The concurrent path (prepared images, N workers): replies scripted by the failure's class."""
    seed_run(wh, 5)
    with wh.transaction() as con:  # a stored image that cannot be decoded
        con.execute("update failures set image_png = ? where example_id = 104", [b"not a png"])
    with OllamaServer(latency=0.05) as srv:
        srv.script(Reply.text("nope"), Reply.text("nope again"), match="True class: automobile")
        srv.script(*[Reply.http(503)] * 3, match="True class: bird")
        srv.script(Reply.drop(), match="True class: cat")
        res = stage.run(wh, backend="ollama", ollama_host=srv.url, concurrency=4, queue_ahead=0,
                        backend_options=FAST, progress=False)
        assert srv.max_active == 4
    h = _stored(wh)
    assert {i: (h[i].status, h[i].attempts) for i in h} == {
        100: ("ok", 1), 101: ("invalid", 2), 102: ("error", 3), 103: ("ok", 2), 104: ("error", 0)}
    assert "HTTP 503" in h[102].error
    assert h[104].error.startswith("cannot read the stored image")
    assert (res.ok, res.invalid, res.error) == (2, 1, 2)


def test_nothing_succeeded_exits_non_zero_with_summary(cli):
    seed_run(cli.wh, 2)
    with OllamaServer(default=Reply.text("no idea")) as srv:
        out = cli("hypothesize", "--backend", "ollama", "--ollama-host", srv.url, expect=1)
    assert "0 ok, 2 invalid, 0 error" in out.output
    assert "No answer succeeded" in out.output
    assert _stored(cli.wh)[100].status == "invalid"


# -- availability checks and backend choice -----------------------------------------------


def test_clear_errors_for_unreachable_server_missing_model_and_blind_model(cli):
    seed_run(cli.wh, 1)
    dead = f"http://127.0.0.1:{free_port()}"
    out = cli("hypothesize", "--backend", "ollama", "--ollama-host", dead, expect=1)
    assert f"Ollama is not reachable at {dead}: start it with `ollama serve`" in out.output
    assert "--backend measured" in out.output
    with OllamaServer(models={"llava:7b": ["completion", "vision"], "llama3:8b": ["completion"]}) as srv:
        out = cli("hypothesize", "--backend", "ollama", "--ollama-host", srv.url, expect=1)
        assert "run `ollama pull qwen3-vl:8b`" in out.output
        out = cli("hypothesize", "--backend", "ollama", "--ollama-host", srv.url, "--model", "llama3:8b", expect=1)
        assert "cannot see images" in out.output
        out = cli("hypothesize", "--backend", "ollama", "--ollama-host", srv.url, "--model", "llava:7b")
        assert "1 ok" in out.output
        assert srv.chat_requests[0]["model"] == "llava:7b"
    assert _stored(cli.wh)[100].model == "llava:7b"


def test_an_unreachable_server_leaves_no_new_warehouse_file(tmp_path):
    from click.testing import CliRunner

    from lens.cli import cli as lens_cli

    new = tmp_path / "typo.duckdb"
    dead = f"http://127.0.0.1:{free_port()}"
    out = CliRunner().invoke(lens_cli, ["--warehouse", str(new), "hypothesize", "--backend", "ollama",
                                        "--ollama-host", dead])
    assert out.exit_code == 1 and f"Ollama is not reachable at {dead}" in out.output
    assert not new.exists()


def test_auto_uses_ollama_when_it_has_the_model(cli):
    seed_run(cli.wh, 2, sample=False)
    with OllamaServer() as srv:
        out = cli("hypothesize", "--ollama-host", srv.url, expect=1)
        assert "run `lens sample --run r1` first" in out.output
    seed_run(cli.wh, 2)
    with OllamaServer() as srv:
        out = cli("hypothesize", "--ollama-host", srv.url)
        assert f"Backend: ollama (Ollama at {srv.url} has qwen3-vl:8b)" in out.output
    assert {r.backend for r in _stored(cli.wh).values()} == {"ollama"}


def test_auto_without_ollama_falls_back_to_measured_and_says_why():
    dead = f"http://127.0.0.1:{free_port()}"
    name, why = stage.choose_backend(ollama_host=dead)
    assert name == "measured" and f"not reachable at {dead}" in why
    with OllamaServer(models={"other:1b": ["completion", "vision"]}) as srv:
        try:
            name, why = stage.choose_backend(ollama_host=srv.url)
            assert name == "measured" and "`ollama pull qwen3-vl:8b`" in why
        except LensError as exc:
            assert "`ollama pull qwen3-vl:8b`" in str(exc)


# -- durability and concurrency ---------------------------------------------------------------


def test_resume_after_sigkill_loses_nothing_stored_and_duplicates_nothing(cli, tmp_path):
    wh = cli.wh
    ids = seed_run(wh, 40)
    with OllamaServer(latency=0.2, slots=2) as srv:
        env = {**os.environ, "LENS_LOCK_TIMEOUT": "60"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "lens", "--warehouse", str(wh.path), "hypothesize", "--backend", "ollama",
             "--ollama-host", srv.url, "--concurrency", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        reader = Warehouse(wh.path, lock_timeout=30)
        stored = 0
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
                with reader.connect(read_only=True) as con:
                    stored = con.execute("select count(*) from hypotheses").fetchone()[0]
                if stored >= 1:
                    break
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        before = {(r.hypothesis_id, r.created_at, r.raw_response) for r in _stored(wh).values()}
        assert 1 <= len(before) < 40
        assert wh.query("select count(*) n from hypothesis_dimensions").n[0] == 3 * len(before)
        asked_before = len(srv.chat_requests)
        out = cli("hypothesize", "--backend", "ollama", "--ollama-host", srv.url, "--concurrency", "4")
        # only what was not stored is asked again; everything stored is still there, unchanged
        assert len(srv.chat_requests) - asked_before == 40 - len(before)
        assert f"({len(before)} already answered)" in out.output
    after = _stored(wh)
    assert sorted(after) == ids and all(r.status == "ok" for r in after.values())
    assert before <= {(r.hypothesis_id, r.created_at, r.raw_response) for r in after.values()}
    with wh.connect() as con:
        counts = check_contracts(con)
    assert counts["hypotheses"] == 40 and counts["hypothesis_dimensions"] == 120


def test_concurrency_8_gives_at_least_6x_the_throughput_of_1(tmp_path):
    """Throughput over the answering window (first request in to last reply out), so the fixed
    start-up (client, warehouse read) and the final commit do not blur the ratio."""
    rates = {}
    for c in (1, 8):
        wh = Warehouse(tmp_path / f"c{c}.duckdb")
        seed_run(wh, 24)
        with OllamaServer(latency=0.2, slots=8) as srv:
            res = stage.run(wh, backend="ollama", ollama_host=srv.url, concurrency=c, queue_ahead=0, progress=False)
            assert res.ok == 24 and srv.max_active == c
            rates[c] = res.ok / srv.busy_seconds
        assert len(_stored(wh)) == 24
    assert rates[8] >= 6 * rates[1], rates


# -- the openai backend -------------------------------------------------------------------------


def test_openai_backend_against_a_loopback_server(cli, monkeypatch):
    seed_run(cli.wh, 3)
    monkeypatch.setenv("LENS_TEST_KEY", "sk-loopback")
    with OpenAIServer(models=["served-vl"]) as srv:
        out = cli("hypothesize", "--backend", "openai", "--base-url", srv.url + "/v1",
                  "--api-key-env", "LENS_TEST_KEY", "--image-size", "64")
        assert "3 ok" in out.output
        body = srv.chat_requests[0]
        assert body["model"] == "served-vl"  # the first model the server lists
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == REF.json_schema()
        image = body["messages"][1]["content"][1]["image_url"]["url"]
        assert image.startswith("data:image/png;base64,")
        chats = [r for r in srv.requests if r["path"] == "/v1/chat/completions"]
        assert {r["headers"].get("authorization") for r in chats} == {"Bearer sk-loopback"}
        served = {json.loads(c)["visual_cause"] for _, c in srv.served}
        # the model is known only once the server is checked (read meanwhile): a rerun finds every answer
        again = cli("hypothesize", "--backend", "openai", "--base-url", srv.url + "/v1", "--api-key-env",
                    "LENS_TEST_KEY")
        assert "Nothing to ask" in again.output and len(srv.chat_requests) == 3
    h = _stored(cli.wh, backend="openai")
    assert {r.model for r in h.values()} == {"served-vl"} and {r.status for r in h.values()} == {"ok"}
    assert {_dims(cli.wh, i, "openai")["visual_cause"][1] for i in h} == served
    out = cli("hypothesize", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--api-key-env",
              "LENS_NO_SUCH_VAR", expect=1)
    assert "LENS_NO_SUCH_VAR" in out.output


def test_openai_falls_back_to_plain_json_and_remembers(wh):
    seed_run(wh, 4)
    grounded = prompts.load("grounded")
    with OpenAIServer(supports_json_schema=False, supports_json_object=False, schema=grounded.json_schema()) as srv:
        res = stage.run(wh, backend="openai", base_url=srv.url + "/v1", model="m", prompt="grounded",
                        concurrency=1, queue_ahead=0, progress=False)
        kinds = [(b.get("response_format") or {}).get("type") for b in srv.chat_requests]
    assert res.ok == 4
    assert kinds == ["json_schema", "json_object", None, None, None, None]
    h = _stored(wh, backend="openai")
    assert [h[i].description for i in sorted(h)] == [f"description {n}" for n in range(1, 5)]
    assert all(r.attempts == 1 for r in h.values())  # the format downgrade is not a retry


# -- import ------------------------------------------------------------------------------------------


def test_import_structured_and_raw_three_part_answers(cli, tmp_path):
    ids = seed_run(cli.wh, 4, sample=False, images=False)
    structured = {"data_quality": {"tag": "ambiguous_image", "reason": "dark and tiny",
                                   "verdict": "The object is too small and dark to read."},
                  "visual_cause": "dark fur", "fix": "brightness augmentation"}
    lines = [
        {"example_id": ids[0], "answer": structured, "model": "gpt-x"},
        {"example_id": ids[1], "model": "gpt-x",
         "text": "1. DATA ISSUE? No, model error: the ship is clear.\n2. VISUAL CAUSE: blue water\n3. FIX: more ships"},
        {"example_id": ids[2],
         "answer": {**structured, "data_quality": {"tag": "blurry", "reason": "r", "verdict": "v."}}},
        {"example_id": 5, "answer": structured},  # a correct prediction, not a failure
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("# answers from elsewhere\n" + "\n".join(json.dumps(x) for x in lines) + "\n\n")
    out = cli("hypothesize", "--backend", "import", "--from", str(path))
    assert "2 ok, 1 invalid, 0 error" in out.output
    assert "Skipped 1 lines whose example_id is no failure of run 'r1': 5" in out.output
    h = _stored(cli.wh, backend="import")
    assert sorted(h) == ids[:3]  # ids[3] has no line: not asked
    assert {r.model for r in h.values()} == {"gpt-x"}
    assert _dims(cli.wh, ids[0], "import") == _expected_dims(structured)
    assert _dims(cli.wh, ids[1], "import") == {
        "data_quality": ("model_error", "No, model error: the ship is clear.", "Model error: the ship is clear."),
        "visual_cause": (None, "blue water", None), "fix": (None, "more ships", None)}
    assert h[ids[2]].status == "invalid" and "line 4" in h[ids[2]].error and "blurry" in h[ids[2]].error
    assert json.loads(h[ids[0]].raw_response) == structured
    # a rerun imports nothing new; bad files stop before anything is written
    out = cli("hypothesize", "--backend", "import", "--from", str(path))
    assert "Nothing to ask" in out.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"example_id": ids[0], "text": "x"}) + "\n{oops\n")
    assert "line 2: not JSON" in cli("hypothesize", "--backend", "import", "--from", str(bad), expect=1).output
    text = "1. DATA ISSUE? ambiguous image, far too dark.\n2. VISUAL CAUSE: dark\n3. FIX: brighten"
    bad.write_text("\n".join(json.dumps({"example_id": ids[i], "text": text, "model": m}) for i, m in enumerate("ab")))
    assert "several models" in cli("hypothesize", "--backend", "import", "--from", str(bad), expect=1).output
    out = cli("hypothesize", "--backend", "import", "--from", str(bad), "--model", "b", "--run", "r1")
    assert "1 ok, 0 invalid" in out.output  # only the line of model b
    assert [(r.example_id, r.status) for r in _records(cli.wh, "select * from hypotheses where model = 'b'")] == [
        (ids[1], "ok")]


# -- evidence, claims, the grounded prompt -------------------------------------------------------------


@register
class _EvidenceOnly(Hypothesizer):
    """A plug-in backend that needs evidence (like 'measured'): answers from it."""

    name = "test-evidence-only"
    needs_image = False
    needs_evidence = True

    def answer(self, request, prompt):
        dims, _ = prompt.parse(answer_from_schema(prompt.json_schema(), request.example_id))
        return HypothesisAnswer("ok", dims, raw_response=f"brightness {request.evidence['brightness']:.1f}")


def test_backend_that_needs_evidence_says_run_lens_evidence(wh, tmp_path):
    seed_run(wh, 2)
    with pytest.raises(LensError, match=r"run `lens evidence --run r1` first"):
        stage.run(wh, backend="test-evidence-only", progress=False)
    wh2 = Warehouse(tmp_path / "ev.duckdb")
    seed_run(wh2, 2, evidence=True)
    res = stage.run(wh2, backend="test-evidence-only", progress=False)
    assert res.ok == 2
    h = _stored(wh2)
    assert {r.raw_response for r in h.values()} == {"brightness 0.1"}


def test_grounded_prompt_gets_facts_stores_description_and_claims(wh):
    from lens import grounding

    seed_run(wh, 3, evidence=True)
    grounded = prompts.load("grounded")
    claimy = answer_from_schema(grounded.json_schema(), 0)
    claimy["description"] = "A very dark photo: a small animal on a blue background, cut off at the edge."
    claimy["visual_cause"] = "the dark, low-contrast image and the blue background"
    with OllamaServer() as srv:
        srv.script(Reply.valid(), Reply.valid(claimy), Reply.valid())
        res = stage.run(wh, backend="ollama", ollama_host=srv.url, prompt="grounded", concurrency=1, queue_ahead=0,
                        progress=False)
        user = srv.chat_requests[0]["messages"][1]["content"]
    assert res.ok == 3
    h = _stored(wh)
    assert [h[i].description for i in (100, 102)] == ["description 1", "description 3"]
    assert h[101].description == claimy["description"]
    assert {r.prompt_name for r in h.values()} == {"grounded"}
    assert {r.prompt_sha256 for r in h.values()} == {grounded.sha256}
    ev = decode_evidence(vars(_records(wh, "select * from evidence where example_id = 100")[0]))
    facts = grounding.format_facts(ev, CLASSES)
    assert facts and facts.strip() in user
    expected = []
    for i in sorted(h):
        e = decode_evidence(vars(_records(wh, "select * from evidence where example_id = ?", [i])[0]))
        dims, desc = grounded.parse(json.loads(h[i].raw_response))
        expected += [(h[i].hypothesis_id, c.dimension, c.claim_index, c.kind, c.claim, c.verdict, c.fact)
                     for c in grounding.check_answer(dims, desc, e, CLASSES)]
    assert len({c[3] for c in expected}) >= 2  # e.g. dark, background_colour
    stored = [(c.hypothesis_id, c.dimension, c.claim_index, c.kind, c.claim, c.verdict, c.fact)
              for c in _records(wh, "select * from claims")]
    assert sorted(stored, key=str) == sorted(expected, key=str) and res.claims == len(expected)
    with wh.connect() as con:
        check_contracts(con)


def test_a_missing_client_library_says_how_to_install_it():
    from lens.backends.chat import client_library

    with pytest.raises(LensError, match=r"'lens_no_such_client' package is not installed.*pip install lens_no_such_client"):
        client_library("lens_no_such_client")
