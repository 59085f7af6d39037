"""The bad-input corpus (tests/data/bad/README.md): each input gets a clear error or is accepted
correctly, and nothing partial is ever written."""

from __future__ import annotations

import io

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


@pytest.mark.parametrize("bad", ["truncated.png", "empty.png", "text.png", "bomb.png"])
def test_ingest_with_a_bad_image_writes_nothing(cli, corpus, tmp_path, bad):
    path = tmp_path / "p.parquet"
    # the bad image belongs to a failure (row 2), so it must be decoded
    pq.write_table(pa.table({
        "id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.8, 0.2]],
        "image": [str(corpus / "good.png"), str(corpus / bad)],
    }), path)
    out = cli("ingest", "--predictions", str(path), "--classes", "a,b", expect=1)
    assert bad in out.output and "row 2" in out.output
    assert _counts(cli.wh) == [0, 0, 0]


def test_ingest_accepts_odd_modes(cli, corpus, tmp_path):
    path = tmp_path / "p.parquet"
    names = ["gray.png", "rgba.png", "sixteen.png", "palette.png"]
    pq.write_table(pa.table({
        "id": [1, 2, 3, 4], "label": [0, 0, 0, 0], "probs": [[0.1, 0.9]] * 4,
        "image": [str(corpus / n) for n in names],
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
