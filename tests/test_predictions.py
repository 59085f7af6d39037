"""Predictions: top-k against a stable argsort, and the prediction_rows table behind the view."""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import pytest

from lens.predictions import insert_predictions, prediction_table, stored_rows, top_k, write_run
from lens.warehouse import Warehouse, _migration_files, utcnow
from tests.contracts import check_contracts


def _reference(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    # a stable sort of -p puts larger values first and, among equal values, the lower class
    order = np.argsort(-probs.astype(np.float32), axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs.astype(np.float32), order, axis=1)


@pytest.mark.parametrize("c", [2, 3, 10, 32, 33, 100])
def test_top_k_matches_stable_argsort(c):
    rng = np.random.default_rng(c)
    probs = rng.dirichlet(np.ones(c), 5000).astype(np.float32)
    probs[:200] = 1.0 / c                              # all tied
    probs[200:400] = 0.0
    probs[200:400, c - 1] = 1.0                        # one-hot, zeros tied below it
    probs[400:600] = np.round(probs[400:600], 1)       # many partial ties
    probs[600:700, 0] = -0.0                           # negative zero ranks as zero
    classes, values = top_k(probs, 3)
    want_c, want_v = _reference(probs, 3)
    np.testing.assert_array_equal(classes, want_c)
    np.testing.assert_array_equal(values, want_v)
    assert classes.dtype == np.int32 and values.dtype == np.float32
    assert classes.shape == (5000, min(3, c))


def test_top_k_handles_negative_scores_and_k_above_classes():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(1000, 5)).astype(np.float32)  # not probabilities: the general path
    classes, values = top_k(scores, 3)
    want_c, want_v = _reference(scores, 3)
    np.testing.assert_array_equal(classes, want_c)
    np.testing.assert_array_equal(values, want_v)
    classes, _ = top_k(scores[:, :2], 3)
    assert classes.shape == (1000, 2)


def test_stored_rows_keep_given_facts_only():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    full = prediction_table("r", np.arange(2), np.array([1, 2]), probs=probs)
    rows = stored_rows(full)
    assert "top3_prob" not in rows.column_names and "loss" not in rows.column_names
    assert rows.column("confidence").null_count == 2  # read from probs by the view
    given = stored_rows(prediction_table("r", np.arange(2), np.array([1, 2]), pred=np.array([1, 0]),
                                         confidence=np.array([0.9, 0.6])))
    assert given.column("confidence").to_pylist() == pytest.approx([0.9, 0.6])
    with pytest.raises(ValueError, match="not columns of predictions"):
        stored_rows(full.append_column("margin", full.column("label")))


def test_view_derives_confidence_top3_and_loss(mem_wh):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(10) * 0.3, 2000).astype(np.float32)
    probs[0] = 0.0
    probs[0, 3] = 1.0  # true class 0 has p = 0: loss floored at 1e-12
    labels = rng.integers(0, 10, 2000)
    labels[0] = 0
    with mem_wh.transaction() as con:
        write_run(con, "r", kind="ingest", class_names=[f"c{i}" for i in range(10)])
        table = prediction_table("r", np.arange(2000), labels, probs=probs)
        insert_predictions(con, table)
        insert_predictions(con, prediction_table("s", np.arange(3), np.array([0, 1, 2]), pred=np.array([1, 1, 0]),
                                                 confidence=np.array([0.9, 0.5, 0.4])))
    with mem_wh.connect() as con:
        got = con.execute("select pred, confidence, top3_class, top3_prob, loss from predictions"
                          " where run_id = 'r' order by example_id").fetchall()
        given = con.execute("select confidence, top3_class, top3_prob, loss from predictions"
                            " where run_id = 's' order by example_id").fetchall()
        check_contracts(con)
    want_c, want_v = _reference(probs, 3)
    assert [g[0] for g in got] == want_c[:, 0].tolist()
    np.testing.assert_array_equal([g[1] for g in got], want_v[:, 0])
    np.testing.assert_array_equal([g[2] for g in got], want_c)
    np.testing.assert_array_equal([g[3] for g in got], want_v)
    true_p = np.maximum(probs[np.arange(2000), labels].astype(np.float64), 1e-12)
    np.testing.assert_allclose([g[4] for g in got], -np.log(true_p), rtol=1e-6)
    assert got[0][4] == pytest.approx(-np.log(1e-12), rel=1e-6)
    assert [(round(c, 6), t, [round(p, 6) for p in tp], loss) for c, t, tp, loss in given] == [
        (0.9, [1], [0.9], None), (0.5, [1], [0.5], None), (0.4, [0], [0.4], None)
    ]


def test_migration_040_moves_old_predictions(tmp_path):
    """A warehouse made before 040 keeps its predictions, readable through the view as before."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create table lens_migrations (version integer not null, name varchar not null,"
                " sha256 varchar not null, applied_at timestamp not null)")
    for version, name, file in _migration_files():
        if version >= 40:
            continue
        text = file.read_text()
        con.execute(text)
        con.execute("insert into lens_migrations values (?, ?, ?, ?)",
                    [version, name, hashlib.sha256(text.encode()).hexdigest(), utcnow()])
    con.execute("insert into runs (run_id, kind, created_at, num_classes) values ('old', 'ingest', now(), 3)")
    con.execute("""insert into predictions values
        ('old', 1, 0, 1, 0.7, [0.2, 0.7, 0.1], [1, 0, 2], [0.7, 0.2, 0.1], 1.609438, null, null),
        ('old', 2, 1, 1, 0.6, null, [1], [0.6], null, 'a.png', 'x')""")
    before = con.execute("select * from predictions order by example_id").fetchall()
    con.close()

    wh = Warehouse(path)
    with wh.connect() as con:
        kinds = dict(con.execute("select table_name, table_type from information_schema.tables"
                                 " where table_name in ('predictions', 'prediction_rows')").fetchall())
        after = con.execute("select * from predictions order by example_id").fetchall()
        stored = con.execute("select confidence from prediction_rows order by example_id").fetchall()
        check_contracts(con, require_rows=("predictions", "prediction_rows"))
    assert kinds == {"predictions": "VIEW", "prediction_rows": "BASE TABLE"}
    assert stored == [(None,), (pytest.approx(0.6),)]
    assert len(after) == len(before) == 2
    for a, b in zip(after, before):
        assert a[:3] == b[:3] and a[6] == b[6] and a[9:] == b[9:]
        assert a[4] == pytest.approx(b[4]) and a[7] == pytest.approx(b[7])
        assert (a[8] is None and b[8] is None) or a[8] == pytest.approx(b[8], rel=1e-6)
