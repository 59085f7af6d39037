"""Concurrent writers: the review app, `lens hypothesize` and `lens cluster` on one warehouse.

DuckDB lets one process at a time hold the file; Lens keeps every connection short and
retries a held lock (``Warehouse.connect``), so writers take turns. Proven here with real
processes on a real file:

* a reviewer in Chromium presses ``a`` / ``d`` then ``j`` through the queue while a
  ``lens hypothesize`` subprocess (against a slow loopback Ollama-speaking server, so it
  commits batches over several seconds) and a ``lens cluster`` subprocess write: every
  verdict pressed is stored exactly once, the page never shows anything but ``saving…`` /
  ``saved``, no Dash request fails, and both stages complete with full, contract-clean
  results; verdict and hypothesis commit times interleave (it really was concurrent);
* two verdicts pressed while another process holds the file past the app's write timeout
  are both stored, once (the first save's answer is dropped by Dash when the second starts:
  the app keeps its own queue of unsaved verdicts, see dashboards/app.py);
* two ``lens cluster`` and two ``lens hypothesize`` started at once on one warehouse all
  complete; the cluster tables equal, row for row, what a single run computes alone, and
  each hypothesis is stored once;
* a stage that cannot get the file within ``LENS_LOCK_TIMEOUT`` fails with the lock message
  naming the holding process (PID and command line) and writes nothing; within the timeout
  it waits and proceeds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from _seed import seed_complete_run
from _servers import OllamaServer
from contracts import check_contracts

from lens.warehouse import Warehouse

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "LENS_LOCK_TIMEOUT": "60",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CLUSTER = ["cluster", "--run", "demo", "--k-min", "2", "--k-max", "3", "--min-size", "2"]
CLUSTER_TABLES = ("clusters", "cluster_members", "cluster_k_scores")
N = 20  # failures, sampled and answered by the seed; the queue the reviewer walks


def _spawn(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lens", "--warehouse", str(db), *args], env=env or ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=db.parent)


def _finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _hypothesize(db: Path, url: str) -> subprocess.Popen:
    return _spawn(db, "hypothesize", "--run", "demo", "--backend", "ollama", "--ollama-host", url,
                  "--concurrency", "2")


def _seeded(tmp_path: Path) -> Warehouse:
    wh = Warehouse(tmp_path / "lens.duckdb", lock_timeout=30)
    seed_complete_run(wh, n_predictions=3 * N, n_failures=N)
    return wh


def _digest(con, tables) -> dict[str, list[tuple]]:
    """Every row of each table (without its timestamp), sorted: equal digests, equal contents."""
    out = {}
    for t in tables:
        cols = [r[0] for r in con.execute(f"describe {t}").fetchall() if r[0] != "created_at"]
        out[t] = sorted(con.execute(f"select {', '.join(cols)} from {t}").fetchall(), key=repr)
    return out


def _ollama_answers(con) -> tuple[int, int, int]:
    """(ok hypotheses from the ollama backend, their dimension rows, hypothesize stage 'done' rows)."""
    ok = con.execute("select count(*) from hypotheses where backend = 'ollama' and status = 'ok'").fetchone()[0]
    dims = con.execute("select count(*) from hypothesis_dimensions d join hypotheses h using (hypothesis_id)"
                       " where h.backend = 'ollama'").fetchone()[0]
    done = con.execute("select count(*) from stage_runs where run_id = 'demo' and stage = 'hypothesize'"
                       " and status = 'done' and details like '%\"ok\": %'").fetchone()[0]
    return ok, dims, done


# -- the review app while stages write -----------------------------------------------------

RECORDER = """() => {
    window.__lens = {statuses: [], errors: []};
    const seen = () => {
        const s = document.getElementById('save-status');
        const text = s ? s.textContent : '';
        const list = window.__lens.statuses;
        if (text && list[list.length - 1] !== text) list.push(text);
    };
    new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, characterData: true});
    window.addEventListener('error', e => window.__lens.errors.push(String(e.message)));
}"""


@pytest.mark.browser
def test_review_saves_every_verdict_once_while_hypothesize_and_cluster_write(page, live_app, tmp_path):
    from dashboards.app import create_app

    wh = _seeded(tmp_path)
    bad_responses: list[str] = []
    console_errors: list[str] = []
    page.on("response", lambda r: bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    base = live_app(create_app(wh))
    page.goto(f"{base}/review?run=demo&dim=visual_cause")
    page.wait_for_selector("#failure-title")
    page.wait_for_selector(f"#progress:has-text('failure 1 of {N}')")
    page.evaluate(RECORDER)

    pressed: list[tuple[str, str, str]] = []
    with OllamaServer(latency=0.5, slots=2) as srv:
        hyp_proc = _hypothesize(wh.path, srv.url)
        cluster_proc = _spawn(wh.path, *CLUSTER)
        try:
            for i in range(N):
                hyp = page.locator(".failure").get_attribute("data-hypothesis")
                verdict = ("agree", "disagree")[i % 2]
                page.keyboard.press(verdict[0])
                pressed.append((hyp, "visual_cause", verdict))
                if i == N - 1 or (i >= 8 and hyp_proc.poll() is not None and cluster_proc.poll() is not None):
                    break
                page.keyboard.press("j")
                page.wait_for_selector(f"#progress:has-text('failure {i + 2} of {N}')", timeout=60_000)
            hyp_out = _finish(hyp_proc)
            _finish(cluster_proc)
        finally:
            for proc in (hyp_proc, cluster_proc):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        # everything pressed is acknowledged: nothing waits in the browser's retry queue
        page.wait_for_function("""() => {
            const s = document.getElementById('save-status'), saving = document.getElementById('saving');
            return s && s.textContent.startsWith('saved:') && saving.style.display === 'none'
                && JSON.parse(localStorage.getItem('pending-verdicts') || '[]').length === 0; }""", timeout=60_000)
        asked = len(srv.chat_requests)

    recorded = page.evaluate("window.__lens")
    busy = sum(s.startswith("saving… the warehouse is busy") for s in recorded["statuses"])
    print(f"\nreview under load: {len(pressed)} verdicts pressed, {len(recorded['statuses'])} statuses shown"
          f" ({busy} 'busy, retrying'), hypothesize asked {asked}")
    shown_bad = [s for s in recorded["statuses"] if not (s.startswith("saving…") or s.startswith("saved: "))]
    assert not shown_bad and not recorded["errors"], (shown_bad, recorded["errors"])
    assert not bad_responses and not console_errors, (bad_responses, console_errors)

    with wh.connect() as con:
        stored = con.execute("select hypothesis_id, dimension, verdict from verdicts").fetchall()
        assert sorted(stored) == sorted(pressed) and len(pressed) >= 9  # each once, none lost
        assert con.execute("select count(distinct reviewer) from verdicts").fetchone()[0] == 1
        # the stages completed: every failure answered once, clusters rewritten for all 3 dimensions
        assert asked == N, hyp_out[-2000:]
        assert _ollama_answers(con) == (N, 3 * N, 1)
        members = con.execute("select dimension, count(*) from cluster_members where run_id = 'demo'"
                              " group by all order by 1").fetchall()
        assert members == [("data_quality", N), ("fix", N), ("visual_cause", N)]
        (cluster_at,) = con.execute("select finished_at from stage_runs where stage = 'cluster'").fetchone()
        assert cluster_at > datetime(2024, 6, 1)  # rewritten now, not the seed's record
        # it really was concurrent: reviews were stored between the stage's commits
        v_first, v_last = con.execute("select min(created_at), max(created_at) from verdicts").fetchone()
        h_first, h_last = con.execute(
            "select min(created_at), max(created_at) from hypotheses where backend = 'ollama'").fetchone()
        assert v_first < h_last and h_first < v_last, (v_first, v_last, h_first, h_last)
        check_contracts(con, require_rows=("verdicts", "hypotheses", "clusters"))


@pytest.mark.browser
def test_two_verdicts_pressed_while_the_file_is_held_past_the_write_timeout_are_both_stored_once(
        page, live_app, tmp_path):
    """The first save gives up on the lock and queues its verdict; the second press starts a new
    save, and Dash drops the first one's answer. Both verdicts must still be stored, once."""
    from dashboards.app import create_app

    wh = _seeded(tmp_path)
    base = live_app(create_app(Warehouse(wh.path, lock_timeout=1.5)))
    page.goto(f"{base}/review?run=demo&dim=visual_cause")
    page.wait_for_selector("#failure-title")
    page.evaluate(RECORDER)
    hyp = page.locator(".failure").get_attribute("data-hypothesis")
    holder = _hold(wh.path, 4.0)
    try:
        page.keyboard.press("a")
        page.wait_for_timeout(300)
        page.keyboard.press("d")  # changed their mind while the first save still waits
        page.wait_for_selector("#save-status:has-text('saved: ')", timeout=60_000)
    finally:
        holder.kill()
        holder.wait()
    page.wait_for_function("() => JSON.parse(localStorage.getItem('pending-verdicts') || '[]').length === 0")
    recorded = page.evaluate("window.__lens")
    assert all(s.startswith(("saving…", "saved: ")) for s in recorded["statuses"]), recorded
    with wh.connect() as con:
        stored = con.execute("select hypothesis_id, dimension, verdict from verdicts order by created_at").fetchall()
    assert stored == [(hyp, "visual_cause", "agree"), (hyp, "visual_cause", "disagree")]


