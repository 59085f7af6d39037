"""The bad-input corpus (tests/data/bad/README.md): each input gets a clear error or is accepted
correctly, and nothing partial is ever written. The whole corpus at once, through the CLI, is in
tests/test_bad_inputs_corpus.py; the image corpus fixture and the CSV cases are in
tests/_bad_inputs_support.py."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from _bad_inputs_support import CSV_CASES, _digest, corpus  # noqa: F401 -- corpus is a fixture
from lens.datasets import ImageFolderSource, decode_image
from lens.errors import DataError


@pytest.mark.parametrize("name,expected", [
    ("truncated.png", "not a readable image"),
    ("empty.png", "empty image (0 bytes)"),
    ("text.png", "not a readable image"),
    ("bomb.png", "decompression bomb"),
])
def test_unreadable_images_are_named(corpus, name, expected):
    with pytest.raises(DataError) as err:
        decode_image((corpus / name).read_bytes(), where=str(corpus / name))
    assert expected in str(err.value) and name in str(err.value)


def test_odd_modes_become_rgb(corpus):
    gray = np.asarray(decode_image((corpus / "gray.png").read_bytes(), where="gray"))
    assert gray.shape == (16, 16, 3) and (gray[..., 0] == gray[..., 2]).all() and gray[0, 5, 1] == 5
    rgba = np.asarray(decode_image((corpus / "rgba.png").read_bytes(), where="rgba"))
    assert tuple(rgba[0, 0]) == (200, 0, 0) and tuple(rgba[15, 0]) == (255, 255, 255)
    sixteen = np.asarray(decode_image((corpus / "sixteen.png").read_bytes(), where="16-bit"))
    assert sixteen.dtype == np.uint8 and sixteen[0, 0, 0] == 0 and sixteen[15, 15, 0] == 255
    assert np.asarray(decode_image((corpus / "palette.png").read_bytes(), where="p")).shape == (16, 16, 3)


def _counts(wh):
    with wh.connect() as con:
        return [con.execute(f"select count(*) from {t}").fetchone()[0] for t in ("runs", "predictions", "failures")]


def _copy(corpus, tmp_path, *names):
    for n in names:
        shutil.copyfile(corpus / n, tmp_path / n)


@pytest.mark.parametrize("bad,expected", [("truncated.png", "not a readable image"),
                                          ("empty.png", "empty image (0 bytes)"),
                                          ("text.png", "not a readable image"),
                                          ("bomb.png", "decompression bomb")])
def test_ingest_with_a_bad_image_writes_nothing(cli, corpus, tmp_path, bad, expected):
    _copy(corpus, tmp_path, "good.png", bad)
    path = tmp_path / "p.parquet"
    # the bad image belongs to a failure (row 2), so it must be decoded
    pq.write_table(pa.table({
        "id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.8, 0.2]],
        "image": [str(tmp_path / "good.png"), bad],
    }), path)
    out = cli("ingest", "--predictions", str(path), "--classes", "a,b", expect=1)
    assert bad in out.output and "row 2" in out.output and expected in out.output, out.output
    assert _counts(cli.wh) == [0, 0, 0]


def test_ingest_accepts_odd_modes(cli, corpus, tmp_path):
    path = tmp_path / "p.parquet"
    names = ["gray.png", "rgba.png", "sixteen.png", "palette.png"]
    _copy(corpus, tmp_path, *names)
    pq.write_table(pa.table({
        "id": [1, 2, 3, 4], "label": [0, 0, 0, 0], "probs": [[0.1, 0.9]] * 4,
        "image": [str(tmp_path / n) for n in names],
    }), path)
    cli("ingest", "--predictions", str(path), "--classes", "a,b")
    with cli.wh.connect() as con:
        pngs = [r[0] for r in con.execute("select image_png from failures order by example_id").fetchall()]
    assert len(pngs) == 4 and all(Image.open(io.BytesIO(p)).mode == "RGB" for p in pngs)


def test_image_folder_with_a_bad_file_names_it(corpus, tmp_path):
    root = tmp_path / "folder"
    for cls in ("cat", "dog"):
        (root / "test" / cls).mkdir(parents=True)
        (root / "test" / cls / "ok.png").write_bytes((corpus / "good.png").read_bytes())
    (root / "test" / "dog" / "broken.png").write_bytes((corpus / "truncated.png").read_bytes())
    src = ImageFolderSource(root)
    assert src.class_names == ["cat", "dog"]
    with pytest.raises(DataError, match="broken.png"):
        src.load("test")
    with pytest.raises(DataError, match="split 'train' is missing"):
        src.load("train")


def test_formula_text_stays_text(cli, tmp_path):
    csv = tmp_path / "f.csv"
    csv.write_text('id,label,pred,confidence\n"=HYPERLINK(""http://x"")",a,b,0.9\n"@SUM(A1)",b,b,0.8\n')
    cli("ingest", "--predictions", str(csv), "--classes", "a,b", "--run", "f")
    with cli.wh.connect() as con:
        ids = [r[0] for r in con.execute("select source_id from predictions order by example_id").fetchall()]
    assert ids == ['=HYPERLINK("http://x")', "@SUM(A1)"]  # stored verbatim, never evaluated
    out = cli("ingest", "--predictions", str(csv), "--classes", "a,c", "--run", "g", expect=1)
    assert "unknown classes" in out.output


def test_unknown_label_in_dataset(tmp_path):
    path = tmp_path / "ds"
    path.mkdir()
    table = pa.table({"img": [{"bytes": b"x", "path": None}], "label": [12]})
    pq.write_table(table.replace_schema_metadata({"class_names": '["a", "b"]'}), path / "test.parquet")
    from lens.datasets import open_source

    with pytest.raises(DataError, match=r"labels out of range 0..1: row 0 \(label 12\)"):
        open_source(path).labels("test")


# -- the same faults through CSV, and through `lens train` -------------------------------------

@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_csv_bad_values_are_rejected_and_nothing_written(cli, tmp_path, case):
    text, words = CSV_CASES[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    out = cli("ingest", "--predictions", str(path), "--classes", "a,b", expect=1)
    for w in words:
        assert w in out.output, out.output
    assert "Traceback" not in out.output
    assert _counts(cli.wh) == [0, 0, 0]


def _image_folder(root, corpus, bad: str | None):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                (root / split / cls / f"{i}.png").write_bytes((corpus / "good.png").read_bytes())
    if bad:
        (root / "train" / "dog" / bad).write_bytes((corpus / bad).read_bytes())


@pytest.mark.parametrize("bad,expected", [("empty.png", "empty image (0 bytes)"),
                                          ("text.png", "not a readable image"),
                                          ("bomb.png", "decompression bomb"),
                                          (None, None)])
def test_train_on_an_image_folder_with_a_bad_file_stops_before_training(cli, corpus, tmp_path, bad, expected):
    root = tmp_path / "folder"
    _image_folder(root, corpus, bad)
    if bad is None:  # the control: the same folder without the bad file trains
        cli("train", "--data", str(root), "--no-pretrained", "--epochs", "1", "--batch-size", "2", "--image-size", "16")
        assert _counts(cli.wh) == [1, 4, cli.wh.query("select count(*) n from failures").n[0]]
        return
    out = cli("train", "--data", str(root), "--no-pretrained", "--epochs", "1", "--batch-size", "2", expect=1)
    assert bad in out.output and expected in out.output, out.output
    assert "Training ResNet-18" not in out.output and "Traceback" not in out.output  # no epoch started
    with cli.wh.connect() as con:
        assert [con.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("runs", "predictions", "failures", "features", "training_log", "stage_runs")] == [0] * 6
    art = cli.wh.path.parent / "artifacts"
    assert not art.exists() or not any(art.rglob("*.pt*"))  # no checkpoint either


# -- issue 13: ids that do not fit, class counts that would exhaust memory -------------------

def _ingested_ids(wh):
    with wh.connect() as con:
        return [r[0] for r in con.execute("select example_id from predictions order by example_id").fetchall()]


@pytest.mark.parametrize("case", ["label 10**7 (CSV)", "label 10**12 (Parquet)", "pred 10**12 with --classes",
                                  "uint64 label 2**64-1"])
def test_huge_class_ids_are_refused_before_anything_is_allocated(cli, tmp_path, case):
    import tracemalloc

    if case == "label 10**7 (CSV)":
        path = tmp_path / "p.csv"
        path.write_text("id,label,pred,confidence\n1,0,1,0.5\n2,10000000,0,0.5\n")
        args, words = [], ["class id too large in 'label'", "row 2 (10000000)", "--classes"]
    elif case == "label 10**12 (Parquet)":
        path = tmp_path / "p.parquet"
        pq.write_table(pa.table({"id": [1, 2], "label": [0, 10**12], "pred": [1, 0], "confidence": [0.5, 0.5]}), path)
        args, words = [], ["class id too large in 'label'", "row 2 (1000000000000)"]
    elif case == "pred 10**12 with --classes":
        path = tmp_path / "p.parquet"
        pq.write_table(pa.table({"id": [1, 2], "label": [0, 1], "pred": [10**12, 0], "confidence": [0.5, 0.5]}), path)
        args, words = ["--classes", "a,b"], ["unknown classes in 'pred'", "row 1 (1000000000000)"]
    else:
        path = tmp_path / "p.parquet"
        pq.write_table(pa.table({"id": [1, 2], "label": pa.array([0, 2**64 - 1], pa.uint64()),
                                 "probs": [[0.5, 0.5], [0.4, 0.6]]}), path)
        args, words = [], ["unknown classes in 'label'", "row 2 (18446744073709551615)"]  # never shown as -1
    tracemalloc.start()
    try:
        out = cli("ingest", "--predictions", str(path), *args, expect=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for w in words:
        assert w in out.output, out.output
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated for a refused file"  # 10**7 classes took 1.4 GB
    assert _counts(cli.wh) == [0, 0, 0]


@pytest.mark.parametrize("fmt", ["parquet uint64", "csv"])
def test_ids_beyond_int64_are_refused_and_ids_within_are_stored_exactly(cli, tmp_path, fmt):
    top = 2**63 - 1
    if fmt == "csv":
        bad = tmp_path / "bad.csv"
        bad.write_text(f"id,label,prob_a,prob_b\n{2**63},a,0.5,0.5\n{2**63 + 1},b,0.5,0.5\n")
        good = tmp_path / "good.csv"
        good.write_text(f"id,label,prob_a,prob_b\n{-2**63},a,0.5,0.5\n{top},b,0.5,0.5\n")
        shown = [f"row 1 ('{2**63}')", f"row 2 ('{2**63 + 1}')"]
        stored = [-2**63, top]
    else:
        bad = tmp_path / "bad.parquet"
        pq.write_table(pa.table({"id": pa.array([1, 2**64 - 1], pa.uint64()), "label": [0, 1],
                                 "probs": [[0.5, 0.5], [0.4, 0.6]]}), bad)
        good = tmp_path / "good.parquet"
        pq.write_table(pa.table({"id": pa.array([5, top], pa.uint64()), "label": [0, 1],
                                 "probs": [[0.5, 0.5], [0.4, 0.6]]}), good)
        shown = ["row 2 (18446744073709551615)"]
        stored = [5, top]
    out = cli("ingest", "--predictions", str(bad), "--classes", "a,b", expect=1)
    assert "must fit a signed 64-bit integer" in out.output and "duplicate" not in out.output, out.output
    for s in shown:
        assert s in out.output, out.output
    assert _counts(cli.wh) == [0, 0, 0]
    cli("ingest", "--predictions", str(good), "--classes", "a,b")
    assert _ingested_ids(cli.wh) == stored  # never wrapped (-1), never rounded through a float


# -- issue 13: the image column is confined, and checked before it is read -------------------

def _image_preds(tmp_path, image, name="p.parquet"):
    path = tmp_path / name
    pq.write_table(pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.8, 0.2]],
                             "image": [None, str(image)]}), path)
    return path


def test_image_paths_are_confined_to_the_predictions_folder_and_images(cli, corpus, tmp_path):
    inside = tmp_path / "preds"
    inside.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(corpus / "good.png", outside / "real.png")
    (inside / "link.png").symlink_to(outside / "real.png")
    for image in ["/etc/passwd", outside / "real.png", "../elsewhere/real.png", "link.png"]:
        out = cli("ingest", "--predictions", str(_image_preds(inside, image)), "--classes", "a,b", expect=1)
        assert "images outside" in out.output and "row 2" in out.output and "--allow-images-anywhere" in out.output
        assert "not a readable image" not in out.output  # refused before it was opened
    assert _counts(cli.wh) == [0, 0, 0]
    # the user may allow it explicitly; an --images folder is allowed too
    cli("ingest", "--predictions", str(_image_preds(inside, outside / "real.png")), "--classes", "a,b",
        "--allow-images-anywhere", "--run", "anywhere")
    folder = tmp_path / "folder"
    for cls in ("a", "b"):
        (folder / "test" / cls).mkdir(parents=True)
        shutil.copyfile(corpus / "good.png", folder / "test" / cls / "0.png")
    cli("ingest", "--predictions", str(_image_preds(inside, folder / "test" / "b" / "0.png")),
        "--images", str(folder), "--run", "source")
    with cli.wh.connect() as con:
        rows = con.execute("select run_id, width from failures order by run_id").fetchall()
    assert rows == [("anywhere", 16), ("source", 16)]


def test_a_3_gb_file_named_png_is_refused_by_its_size_without_reading_it(cli, tmp_path):
    from lens.datasets import MAX_IMAGE_FILE_BYTES

    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(3 * 2**30)  # sparse: takes no disk space
    assert huge.stat().st_size > MAX_IMAGE_FILE_BYTES
    out = cli("ingest", "--predictions", str(_image_preds(tmp_path, huge)), "--classes", "a,b", expect=1)
    assert "huge.png" in out.output and "3,072 MiB" in out.output and "MAX_IMAGE_FILE_BYTES" in out.output, out.output
    assert _counts(cli.wh) == [0, 0, 0]


def test_image_header_is_checked_before_the_file_is_read_whole(cli, tmp_path, monkeypatch):
    import pathlib

    junk = tmp_path / "junk.png"
    with open(junk, "wb") as f:
        f.truncate(200 * 2**20)  # under the size cap, not an image
    real_read = pathlib.Path.read_bytes

    def guarded(self):
        assert self.stat().st_size < 2**20, f"{self} read whole before its header was checked"
        return real_read(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", guarded)
    out = cli("ingest", "--predictions", str(_image_preds(tmp_path, junk)), "--classes", "a,b", expect=1)
    assert "junk.png" in out.output and "not a readable image" in out.output, out.output
    assert _counts(cli.wh) == [0, 0, 0]


# -- issue 13: a full disk ------------------------------------------------------------------

def _probs_file(path, n, seed=0):
    rng = np.random.default_rng(seed)
    pq.write_table(pa.table({"id": np.arange(n), "label": rng.integers(0, 10, n),
                             "probs": list(rng.dirichlet(np.ones(10), n).astype(np.float32))}), path)
    return path


@pytest.fixture
def tiny_disk(tmp_path):
    """An 8 MiB tmpfs (needs root to mount); unmounted afterwards."""
    import subprocess

    d = tmp_path / "disk"
    d.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root; the /dev/full case covers the commit-time error without it")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); the /dev/full case covers the commit error")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def _one_line_error(result) -> str:
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, (result.exception, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# the three ways DuckDB reports ENOSPC, by the size of the write (measured on an 8 MiB tmpfs):
# blocks written mid-statement, the checkpoint at commit (FATAL), the write-ahead log at commit
@pytest.mark.parametrize("rows,cause", [(300_000, "IOException"), (100_000, "FatalException"),
                                        (20, "TransactionException")])
def test_full_disk_is_a_one_line_error_and_keeps_the_warehouse(tiny_disk, tmp_path, rows, cause):
    from click.testing import CliRunner

    from lens.cli import cli as lens_cli
    from lens.warehouse import Warehouse

    wh = Warehouse(tiny_disk / "lens.duckdb", lock_timeout=5)
    runner = CliRunner()
    base = _probs_file(tmp_path / "base.parquet", 10)
    assert runner.invoke(lens_cli, ["--warehouse", str(wh.path), "ingest", "--predictions", str(base)]).exit_code == 0
    before = _digest(wh)
    stat = os.statvfs(tiny_disk)
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize))  # no room left
    src = _probs_file(tmp_path / "new.parquet", rows, seed=1)
    res = runner.invoke(lens_cli, ["--warehouse", str(wh.path), "ingest", "--predictions", str(src)])
    line = _one_line_error(res)
    assert f"The disk holding the warehouse {wh.path} is full" in line and "nothing of it was stored" in line
    # the next write, through the stage: a LensError again, with DuckDB's own error as its cause
    from lens.errors import LensError
    from lens.stages import ingest

    with pytest.raises(LensError, match="is full") as err:
        ingest.run(wh, predictions=src, run_id="again")
    assert type(err.value.__cause__).__name__ == cause and "No space left on device" in str(err.value.__cause__)
    filler.unlink()
    assert _digest(wh) == before
    res = runner.invoke(lens_cli, ["--warehouse", str(wh.path), "ingest", "--predictions", str(_probs_file(
        tmp_path / "small.parquet", 20, seed=2))])
    assert res.exit_code == 0, res.output  # the warehouse works once there is room again


def test_full_disk_at_commit_via_dev_full_is_a_one_line_error(wh, tmp_path):
    """No root needed: the write-ahead log is /dev/full, which answers every write with ENOSPC."""
    from click.testing import CliRunner

    from lens.cli import cli as lens_cli

    runner = CliRunner()
    base = _probs_file(tmp_path / "base.parquet", 10)
    assert runner.invoke(lens_cli, ["--warehouse", str(wh.path), "ingest", "--predictions", str(base)]).exit_code == 0
    before = _digest(wh)
    wal = Path(str(wh.path) + ".wal")
    assert not wal.exists()
    wal.symlink_to("/dev/full")
    try:
        for name in ("a", "b"):  # the first write, and the next one
            res = runner.invoke(lens_cli, ["--warehouse", str(wh.path), "ingest", "--predictions", str(base),
                                           "--run", name])
            assert "is full (No space left on device)" in _one_line_error(res)
    finally:
        wal.unlink()
    assert _digest(wh) == before
