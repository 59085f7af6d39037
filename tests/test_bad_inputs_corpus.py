"""The whole bad-input corpus through the CLI: every input `lens ingest` is known to meet ends in
a one-line error, and the warehouse is left byte-for-byte unchanged (split from
tests/test_bad_inputs.py, which tests the same faults one at a time)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from _bad_inputs_support import CSV_CASES, _digest, corpus  # noqa: F401 -- corpus is a fixture

Case = tuple[str, list[str], list[str]]  # (name, arguments after `ingest`, words of the error)


def _pq(d: Path, name: str, table: pa.Table) -> Path:
    path = d / name
    pq.write_table(table, path)
    return path


def _txt(d: Path, name: str, text: str) -> Path:
    path = d / name
    path.write_text(text)
    return path


class _Corpus:
    """The cases being built: files go under ``d``; ``images`` is the image corpus (fixture ``corpus``)."""

    def __init__(self, d: Path, images: Path):
        self.d = d
        self.images = images
        self.cases: list[Case] = []

    def add(self, name, path, args, words):
        self.cases.append((name, ["--predictions", str(path), *args, "--run", "c"], words))


def _earlier_cases(c: _Corpus) -> None:
    """Cases from tests/test_ingest.py (Parquet) and tests/test_bad_inputs.py (CSV, images)."""
    from tests.test_ingest import BAD_CASES

    d, add = c.d, c.add
    for name, (table, extra, expected, row) in sorted(BAD_CASES.items()):
        add(f"parquet: {name}", _pq(d, f"pq_{len(c.cases)}.parquet", table), extra, [expected, row])
    for name, (text, words) in sorted(CSV_CASES.items()):
        add(f"csv: {name}", _txt(d, f"csv_{len(c.cases)}.csv", text), ["--classes", "a,b"], words)
    img = d / "img"
    img.mkdir()
    for bad, words in [("truncated.png", ["not a readable image"]), ("empty.png", ["empty image (0 bytes)"]),
                       ("text.png", ["not a readable image"]), ("bomb.png", ["decompression bomb"])]:
        shutil.copyfile(c.images / bad, img / bad)
        table = pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.8, 0.2]], "image": [None, f"img/{bad}"]})
        add(f"image: {bad}", _pq(d, f"img_{bad}.parquet", table), ["--classes", "a,b"], [bad, "row 2", *words])
    add("csv: not UTF-8", (d / "latin1.csv"), [], ["UTF-8"])
    (d / "latin1.csv").write_bytes(b"id,label,pred,confidence\n1,caf\xe9,cat,0.5\n")


def _ids_that_do_not_fit(c: _Corpus) -> None:
    """Issue 13, point 4: ids and class ids that do not fit."""
    d, add = c.d, c.add
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


def _values_of_the_wrong_kind(c: _Corpus) -> None:
    """Point 5 (tracebacks that became one-line errors): duplicated columns, text where numbers belong."""
    d, add = c.d, c.add
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


def _index_and_file_shapes(c: _Corpus) -> None:
    """Point 5, continued: bad ``index`` columns, odd delimiters, empty files, columns of the wrong type."""
    d, add = c.d, c.add
    ds = d / "ds"
    for cls in ("a", "b"):
        (ds / "test" / cls).mkdir(parents=True)
        shutil.copyfile(c.images / "good.png", ds / "test" / cls / "0.png")
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


def _image_column(c: _Corpus) -> None:
    """Point 6: image paths that escape the predictions folder, and a 3 GB file named .png."""
    d = c.d

    def image_case(name, image, words, where=d):
        table = pa.table({"id": [1, 2], "label": [0, 1], "probs": [[0.9, 0.1], [0.8, 0.2]], "image": [None, str(image)]})
        c.add(name, _pq(where, f"image_{len(c.cases)}.parquet", table), ["--classes", "a,b"], words)

    outside = d.parent / f"{d.name}-outside"
    outside.mkdir()
    shutil.copyfile(c.images / "good.png", outside / "real.png")
    (d / "link.png").symlink_to(outside / "real.png")
    escape = ["images outside", "row 2", "--allow-images-anywhere"]
    image_case("image: /etc/passwd", "/etc/passwd", escape)
    image_case("image: absolute path outside", outside / "real.png", escape)
    image_case("image: ../ out of the folder", f"../{outside.name}/real.png", escape)
    image_case("image: symlink out of the folder", "link.png", escape)
    with open(d / "huge.png", "wb") as f:
        f.truncate(3 * 2**30)  # sparse
    image_case("image: 3 GB file named .png", "huge.png", ["MAX_IMAGE_FILE_BYTES", "3,072 MiB"])


def _features_and_runs(c: _Corpus) -> None:
    """--features (issue 14): every bad features file, with a good predictions file; then bad run choices."""
    from tests.test_ingest_features import BAD_FEATURE_FILES, BAD_FEATURES, bad_feature_file

    d, cases = c.d, c.cases
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


def _ingest_corpus(d: Path, images: Path) -> list[Case]:
    """Every bad input `lens ingest` is known to meet: (name, arguments after `ingest`, words of
    the error). Files are written under ``d``; ``images`` is the image corpus (fixture ``corpus``)."""
    c = _Corpus(d, images)
    for build in (_earlier_cases, _ids_that_do_not_fit, _values_of_the_wrong_kind, _index_and_file_shapes,
                  _image_column, _features_and_runs):
        build(c)
    return c.cases


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