# -- stages against stages ---------------------------------------------------------------


def test_two_clusters_and_two_hypothesizes_at_once_complete_without_corruption(tmp_path):
    from lens.stages import cluster

    wh = _seeded(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(wh.path, alone / "lens.duckdb")
    ref_wh = Warehouse(alone / "lens.duckdb")
    cluster.run(ref_wh, run_id="demo", k_min=2, k_max=3, min_size=2, progress=False)
    with ref_wh.connect() as con:
        expected = _digest(con, CLUSTER_TABLES)

    with OllamaServer(latency=0.3, slots=4) as srv:
        procs = [_spawn(wh.path, *CLUSTER), _hypothesize(wh.path, srv.url),
                 _spawn(wh.path, *CLUSTER), _hypothesize(wh.path, srv.url)]
        try:
            for p in procs:
                _finish(p)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        asked = len(srv.chat_requests)
    with wh.connect() as con:
        check_contracts(con)
        assert _digest(con, CLUSTER_TABLES) == expected
        ok, dims, done = _ollama_answers(con)
        assert (ok, dims, done) == (N, 3 * N, 1)  # each failure stored once, however often it was asked
        assert N <= asked <= 2 * N
        assert con.execute("select count(*) from hypotheses").fetchone()[0] == 2 * N  # seeded + ollama


HOLDER = "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(float(sys.argv[2]))"


def _hold(db: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_stage_past_the_lock_timeout_names_the_holder_and_writes_nothing_within_it_waits(tmp_path):
    wh = _seeded(tmp_path)
    sample = ["sample", "--run", "demo", "--strategy", "per-class", "--per-class", "1"]
    with duckdb.connect(str(wh.path), read_only=True) as con:
        before = _digest(con, ("samples", "stage_runs"))
    holder = _hold(wh.path, 60)
    try:
        impatient = _spawn(wh.path, *sample, env={**ENV, "LENS_LOCK_TIMEOUT": "1"})
        out, _ = impatient.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert impatient.returncode == 1, out
    assert f"is held by process {holder.pid} (" in out and "LENS_LOCK_TIMEOUT" in out and "Traceback" not in out
    with duckdb.connect(str(wh.path), read_only=True) as con:
        assert _digest(con, ("samples", "stage_runs")) == before

    holder = _hold(wh.path, 4.0)  # started while the file is held: it can only write once the holder is gone
    patient = _spawn(wh.path, *sample, env={**ENV, "LENS_LOCK_TIMEOUT": "60"})
    _finish(patient)
    assert holder.wait(5) == 0
    with wh.connect() as con:
        n_classes = con.execute("select count(distinct label) from failures where run_id = 'demo'").fetchone()[0]
        assert con.execute("select count(*) from samples where run_id = 'demo'").fetchone()[0] == n_classes
        check_contracts(con)
