"""The relabelling loop (issue 18, point 3), round trip with planted flips.

A small CIFAR-10 Parquet folder with planted label flips: five evaluation images carry the
class after their true one, and for each of them a training image of the same true class
carries that same wrong label. A base run is trained on it (1 epoch, CPU). Its evidence rows
are seeded (the scores are the diagnosis work's, tested there): the planted flips that are
failures get the top label-error scores. A reviewer confirms the first one. Then:

export (CSV, Label Studio tasks and config, images; the confirmed error followed by its
nearest training images with the same given label, the planted training flip first) →
an annotator corrects the CSV, another labels a task in Label Studio → ``lens labels import``
(append-only, who and when; bad files refused whole) → ``lens train --labels-from`` trains and
evaluates with the corrected labels → ``lens compare`` shows what changed. The dashboard's
``/relabel`` page offers the same export as a download.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from contracts import check_contracts
from PIL import Image

from lens.errors import DataError, LensError
from lens.stages import relabel, train
from lens.stages import verdicts as verdict_stage
from lens.warehouse import Warehouse, insert_arrow, stable_id

pytestmark = pytest.mark.slow  # trains two tiny models (a few seconds each)

N_TRAIN, N_TEST, N_FLIPS = 100, 40, 5
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _lens(wh: Warehouse, *args: str, expect: int = 0):
    from lens.cli import cli as lens_cli

    res = CliRunner().invoke(lens_cli, ["--warehouse", str(wh.path), *args], catch_exceptions=False)
    assert res.exit_code == expect, f"exit {res.exit_code}, expected {expect}:\n{res.output}"
    return res.output


def _planted_dataset(cifar_dir: Path, dest: Path) -> dict:
    """Train/test Parquet slices with planted flips; returns what was planted."""
    dest.mkdir()
    test = pq.read_table(cifar_dir / "test.parquet").slice(0, N_TEST)
    trn = pq.read_table(cifar_dir / "train.parquet").slice(0, N_TRAIN)
    t_labels, r_labels = test.column("label").to_pylist(), trn.column("label").to_pylist()
    t_index, r_index = test.column("index").to_pylist(), trn.column("index").to_pylist()
    eval_flips, train_twin = {}, {}
    used = set()
    for pos in range(N_FLIPS):
        true = t_labels[pos]
        wrong = (true + 1) % 10
        t_labels[pos] = wrong
        eval_flips[t_index[pos]] = (true, wrong)
        twin = next(p for p in range(N_TRAIN) if r_labels[p] == true and p not in used)
        used.add(twin)
        r_labels[twin] = wrong
        train_twin[t_index[pos]] = r_index[twin]
    pq.write_table(test.set_column(test.column_names.index("label"), "label", pa.array(t_labels, pa.int64())),
                   dest / "test.parquet")
    pq.write_table(trn.set_column(trn.column_names.index("label"), "label", pa.array(r_labels, pa.int64())),
                   dest / "train.parquet")
    return {"eval": eval_flips, "twin": train_twin, "train_labels": dict(zip(r_index, r_labels))}


def _seed_evidence(wh: Warehouse, run_id: str, planted: dict) -> list[int]:
    """Evidence rows with label-error scores (planted flips that are failures on top); returns those flips."""
    fails = wh.query("select example_id, label, pred, confidence, true_prob from failures where run_id = ? "
                     "order by example_id", [run_id])
    flips = [e for e in planted["eval"] if e in set(fails.example_id)]
    score = {e: 0.95 - 0.01 * i for i, e in enumerate(flips)}
    rows = []
    for r in fails.itertuples():
        s = score.get(r.example_id, 0.05 + 0.001 * (r.example_id % 50))
        rows.append({
            "run_id": run_id, "example_id": r.example_id, "label": r.label, "pred": r.pred,
            "confidence": r.confidence, "true_prob": r.true_prob, "label_error_score": s, "ambiguity_score": 0.2,
            "diagnosis": json.dumps({"label_error": {"model": "probs+neighbours",
                                                     "signals": {"log_given_prob": float(np.log(max(r.true_prob, 1e-6)))},
                                                     "missing": []}, "version": "test"}),
            "diagnosis_version": "test", "computed_at": datetime(2024, 1, 1),
        })
    with wh.transaction() as con:
        insert_arrow(con, "evidence", pa.Table.from_pylist(rows))
        insert_arrow(con, "detection_power", pa.Table.from_pylist([{
            "run_id": run_id, "diagnosis_version": "test", "signals": "probs+neighbours", "eval_examples": N_TEST,
            "flips_per_trial": 2, "trials": 1, "threshold": 0.5, "verdict": "useful",
            "message": "Seeded detection power: planted flips are found.", "computed_at": datetime(2024, 1, 1)}]))
    return flips


def _confirm(wh: Warehouse, run_id: str, example_id: int, verdict: str = "agree") -> None:
    """A data_quality answer tagged annotation_issue, and a reviewer's verdict on it."""
    hyp = stable_id(run_id, example_id, "measured", "m", "p" * 64)
    with wh.transaction() as con:
        insert_arrow(con, "hypotheses", pa.Table.from_pylist([{
            "hypothesis_id": hyp, "run_id": run_id, "example_id": example_id, "backend": "measured", "model": "m",
            "prompt_name": "reference", "prompt_sha256": "p" * 64, "status": "ok", "attempts": 1,
            "created_at": datetime(2024, 1, 1)}]))
        insert_arrow(con, "hypothesis_dimensions", pa.Table.from_pylist([{
            "hypothesis_id": hyp, "run_id": run_id, "example_id": example_id, "dimension": "data_quality",
            "tag": "annotation_issue", "text": "label may be wrong", "summary": "The label may be wrong."}]))
    verdict_stage.append(wh, [{"hypothesis_id": hyp, "dimension": "data_quality", "verdict": verdict,
                              "reviewer": "rita"}], source="review")


