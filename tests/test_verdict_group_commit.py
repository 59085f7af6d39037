"""Verdict saves in the review app are group commits, and a bad record fails alone (issue 17).

Through the app's real save endpoint (``POST /_dash-update-component``, the request the review
page sends on a key press) over a real warehouse:

* a save whose batch holds a record that cannot be stored (a pending verdict for a hypothesis
  a re-run removed, a bad verdict value, a date or text that cannot be converted) stores every
  other record of the batch; only the bad one is reported (``not saved: ...``), and the next
  save works (the bad record does not stay queued);
* several reviewers saving at once while the warehouse is held: every save waits in the app's
  queue; once the warehouse is free, the first writer's commit and one more store them all
  (counted as DuckLake snapshots, one per commit), each reviewer's answer is ``saved:`` and
  each verdict is stored once;
* the same with one reviewer's batch holding a bad record: everybody else's verdicts, that
  reviewer's good one included, are stored, and only that reviewer is told ``not saved``.

The warehouse is held by another process (a DuckDB connection to the file or to the lake's
catalog file) until every save is queued, so the saves overlap whatever the machine's speed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _seed import seed_complete_run

from lens.warehouse import Warehouse

N = 8  # reviewers saving at once
HOLDER = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
GONE = "hypothesis-removed-by-a-rerun"
OUTPUTS = [("verdict-tick", "data"), ("save-status", "children"), ("pending-verdicts", "data"),
           ("retry-interval", "disabled")]


def _body(hyp: str, dims: list[str], reviewer: str, pending: list[dict], verdict: str = "agree") -> dict:
    """The Dash request the review page sends when ``reviewer`` presses a verdict key on ``hyp``."""
    return {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in OUTPUTS) + "..",
        "outputs": [{"id": i, "property": p} for i, p in OUTPUTS],
        "inputs": [{"id": "key-verdict", "property": "data", "value": {"v": verdict, "t": 1}}, [],
                   {"id": "retry-interval", "property": "n_intervals", "value": None}],
        "changedPropIds": ["key-verdict.data"],
        "state": [
            {"id": "review-state", "property": "data", "value": {"run": "demo", "ids": [hyp], "pos": 0, "dims": dims}},
            {"id": "selected-dim", "property": "data", "value": "overall"},
            {"id": "reviewer", "property": "value", "value": reviewer},
            {"id": "note", "property": "value", "value": None},
            {"id": "pending-verdicts", "property": "data", "value": pending},
            {"id": "verdict-tick", "property": "data", "value": 0},
        ],
    }


def _record(vid: str, hyp: str, reviewer: str, dimension: str = "overall", **extra) -> dict:
    """A verdict the browser still holds unsaved (``pending-verdicts``), as the app made it."""
    return {"verdict_id": vid, "hypothesis_id": hyp, "dimension": dimension, "verdict": "agree",
            "reviewer": reviewer, "note": None, "created_at": "2024-05-01T10:00:00", **extra}


def _save(client, body: dict) -> dict:
    resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code == 200, resp.data[:500]
    return {k: v[p] for k, v in resp.get_json()["response"].items() for p in v}


def _stored(wh: Warehouse) -> list[tuple]:
    with wh.connect() as con:
        return con.execute("select verdict_id, reviewer, hypothesis_id from verdicts order by reviewer").fetchall()


def _hold(target: Path) -> subprocess.Popen:
    """Another process holding ``target`` (a DuckDB file) until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _release(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(30)


def _wait_queued(queue, n: int, holder: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``n`` records wait in the app's queue (the saves' requests have all arrived)."""
    deadline = time.monotonic() + timeout
    while len(queue) < n:
        if time.monotonic() > deadline:
            _release(holder)
            raise AssertionError(f"only {len(queue)} of {n} verdicts were queued")
        time.sleep(0.01)


def _save_at_once(app, bodies: list[dict], hold: Path) -> list[dict]:
    """Send ``bodies`` from one thread each while ``hold`` is held; free it once all are queued."""
    queue = app.server.extensions["lens_verdicts"]
    queued = sum(1 + len(b["state"][4]["value"]) for b in bodies)
    replies: list[dict | BaseException] = [None] * len(bodies)

    def send(i: int) -> None:
        try:
            replies[i] = _save(app.server.test_client(), bodies[i])
        except BaseException as exc:  # reported by the assertion below
            replies[i] = exc

    holder = _hold(hold)
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    try:
        for t in threads:
            t.start()
        _wait_queued(queue, queued, holder)
    finally:
        _release(holder)
        for t in threads:
            t.join(120)
    assert all(isinstance(r, dict) for r in replies), replies
    return replies


@pytest.fixture
def seeded(tmp_path):
    wh = Warehouse(tmp_path / "lens.duckdb", lock_timeout=30)
    return wh, seed_complete_run(wh, n_predictions=40, n_failures=N)


BAD = {
    "hypothesis removed by a re-run": ({"hypothesis_id": GONE}, "Unknown hypothesis ids"),
    "bad verdict value": ({"verdict": "maybe"}, "Bad verdict values"),
    "date that is no date": ({"created_at": "not a date"}, "not a date"),
    "text that is no UTF-8": ({"note": "broken \ud800 emoji"}, "surrogates not allowed"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_pending_verdict_fails_alone_and_the_rest_of_the_batch_is_stored(seeded, kind):
    from dashboards.app import create_app

    wh, s = seeded
    dims = list(s.dimensions)
    hyps = s.hypothesis_ids
    change, message = BAD[kind]
    pending = [_record("v-ana", hyps[0], "ana"), _record("v-bad", hyps[1], "bad", **change),
               _record("v-bo", hyps[2], "bo", dimension=dims[0])]
    client = create_app(wh).server.test_client()
    reply = _save(client, _body(hyps[3], dims, "cy", pending))
    assert reply["save-status"].startswith("not saved: ") and message in reply["save-status"], reply
    assert reply["pending-verdicts"] == [] and reply["retry-interval"] is True  # the bad one is not retried
    assert reply["verdict-tick"] == 1  # the good ones were stored: the panel refreshes
    stored = _stored(wh)
    assert [(r, h) for _, r, h in stored] == [("ana", hyps[0]), ("bo", hyps[2]), ("cy", hyps[3])]
    assert {"v-ana", "v-bo"} <= {v for v, _, _ in stored}

    reply = _save(client, _body(hyps[4], dims, "dee", []))  # the bad record is not stuck in the queue
    assert reply["save-status"].startswith("saved: agree on overall"), reply
    assert len(_stored(wh)) == 4


def test_concurrent_saves_are_written_in_fewer_commits_than_saves(tmp_path):
    from dashboards.app import create_app

    catalog = tmp_path / "team.ducklake"
    wh = Warehouse(f"ducklake:{catalog}", lake_data=tmp_path / "data", lock_timeout=30)
    s = seed_complete_run(wh, n_predictions=40, n_failures=N)
    dims = list(s.dimensions)

    def snapshots() -> int:
        with wh.connect() as con:
            return con.execute("select count(*) from ducklake_snapshots('lens_lake')").fetchone()[0]

    app = create_app(wh)
    app.server.test_client().get("/_dash-layout")  # Dash sets itself up on the first request
    before = snapshots()
    bodies = [_body(s.hypothesis_ids[i], dims, f"r{i}", []) for i in range(N)]
    replies = _save_at_once(app, bodies, catalog)
    commits = snapshots() - before

    assert all(r["save-status"].startswith("saved: agree on overall") for r in replies), replies
    assert sorted(r for _, r, _ in _stored(wh)) == [f"r{i}" for i in range(N)]  # each stored once
    # the first writer took what was queued when it got the lock, the next one all the rest
    assert commits <= 2 < N, commits
    assert app.server.extensions["lens_verdicts"].stats["commits"] == commits


def test_concurrent_saves_with_a_bad_record_store_everybody_elses(seeded):
    from dashboards.app import create_app

    wh, s = seeded
    dims = list(s.dimensions)
    hyps = s.hypothesis_ids
    app = create_app(wh)
    app.server.test_client().get("/_dash-layout")
    bodies = [_body(hyps[i], dims, f"r{i}", []) for i in range(N)]
    bodies[3]["state"][4]["value"] = [_record("v-gone", hyps[0], "r3", hypothesis_id=GONE)]
    replies = _save_at_once(app, bodies, wh.path)

    assert replies[3]["save-status"].startswith("not saved: ") and GONE in replies[3]["save-status"], replies[3]
    assert replies[3]["verdict-tick"] == 1  # its good verdict was stored
    others = [r["save-status"] for i, r in enumerate(replies) if i != 3]
    assert all(x.startswith("saved: agree on overall") for x in others), others
    stored = _stored(wh)
    assert sorted(r for _, r, _ in stored) == [f"r{i}" for i in range(N)]  # r3's good verdict too, once each
    assert GONE not in {h for _, _, h in stored}
    assert len(app.server.extensions["lens_verdicts"]) == 0  # nothing left queued
