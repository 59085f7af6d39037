"""Verdicts: append-only log, latest per reviewer, cluster purity with a Wilson interval,
CSV/Parquet export and import (formula injection neutralised, bad files rejected whole),
and a write that waits for a warehouse held by another process."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest
from scipy.stats import binomtest
from _seed import seed_complete_run
from contracts import check_contracts

from lens.errors import DataError, LensError
from lens.stages import verdicts as stage
from lens.warehouse import Warehouse

T0 = datetime(2024, 5, 1, 12, 0, 0)


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval from scipy, independent of the SQL view."""
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


@pytest.fixture
def seeded(wh):
    return seed_complete_run(wh, n_predictions=80, n_failures=20)


def _count(wh) -> int:
    with wh.connect() as con:
        return con.execute("select count(*) from verdicts").fetchone()[0]


def test_seed_is_complete_and_meets_contracts(wh, seeded):
    with wh.connect() as con:
        counts = check_contracts(con, require_rows=(
            "runs", "classes", "predictions", "training_log", "features", "failures", "samples", "evidence",
            "hypotheses", "hypothesis_dimensions", "claims", "embeddings", "embedding_cache", "clusters",
            "cluster_members", "cluster_k_scores", "stage_runs"))
        assert counts["hypotheses"] == 20
        n_clusters = con.execute("select dimension, count(*) filter (where cluster_id >= 0) from clusters"
                                 " group by dimension").fetchall()
        assert all(n >= 2 for _, n in n_clusters) and len(n_clusters) == 3
        contradicted = con.execute("select count(*) from claims where verdict = 'contradicted'").fetchone()[0]
        pngs = con.execute("select image_png from failures limit 1").fetchone()[0]
    assert contradicted == len(seeded.contradicted) > 0
    assert pngs[:8] == b"\x89PNG\r\n\x1a\n"


def test_latest_verdict_per_reviewer_counts(wh, seeded):
    h = seeded.hypothesis_ids[2]
    stage.append(wh, [
        {"hypothesis_id": h, "dimension": "fix", "verdict": "agree", "reviewer": "ann", "created_at": T0},
        {"hypothesis_id": h, "dimension": "fix", "verdict": "disagree", "reviewer": "ann",
         "created_at": T0 + timedelta(minutes=1), "note": "changed my mind"},
        {"hypothesis_id": h, "dimension": "fix", "verdict": "skip", "reviewer": "bob", "created_at": T0},
        {"hypothesis_id": h, "dimension": "overall", "verdict": "agree", "reviewer": "ann", "created_at": T0},
    ])
    with wh.connect() as con:
        latest = con.execute("select dimension, reviewer, verdict, note from latest_verdicts"
                             " where hypothesis_id = ? order by dimension, reviewer", [h]).fetchall()
        sources = {r[0] for r in con.execute("select source from verdicts").fetchall()}
        run, ex = con.execute("select run_id, example_id from verdicts limit 1").fetchone()
    assert latest == [("fix", "ann", "disagree", "changed my mind"), ("fix", "bob", "skip", None),
                      ("overall", "ann", "agree", None)]
    assert sources == {"review"} and (run, ex) == ("demo", seeded.failure_ids[2])
    assert _count(wh) == 4  # append-only: the superseded row is kept


