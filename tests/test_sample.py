"""`lens sample` on a planted set of failures: stratified, deterministic, replaces only samples."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lens.predictions import write_run
from lens.warehouse import insert_arrow, utcnow

CLASSES = ["a", "b", "c", "d"]
# failures per true class: class 'c' has fewer than the 15 asked for, 'd' none at all
PLANTED = {0: 40, 1: 22, 2: 6, 3: 0}


def _plant(wh, run_id: str = "r") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    labels = np.concatenate([np.full(k, c) for c, k in PLANTED.items()]).astype(np.int32)
    n = len(labels)
    ids = rng.permutation(np.arange(1000, 1000 + 3 * n))[:n].astype(np.int64)  # scattered ids
    preds = ((labels + rng.integers(1, len(CLASSES), n)) % len(CLASSES)).astype(np.int32)
    conf = rng.uniform(0.3, 0.99, n).astype(np.float32)
    with wh.transaction() as con:
        write_run(con, run_id, kind="ingest", class_names=CLASSES)
        insert_arrow(con, "failures", pa.table({
            "run_id": [run_id] * n, "example_id": ids, "label": labels, "pred": preds, "confidence": conf,
        }))
        con.execute(
            "insert into hypotheses (hypothesis_id, run_id, example_id, backend, model, prompt_name,"
            " prompt_sha256, status, attempts, created_at) values ('h1', ?, ?, 'measured', 'measured',"
            " 'default', 'x', 'ok', 1, ?)", [run_id, int(ids[0]), utcnow()])
    return {"ids": ids, "labels": labels, "preds": preds, "conf": conf}


def _sample(wh):
    return wh.query("select s.*, f.label, f.pred, f.confidence from samples s join failures f"
                    " using (run_id, example_id) order by s.rank")


def test_per_class_is_stratified_deterministic_and_reports_short_classes(cli):
    planted = _plant(cli.wh)
    out = cli("sample", "--run", "r", "--per-class", "15", "--seed", "0").output
    first = _sample(cli.wh)
    counts = first.groupby("label").size().to_dict()
    assert counts == {0: 15, 1: 15, 2: 6}  # min(15, available) per true class; 'd' has none
    assert "c: only 6 failure(s)" in out and "d: only 0 failure(s)" in out
    # every failure of the short class is in
    assert set(first[first.label == 2].example_id) == set(planted["ids"][planted["labels"] == 2])
    assert first["rank"].tolist() == list(range(1, 37)) and first.example_id.is_unique
    assert (first.strategy == "per-class").all() and (first.seed == 0).all()
    # same seed, same sample; another seed, another one
    cli("sample", "--run", "r", "--per-class", "15", "--seed", "0")
    assert _sample(cli.wh).example_id.tolist() == first.example_id.tolist()
    cli("sample", "--run", "r", "--per-class", "15", "--seed", "1")
    assert set(_sample(cli.wh).example_id) != set(first.example_id)


def test_resampling_replaces_the_sample_but_not_hypotheses(cli):
    _plant(cli.wh)
    cli("sample", "--run", "r", "--strategy", "all")
    assert len(_sample(cli.wh)) == sum(PLANTED.values())
    cli("sample", "--run", "r", "--per-class", "3")
    s = _sample(cli.wh)
    assert len(s) == 3 + 3 + 3 and set(s.strategy) == {"per-class"}
    assert cli.wh.query("select count(*) as n from hypotheses").n.iloc[0] == 1
    st = cli.wh.query("select status, details from stage_runs where stage = 'sample'")
    assert len(st) == 1 and st.status.iloc[0] == "done" and '"sampled": 9' in st.details.iloc[0]


def test_lowest_confidence_and_all(cli):
    planted = _plant(cli.wh)
    cli("sample", "--run", "r", "--strategy", "lowest-confidence", "--n", "10")
    s = _sample(cli.wh)
    expected = planted["ids"][np.lexsort((planted["ids"], planted["conf"]))][:10]
    assert s.example_id.tolist() == expected.tolist()
    assert (np.diff(s.confidence) >= 0).all()
    cli("sample", "--run", "r", "--strategy", "all")
    assert _sample(cli.wh).example_id.tolist() == sorted(planted["ids"].tolist())


def test_per_pair_covers_every_confused_pair_first(cli):
    planted = _plant(cli.wh)
    pairs = set(zip(planted["labels"].tolist(), planted["preds"].tolist()))
    cli("sample", "--run", "r", "--strategy", "per-pair", "--n", str(len(pairs)))
    s = _sample(cli.wh)
    assert set(zip(s.label, s.pred)) == pairs  # one of each pair before any pair gets a second
    cli("sample", "--run", "r", "--strategy", "per-pair", "--n", str(len(pairs)))
    assert _sample(cli.wh).example_id.tolist() == s.example_id.tolist()


def test_errors_are_clear(cli):
    res = cli("sample", "--run", "missing", expect=1)
    assert "No run named" in res.output or "no runs" in res.output.lower()
    _plant(cli.wh)
    res = cli("sample", "--run", "nope", expect=1)
    assert "No run named 'nope'" in res.output and "r" in res.output


@pytest.mark.parametrize("strategy", ["per-class", "per-pair", "lowest-confidence", "all"])
def test_choose_ignores_input_order(strategy):
    from lens.stages.sample import choose

    rng = np.random.default_rng(0)
    n = 200
    ids, labels = rng.permutation(n) * 3, rng.integers(0, 5, n)
    preds, conf = (labels + 1) % 5, rng.uniform(0, 1, n)
    a = choose(ids, labels, preds, conf, strategy=strategy, per_class=4, n=12, seed=3, num_classes=5)
    perm = rng.permutation(n)
    b = choose(ids[perm], labels[perm], preds[perm], conf[perm], strategy=strategy, per_class=4, n=12, seed=3,
               num_classes=5)
    assert ids[a].tolist() == ids[perm][b].tolist()
