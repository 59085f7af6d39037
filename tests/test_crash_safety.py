"""SIGKILL each stage at a seeded random point while it works; nothing half-written survives.

Every stage runs as a real ``python -m lens`` subprocess on a real DuckDB file and is killed
with SIGKILL (no cleanup of any kind runs) at a point drawn from a seeded RNG within the
stage's measured duration (or after a seeded number of committed answers, for the
resumable hypothesize). Then:

* the warehouse opens cleanly and ``check_contracts`` passes (no duplicate or null key);
* all-or-nothing stages (train, evidence, embed, cluster) hold either the old complete
  result, byte for byte (a digest of every row), or the new one complete: never a mix;
* resumable hypothesize keeps every answer committed before the kill, unchanged;
* the rerun completes, and asks again only for what was not stored.

Cases stay tiny (train: 300 images of 16 px, 1 epoch; synthetic runs for the rest) so the
file runs in about a minute on two shared cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from lens.warehouse import Warehouse
from tests._cluster_helpers import GROUPS, planted
from tests._cluster_helpers import seed_run as seed_texts
from tests._hypothesize_helpers import seed_run as seed_failures
from tests._servers import OllamaServer
from tests.contracts import check_contracts

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "LENS_LOCK_TIMEOUT": "60",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TRAIN = ["--no-pretrained", "--limit-train", "300", "--limit-test", "100", "--epochs", "1", "--batch-size", "50",
         "--image-size", "16", "--run", "t"]
EVIDENCE = ["evidence", "--run", "t", "--no-saliency", "--stats-limit", "300", "--force"]
CLUSTER = ["cluster", "--k-min", "3", "--k-max", "8", "--min-size", "3"]
TRAIN_TABLES = ("runs", "classes", "predictions", "failures", "training_log", "features", "stage_runs")
KILLS: list[dict] = []  # what every kill hit, for the summary at the end of the module


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _kill_log():
    """Print where each kill landed (visible with ``pytest -s``)."""
    yield
    for k in KILLS:
        print(f"\nkill {k['stage']}: after {k['after_s']}s, {'while running' if k['killed'] else 'it had finished'}"
              f"; found {k.get('found', '?')}")


def _found(what: str) -> None:
    KILLS[-1]["found"] = what


def _spawn(db: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log or os.devnull, "w")
    return subprocess.Popen([sys.executable, "-m", "lens", "--warehouse", str(db), *args], env=ENV,
                            stdout=out, stderr=subprocess.STDOUT, cwd=db.parent)


def _lens(db: Path, *args: str) -> float:
    """Run a command to completion; return its wall time."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "lens", "--warehouse", str(db), *args], env=ENV,
                         capture_output=True, text=True, timeout=300, cwd=db.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return time.monotonic() - t0