def test_hypotheses_in_known_are_not_read_again_and_unknown_ids_still_fail(wh, seeded):
    """The review app keeps what it validated against (``known``): the next write trusts it."""
    h, other = seeded.hypothesis_ids[:2]
    known: stage.HypothesisInfo = {}
    stage.append(wh, [{"hypothesis_id": h, "dimension": "fix", "verdict": "agree", "reviewer": "ann"}], known=known)
    with wh.connect() as con:
        run, ex = con.execute("select run_id, example_id from hypotheses where hypothesis_id = ?", [h]).fetchone()
        dims = {d for (d,) in con.execute("select dimension from hypothesis_dimensions where hypothesis_id = ?",
                                          [h]).fetchall()}
    assert known == {h: (run, ex, dims)}
    known[h] = (run, ex, {"planted"})  # what the warehouse does not hold: only the cache can allow it
    stage.append(wh, [{"hypothesis_id": h, "dimension": "planted", "verdict": "skip", "reviewer": "ann"}],
                 known=known)
    with pytest.raises(DataError, match="Bad dimensions"):  # without the cache the warehouse decides
        stage.append(wh, [{"hypothesis_id": h, "dimension": "planted", "verdict": "skip", "reviewer": "bob"}])
    with pytest.raises(DataError, match="Unknown hypothesis ids"):
        stage.append(wh, [{"hypothesis_id": "nope", "dimension": "overall", "verdict": "agree", "reviewer": "a"},
                          {"hypothesis_id": other, "dimension": "overall", "verdict": "agree", "reviewer": "a"}],
                     known=known)
    assert set(known) == {h, other} and _count(wh) == 2


def test_cluster_purity_and_wilson_interval(wh, seeded):
    members = seeded.clusters["visual_cause"][1]
    assert len(members) >= 6
    a, b, c, d, e, f = members[:6]
    recs = [
        # a: agree, superseded by a later disagree from the same reviewer -> counts as disagree
        (a, "agree", "ann", 0), (a, "disagree", "ann", 5),
        (b, "agree", "ann", 0), (b, "agree", "bob", 0),   # two reviewers: both count
        (c, "agree", "ann", 0), (d, "skip", "ann", 0),
        (e, "agree", "ann", 0),
    ]
    stage.append(wh, [{"hypothesis_id": h, "dimension": "visual_cause", "verdict": v, "reviewer": r,
                       "created_at": T0 + timedelta(seconds=s)} for h, v, r, s in recs])
    # a verdict on another dimension of a member must not count for this dimension's cluster
    stage.append(wh, [{"hypothesis_id": f, "dimension": "fix", "verdict": "disagree", "reviewer": "ann"}])
    with wh.connect() as con:
        row = con.execute(
            "select agree, disagree, skip, reviewed, reviewed_share, purity, purity_lower, purity_upper, size"
            " from cluster_purity where run_id = 'demo' and dimension = 'visual_cause' and cluster_id = 1").fetchone()
        untouched = con.execute("select purity, purity_lower, reviewed from cluster_purity"
                                " where dimension = 'visual_cause' and cluster_id = 0").fetchone()
    agree, disagree, skip, reviewed, share, purity, lo, hi, size = row
    assert (agree, disagree, skip, reviewed) == (4, 1, 1, 5)
    assert share == pytest.approx(5 / size) and size == len(members)
    exp_lo, exp_hi = wilson(4, 5)
    assert purity == pytest.approx(0.8)
    # the view's z is 1.959964 (7 digits), scipy's the exact normal quantile
    assert lo == pytest.approx(exp_lo, abs=1e-6) and hi == pytest.approx(exp_hi, abs=1e-6)
    assert untouched == (None, None, 0)


NASTY = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2", "@SUM(A1)", "plain, with \"quotes\"\nand a newline"]


def _review_some(wh, seeded):
    recs = [{"hypothesis_id": seeded.hypothesis_ids[i], "dimension": dim, "verdict": v, "reviewer": rv,
             "note": note, "created_at": T0 + timedelta(seconds=i)}
            for i, (dim, v, rv, note) in enumerate([
                ("data_quality", "agree", "ann", NASTY[0]), ("visual_cause", "disagree", "=cmd|' /C calc'!A0", NASTY[1]),
                ("fix", "skip", "bob", NASTY[2]), ("overall", "agree", "bob", NASTY[3]),
                ("visual_cause", "agree", "ann", NASTY[4]), ("fix", "agree", "ann", None)])]
    stage.append(wh, recs)


