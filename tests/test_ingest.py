"""`lens ingest`: round trip into the warehouse, and every bad input rejected with nothing written."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.contracts import check_contracts

CLASSES = ["cat", "dog", "frog"]


def _probs(n, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(k), n)


def _table_counts(wh):
    with wh.connect() as con:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in ("runs", "predictions", "failures")}


def test_round_trip_with_dataset_index(cli, cifar_dir, tmp_path):
    n = 300
    probs = _probs(n, 10, seed=1).astype(np.float32)
    labels = pq.read_table(cifar_dir / "test.parquet", columns=["label"]).column("label").to_numpy()[:n]
    path = tmp_path / "preds.parquet"
    pq.write_table(pa.table({"id": np.arange(n), "label": labels, "probs": list(probs), "index": np.arange(n)}), path)
    out = cli("ingest", "--predictions", str(path), "--images", str(cifar_dir), "--run", "mine")
    assert "300 predictions" in out.output
    pred = probs.argmax(1)
    with cli.wh.connect() as con:
        rows = con.execute(
            "select example_id, label, pred, confidence, probs, top3_class, loss from predictions order by example_id"
        ).fetchall()
        fails = con.execute("select example_id, image_png, width from failures order by example_id").fetchall()
        names = [r[0] for r in con.execute("select class_name from classes order by class_id").fetchall()]
        check_contracts(con, require_rows=("predictions", "failures"))
    assert names[0] == "airplane" and len(names) == 10
    assert [r[2] for r in rows] == pred.tolist()
    np.testing.assert_allclose([r[3] for r in rows], probs.max(1), rtol=1e-6)
    np.testing.assert_allclose([r[4] for r in rows], probs, rtol=1e-6)
    assert all(r[5] == np.argsort(-probs[i], kind="stable")[:3].tolist() for i, r in enumerate(rows))
    np.testing.assert_allclose([r[6] for r in rows], -np.log(probs[np.arange(n), labels]), rtol=1e-5)
    assert [f[0] for f in fails] == np.flatnonzero(pred != labels).tolist()
    # the stored image is the dataset's image, decoded the same way
    first = fails[0][0]
    src = pq.read_table(cifar_dir / "test.parquet").slice(first, 1).column("img")[0]["bytes"].as_py()
    stored = np.asarray(Image.open(io.BytesIO(fails[0][1])))
    np.testing.assert_array_equal(stored, np.asarray(Image.open(io.BytesIO(src)).convert("RGB")))
    assert fails[0][2] == 32


def test_csv_with_prob_columns_names_and_image_paths(cli, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(imgs / f"{i}.png")
    csv = tmp_path / "p.csv"
    csv.write_text(
        "id,label,prob_cat,prob_dog,prob_frog,image\n"
        "10,cat,0.7,0.2,0.1,imgs/0.png\n"
        "11,dog,0.6,0.3,0.1,imgs/1.png\n"
        "12,frog,0.1,0.1,0.8,imgs/2.png\n"
        "13,frog,0.2,0.5,0.3,imgs/3.png\n"
    )
    cli("ingest", "--predictions", str(csv), "--run", "csv")
    with cli.wh.connect() as con:
        fails = con.execute("select example_id, label, pred, image_uri, width from failures order by 1").fetchall()
    assert [(f[0], f[1], f[2]) for f in fails] == [(11, 1, 0), (13, 2, 1)]
    assert fails[0][3].endswith("imgs/1.png") and fails[0][4] == 8


def test_pred_and_confidence_only(cli, tmp_path):
    path = tmp_path / "pc.parquet"
    pq.write_table(pa.table({"id": ["a.jpg", "b.jpg", "c.jpg"], "label": ["cat", "dog", "cat"],
                             "pred": ["cat", "cat", "dog"], "confidence": [0.9, 0.55, 0.6]}), path)
    cli("ingest", "--predictions", str(path), "--classes", "cat,dog", "--run", "pc")
    with cli.wh.connect() as con:
        rows = con.execute("select example_id, source_id, pred, probs, top3_class from predictions order by 1").fetchall()
        acc = con.execute("select accuracy from run_metrics").fetchone()[0]
    assert rows[1] == (1, "b.jpg", 0, None, [0])
    assert acc == pytest.approx(1 / 3)


def test_existing_run_needs_force(cli, tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.8, 0.2]]}), path)
    cli("ingest", "--predictions", str(path), "--run", "r")
    out = cli("ingest", "--predictions", str(path), "--run", "r", expect=1)
    assert "already exists" in out.output and "--force" in out.output
    cli("ingest", "--predictions", str(path), "--run", "r", "--force")
    assert _table_counts(cli.wh) == {"runs": 1, "predictions": 2, "failures": 1}


def _write(tmp_path, name, table=None, text=None, raw=None):
    path = tmp_path / name
    if table is not None:
        (pq.write_table if name.endswith(".parquet") else (lambda t, p: pcsv.write_csv(t, p)))(table, path)
    elif text is not None:
        path.write_text(text)
    else:
        path.write_bytes(raw)
    return path


BAD_CASES = {
    "unknown class": (pa.table({"id": [1, 2], "label": ["cat", "lion"], "pred": ["cat", "cat"], "confidence": [0.9, 0.8]}),
                      ["--classes", "cat,dog"], "unknown classes in 'label'", "row 2 ('lion')"),
    "label id out of range": (pa.table({"id": [1, 2], "label": [0, 7], "probs": [[0.5, 0.5], [0.5, 0.5]]}),
                              [], "unknown classes", "row 2"),
    "rows not summing to 1": (pa.table({"id": [1, 2, 3], "label": [0, 1, 0], "probs": [[0.5, 0.5], [0.6, 0.6], [1.0, 0.0]]}),
                              [], "sum to 1", "row 2"),
    "nan probability": (pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.5, 0.5], [float("nan"), 1.0]]}),
                        [], "NaN", "row 2"),
    "duplicate ids": (pa.table({"id": [1, 2, 1], "label": [0, 1, 0], "probs": [[0.5, 0.5]] * 3}),
                      [], "duplicate ids", "row 1"),
    "missing label column": (pa.table({"id": [1], "probs": [[0.5, 0.5]]}), [], "required columns missing: label", ""),
    "no probabilities": (pa.table({"id": [1], "label": [0]}), ["--classes", "a,b"], "per-class probabilities", ""),
    "wrong vector width": (pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.5, 0.5], [0.2, 0.3, 0.5]]}),
                           ["--classes", "a,b"], "2 values per row", "row 2"),
    "missing image": (pa.table({"id": [1], "label": [0], "probs": [[0.5, 0.5]], "image": ["nope.png"]}),
                      ["--classes", "a,b"], "images not found", "nope.png"),
    "confidence out of range": (pa.table({"id": [1], "label": [0], "pred": [1], "confidence": [1.5]}),
                                ["--classes", "a,b"], "confidence", "row 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_rejected_and_nothing_written(cli, tmp_path, case):
    table, extra, expected, row = BAD_CASES[case]
    path = _write(tmp_path, "bad.parquet", table=table)
    out = cli("ingest", "--predictions", str(path), *extra, expect=1)
    assert expected in out.output and row in out.output, out.output
    assert _table_counts(cli.wh) == {"runs": 0, "predictions": 0, "failures": 0}


def test_non_utf8_csv_and_unreadable_image(cli, tmp_path):
    path = _write(tmp_path, "latin.csv", raw=b"id,label,pred,confidence\n1,caf\xe9,cat,0.5\n")
    out = cli("ingest", "--predictions", str(path), expect=1)
    assert "UTF-8" in out.output
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    path = _write(tmp_path, "p.parquet", table=pa.table(
        {"id": [1], "label": [0], "probs": [[0.2, 0.8]], "image": ["broken.png"]}))
    out = cli("ingest", "--predictions", str(path), expect=1)
    assert "broken.png" in out.output and "not a readable image" in out.output
    assert _table_counts(cli.wh) == {"runs": 0, "predictions": 0, "failures": 0}


def test_index_outside_dataset(cli, cifar_dir, tmp_path):
    path = _write(tmp_path, "p.parquet", table=pa.table(
        {"id": [1, 2], "label": [0, 1], "probs": [[0.1] * 10, [0.1] * 10], "index": [5, 10_000_000]}))
    out = cli("ingest", "--predictions", str(path), "--images", str(cifar_dir), expect=1)
    assert "10000000" in out.output
    assert _table_counts(cli.wh)["runs"] == 0
