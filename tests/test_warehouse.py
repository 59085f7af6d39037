"""Warehouse: migrations applied exactly once, views, bulk writes, lock retry with a real second process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from lens.errors import WarehouseLockedError
from lens.predictions import insert_predictions, prediction_table, write_run
from lens.warehouse import Warehouse, insert_arrow, migrate, replace_rows
from tests.contracts import check_contracts


def test_migrations_apply_once(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    with wh.connect() as con:
        first = con.execute("select version, name from lens_migrations order by version").fetchall()
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    assert first and first[0] == (1, "core")
    for t in ("runs", "predictions", "training_log", "failures", "hypotheses", "embeddings", "clusters",
              "cluster_members", "verdicts", "class_metrics", "confusion", "training_curve"):
        assert t in tables
    # a new process (fresh module state) re-running migrate applies nothing and keeps one row per version
    con = duckdb.connect(str(wh.path))
    try:
        assert migrate(con) == []
        rows = con.execute("select version, count(*) from lens_migrations group by version").fetchall()
    finally:
        con.close()
    assert all(n == 1 for _, n in rows)
    assert [v for v, _ in sorted(rows)] == [v for v, _ in first]


def test_default_location_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LENS_WAREHOUSE", str(tmp_path / "sub" / "env.duckdb"))
    wh = Warehouse()
    with wh.connect():
        pass
    assert (tmp_path / "sub" / "env.duckdb").exists()


def _random_run(con, run_id: str, n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += rng.normal(1.0, 1.0, n)  # better than chance, not perfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    write_run(con, run_id, kind="ingest", class_names=[f"c{i}" for i in range(k)])
    insert_predictions(con, prediction_table(run_id, np.arange(n), labels, probs=probs))
    return labels, probs.argmax(1)


def test_class_metrics_match_sklearn(mem_wh):
    with mem_wh.transaction() as con:
        y1, p1 = _random_run(con, "a", 3000, 7, seed=1)
        y2, p2 = _random_run(con, "b", 500, 4, seed=2)
    with mem_wh.connect() as con:
        for run_id, y, p, k in (("a", y1, p1, 7), ("b", y2, p2, 4)):
            got = con.execute(
                'select support, "precision", recall, f1 from class_metrics where run_id = ? order by class_id',
                [run_id],
            ).fetchnumpy()
            pr, rc, f1, sup = precision_recall_fscore_support(y, p, labels=list(range(k)), zero_division=0)
            np.testing.assert_allclose(got["precision"], pr, atol=1e-12)
            np.testing.assert_allclose(got["recall"], rc, atol=1e-12)
            np.testing.assert_allclose(got["f1"], f1, atol=1e-12)
            np.testing.assert_array_equal(got["support"], sup)
            acc, macro_f1, weighted = con.execute(
                "select accuracy, macro_f1, weighted_f1 from run_metrics where run_id = ?", [run_id]
            ).fetchone()
            assert acc == pytest.approx(accuracy_score(y, p))
            assert macro_f1 == pytest.approx(precision_recall_fscore_support(y, p, average="macro", zero_division=0)[2])
            assert weighted == pytest.approx(
                precision_recall_fscore_support(y, p, average="weighted", zero_division=0)[2]
            )
            cells = con.execute(
                "select true_class, pred_class, count from confusion where run_id = ?", [run_id]
            ).fetchall()
            cm = np.zeros((k, k), dtype=int)
            for t, q, c in cells:
                cm[t, q] = c
            np.testing.assert_array_equal(cm, confusion_matrix(y, p, labels=list(range(k))))
        check_contracts(con, require_rows=("predictions", "class_metrics", "confusion"))


def test_class_never_predicted_gets_zero_precision(mem_wh):
    with mem_wh.transaction() as con:
        write_run(con, "z", kind="ingest", class_names=["a", "b", "c"])
        probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
        insert_predictions(con, prediction_table("z", np.arange(3), np.array([0, 1, 2]), probs=probs))
    with mem_wh.connect() as con:
        rows = con.execute('select class_name, support, "precision", f1 from class_metrics order by class_id').fetchall()
    assert rows[2] == ("c", 1, 0.0, 0.0)


def test_training_curve_names_overall_rows(mem_wh):
    with mem_wh.transaction() as con:
        write_run(con, "t", kind="train", class_names=["a", "b"])
        con.execute(
            "insert into training_log (run_id, epoch, class_id, eval_loss) values"
            " ('t', 1, -1, 1.0), ('t', 1, 0, 0.5), ('t', 1, 1, 1.5)"
        )
    with mem_wh.connect() as con:
        rows = con.execute("select class_name, eval_loss from training_curve order by class_id").fetchall()
        check_contracts(con)
    assert rows == [("all", 1.0), ("a", 0.5), ("b", 1.5)]


def test_replace_rows_is_atomic(wh):
    table = pa.table({"run_id": ["r", "r"], "example_id": [1, 2], "strategy": ["all", "all"], "rank": [0, 1]})
    with wh.transaction() as con:
        replace_rows(con, "samples", {"run_id": "r"}, table)
    with pytest.raises(RuntimeError):
        with wh.transaction() as con:
            replace_rows(con, "samples", {"run_id": "r"}, table.slice(0, 1))
            raise RuntimeError("crash mid-stage")
    with wh.connect() as con:
        assert con.execute("select count(*) from samples").fetchone()[0] == 2


def test_identifiers_are_checked(mem_wh):
    with mem_wh.connect() as con, pytest.raises(ValueError):
        replace_rows(con, "samples; drop table runs", {"run_id": "x"}, pa.table({"run_id": ["x"]}))


HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


def _hold(path, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_lock_held_by_another_process_fails_clearly(wh):
    proc = _hold(wh.path, 30)
    try:
        impatient = Warehouse(wh.path, lock_timeout=0.5)
        start = time.monotonic()
        with pytest.raises(WarehouseLockedError) as err:
            with impatient.connect():
                pass
        assert time.monotonic() - start >= 0.5
        msg = str(err.value)
        assert f"process {proc.pid}" in msg and "LENS_LOCK_TIMEOUT" in msg
    finally:
        proc.kill()
        proc.wait()


def test_lock_retry_waits_for_the_holder(wh):
    proc = _hold(wh.path, 1.0)
    try:
        patient = Warehouse(wh.path, lock_timeout=20)
        with patient.transaction() as con:  # blocks until the holder exits, then writes
            con.execute("insert into classes values ('r', 0, 'a')")
        with patient.connect() as con:
            assert con.execute("select count(*) from classes").fetchone()[0] == 1
        assert proc.poll() is not None, "we got the lock while the holder still ran"
    finally:
        proc.kill()
        proc.wait()