def _rows(wh):
    with wh.connect() as con:
        return con.execute("select verdict_id, run_id, hypothesis_id, example_id, dimension, verdict, reviewer, note,"
                           " created_at from verdicts order by verdict_id").fetchall()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_import_round_trip(tmp_path, wh, seeded, suffix):
    _review_some(wh, seeded)
    path = tmp_path / f"reviews{suffix}"
    assert stage.export(wh, path) == 6
    other = Warehouse(tmp_path / "other.duckdb", lock_timeout=5)
    seed_complete_run(other, n_predictions=80, n_failures=20)
    res = stage.import_file(other, path)
    assert (res.rows, res.written, res.skipped) == (6, 6, 0)
    assert _rows(other) == _rows(wh)
    with other.connect() as con:
        assert {r[0] for r in con.execute("select source from verdicts").fetchall()} == {"import"}
    again = stage.import_file(other, path)  # idempotent: the same verdict ids are skipped
    assert (again.written, again.skipped) == (0, 6) and _count(other) == 6


def test_csv_export_neutralises_formulas(tmp_path, wh, seeded):
    _review_some(wh, seeded)
    path = tmp_path / "reviews.csv"
    stage.export(wh, path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cells = [v for r in rows for v in r.values()]
    dangerous = [v for v in cells if v and v[0] in "=+-@\t\r"]
    assert dangerous == []
    notes = {r["note"] for r in rows}
    assert {"'" + NASTY[0], "'+1+1", "'-2", "'@SUM(A1)", NASTY[4]} <= notes
    assert "'=cmd|' /C calc'!A0" in {r["reviewer"] for r in rows}


def _bad_file(tmp_path, rows, name="bad.csv"):
    path = tmp_path / name
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("change, message", [
    ({"hypothesis_id": "no-such-hypothesis"}, "Unknown hypothesis ids"),
    ({"verdict": "maybe"}, "Bad verdict values"),
    ({"dimension": "colour_theory"}, "Bad dimensions"),
    ({"reviewer": ""}, "Empty reviewer"),
])
def test_bad_import_is_rejected_whole(tmp_path, cli, seeded, change, message):
    wh = cli.wh
    good = {"hypothesis_id": seeded.hypothesis_ids[0], "dimension": "fix", "verdict": "agree", "reviewer": "ann"}
    rows = [good, {**good, "hypothesis_id": seeded.hypothesis_ids[1]}, {**good, **change}]
    path = _bad_file(tmp_path, rows)
    with pytest.raises(DataError, match=message):
        stage.import_file(wh, path)
    out = cli("verdicts", "import", str(path), expect=1)
    assert message in out.output and "nothing written" in out.output and "row 3" in out.output
    assert _count(wh) == 0


def test_import_needs_columns_and_known_suffix(tmp_path, wh, seeded):
    path = _bad_file(tmp_path, [{"hypothesis_id": seeded.hypothesis_ids[0], "verdict": "agree"}])
    with pytest.raises(DataError, match="missing: dimension, reviewer"):
        stage.import_file(wh, path)
    with pytest.raises(LensError, match=r"\.csv or \.parquet"):
        stage.export(wh, tmp_path / "reviews.xlsx")
    assert _count(wh) == 0


def test_cli_export_import(tmp_path, cli, seeded):
    _review_some(cli.wh, seeded)
    out = cli("verdicts", "export", str(tmp_path / "v.parquet"), "--run", "demo")
    assert "Exported 6 verdicts" in out.output
    out = cli("verdicts", "import", str(tmp_path / "v.parquet"))
    assert "Imported 0 verdicts" in out.output and "6 already stored" in out.output


def test_write_waits_for_a_held_warehouse(wh, seeded):
    """Another process holds the file for ~1.5 s: the verdict waits and is stored."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True);"
         " time.sleep(1.5); con.close()", str(wh.path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        patient = Warehouse(wh.path, lock_timeout=20)
        vid = stage.record(patient, seeded.hypothesis_ids[0], "overall", "agree", "ann")
        waited = time.monotonic() - start
    finally:
        holder.wait(timeout=10)
    assert waited > 0.5
    with wh.connect() as con:
        assert con.execute("select verdict from verdicts where verdict_id = ?", [vid]).fetchone() == ("agree",)