@pytest.fixture(scope="module")
def base(tmp_path_factory, cifar_dir):
    """The planted dataset, a base run trained on it with seeded evidence, one confirmed error."""
    root = tmp_path_factory.mktemp("relabel")
    planted = _planted_dataset(cifar_dir, root / "data")
    wh = Warehouse(root / "wh" / "lens.duckdb", lock_timeout=30)
    train.run(wh, data=str(root / "data"), run_id="base", epochs=1, batch_size=32, device="cpu", pretrained=False,
              progress=False)
    flips = _seed_evidence(wh, "base", planted)
    assert len(flips) >= 2, f"the planted flips must include 2 failures of the base run: {flips}"
    confirmed = flips[0]
    _confirm(wh, "base", confirmed)
    # the planted training flip is the confirmed error's near-duplicate in the model's feature space
    with wh.transaction() as con:
        con.execute("update features set vector = (select vector from features where run_id = 'base' and "
                    "split = 'eval' and example_id = ?) where run_id = 'base' and split = 'train' and example_id = ?",
                    [confirmed, planted["twin"][confirmed]])
    return {"root": root, "wh": wh, "planted": planted, "flips": flips, "confirmed": confirmed}


def _copy(base, tmp_path) -> Warehouse:
    shutil.copytree(base["wh"].path.parent, tmp_path / "wh")
    return Warehouse(tmp_path / "wh" / "lens.duckdb", lock_timeout=30)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class _Flips:
    """The round trip's examples: the confirmed error ``e1`` (and its training twin), a second flip ``e2``."""
    e1: int
    e2: int
    twin: int
    true1: int
    wrong1: int
    true2: int


def _flips(base) -> _Flips:
    planted, e1, e2 = base["planted"], base["confirmed"], base["flips"][1]
    true1, wrong1 = planted["eval"][e1]
    return _Flips(e1, e2, planted["twin"][e1], true1, wrong1, planted["eval"][e2][0])


def _check_export_rows(wh: Warehouse, base, f: _Flips, folder: Path) -> list[dict[str, str]]:
    """candidates.csv: the planted flips first, the confirmed error followed by its same-label
    training neighbours; the images beside it. Returns the rows."""
    planted, flips = base["planted"], base["flips"]
    rows = _rows(folder / "candidates.csv")
    evals = [r for r in rows if r["split"] == "test"]
    assert [int(r["rank"]) for r in evals] == list(range(1, len(evals) + 1)) and len(evals) == 10
    assert [int(r["example_id"]) for r in evals[:len(flips)]] == flips  # the planted flips rank first
    first = rows[0]
    assert (int(first["example_id"]), first["review"], first["given_label"]) == (f.e1, "confirmed", CLASSES[f.wrong1])
    assert first["suggested_label"] == CLASSES[wh.query("select pred from failures where run_id = 'base' and "
                                                        "example_id = ?", [f.e1]).pred[0]]
    assert float(first["label_error_score"]) == pytest.approx(0.95) and first["above_threshold"] == "True"
    assert json.loads(first["signals"])["log_given_prob"] < 0
    # the confirmed error is followed by its nearest training images with the same given label
    neigh = rows[1:4]
    assert [r["split"] for r in neigh] == ["train"] * 3 and all(r["neighbour_of"] == str(f.e1) for r in neigh)
    assert int(neigh[0]["example_id"]) == f.twin and float(neigh[0]["similarity"]) == pytest.approx(1.0, abs=1e-5)
    assert all(planted["train_labels"][int(r["example_id"])] == f.wrong1 for r in neigh)
    sims = [float(r["similarity"]) for r in neigh]
    assert sims == sorted(sims, reverse=True) and rows[4]["split"] == "test"
    # images: the failure's stored PNG, and the training image decoded from the dataset
    stored = wh.query("select image_png from failures where run_id = 'base' and example_id = ?", [f.e1]).image_png[0]
    assert (folder / first["image"]).read_bytes() == bytes(stored)
    twin_img = np.asarray(Image.open(folder / neigh[0]["image"]))
    src = pq.read_table(base["root"] / "data" / "train.parquet")
    jpeg = src.column("img").combine_chunks().field("bytes")[src.column("index").to_pylist().index(f.twin)].as_py()
    assert (twin_img == np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))).all()
    return rows


