"""The bad-input corpus (tests/data/bad/README.md): each input gets a clear error or is accepted
correctly, and nothing partial is ever written."""

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

from lens.datasets import ImageFolderSource, decode_image
from lens.errors import DataError


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    full = _png(good)
    (d / "good.png").write_bytes(full)
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is not an image\n")
    bomb = Image.new("1", (10_000, 10_000))
    bomb.save(d / "bomb.png", optimize=True)
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), mode="L").save(d / "gray.png")
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent red -> white background
    rgba[:8, :, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(d / "rgba.png")
    Image.fromarray((np.arange(256).reshape(16, 16) * 256).astype(np.uint16)).save(d / "sixteen.png")
    good.convert("P").save(d / "palette.png")
    return d


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

CSV_CASES = {  # name -> (csv text, words in the error)
    "nan probability": ("id,label,prob_a,prob_b\n1,a,0.5,0.5\n2,b,nan,1.0\n", ["NaN or infinite", "row 2"]),
    "empty probability": ("id,label,prob_a,prob_b\n1,a,0.5,0.5\n2,b,,1.0\n", ["NaN or infinite", "row 2"]),
    "infinite probability": ("id,label,prob_a,prob_b\n1,a,inf,0.5\n", ["NaN or infinite", "row 1"]),
    "duplicate ids": ("id,label,prob_a,prob_b\n1,a,0.5,0.5\n2,b,0.4,0.6\n1,a,0.5,0.5\n",
                      ["duplicate ids", "row 1 (1)", "row 3 (1)"]),
    "duplicate string ids": ("id,label,pred,confidence\nx.jpg,a,b,0.5\nx.jpg,b,b,0.5\n",
                             ["duplicate ids", "row 2 ('x.jpg')"]),
    "nan confidence": ("id,label,pred,confidence\n1,a,b,0.5\n2,a,b,NaN\n", ["'confidence'", "row 2 (nan)"]),
    "unknown label": ("id,label,pred,confidence\n1,a,b,0.5\n2,zebra,b,0.5\n", ["unknown classes", "zebra"]),
}


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

def _digest(wh) -> dict[str, str]:
    """Every table's rows, hashed: equal digests = the same data."""
    import hashlib

    with wh.connect(read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_type = 'BASE TABLE' order by 1").fetchall()]
        return {t: hashlib.sha256(repr(con.execute(f"select * from {t} order by all").fetchall()).encode()).hexdigest()
                for t in tables}


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


# -- the whole bad-input corpus through the CLI ----------------------------------------------

def _pq(d: Path, name: str, table: pa.Table) -> Path:
    path = d / name
    pq.write_table(table, path)
    return path


def _txt(d: Path, name: str, text: str) -> Path:
    path = d / name
    path.write_text(text)
    return path


def _ingest_corpus(d: Path, images: Path) -> list[tuple[str, list[str], list[str]]]:
    """Every bad input `lens ingest` is known to meet: (name, arguments after `ingest`, words of
    the error). Files are written under ``d``; ``images`` is the image corpus of this module."""
    from tests.test_ingest import BAD_CASES
    from tests.test_ingest_features import BAD_FEATURE_FILES, BAD_FEATURES, bad_feature_file

    cases: list[tuple[str, list[str], list[str]]] = []

    def add(name, path, args, words):
        cases.append((name, ["--predictions", str(path), *args, "--run", "c"], words))

    # earlier cases: tests/test_ingest.py (Parquet) and this module (CSV, images)
    for name, (table, extra, expected, row) in sorted(BAD_CASES.items()):
        add(f"parquet: {name}", _pq(d, f"pq_{len(cases)}.parquet", table), extra, [expected, row])
    for name, (text, words) in sorted(CSV_CASES.items()):
        add(f"csv: {name}", _txt(d, f"csv_{len(cases)}.csv", text), ["--classes", "a,b"], words)
    img = d / "img"
    img.mkdir()
    for bad, words in [("truncated.png", ["not a readable image"]), ("empty.png", ["empty image (0 bytes)"]),
                       ("text.png", ["not a readable image"]), ("bomb.png", ["decompression bomb"])]:
        shutil.copyfile(images / bad, img / bad)
        table = pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.8, 0.2]], "image": [None, f"img/{bad}"]})
        add(f"image: {bad}", _pq(d, f"img_{bad}.parquet", table), ["--classes", "a,b"], [bad, "row 2", *words])
    add("csv: not UTF-8", (d / "latin1.csv"), [], ["UTF-8"])
    (d / "latin1.csv").write_bytes(b"id,label,pred,confidence\n1,caf\xe9,cat,0.5\n")

    # issue 13, point 4: ids and class ids that do not fit
    add("label id 10**7 (CSV)", _txt(d, "l7.csv", "id,label,pred,confidence\n1,0,1,0.5\n2,10000000,0,0.5\n"), [],
        ["class id too large in 'label'", "row 2 (10000000)"])
    add("label id 10**12 (Parquet)", _pq(d, "l12.parquet", pa.table(
        {"id": [1, 2], "label": [0, 10**12], "pred": [1, 0], "confidence": [0.5, 0.5]})), [],
        ["class id too large in 'label'", "row 2 (1000000000000)"])
    add("pred id 10**12 with --classes", _pq(d, "p12.parquet", pa.table(
        {"id": [1, 2], "label": [0, 1], "pred": [10**12, 0], "confidence": [0.5, 0.5]})), ["--classes", "a,b"],
        ["unknown classes in 'pred'", "row 1 (1000000000000)"])
    add("uint64 label 2**64-1", _pq(d, "ul.parquet", pa.table(
        {"id": [1, 2], "label": pa.array([0, 2**64 - 1], pa.uint64()), "probs": [[0.5, 0.5], [0.4, 0.6]]})), [],
        ["unknown classes in 'label'", "row 2 (18446744073709551615)"])
    add("uint64 id 2**64-1", _pq(d, "uid.parquet", pa.table(
        {"id": pa.array([1, 2**64 - 1], pa.uint64()), "label": [0, 1], "probs": [[0.5, 0.5], [0.4, 0.6]]})), [],
        ["must fit a signed 64-bit integer", "row 2 (18446744073709551615)"])
    add("CSV ids >= 2**63", _txt(d, "big.csv", f"id,label,prob_a,prob_b\n{2**63},a,0.5,0.5\n{2**63 + 1},b,0.5,0.5\n"),
        [], ["must fit a signed 64-bit integer", f"row 1 ('{2**63}')", f"row 2 ('{2**63 + 1}')"])
    add("CSV id < -2**63", _txt(d, "small.csv", f"id,label,prob_a,prob_b\n{-2**63 - 1},a,0.5,0.5\n"), [],
        ["must fit a signed 64-bit integer", f"row 1 ('{-2**63 - 1}')"])
    add("a probs list of 200,000 values", _pq(d, "wide.parquet", pa.table(
        {"id": [1], "label": [0], "probs": [[0.0] * 199_999 + [1.0]]})), [], ["200,000 classes", "MAX_CLASSES"])
    add("100,001 names in --classes", _pq(d, "names.parquet", pa.table(
        {"id": [1], "label": ["c0"], "pred": ["c1"], "confidence": [0.5]})),
        ["--classes", ",".join(f"c{i}" for i in range(100_001))], ["100,001 classes", "MAX_CLASSES"])

    # point 5: tracebacks that became one-line errors
    add("duplicated column (CSV)", _txt(d, "dup.csv", "id,label,label,prob_a,prob_b\n1,a,a,0.5,0.5\n"), [],
        ["column name 'label' appears 2 times (columns 2, 3)"])
    add("duplicated column (Parquet)", _pq(d, "dup.parquet", pa.Table.from_arrays(
        [pa.array([1]), pa.array([0]), pa.array([0]), pa.array([[0.5, 0.5]])], names=["id", "label", "label", "probs"])),
        [], ["column name 'label' appears 2 times (columns 2, 3)"])
    add("percentages as probabilities", _txt(d, "pct.csv", "id,label,prob_a,prob_b\n1,a,3.7%,96.3%\n"), [],
        ["'prob_a' must be numbers", "percentages", "row 1 ('3.7%')"])
    add("words as probabilities", _txt(d, "words.csv", "id,label,prob_a,prob_b\n1,a,high,low\n"), [],
        ["'prob_a' must be numbers", "row 1 ('high')"])
    add("words as confidence", _txt(d, "wconf.csv", "id,label,pred,confidence\n1,a,b,high\n"), ["--classes", "a,b"],
        ["'confidence' must be numbers", "row 1 ('high')"])
    add("percentages as confidence", _txt(d, "pconf.csv", "id,label,pred,confidence\n1,a,b,0.5\n2,a,a,95%\n"),
        ["--classes", "a,b"], ["'confidence' must be numbers", "percentages", "row 2 ('95%')"])
    add("probs as a list of text (Parquet)", _pq(d, "sprobs.parquet", pa.table(
        {"id": [1], "label": [0], "probs": [["0.5", "0.5"]]})), [], ["'probs' must be a list of numbers", "string"])
    add("probs as text in a CSV", _txt(d, "tprobs.csv", 'id,label,probs\n1,a,"[0.5, 0.5]"\n'), ["--classes", "a,b"],
        ["'probs' is text", "prob_<class name>"])
    ds = d / "ds"
    for cls in ("a", "b"):
        (ds / "test" / cls).mkdir(parents=True)
        shutil.copyfile(images / "good.png", ds / "test" / cls / "0.png")
    add("index as text", _txt(d, "itext.csv", "id,label,prob_a,prob_b,index\n1,a,0.5,0.5,first\n"),
        ["--images", str(ds)], ["'index'", "whole numbers", "row 1 ('first')"])
    add("index as a float (CSV)", _txt(d, "ifloat.csv", "id,label,prob_a,prob_b,index\n1,a,0.5,0.5,1.5\n"),
        ["--images", str(ds)], ["'index'", "whole numbers", "row 1 ('1.5')"])
    add("index as a float (Parquet)", _pq(d, "ifloat.parquet", pa.table(
        {"id": [1, 2], "label": ["a", "b"], "probs": [[0.5, 0.5]] * 2, "index": [0.0, 1.0]})), ["--images", str(ds)],
        ["'index'", "whole numbers", "double", "row 1 (0.0)"])
    add("index outside the dataset", _pq(d, "ibig.parquet", pa.table(
        {"id": [1, 2], "label": ["a", "b"], "probs": [[0.5, 0.5]] * 2, "index": [0, 10_000_000]})),
        ["--images", str(ds)], ["'index' does not match", "10000000"])
    add("semicolon-delimited", _txt(d, "semi.csv", "id;label;prob_a;prob_b\n1;a;0,5;0,5\n"), [],
        ["semicolon-delimited", "save it with commas"])
    add("tab-delimited .csv", _txt(d, "tab.csv", "id\tlabel\tprob_a\tprob_b\n1\ta\t0.5\t0.5\n"), [],
        ["tab-delimited", "rename it to .tsv"])
    add("pipe-delimited", _txt(d, "pipe.csv", "id|label|prob_a|prob_b\n1|a|0.5|0.5\n"), [], ["pipe-delimited"])
    add("empty file", _txt(d, "empty.csv", ""), [], ["cannot parse", "Empty CSV"])
    add("header only", _txt(d, "header.csv", "id,label,prob_a,prob_b\n"), [], ["no rows"])
    add("id as a list", _pq(d, "lid.parquet", pa.table({"id": [[1], [2]], "label": [0, 1], "probs": [[0.5, 0.5]] * 2})),
        [], ["'id' must hold whole numbers or text"])
    add("label as a list", _pq(d, "llab.parquet", pa.table({"id": [1, 2], "label": [[0], [1]],
                                                            "probs": [[0.5, 0.5]] * 2})), [],
        ["'label' must hold class names or class ids"])
    add("image as numbers", _pq(d, "inum.parquet", pa.table({"id": [1], "label": [0], "probs": [[0.5, 0.5]],
                                                              "image": [7]})), [], ["'image' must hold file paths"])

    # point 6: the image column
    def image_case(name, image, words, where=d):
        table = pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.8, 0.2]], "image": [None, str(image)]})
        add(name, _pq(where, f"image_{len(cases)}.parquet", table), ["--classes", "a,b"], words)

    outside = d.parent / f"{d.name}-outside"
    outside.mkdir()
    shutil.copyfile(images / "good.png", outside / "real.png")
    (d / "link.png").symlink_to(outside / "real.png")
    escape = ["images outside", "row 2", "--allow-images-anywhere"]
    image_case("image: /etc/passwd", "/etc/passwd", escape)
    image_case("image: absolute path outside", outside / "real.png", escape)
    image_case("image: ../ out of the folder", f"../{outside.name}/real.png", escape)
    image_case("image: symlink out of the folder", "link.png", escape)
    with open(d / "huge.png", "wb") as f:
        f.truncate(3 * 2**30)  # sparse
    image_case("image: 3 GB file named .png", "huge.png", ["MAX_IMAGE_FILE_BYTES", "3,072 MiB"])

    # --features (issue 14): every bad features file, with a good predictions file
    for case in sorted(BAD_FEATURES) + sorted(BAD_FEATURE_FILES):
        sub = d / f"features_{len(cases)}"
        sub.mkdir()
        preds, feats, words = bad_feature_file(sub, case)
        cases.append((f"features: {case}", ["--predictions", str(preds), "--features", str(feats), "--run", "c"],
                      words))
    cases.append(("features: no --run", ["--features", str(feats)], ["name it with --run"]))
    cases.append(("features: unknown run", ["--run", "nope", "--features", str(feats)], ["No run named 'nope'"]))
    cases.append(("nothing to ingest", [], ["give --predictions FILE"]))
    good = _pq(d, "good.parquet", pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.2, 0.8]]}))
    cases.append(("existing run without --force", ["--predictions", str(good), "--run", "seed"], ["already exists"]))
    return cases


