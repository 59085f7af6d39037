"""`lens ingest --features`: a model's embeddings for an ingested run, so evidence finds
nearest neighbours; every bad features file is refused with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.contracts import check_contracts

CLASSES = ["cat", "dog", "frog"]
DIM = 8
#: eval examples: (id, label, predicted class). 4 is a planted failure whose vector sits among
#: the training dogs (the model "sees" a dog); 7 is one whose vector sits among frogs (its label)
EVAL = [(0, 0, 0), (1, 0, 0), (2, 1, 1), (3, 1, 1), (4, 0, 1), (5, 2, 2), (6, 2, 2), (7, 2, 0), (8, 1, 1)]
CLOSE_TO = {4: 1, 7: 2}


def _vec(rng, cls):
    v = np.zeros(DIM)
    v[cls] = 1.0
    return v + rng.normal(0, 0.05, DIM)


def planted(tmp_path, *, text_ids=False):
    """(predictions file, features table): 30 training vectors in three clusters, 9 eval vectors."""
    rng = np.random.default_rng(0)
    probs = []
    for _, label, pred in EVAL:
        p = np.full(3, 0.05)
        p[pred] = 0.9
        probs.append(p)
    ids = [f"img{i}.png" for i, _, _ in EVAL] if text_ids else [i for i, _, _ in EVAL]
    preds = tmp_path / "preds.parquet"
    pq.write_table(pa.table({"id": ids, "label": [CLASSES[lab] for _, lab, _ in EVAL],
                             **{f"prob_{c}": [float(p[j]) for p in probs] for j, c in enumerate(CLASSES)}}), preds)
    train_ids = list(range(1000, 1030))
    train_labels = [CLASSES[i % 3] for i in range(30)]
    vectors = [_vec(rng, i % 3) for i in range(30)]
    vectors += [_vec(rng, CLOSE_TO.get(i, label)) for i, label, _ in EVAL]
    feat_ids = ([str(i) for i in train_ids] + ids) if text_ids else train_ids + ids
    table = pa.table({
        "id": feat_ids,
        "split": ["train"] * 30 + ["eval"] * len(EVAL),
        "vector": [list(map(float, v)) for v in vectors],
        "label": train_labels + [None] * len(EVAL),
    })
    return preds, table


def _write(tmp_path, table, name="feats.parquet"):
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def _features(wh, run_id="r"):
    with wh.connect() as con:
        return con.execute(
            "select split, example_id, label, vector from features where run_id = ? order by split, example_id",
            [run_id]).fetchall()


def _counts(wh):
    with wh.connect() as con:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("runs", "prediction_rows", "failures", "features", "evidence", "stage_runs")}


def test_features_with_predictions_bring_neighbours_to_an_ingested_run(cli, tmp_path):
    preds, table = planted(tmp_path)
    feats = _write(tmp_path, table)
    out = cli("ingest", "--predictions", str(preds), "--features", str(feats), "--run", "r")
    assert "30 train and 9 eval vectors of 8 values" in out.output
    rows = _features(cli.wh)
    assert [(s, e) for s, e, _, _ in rows] == [("eval", i) for i, _, _ in EVAL] + [("train", i) for i in range(1000, 1030)]
    assert [lab for s, _, lab, _ in rows if s == "eval"] == [lab for _, lab, _ in EVAL]  # from the predictions
    assert [lab for s, _, lab, _ in rows if s == "train"] == [i % 3 for i in range(30)]  # names -> ids
    stored = np.array([v for *_, v in rows], dtype=np.float32)
    by_key = {(s, i): v for s, i, v in zip(table.column("split").to_pylist(), table.column("id").to_pylist(),
                                           table.column("vector").to_pylist())}
    np.testing.assert_array_equal(stored, np.array([by_key[(s, e)] for s, e, _, _ in rows], dtype=np.float32))
    with cli.wh.connect() as con:
        check_contracts(con, require_rows=("features",))
        stage = con.execute("select details from stage_runs where run_id = 'r' and stage = 'features'").fetchone()
    assert json.loads(stage[0])["dim"] == DIM

    # evidence now finds neighbours for the ingested run
    cli("evidence", "--run", "r", "--neighbours", "5", "--no-saliency")
    with cli.wh.connect() as con:
        ev = {r[0]: r[1:] for r in con.execute(
            "select example_id, neighbour_true_share, neighbour_pred_share, neighbour_ids, skipped from evidence"
            " where run_id = 'r'").fetchall()}
    assert set(ev) == {4, 7}
    assert ev[4][:2] == (0.0, 1.0)  # all 5 neighbours are dogs: what the model predicted
    assert ev[7][:2] == (1.0, 0.0)  # all 5 are frogs: the given label
    assert all(1000 <= n < 1030 for n in ev[4][2])
    assert "neighbours" not in json.loads(ev[4][3] or "{}")


def test_features_for_an_existing_run_replace_stale_evidence(cli, tmp_path):
    preds, table = planted(tmp_path)
    cli("ingest", "--predictions", str(preds), "--run", "r")
    cli("evidence", "--run", "r", "--no-saliency")
    with cli.wh.connect() as con:
        skipped = con.execute("select skipped from evidence where run_id = 'r' and example_id = 4").fetchone()[0]
    assert "neighbours" in json.loads(skipped)

    npz = tmp_path / "feats.npz"
    np.savez(npz, id=np.array(table.column("id").to_pylist()), split=np.array(table.column("split").to_pylist()),
             vector=np.array(table.column("vector").to_pylist(), dtype=np.float32),
             label=np.array([x or "" for x in table.column("label").to_pylist()]))
    # an .npz cannot hold nulls: eval rows give '' as label, which is not a class -> refused, named
    out = cli("ingest", "--run", "r", "--features", str(npz), expect=1)
    assert "unknown classes in 'label'" in out.output and "row 31 ('')" in out.output
    np.savez(npz, id=np.array(table.column("id").to_pylist()), split=np.array(table.column("split").to_pylist()),
             vector=np.array(table.column("vector").to_pylist(), dtype=np.float32),
             label=np.array([i % 3 for i in range(30)] + [lab for _, lab, _ in EVAL]))
    out = cli("ingest", "--run", "r", "--features", str(npz))
    assert "30 train and 9 eval vectors" in out.output and "Deleted 2 evidence rows" in out.output
    c = _counts(cli.wh)
    assert c["features"] == 39 and c["evidence"] == 0 and c["prediction_rows"] == 9
    cli("evidence", "--run", "r", "--neighbours", "5", "--no-saliency")
    with cli.wh.connect() as con:
        share = con.execute("select neighbour_pred_share from evidence where run_id = 'r' and example_id = 4").fetchone()
    assert share[0] == 1.0

    # again: refused without --force, replaced with it
    out = cli("ingest", "--run", "r", "--features", str(npz), expect=1)
    assert "already has 39 feature rows" in out.output and "--force" in out.output
    small = table.filter(pa.compute.or_(pa.compute.equal(table.column("split"), "eval"),
                                        pa.compute.less(pa.compute.cast(table.column("id"), pa.int64()), 1010)))
    cli("ingest", "--run", "r", "--features", str(_write(tmp_path, small, "small.parquet")), "--force")
    assert _counts(cli.wh)["features"] == 19


def test_text_ids_match_the_predictions_source_ids(cli, tmp_path):
    preds, table = planted(tmp_path, text_ids=True)
    cli("ingest", "--predictions", str(preds), "--features", str(_write(tmp_path, table)), "--run", "r")
    rows = _features(cli.wh)
    with cli.wh.connect() as con:
        numbered = dict(con.execute("select source_id, example_id from predictions where run_id = 'r'").fetchall())
    assert sorted(e for s, e, _, _ in rows if s == "eval") == sorted(numbered.values())
    assert sorted(e for s, e, _, _ in rows if s == "train") == list(range(1000, 1030))


def _bad_table(table, case):
    """A copy of the planted features table broken in one way."""
    n = table.num_rows
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    if case == "vectors of different lengths":
        cols["vector"][5] = cols["vector"][5][:-1]
    elif case == "NaN in a vector":
        cols["vector"][32][3] = float("nan")
    elif case == "infinite value":
        cols["vector"][2][0] = float("inf")
    elif case == "beyond float32":
        cols["vector"][3][0] = 1e39
    elif case == "empty vectors":
        cols["vector"] = pa.array([[] for _ in range(n)], pa.list_(pa.float64()))
    elif case == "null vector":
        cols["vector"][4] = None
    elif case == "eval id not in the predictions":
        cols["id"][33] = 99
    elif case == "duplicate ids in a split":
        cols["id"][1] = cols["id"][0]
    elif case == "unknown split":
        cols["split"][31] = "test"
    elif case == "no train rows":
        keep = [i for i in range(n) if cols["split"][i] == "eval"]
        cols = {k: [v[i] for i in keep] for k, v in cols.items()}
    elif case == "no eval rows":
        keep = [i for i in range(n) if cols["split"][i] == "train"]
        cols = {k: [v[i] for i in keep] for k, v in cols.items()}
    elif case == "train row without label":
        cols["label"][7] = None
    elif case == "unknown train label":
        cols["label"][8] = "zebra"
    elif case == "eval label differs from the predictions":
        cols["label"][30 + 4] = "frog"  # example 4 is a cat
    elif case == "text in vectors":
        cols["vector"] = [[str(x) for x in v] for v in cols["vector"]]
    elif case == "missing vector column":
        del cols["vector"]
    elif case == "float ids":
        cols["id"] = [float(x) + 0.5 for x in cols["id"]]
    elif case == "uint64 id 2**64-1":
        cols["id"] = pa.array([2**64 - 1] + cols["id"][1:], pa.uint64())
    elif case == "text ids for an integer-id run":
        cols["id"] = [str(x) for x in cols["id"]]
    elif case == "both id and example_id":
        cols["example_id"] = cols["id"]
    else:
        raise KeyError(case)
    return pa.table(cols)


#: case -> words the one-line error must contain
BAD_FEATURES = {
    "vectors of different lengths": ["every vector must have the 8 values of row 1", "row 6 (7)"],
    "NaN in a vector": ["NaN, infinite or beyond-float32", "row 33"],
    "infinite value": ["NaN, infinite or beyond-float32", "row 3"],
    "beyond float32": ["NaN, infinite or beyond-float32", "row 4"],
    "empty vectors": ["'vector' has no values"],
    "null vector": ["'vector' is empty at row 5"],
    "eval id not in the predictions": ["eval ids not among the run's predictions", "row 34 (99)"],
    "duplicate ids in a split": ["duplicate ids within a split", "row 1 (1000)", "row 2 (1000)"],
    "unknown split": ["'split' must be 'train' or 'eval'", "row 32 ('test')"],
    "no train rows": ["no 'train' rows"],
    "no eval rows": ["no 'eval' rows"],
    "train row without label": ["'label' is empty on train rows at row 8"],
    "unknown train label": ["unknown classes in 'label'", "row 9 ('zebra')"],
    "eval label differs from the predictions": ["differs from the run's predictions", "row 35 (4)"],
    "text in vectors": ["'vector' must be a list of numbers", "string"],
    "missing vector column": ["required columns missing: vector"],
    "float ids": ["'id' ids must be whole numbers", "row 1 (1000.5)"],
    "uint64 id 2**64-1": ["must fit a signed 64-bit integer", "row 1 (18446744073709551615)"],
    "text ids for an integer-id run": ["'id' is text but the run's predictions have integer ids"],
    "both id and example_id": ["has both 'id' and 'example_id'"],
}
#: features files that are not Parquet tables of the planted shape: name -> (writer, words)
BAD_FEATURE_FILES = {
    "npz with an object array": (lambda p: np.savez(p.with_suffix(".npz"), id=np.array([1, "a"], dtype=object)),
                                 ".npz", ["not a readable .npz of plain arrays"]),
    "npz with a 1-D vector": (lambda p: np.savez(p.with_suffix(".npz"), id=np.arange(3), split=np.array(["train"] * 3),
                                                 vector=np.zeros(3)), ".npz", ["'vector' must be a 2-D array"]),
    "not a zip": (lambda p: p.with_suffix(".npz").write_bytes(b"not a zip"), ".npz", ["not a readable .npz"]),
    "csv features": (lambda p: p.with_suffix(".csv").write_text("id,split,vector\n1,train,1\n"), ".csv",
                     ["unsupported features format '.csv'", ".parquet or .npz"]),
    "missing file": (lambda p: None, ".parquet", ["file not found"]),
}


def bad_feature_file(tmp_path, case) -> tuple:
    """(predictions file, features file, words) for a BAD_FEATURES or BAD_FEATURE_FILES case."""
    preds, table = planted(tmp_path)
    if case in BAD_FEATURES:
        return preds, _write(tmp_path, _bad_table(table, case), "bad_feats.parquet"), BAD_FEATURES[case]
    writer, suffix, words = BAD_FEATURE_FILES[case]
    path = (tmp_path / "bad_feats").with_suffix(suffix)
    writer(path)
    return preds, path, words


@pytest.mark.parametrize("case", sorted(BAD_FEATURES) + sorted(BAD_FEATURE_FILES))
def test_bad_features_file_is_refused_with_nothing_written(cli, tmp_path, case):
    preds, feats, words = bad_feature_file(tmp_path, case)
    # with the predictions: neither is written
    out = cli("ingest", "--predictions", str(preds), "--features", str(feats), "--run", "r", expect=1)
    for w in words:
        assert w in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 and out.output.startswith("Error: ")
    assert _counts(cli.wh) == dict.fromkeys(("runs", "prediction_rows", "failures", "features", "evidence",
                                             "stage_runs"), 0)
    # added to an existing run: the run and its evidence stay as they were
    cli("ingest", "--predictions", str(preds), "--run", "r")
    cli("evidence", "--run", "r", "--no-saliency")
    before = _counts(cli.wh)
    out = cli("ingest", "--run", "r", "--features", str(feats), expect=1)
    for w in words:
        assert w in out.output, out.output
    assert _counts(cli.wh) == before and before["evidence"] == 2 and before["features"] == 0


def test_features_need_a_run_or_predictions(cli, tmp_path):
    _, table = planted(tmp_path)
    feats = _write(tmp_path, table)
    out = cli("ingest", "--features", str(feats), expect=1)
    assert "name it with --run" in out.output
    out = cli("ingest", "--run", "nope", "--features", str(feats), expect=1)
    assert "No run named 'nope'" in out.output
    out = cli("ingest", expect=1)
    assert "give --predictions FILE" in out.output
