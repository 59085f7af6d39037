"""Shared by tests/test_bad_inputs.py and tests/test_bad_inputs_corpus.py: the image corpus
(tests/data/bad/README.md) as a module-scoped fixture, the bad CSV cases, and a digest of a
warehouse's rows. A test module uses the fixture by importing ``corpus``."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


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


def _digest(wh) -> dict[str, str]:
    """Every table's rows, hashed: equal digests = the same data."""
    import hashlib

    with wh.connect(read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_type = 'BASE TABLE' order by 1").fetchall()]
        return {t: hashlib.sha256(repr(con.execute(f"select * from {t} order by all").fetchall()).encode()).hexdigest()
                for t in tables}