def _check_label_studio_export(folder: Path, rows: list[dict[str, str]]) -> list[dict]:
    """One task per row, images by reference, the suggestion as a pre-annotation; the config's
    choices are the classes. Returns the tasks."""
    first = rows[0]
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    assert len(tasks) == len(rows)
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=" + first["image"]
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [first["suggested_label"]]
    config = ET.fromstring((folder / "label_studio_config.xml").read_text())
    assert [c.get("value") for c in config.iter("Choice")] == CLASSES
    assert {e.get("name") for e in config.iter() if e.get("name")} >= {"image", "label"}
    return tasks


def _import_corrected_csv(wh: Warehouse, f: _Flips, rows: list[dict[str, str]], tmp_path: Path) -> None:
    """An annotator corrects the confirmed error and its twin in the CSV; importing twice adds nothing."""
    for r in rows:
        if (r["split"], r["example_id"]) in (("test", str(f.e1)), ("train", str(f.twin))):
            r["corrected_label"], r["annotator"] = CLASSES[f.true1], "ann@example.org"
    with open(tmp_path / "done.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = _lens(wh, "labels", "import", str(tmp_path / "done.csv"))
    assert "Imported 2 label corrections for run 'base' (1 test, 1 train; 2 change the label)" in out
    assert f"{len(rows) - 2:,} without a label, 0 already stored" in out
    out = _lens(wh, "labels", "import", str(tmp_path / "done.csv"))
    assert "Imported 0 label corrections" in out and "2 already stored" in out  # idempotent


def _import_label_studio(wh: Warehouse, base, f: _Flips, tasks: list[dict], tmp_path: Path) -> None:
    """Another annotator labels ``e2`` in Label Studio (a cancelled annotation and an unlabelled
    task are skipped); all three corrections are stored with who, when and where from."""
    i2 = next(i for i, t in enumerate(tasks) if t["data"]["example_id"] == f.e2 and t["data"]["split"] == "test")
    ls_export = [
        {**tasks[i2], "id": 71, "annotations": [
            {"id": 1, "completed_by": {"id": 3, "email": "bob@example.org"}, "was_cancelled": False,
             "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:05.5Z",
             "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                         "value": {"choices": [CLASSES[f.true2]]}}]},
            {"id": 2, "completed_by": 4, "was_cancelled": True, "created_at": "2024-05-02T00:00:00Z",
             "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["frog"]}}]},
        ]},
        {**tasks[5], "id": 72, "annotations": []},  # not labelled yet: skipped
    ]
    (tmp_path / "ls.json").write_text(json.dumps(ls_export))
    out = _lens(wh, "labels", "import", str(tmp_path / "ls.json"))
    assert "Imported 1 label corrections" in out and "1 without a label" in out
    stored = wh.query("select split, example_id, old_label, new_label, old_name, new_name, who, annotated_at, "
                      "source_format, source_file from label_corrections order by imported_at, split")
    assert stored[["split", "example_id", "old_label", "new_label", "who", "source_format"]].values.tolist() == [
        ["test", f.e1, f.wrong1, f.true1, "ann@example.org", "csv"],
        ["train", f.twin, f.wrong1, f.true1, "ann@example.org", "csv"],
        ["test", f.e2, base["planted"]["eval"][f.e2][1], f.true2, "bob@example.org", "label-studio"],
    ]
    assert stored.annotated_at[2] == datetime(2024, 5, 1, 10, 0, 5, 500000) and stored.source_file[2].endswith("ls.json")


def _train_with_corrections(wh: Warehouse, base, f: _Flips) -> None:
    """``labels_from`` trains and evaluates with the corrected labels, nothing else changed."""
    res = train.run(wh, data=str(base["root"] / "data"), run_id="fixed", epochs=1, batch_size=32, device="cpu",
                    pretrained=False, progress=False, labels_from="base")
    info = res.config["labels_from"]
    assert info["run"] == "base" and info["train"] == [{"example_id": f.twin, "old": f.wrong1, "new": f.true1}]
    assert [c["example_id"] for c in info["eval"]] == sorted([f.e1, f.e2])
    labels = {r: dict(wh.query("select example_id, label from predictions where run_id = ?", [r]).values.tolist())
              for r in ("base", "fixed")}
    assert labels["fixed"][f.e1] == f.true1 and labels["fixed"][f.e2] == f.true2
    assert {e for e in labels["base"] if labels["base"][e] != labels["fixed"][e]} == {f.e1, f.e2}
    train_labels = dict(wh.query("select example_id, label from features where run_id = 'fixed' and split = 'train'"
                                 ).values.tolist())
    assert train_labels[f.twin] == f.true1
    assert {e: l for e, l in train_labels.items() if e != f.twin} == {
        e: l for e, l in base["planted"]["train_labels"].items() if e != f.twin}
    assert wh.query("select parent_run_id from runs where run_id = 'fixed'").parent_run_id[0] == "base"


def _check_compare(wh: Warehouse, f: _Flips) -> None:
    """``lens compare`` names the corrections and lists the changed evaluation labels."""
    out = _lens(wh, "compare", "base", "fixed")
    assert "fixed was trained with the label corrections of 'base': 1 training and 2 evaluation labels changed" in out
    assert "Evaluation labels that differ (2; each run is scored against its own)" in out
    data = json.loads(_lens(wh, "compare", "base", "fixed", "--format", "json"))
    by_id = {r["example_id"]: r for r in data["labels"]}
    assert (by_id[f.e1]["label_a"], by_id[f.e1]["label_b"]) == (CLASSES[f.wrong1], CLASSES[f.true1])


def test_round_trip_export_import_train_compare(base, tmp_path):
    wh, f = _copy(base, tmp_path), _flips(base)

    # -- export ---------------------------------------------------------------------------------
    out = _lens(wh, "export", "relabel", "--run", "base", "--top", "10", "--neighbours", "3",
                "--out", str(tmp_path / "x"))
    assert "1 confirmed by a reviewer" in out and "Seeded detection power" in out
    rows = _check_export_rows(wh, base, f, tmp_path / "x")
    tasks = _check_label_studio_export(tmp_path / "x", rows)

    # -- an annotator corrects the CSV; another labels a task in Label Studio ----------------------
    _import_corrected_csv(wh, f, rows, tmp_path)
    _import_label_studio(wh, base, f, tasks, tmp_path)

    # -- train with the corrections, compare shows what changed -----------------------------------
    _train_with_corrections(wh, base, f)
    _check_compare(wh, f)
    with wh.connect() as con:
        check_contracts(con, require_rows=("label_corrections",))


def test_bad_files_are_refused_whole_naming_the_rows(base, tmp_path):
    wh, e1, e2 = base["wh"], base["confirmed"], base["flips"][1]
    before = wh.query("select count(*) as n from label_corrections").n[0]
    given = CLASSES[base["planted"]["eval"][e1][1]]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "run_id,split,example_id,given_label,corrected_label,annotator\n"
        f"base,test,{e1},{given},cat,ann\n"          # fine
        f"base,test,{e2},,kitten,ann\n"              # unknown class
        "base,test,999999,,dog,ann\n"               # no such evaluation example
        f"base,train,{10**7},,dog,ann\n"             # no such training example
        f"base,test,{e1},truck_or_not,dog,ann\n"     # given label differs from the run's
        f"base,valid,{e1},,dog,ann\n"                # split neither train nor the eval split
        f"base,test,{e2},,'=cmd,\n"                  # a formula, unknown, and no annotator
        "base,test,,,,ann\n",                        # not labelled: skipped, not an error
        encoding="utf-8")
    with pytest.raises(DataError) as err:
        relabel.import_labels(wh, bad)
    msg = str(err.value)
    assert "6 row(s) refused, nothing written" in msg and "\n" not in msg
    for expected in ("line 3: unknown class 'kitten'", "line 4: no evaluation example 999999 in run 'base'",
                     f"line 5: no training example {10**7}", "line 6: given label 'truck_or_not'",
                     "line 7: split 'valid'", "and 1 more"):
        assert expected in msg, expected
    with pytest.raises(DataError, match="unknown class '=cmd', no annotator"):
        bad.write_text(f"run_id,example_id,corrected_label\nbase,{e2},'=cmd\n")
        relabel.import_labels(wh, bad)
    # JSON-MIN (Label Studio's flat export): rows named by task
    (tmp_path / "min.json").write_text(json.dumps([
        {"id": 5, "run_id": "base", "split": "test", "example_id": e1, "label": "cat", "annotator": "x@y"},
        {"id": 6, "run_id": "base", "split": "test", "example_id": e2, "label": "kitten", "annotator": "x@y"}]))
    with pytest.raises(DataError, match=r"task 2 \(id 6\): unknown class 'kitten'"):
        relabel.import_labels(wh, tmp_path / "min.json")
    with pytest.raises(DataError, match="several runs"):
        relabel.import_labels(wh, tmp_path / "min.json", run_id="other")
    assert wh.query("select count(*) as n from label_corrections").n[0] == before
    # training refuses corrections that are not there, or are for another dataset
    with pytest.raises(LensError, match="no label corrections imported"):
        train.run(wh, data=str(base["root"] / "data"), run_id="x", labels_from="base", device="cpu", progress=False)
    shutil.copytree(base["root"] / "data", tmp_path / "copy")
    with pytest.raises(LensError, match="not .*copy.*train on the same --data"):
        train.run(wh, data=str(tmp_path / "copy"), run_id="x", labels_from="base", device="cpu", progress=False)


def test_export_refuses_a_used_folder_and_needs_scores(base, tmp_path):
    wh = base["wh"]
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("keep me")
    with pytest.raises(LensError, match="not empty"):
        relabel.export(wh, run_id="base", out_dir=tmp_path / "used")
    assert (tmp_path / "used" / "mine.txt").read_text() == "keep me"
    res = relabel.export(wh, run_id="base", out_dir=tmp_path / "used", top=3, force=True)
    assert res.candidates == 3 and sorted(p.name for p in (tmp_path / "used").iterdir()) == [
        "README.txt", "candidates.csv", "images", "label_studio_config.xml", "label_studio_tasks.json"]
    assert "lens labels import" in (tmp_path / "used" / "README.txt").read_text()
    empty = Warehouse(tmp_path / "empty.duckdb")
    with empty.transaction() as con:
        con.execute("insert into runs (run_id, kind, created_at, num_classes) values ('r', 'ingest', now(), 2)")
    with pytest.raises(LensError, match="no label-error scores yet: run `lens evidence --run r` first"):
        relabel.export(empty, run_id="r", out_dir=tmp_path / "none")


def test_dashboard_page_and_download(base):
    from dashboards.app import create_app

    app = create_app(base["wh"])
    client = app.server.test_client()

    def callback(outputs, inputs, state=(), changed=()):
        body = {"output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + ".." if len(outputs) > 1
                else f"{outputs[0][0]}.{outputs[0][1]}",
                "outputs": [{"id": i, "property": p} for i, p in outputs] if len(outputs) > 1
                else {"id": outputs[0][0], "property": outputs[0][1]},
                "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
                "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
                "changedPropIds": list(changed)}
        resp = client.post("/_dash-update-component", json=body)
        assert resp.status_code == 200, resp.data[:500]
        return resp.get_json()["response"]

    page = callback([("page", "children")], [("url", "pathname", "/relabel"), ("url", "search", "?run=base")],
                    [("reviewer-store", "data", None)], ["url.pathname"])
    text = json.dumps(page)
    assert "relabel-table" in text and "relabel-download-btn" in text and "Seeded detection power" in text
    assert "nav-relabel" in text  # reachable from every page's navigation
    assert f"/img/base/{base['confirmed']}.png" in text and "confirmed" in text

    reply = callback([("relabel-download", "data"), ("relabel-status", "children")],
                     [("relabel-download-btn", "n_clicks", 1)],
                     [("relabel-top", "value", 4), ("relabel-run", "data", "base")], ["relabel-download-btn.n_clicks"])
    sent = reply["relabel-download"]["data"]
    assert sent["filename"] == "relabel-base.zip" and "4 candidates" in reply["relabel-status"]["children"]
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(sent["content"]))) as z:
        names = set(z.namelist())
        assert {"relabel-base/candidates.csv", "relabel-base/label_studio_tasks.json",
                "relabel-base/label_studio_config.xml"} <= names
        rows = list(csv.DictReader(io.StringIO(z.read("relabel-base/candidates.csv").decode())))
    assert len([r for r in rows if r["split"] == "test"]) == 4
    assert all(f"relabel-base/{r['image']}" in names for r in rows if r["image"])
