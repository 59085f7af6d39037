"""Bad files given to `lens hypothesize --backend import --from FILE.jsonl` (docs/reliability.md).

Each ends in ONE line `Error: <file> line <n>: ...` from a real `python -m lens` process (exit
1, no traceback) and writes nothing: every table of the warehouse has the same rows after as
before. Each bad file starts with a valid line for a real failure, so a partial import would
show. The accepted odd files (a byte-order mark, CRLF line ends) are checked too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from lens.warehouse import Warehouse
from tests._hypothesize_helpers import seed_run

REPO = Path(__file__).resolve().parent.parent
GOOD = {"data_quality": {"tag": "ambiguous_image", "reason": "dark and tiny",
                         "verdict": "The object is too small and dark to read."},
        "visual_cause": "dark fur", "fix": "brightness augmentation"}


def _good_line(example_id: int) -> bytes:
    return json.dumps({"example_id": example_id, "answer": GOOD}).encode() + b"\n"


def _latin1(eid: int) -> bytes:
    text = {**GOOD, "visual_cause": "café au lait coloured fur, naïve lighting"}
    return json.dumps({"example_id": eid, "answer": text}, ensure_ascii=False).encode("latin-1") + b"\n"


def _deep(eid: int) -> bytes:
    depth = 100_000
    return b'{"example_id": %d, "answer": ' % eid + b"[" * depth + b"]" * depth + b"}\n"


# name -> (second line of the file, words the one-line error must hold besides the file and "line 2")
CASES = {
    "latin1": (_latin1, ["not UTF-8", "byte 0xe9", "save the file as UTF-8"]),
    "deep_nesting": (_deep, ["nested too deeply"]),
    "model_object": (lambda eid: json.dumps({"example_id": eid, "model": {"name": "gpt-x"}, "answer": GOOD}).encode()
                     + b"\n", ["'model' must be a short string", "got an object"]),
    "example_id_over_2_63": (lambda eid: json.dumps({"example_id": 2**63, "answer": GOOD}).encode() + b"\n",
                             ["'example_id' 9223372036854775808 does not fit a 64-bit integer"]),
    "example_id_2_64_digits": (lambda eid: json.dumps({"example_id": 10**40, "answer": GOOD}).encode() + b"\n",
                               ["'example_id'", "(41 digits) does not fit a 64-bit integer"]),
    "model_surrogate": (lambda eid: json.dumps({"example_id": eid, "model": "gpt-\ud800", "answer": GOOD}).encode()
                        + b"\n", ["'model' must be a short string", "lone UTF-16 surrogate"]),
}


def _digest(db: Path) -> dict[str, tuple[int, str]]:
    """(rows, md5 of every row as text) per table: equal digests, equal contents."""
    out = {}
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "select table_name from duckdb_tables() where database_name = current_database()").fetchall()]
        for t in sorted(tables):
            out[t] = con.execute(
                f"select count(*), md5(coalesce(string_agg(r::varchar, chr(10) order by r::varchar), ''))"
                f" from {t} r").fetchone()
    return out


def _lens(db: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LENS_LOCK_TIMEOUT": "10", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lens", "--warehouse", str(db), *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    db = tmp_path_factory.mktemp("import-bad") / "lens.duckdb"
    ids = seed_run(Warehouse(db), 3, sample=False, images=False)
    return db, ids


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_import_file_ends_in_one_line_error_and_writes_nothing(seeded, tmp_path, case):
    db, ids = seeded
    make, words = CASES[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(_good_line(ids[0]) + make(ids[1]))
    before = _digest(db)
    proc = _lens(db, "hypothesize", "--backend", "import", "--from", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert f"{path} line 2: " in lines[0], lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    assert len(lines[0]) < 400
    assert _digest(db) == before  # nothing written, not even a stage_runs row


def test_empty_import_file_is_an_error_that_writes_nothing(seeded, tmp_path):
    db, _ = seeded
    path = tmp_path / "empty.jsonl"
    path.write_text("# nothing here yet\n\n")
    before = _digest(db)
    proc = _lens(db, "hypothesize", "--backend", "import", "--from", str(path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"Error: {path}: no answers (every line is blank or a # comment)"
    assert _digest(db) == before


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    from lens.backends.imported import read_jsonl

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _good_line(100).replace(b"\n", b"\r\n") + _good_line(101).replace(b"\n", b"\r\n"))
    assert [(n, r["example_id"]) for n, r in read_jsonl(path)] == [(1, 100), (2, 101)]
