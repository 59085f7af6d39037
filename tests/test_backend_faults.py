"""Backend faults during `lens hypothesize`, over real sockets (tests/_servers.py).

Each fault is injected by the loopback server and must end as the design says
(lens/backends/chat.py): transport faults (timeouts, truncated bodies, a body that is not
the API's JSON, a dead server) are retried 3 times, then stored as ``error`` with the
reason; an oversized reply is stored ``invalid`` without a repair request; a normal
envelope under a wrong Content-Type header is accepted. The faulty requests never stop
the run: every other failure is answered ``ok``, and ``--retry-errors`` later answers the
faulty ones without touching what was stored.
"""

from __future__ import annotations

import threading
import time

import pytest

from lens.backends.chat import KEPT_CHARS, MAX_REPLY_CHARS
from lens.stages import hypothesize as stage
from tests._hypothesize_helpers import CLASSES, seed_run
from tests._servers import OllamaServer, OpenAIServer, Reply
from tests.contracts import check_contracts

FAST = {"retry_backoff": 0.01}
BIG = "x" * 5_000_000  # 5 MB of text: a runaway generation


def _rows(wh):
    df = wh.query("select * from hypotheses order by example_id")
    return {int(r.example_id): r for r in df.itertuples()}


def _server(kind, **kw):
    return OllamaServer(**kw) if kind == "ollama" else OpenAIServer(**kw)


def _where(kind, srv):
    return {"ollama_host": srv.url} if kind == "ollama" else {"base_url": srv.url + "/v1"}


def _asked(srv, cls):
    """Chat requests sent for the failure whose true class is ``cls``."""
    needle = f"True class: {cls}"
    return [b for b in srv.chat_requests if needle in str(b)]


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_each_fault_is_recorded_retried_and_the_rest_completes(wh, kind):
    ids = seed_run(wh, 10)  # failure 100 + i has true class CLASSES[i]
    html = "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
    faults = {  # true class -> (replies, expected (status, attempts), words in the error)
        "airplane": ([Reply.text(BIG)], ("invalid", 1), ["5,000,000 characters", "no repair"]),
        "automobile": ([Reply.truncated()] * 3, ("error", 3), ["connection failed", "complete message body",
                                                                "after 3 attempts"]),
        "bird": ([Reply.truncated(), Reply.valid()], ("ok", 2), []),
        "cat": ([Reply.raw(html)] * 3, ("error", 3), ["not", "JSON", "502 Bad Gateway", "after 3 attempts"]),
        "deer": ([Reply.valid(content_type="text/html")], ("ok", 1), []),
        "dog": ([Reply.slow(1.0)] * 3, ("error", 3), ["timeout after 0.3s", "after 3 attempts"]),
        "frog": ([Reply.slow(1.0), Reply.valid()], ("ok", 2), []),
        "horse": ([Reply.text("not json"), Reply.text(BIG)], ("invalid", 2), ["repair reply", "5,000,000"]),
    }  # ship and truck: no fault
    with _server(kind) as srv:
        for cls, (replies, _, _) in faults.items():
            srv.script(*replies, match=f"True class: {cls}")
        res = stage.run(wh, backend=kind, concurrency=3, timeout=0.3, backend_options=FAST, progress=False,
                        **_where(kind, srv))
        rows = _rows(wh)
        assert sorted(rows) == ids
        for i, cls in enumerate(CLASSES):
            r = rows[100 + i]
            want, words = (faults[cls][1], faults[cls][2]) if cls in faults else (("ok", 1), [])
            assert (r.status, r.attempts) == want, (cls, r.status, r.attempts, r.error)
            for w in words:
                assert w in r.error, (cls, w, r.error)
            # the requests the server saw match the attempts stored (oversized: no repair turn)
            assert len(_asked(srv, cls)) == r.attempts, cls
        assert (res.ok, res.invalid, res.error) == (5, 2, 3)
        assert res.stage_status == "partial"
        # oversized replies: only a prefix is kept, never sent back to the server
        assert rows[100].raw_response == BIG[:KEPT_CHARS] and len(BIG) > MAX_REPLY_CHARS
        assert max(len(str(b)) for b in srv.chat_requests) < 200_000
        # every ok row holds exactly what the server sent for it
        served = {c for _, c in srv.served}
        assert all(rows[i].raw_response in served for i in rows if rows[i].status == "ok")
        ok_before = {i: (r.created_at, r.raw_response) for i, r in rows.items() if r.status == "ok"}

        # the faults are gone: --retry-errors answers exactly the five faulty ones
        srv.reset()
        again = stage.run(wh, backend=kind, retry_errors=True, backend_options=FAST, progress=False,
                          **_where(kind, srv))
        assert (again.requested, again.ok, again.stage_status) == (5, 5, "done")
        assert len(srv.chat_requests) == 5
    after = _rows(wh)
    assert all(r.status == "ok" for r in after.values())
    assert {i: (after[i].created_at, after[i].raw_response) for i in ok_before} == ok_before
    with wh.connect() as con:
        counts = check_contracts(con)
    assert counts["hypotheses"] == 10 and counts["hypothesis_dimensions"] == 30


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_server_dies_mid_run_and_comes_back(wh, kind):
    """The server is killed (listener and open connections) after some answers, and a new one
    comes back on the same port 1.5 s later, while the stage keeps running."""
    n = 30
    ids = seed_run(wh, n)
    first = _server(kind, latency=0.05)
    first.start()
    port = first.port
    box: dict = {}

    def work():
        try:
            box["res"] = stage.run(wh, backend=kind, concurrency=2, timeout=5, progress=False,
                                   backend_options={"retry_backoff": 0.2}, **_where(kind, first))
        except BaseException as exc:  # surfaced below
            box["exc"] = exc

    t = threading.Thread(target=work)
    t.start()
    deadline = time.monotonic() + 30
    while len(first.served) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.kill()
    killed_at = time.monotonic()
    time.sleep(1.5)
    second = _server(kind, latency=0.05, port=port)
    second.start()
    try:
        t.join(60)
        assert not t.is_alive(), "the stage did not finish"
        assert "exc" not in box, box.get("exc")
        res = box["res"]
        rows = _rows(wh)
        assert sorted(rows) == ids
        errors = [r for r in rows.values() if r.status == "error"]
        oks = [r for r in rows.values() if r.status == "ok"]
        assert len(errors) + len(oks) == n
        # while it was down: connection failures, retried 3 times each
        assert len(errors) >= 2
        for r in errors:
            assert r.attempts == 3 and "connection failed" in r.error and "after 3 attempts" in r.error
        # what each server answered is stored as it was sent; the second one answered the rest
        served = {c for _, c in first.served} | {c for _, c in second.served}
        assert all(r.raw_response in served for r in oks)
        assert len(second.served) >= 5 and res.ok == len(oks)
        assert min(r.created_at for r in errors) < max(r.created_at for r in oks)
        assert time.monotonic() - killed_at > 1.5
        ok_before = {r.example_id: (r.created_at, r.raw_response) for r in oks}

        again = stage.run(wh, backend=kind, retry_errors=True, backend_options=FAST, progress=False,
                          **_where(kind, second))
        assert again.requested == len(errors) and again.ok == len(errors) and again.stage_status == "done"
    finally:
        second.close()
    after = _rows(wh)
    assert all(r.status == "ok" for r in after.values())
    assert {i: (after[i].created_at, after[i].raw_response) for i in ok_before} == ok_before
    with wh.connect() as con:
        check_contracts(con)
