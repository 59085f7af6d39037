"""Artifacts are found from any working directory and after the warehouse moves (issue 13, point 7).

``runs.checkpoint_path`` stores the checkpoint relative to the warehouse's folder
(``Warehouse.artifact_ref``) and every reader resolves it through ``Warehouse.artifact_path``,
which also finds what older warehouses stored (paths relative to the working directory of the
command that trained, or absolute paths of a folder since moved).

The end-to-end test trains a tiny run (real `lens train` subprocess), then runs
``lens --warehouse /abs/path evidence --force`` from another folder and after moving the whole
warehouse folder, and checks that saliency was computed each time (before the fix it was skipped
as "checkpoint not found").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from lens.warehouse import Warehouse

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "LENS_LOCK_TIMEOUT": "30", "PYTHONPATH": str(REPO)}
TRAIN = ["--no-pretrained", "--limit-train", "200", "--limit-test", "60", "--epochs", "1", "--batch-size", "50",
         "--image-size", "16", "--run", "t"]
EVIDENCE = ["evidence", "--run", "t", "--force", "--stats-limit", "200"]


def _lens(cwd: Path, warehouse: str, *args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "lens", "--warehouse", warehouse, *args], cwd=cwd, env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def _stored(db: Path) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("select checkpoint_path from runs where run_id = 't'").fetchone()[0]


def _set_stored(db: Path, value: str) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute("update runs set checkpoint_path = ? where run_id = 't'", [value])


def _saliency(db: Path) -> tuple[int, int, list[str]]:
    """(failures with evidence, of them with a saliency image, distinct saliency skip reasons)."""
    with duckdb.connect(str(db), read_only=True) as con:
        n, with_png = con.execute(
            "select count(*), count(saliency_png) from evidence where run_id = 't'").fetchone()
        skipped = [r[0] for r in con.execute("select distinct skipped from evidence where run_id = 't'").fetchall()]
    reasons = sorted({json.loads(s).get("saliency", "") for s in skipped if s})
    return n, with_png, [r for r in reasons if r]


def _assert_saliency_computed(db: Path, out: str) -> None:
    n, with_png, reasons = _saliency(db)
    assert n > 0 and with_png == n, (n, with_png, reasons, out)
    assert not any("not found" in r for r in reasons) and "not found" not in out, (reasons, out)


# -- the resolver ----------------------------------------------------------------------------


def test_artifact_ref_is_relative_to_the_warehouse_folder(tmp_path, monkeypatch):
    wh = Warehouse(tmp_path / "wh" / "lens.duckdb")
    ckpt = wh.artifact_dir("r 1") / "model-x.pt"
    ckpt.write_bytes(b"w")
    assert wh.artifact_ref(ckpt) == "artifacts/r_1/model-x.pt"
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"o")
    assert wh.artifact_ref(outside) == str(outside)  # not under the warehouse folder: absolute
    # a relative --warehouse gives the same reference, and it resolves from any directory
    monkeypatch.chdir(tmp_path)
    rel = Warehouse("wh/lens.duckdb")
    assert rel.artifact_ref(Path("wh/artifacts/r_1/model-x.pt")) == "artifacts/r_1/model-x.pt"
    assert rel.artifact_path("artifacts/r_1/model-x.pt").read_bytes() == b"w"
    monkeypatch.chdir(tmp_path / "wh" / "artifacts")
    assert wh.artifact_path("artifacts/r_1/model-x.pt").read_bytes() == b"w"
    assert wh.artifact_path(str(outside)) == outside
    # memory warehouses store absolute paths
    mem = Warehouse(":memory:")
    assert Path(mem.artifact_ref(ckpt)).is_absolute()


def test_artifact_path_finds_what_older_warehouses_stored(tmp_path, monkeypatch):
    old = tmp_path / "proj" / "warehouse"
    wh = Warehouse(old / "lens.duckdb")
    (wh.artifact_dir("demo") / "model-a.pt").write_bytes(b"a")
    monkeypatch.chdir(tmp_path / "proj")
    legacy_rel = "warehouse/artifacts/demo/model-a.pt"  # relative to the cwd of the old `lens train`
    legacy_abs = str(old / "artifacts" / "demo" / "model-a.pt")
    assert wh.artifact_path(legacy_rel).read_bytes() == b"a"  # from that cwd
    assert wh.artifact_path(legacy_abs).read_bytes() == b"a"
    # the folder moves (and we run from somewhere else): both old forms still resolve
    moved = tmp_path / "moved"
    shutil.move(str(old), str(moved))
    monkeypatch.chdir(tmp_path)
    wh2 = Warehouse(moved / "lens.duckdb")
    assert wh2.artifact_path(legacy_rel) == moved / "artifacts" / "demo" / "model-a.pt"
    assert wh2.artifact_path(legacy_abs) == moved / "artifacts" / "demo" / "model-a.pt"
    # nothing there: the path under the warehouse folder, for the "not found" message
    assert wh2.artifact_path("artifacts/demo/gone.pt") == moved / "artifacts" / "demo" / "gone.pt"
    assert not wh2.artifact_path("/nowhere/model.pt").exists()


# -- end to end: train, then evidence from elsewhere and after a move ------------------------------


@pytest.mark.slow
def test_checkpoint_found_from_another_folder_and_after_the_warehouse_moves(tmp_path, cifar_dir):
    home = tmp_path / "proj"
    home.mkdir()
    # trained from the project folder with a relative --warehouse, as the README does
    _lens(home, "warehouse/lens.duckdb", "train", "--data", str(cifar_dir), *TRAIN)
    db = home / "warehouse" / "lens.duckdb"
    stored = _stored(db)
    assert not Path(stored).is_absolute() and stored.startswith("artifacts/t/model-"), stored
    assert (db.parent / stored).is_file()

    # 1. evidence from another folder with an absolute --warehouse
    other = tmp_path / "somewhere" / "else"
    other.mkdir(parents=True)
    _assert_saliency_computed(db, _lens(other, str(db), *EVIDENCE))

    # 2. the whole warehouse folder moves: still found, from yet another folder
    moved = tmp_path / "archive" / "wh-copy"
    moved.parent.mkdir()
    shutil.move(str(db.parent), str(moved))
    db = moved / "lens.duckdb"
    _assert_saliency_computed(db, _lens(tmp_path, str(db), *EVIDENCE))

    # 3. a warehouse written before the fix (path relative to the trainer's cwd), moved too
    _set_stored(db, "warehouse/" + stored)
    _assert_saliency_computed(db, _lens(other, str(db), *EVIDENCE))

    # 4. a retrain from elsewhere keeps exactly the checkpoint its run names (the cleanup of
    #    replaced checkpoints resolves stored paths the same way)
    _set_stored(db, stored)
    _lens(other, str(db), "train", "--data", str(cifar_dir), *TRAIN, "--seed", "1", "--force")
    stored = _stored(db)
    files = sorted(p.name for p in (moved / "artifacts" / "t").iterdir())
    assert files == [Path(stored).name], (files, stored)
    _assert_saliency_computed(db, _lens(tmp_path, str(db), *EVIDENCE))