def test_whole_bad_input_corpus_ends_in_one_line_errors_and_leaves_the_warehouse_unchanged(wh, corpus, tmp_path):
    """Every case: exit 1, exactly one line `Error: ...` with the expected words, no traceback;
    after all of them the warehouse file is byte-for-byte what it was."""
    from click.testing import CliRunner

    from lens.cli import cli as lens_cli

    d = tmp_path / "corpus"
    d.mkdir()
    cases = _ingest_corpus(d, corpus)
    runner = CliRunner()
    seed = _pq(tmp_path, "seed.parquet", pa.table({"id": [1, 2, 3], "label": [0, 1, 1],
                                                   "probs": [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]}))
    res = runner.invoke(lens_cli, ["--warehouse", str(wh.path), "ingest", "--predictions", str(seed), "--run", "seed"])
    assert res.exit_code == 0, res.output
    before_rows, before_bytes = _digest(wh), wh.path.read_bytes()

    problems, one_line = [], 0
    for name, args, words in cases:
        res = runner.invoke(lens_cli, ["--warehouse", str(wh.path), "ingest", *args])
        lines = res.output.strip().splitlines()
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            problems.append(f"{name}: traceback {type(res.exception).__name__}: {res.exception}")
            continue
        if res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.output:
            one_line += 1
        else:
            problems.append(f"{name}: exit {res.exit_code}, output {res.output!r}")
            continue
        missing = [w for w in words if w not in res.output]
        if missing:
            problems.append(f"{name}: {missing} not in {res.output!r}")
    print(f"\nbad-input corpus: {len(cases)} cases through `lens ingest`, {one_line} end in a one-line error")
    assert not problems, "\n".join(problems)
    assert one_line == len(cases) >= 80
    assert _digest(wh) == before_rows
    assert wh.path.read_bytes() == before_bytes and not Path(str(wh.path) + ".wal").exists()
