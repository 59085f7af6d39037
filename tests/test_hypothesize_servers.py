"""Hypotheses over several model servers (issue 17, point 5).

Three loopback Ollama-speaking servers (tests/_servers.py) with their own slot counts; Lens
keeps each one's slots full, asks each failure once while every server lives, and when one
is killed mid-run moves its requests to the others and records why. Same for OpenAI-compatible
servers through --base-url.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from _hypothesize_helpers import seed_run
from _servers import OllamaServer, OpenAIServer

from lens.backends.pool import parse_servers
from lens.errors import LensError
from lens.stages import hypothesize as stage


def _answers(wh) -> dict[int, tuple[str, str | None]]:
    with wh.connect() as con:
        rows = con.execute("select example_id, status, error from hypotheses").fetchall()
    assert len(rows) == len({r[0] for r in rows}), "an answer stored twice"
    return {r[0]: (r[1], r[2]) for r in rows}


def test_server_lists_parse_with_their_slots():
    assert parse_servers(["http://a:1=8,b:2", " c:3=2 "], 4) == [("http://a:1", 8), ("b:2", 4), ("c:3", 2)]
    assert parse_servers("x", 3) == [("x", 3)]
    for bad, words in ((["a=0"], "at least 1"), (["a,a=2"], "named twice"), (["a=b"], "URL=N")):
        with pytest.raises(LensError, match=words):
            parse_servers(bad, 1)


def test_queue_ahead_keeps_one_request_waiting_at_the_server_and_zero_sends_exactly_the_slots(cli):
    seed_run(cli.wh, 12)
    for ahead, (active, waiting) in ((None, (3, 1)), (0, (2, 0)), (2, (4, 2))):
        with OllamaServer(latency=0.1, slots=2) as srv:
            flag = [] if ahead is None else ["--queue-ahead", str(ahead), "--force"]
            out = cli("hypothesize", "--backend", "ollama", "--ollama-host", srv.url, "--concurrency", "2",
                      *flag).output
            assert "12 ok" in out and len(srv.chat_requests) == 12  # none asked twice
            assert srv.max_serving == 2 and (srv.max_active, srv.max_waiting) == (active, waiting), ahead
        details = json.loads(cli.wh.query("select details from stage_runs where stage = 'hypothesize'").details[0])
        assert details["queue_ahead"] == (1 if ahead is None else ahead)
    # a backend without a server runs exactly --concurrency at once
    from lens.backends import pool, registry

    measured = registry.get("measured")
    lanes = pool.lanes(measured, registry.options_for(measured, {}), model=None, concurrency=3, queue_ahead=1)
    assert [(lane.slots, lane.ahead) for lane in lanes.lanes] == [(3, 0)]


def test_three_servers_keep_their_slots_full_and_ask_each_failure_once(wh, cli):
    n = 36
    ids = seed_run(wh, n)
    servers = [OllamaServer(latency=0.15, slots=s).start() for s in (4, 2, 1)]
    try:
        hosts = f"{servers[0].url}=4,{servers[1].url}=2"
        out = cli("hypothesize", "--backend", "ollama", "--ollama-host", hosts, "--ollama-host",
                  f"{servers[2].url}=1", "--timeout", "10").output
        assert f"{n} asked" in out and f"{n} ok" in out
        served = [len(s.chat_requests) for s in servers]
        assert sum(served) == n  # each failure asked once, no request sent twice
        # every server's slots were used and one more request waited in its queue (--queue-ahead 1),
        # so a slot that freed started the next request at once
        assert [s.max_serving for s in servers] == [4, 2, 1]
        assert [s.max_active for s in servers] == [5, 3, 2] and all(s.max_waiting == 1 for s in servers)
        assert served[0] > served[1] > served[2] > 0  # work follows capacity
        answers = _answers(wh)
        assert sorted(answers) == ids and all(st == "ok" and err is None for st, err in answers.values())
        with wh.connect() as con:
            details = json.loads(con.execute("select details from stage_runs where stage = 'hypothesize'")
                                 .fetchone()[0])
        assert [(s["url"], s["slots"], s["answered"]) for s in details["servers"]] == [
            (srv.url, slots, k) for srv, slots, k in zip(servers, (4, 2, 1), served)]
    finally:
        for s in servers:
            s.close()


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_a_server_killed_mid_run_loses_no_answer(wh, kind):
    n = 40
    ids = seed_run(wh, n)
    make = OllamaServer if kind == "ollama" else OpenAIServer
    servers = [make(latency=0.1, slots=3).start() for _ in range(3)]
    urls = [s.url if kind == "ollama" else s.url + "/v1" for s in servers]  # (a killed server has no url)
    where = ",".join(f"{u}=3" for u in urls)
    box: dict = {}

    def work():
        try:
            box["res"] = stage.run(wh, backend=kind, timeout=5, progress=False,
                                   backend_options={"retry_backoff": 0.1},
                                   **({"ollama_host": where} if kind == "ollama" else {"base_url": where}))
        except BaseException as exc:  # surfaced below
            box["exc"] = exc

    t = threading.Thread(target=work)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while len(servers[1].served) < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        servers[1].kill()  # listener and open connections: requests in flight fail
        t.join(60)
        assert not t.is_alive() and "exc" not in box, box.get("exc")
        res = box["res"]
        answers = _answers(wh)
        assert sorted(answers) == ids and all(st == "ok" for st, _ in answers.values()), answers
        assert res.ok == n
        moved = {e: err for e, (_, err) in answers.items() if err}
        assert moved, "the killed server had requests in flight"
        for err in moved.values():  # each moved answer says where it failed, why, and who answered
            assert f"failed on {urls[1]}" in err and "answered by" in err
        assert any("left the pool" in line and urls[1] in line for line in res.errors)
        asked_ok = sum(len(s.served) for s in servers)
        assert asked_ok == n  # every failure answered exactly once
    finally:
        for s in servers:
            s.close()


def test_when_every_server_dies_the_rest_is_stored_as_error_with_the_reason(wh):
    n = 12
    seed_run(wh, n)
    servers = [OllamaServer(latency=0.1, slots=1).start() for _ in range(2)]
    where = ",".join(s.url for s in servers)
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(res=stage.run(
        wh, backend="ollama", concurrency=1, timeout=3, progress=False, ollama_host=where,
        backend_options={"retry_backoff": 0.05, "retries": 1})))
    t.start()
    deadline = time.monotonic() + 30
    while sum(len(s.served) for s in servers) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    for s in servers:
        s.kill()
    t.join(60)
    assert not t.is_alive()
    answers = _answers(wh)
    assert len(answers) == n  # every failure has a stored answer: ok, or error with the reason
    errors = [err for st, err in answers.values() if st == "error"]
    assert errors and all("left the pool" in e or "failed on" in e for e in errors), errors