def _kill_after(proc: subprocess.Popen, seconds: float, stage: str) -> bool:
    """SIGKILL ``proc`` ``seconds`` after now (True), unless it finished first (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)  # not reaped yet, so the pid is still ours
    proc.wait(60)
    assert proc.returncode in (0, -signal.SIGKILL), proc.returncode
    killed = proc.returncode == -signal.SIGKILL
    KILLS.append({"stage": stage, "after_s": round(seconds, 2), "killed": killed})
    return killed


def _digest(db: Path, tables, where: str = "true") -> dict[str, tuple[int, str]]:
    """(rows, md5 of every row as text in a fixed order) per table: equal digests, equal contents."""
    out = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for t in tables:
            n, h = con.execute(
                f"select count(*), md5(coalesce(string_agg(r::varchar, chr(10) order by r::varchar), ''))"
                f" from {t} r where {where}").fetchone()
            out[t] = (n, h)
    return out


def _opens_and_meets_contracts(db: Path) -> dict[str, int]:
    wh = Warehouse(db, lock_timeout=10)
    with wh.connect() as con:  # read-write: replays the WAL a kill may have left
        return check_contracts(con)


def _copy(src: Path, dst: Path) -> Path:
    """A copy of a warehouse folder whose runs name the copied checkpoints."""
    shutil.copytree(src, dst)
    db = dst / "lens.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("update runs set checkpoint_path = replace(checkpoint_path, ?, ?)", [str(src), str(dst)])
    return db


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- train -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_dir):
    """A complete tiny `lens train` run (run 't', seed 0) and its wall time."""
    d = tmp_path_factory.mktemp("trained")
    seconds = _lens(d / "lens.duckdb", "train", "--data", str(cifar_dir), *TRAIN, "--seed", "0")
    return d, seconds


def _train_state(db: Path) -> dict:
    with duckdb.connect(str(db), read_only=True) as con:
        (config, ckpt), = con.execute("select config, checkpoint_path from runs where run_id = 't'").fetchall()
        n = {t: con.execute(f"select count(*) from {t} where run_id = 't'").fetchone()[0] for t in TRAIN_TABLES}
        wrong = con.execute("select count(*) from predictions where run_id = 't' and pred <> label").fetchone()[0]
    ckpt = str(Warehouse(db).artifact_path(ckpt))  # stored relative to the warehouse's folder
    return {"seed": json.loads(config)["seed"], "checkpoint": ckpt, "counts": n, "wrong": wrong}


def _assert_complete_train(db: Path, seed: int) -> dict:
    s = _train_state(db)
    assert s["seed"] == seed
    assert s["counts"] == {"runs": 1, "classes": 10, "predictions": 100, "failures": s["wrong"],
                           "training_log": 11, "features": 400, "stage_runs": 1}
    assert Path(s["checkpoint"]).is_file()
    return s


def test_train_killed_keeps_the_old_run_or_the_new_one_whole(trained, tmp_path, cifar_dir):
    base, seconds = trained
    db = _copy(base, tmp_path / "w")
    old = _digest(db, TRAIN_TABLES)
    old_state = _assert_complete_train(db, 0)
    assert old_state["checkpoint"].startswith(str(db.parent))
    old_ckpt = _sha(old_state["checkpoint"])
    rng = np.random.default_rng(9001)

    # 1. a --force retrain (seed 1) killed at a seeded random point of its measured duration
    p = _spawn(db, "train", "--data", str(cifar_dir), *TRAIN, "--seed", "1", "--force")
    _kill_after(p, rng.uniform(0.05, 0.8) * seconds, "train")
    _opens_and_meets_contracts(db)
    if _digest(db, TRAIN_TABLES) == old:
        assert _sha(_train_state(db)["checkpoint"]) == old_ckpt
        _found("the old run")
    else:
        _assert_complete_train(db, 1)
        _found("the new run, whole")
    mid = _digest(db, TRAIN_TABLES)
    mid_state = _train_state(db)
    mid_ckpt = _sha(mid_state["checkpoint"])

    # 2. killed after its checkpoint is saved, while it waits to commit (this test holds the
    #    warehouse's lock): the stored run and the weights it names stay as they were
    art = db.parent / "artifacts" / "t"
    files_before = {(f.name, f.stat().st_mtime_ns) for f in art.iterdir()}
    log = tmp_path / "train.log"
    p = _spawn(db, "train", "--data", str(cifar_dir), *TRAIN, "--seed", "2", "--force", log=log)
    deadline = time.monotonic() + 120
    while "Training ResNet-18" not in log.read_text() and time.monotonic() < deadline:  # past its first read
        assert p.poll() is None, log.read_text()
        time.sleep(0.02)
    holder = duckdb.connect(str(db))
    try:
        while time.monotonic() < deadline:
            new = {(f.name, f.stat().st_mtime_ns) for f in art.iterdir() if f.name.endswith(".pt")} - files_before
            if new:
                break
            assert p.poll() is None, log.read_text()
            time.sleep(0.01)
        assert new, "no checkpoint was written"
        time.sleep(0.3)
        assert p.poll() is None, log.read_text()
        _kill_after(p, 0, "train (waiting to commit)")
        _found("the old run and checkpoint")
    finally:
        holder.close()
    _opens_and_meets_contracts(db)
    assert _digest(db, TRAIN_TABLES) == mid
    assert _train_state(db)["checkpoint"] == mid_state["checkpoint"]
    assert _sha(mid_state["checkpoint"]) == mid_ckpt

    # 3. the rerun completes and leaves one checkpoint: the one its run names
    _lens(db, "train", "--data", str(cifar_dir), *TRAIN, "--seed", "2", "--force")
    counts = _opens_and_meets_contracts(db)
    done = _assert_complete_train(db, 2)
    assert counts["predictions"] == 100 and counts["features"] == 400
    assert [f.name for f in art.iterdir()] == [Path(done["checkpoint"]).name]


# -- evidence --------------------------------------------------------------------------------


def test_evidence_killed_keeps_the_old_rows_or_the_new_ones_whole(trained, tmp_path):
    base, _ = trained
    db = _copy(base, tmp_path / "w")
    seconds = _lens(db, *EVIDENCE)
    tables = ("evidence", "class_image_stats", "stage_runs")
    old = _digest(db, tables)
    n_failures = _train_state(db)["wrong"]
    assert old["evidence"][0] == n_failures
    # evidence without computed_at: what a complete recomputation must reproduce exactly
    stable = "(select * exclude (computed_at) from evidence)"
    old_facts = _digest(db, [stable])

    p = _spawn(db, *EVIDENCE)
    _kill_after(p, np.random.default_rng(9002).uniform(0.05, 0.8) * seconds, "evidence")
    _opens_and_meets_contracts(db)
    now = _digest(db, tables)
    _found("the old rows")
    if now != old:  # then the new result, whole
        assert now["evidence"][0] == n_failures and _digest(db, [stable]) == old_facts
        assert now["class_image_stats"][0] == old["class_image_stats"][0]
        _found("the new rows, whole")

    _lens(db, *EVIDENCE)
    counts = _opens_and_meets_contracts(db)
    assert counts["evidence"] == n_failures and _digest(db, [stable]) == old_facts


# -- embed and cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """40 planted answers of run 'r1', embedded by a complete `lens embed`; and its wall time."""
    d = tmp_path_factory.mktemp("embedded")
    db = d / "lens.duckdb"
    texts, _ = planted(GROUPS)
    seed_texts(Warehouse(db), "r1", texts)
    return d, _lens(db, "embed", "--run", "r1")


def test_embed_killed_keeps_the_old_vectors_or_the_new_ones_whole(embedded, tmp_path):
    base, seconds = embedded
    db = _copy(base, tmp_path / "w")
    old = _digest(db, ["embeddings", "embedding_cache"])
    assert old["embeddings"][0] == 40 and old["embedding_cache"][0] == 40
    with duckdb.connect(str(db)) as con:  # an empty cache: the killed run has to encode everything
        con.execute("delete from embedding_cache")
    p = _spawn(db, "embed", "--run", "r1")
    _kill_after(p, np.random.default_rng(9003).uniform(0.05, 0.8) * seconds, "embed")
    _opens_and_meets_contracts(db)
    now = _digest(db, ["embeddings", "embedding_cache"])
    assert now["embeddings"][0] == 40  # the old rows or the new ones, never fewer or more
    assert now["embedding_cache"][0] in (0, 40)
    if now["embedding_cache"][0] == 0:
        assert now["embeddings"] == old["embeddings"]
    _found("the old vectors" if now["embedding_cache"][0] == 0 else "the new vectors, whole")

    _lens(db, "embed", "--run", "r1")
    counts = _opens_and_meets_contracts(db)
    assert counts["embeddings"] == 40 and counts["embedding_cache"] == 40
    assert _digest(db, ["embedding_cache"]) == {"embedding_cache": old["embedding_cache"]}


def test_cluster_killed_keeps_the_old_clustering_or_the_new_one_whole(embedded, tmp_path):
    base, _ = embedded
    db = _copy(base, tmp_path / "w")
    tables = ("clusters", "cluster_members", "cluster_k_scores", "stage_runs")
    seconds = _lens(db, *CLUSTER, "--seed", "0")
    old = _digest(db, tables)
    p = _spawn(db, *CLUSTER, "--seed", "1")
    _kill_after(p, np.random.default_rng(9004).uniform(0.05, 0.8) * seconds, "cluster")
    _opens_and_meets_contracts(db)

    def whole():
        with duckdb.connect(str(db), read_only=True) as con:
            members = con.execute("select count(*) from cluster_members").fetchone()[0]
            sizes = con.execute("select coalesce(sum(size), 0) from clusters").fetchone()[0]
            ks = con.execute("select count(*), sum(chosen::int) from cluster_k_scores").fetchone()
            status = con.execute("select status from stage_runs where stage = 'cluster'").fetchone()
        assert members == 40 and sizes == 40 and ks == (6, 1) and status == ("done",)

    _found("the old clustering")
    if _digest(db, tables) != old:
        whole()
        _found("the new clustering, whole")
    _lens(db, *CLUSTER, "--seed", "1")
    _opens_and_meets_contracts(db)
    whole()


# -- hypothesize (resumable) -------------------------------------------------------------------


def _answers(db: Path) -> set[tuple]:
    with Warehouse(db, lock_timeout=30).connect(read_only=True) as con:  # waits while a batch commits
        return set(con.execute(
            "select h.hypothesis_id, h.status, h.created_at, h.raw_response, count(d.dimension)"
            " from hypotheses h left join hypothesis_dimensions d using (hypothesis_id)"
            " group by all").fetchall())


def test_hypothesize_killed_keeps_every_committed_answer(tmp_path):
    db = tmp_path / "lens.duckdb"
    n = 40
    seed_failures(Warehouse(db), n)
    rng = np.random.default_rng(9005)
    with OllamaServer(latency=0.2, slots=2) as srv:
        args = ["hypothesize", "--backend", "ollama", "--ollama-host", srv.url, "--concurrency", "2"]
        p = _spawn(db, *args)
        want = int(rng.integers(1, 16))  # kill once this many answers are committed, plus a random delay
        reader = Warehouse(db, lock_timeout=30)
        stored = 0
        deadline = time.monotonic() + 60
        while stored < want and time.monotonic() < deadline:
            assert p.poll() is None, "finished before it could be killed"
            time.sleep(0.05)
            with reader.connect(read_only=True) as con:
                stored = con.execute("select count(*) from hypotheses").fetchone()[0]
        before = _answers(db)
        _kill_after(p, rng.uniform(0, 1.5), "hypothesize")
        _opens_and_meets_contracts(db)
        at_kill = _answers(db)
        assert before <= at_kill and len(at_kill) < n
        assert all(a[1] == "ok" and a[4] == 3 for a in at_kill)  # whole answers only: 3 dimensions each
        _found(f"{len(at_kill)} of {n} answers committed ({len(before)} seen before the kill)")
        asked = len(srv.chat_requests)
        _lens(db, *args)
        assert len(srv.chat_requests) - asked == n - len(at_kill)  # only the unanswered are asked
    after = _answers(db)
    assert at_kill <= after and len(after) == n
    counts = _opens_and_meets_contracts(db)
    assert counts["hypotheses"] == n and counts["hypothesis_dimensions"] == 3 * n
