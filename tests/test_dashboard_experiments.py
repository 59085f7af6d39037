"""The experiments page and the recommendations' measured effect, in a real browser, over a
synthetic experiment (arms written straight into the warehouse: no training)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from _seed import seed_complete_run

from lens.predictions import insert_predictions, write_run
from lens.warehouse import Warehouse, insert_arrow, utcnow

pytestmark = pytest.mark.browser


def seed_experiment(wh: Warehouse, parent: str = "base") -> dict[str, int]:
    """Arms control / colour_jitter / random_erasing (seed 0) on ``parent``'s evaluation examples:
    colour_jitter gets every failure of fix cluster 0 right; random_erasing breaks two correct ones."""
    with wh.transaction() as con:
        preds = con.execute("select example_id, label, pred from prediction_rows where run_id = ? order by example_id",
                            [parent]).fetchall()
        names = [r[0] for r in con.execute("select class_name from classes where run_id = ? order by class_id",
                                           [parent]).fetchall()]
        cluster0 = {r[0] for r in con.execute("select example_id from cluster_members where run_id = ? and "
                                              "dimension = 'fix' and cluster_id = 0", [parent]).fetchall()}
        cluster1 = con.execute("select name from clusters where run_id = ? and dimension = 'fix' and cluster_id = 1",
                               [parent]).fetchone()[0]
        correct = [e for e, y, p in preds if y == p]
        outcome = {
            "control": {e: p for e, _, p in preds},
            "colour_jitter": {e: (y if e in cluster0 else p) for e, y, p in preds},
            "random_erasing": {e: ((y + 1) % len(names) if e in correct[:2] else p) for e, y, p in preds},
        }
        exp = f"{parent}.exp"
        con.execute("insert into experiments values (?, ?, 'exp', ?, 1, 2, '{}')", [exp, parent, utcnow()])
        for arm, by_id in outcome.items():
            run = f"{parent}.exp.{arm}.s0"
            write_run(con, run, kind="train", class_names=names, dataset="synthetic", eval_split="test",
                      parent_run_id=parent, config={"arm": arm})
            insert_predictions(con, pa.table({
                "run_id": [run] * len(preds), "example_id": pa.array([e for e, _, _ in preds], pa.int64()),
                "label": pa.array([y for _, y, _ in preds], pa.int32()),
                "pred": pa.array([by_id[e] for e, _, _ in preds], pa.int32()),
                "confidence": pa.array([0.9] * len(preds), pa.float32())}))
            control = arm == "control"
            insert_arrow(con, "experiment_arms", pa.table({
                "experiment_id": [exp], "run_id": [run], "parent_run_id": [parent], "arm": [arm],
                "is_control": [control], "seed": pa.array([0], pa.int32()),
                "rank": pa.array([None if control else (1 if arm == "colour_jitter" else 2)], pa.int32()),
                "dimension": [None if control else "fix"],
                "cluster_id": pa.array([None if control else (0 if arm == "colour_jitter" else 1)], pa.int32()),
                "recommendation": [None if control else ("background colour" if arm == "colour_jitter" else cluster1)],
                "change": [None if control else json.dumps({"kind": arm})], "epochs": pa.array([1], pa.int32()),
                "batches_sha256": ["same"], "checkpoint_sha256": ["same"], "seconds": [1.0],
                "created_at": [utcnow()]}))
    return {"fixed": len(cluster0)}


@pytest.fixture(scope="module")
def exp_wh(tmp_path_factory):
    wh = Warehouse(tmp_path_factory.mktemp("expdash") / "lens.duckdb", lock_timeout=10)
    seed_complete_run(wh, "base", n_predictions=80, n_failures=16, seed=0)
    seed_complete_run(wh, "other", n_predictions=40, n_failures=8, seed=1)
    seed_experiment(wh, "base")
    return wh


def test_experiments_page_and_measured_effects(page, live_app, exp_wh):
    from dashboards.app import create_app

    url = live_app(create_app(exp_wh))
    with exp_wh.connect() as con:
        effects = {r[0]: r[1:] for r in con.execute(
            "select arm, verdict, delta from recommendation_effects where scope = 'overall'").fetchall()}
    assert effects["colour_jitter"][0] == "beats control" and effects["random_erasing"][0] != "beats control"

    page.goto(url + "/experiments?run=base")
    page.wait_for_selector("#experiment-arms")
    assert "Adopt colour_jitter" in page.inner_text("#experiment-decision")
    arms = [r.split("\t") for r in page.locator("#experiment-arms tbody tr").all_inner_texts()]
    assert [a[0] for a in arms] == ["control", "colour_jitter", "random_erasing"]  # control, then by effect
    assert arms[1][6] == "beats control" and f"{100 * effects['colour_jitter'][1]:+.1f} pts" in arms[1][4]
    clusters = page.locator("#experiment-clusters tbody tr").all_inner_texts()
    assert any("colour_jitter" in r and "targeted" in r for r in clusters)
    assert "<script>" not in page.content().split("experiment-clusters", 1)[1].split("</table>", 1)[0]
    page.wait_for_selector("#experiment-forest .main-svg")

    page.click("#nav-dashboard")
    page.wait_for_selector("#recommendations")
    first = page.locator("#recommendations tbody tr").first.inner_text()
    assert first.startswith("1\t") and "beats control" in first

    page.goto(url + "/experiments?run=other")
    page.wait_for_selector("#experiment-decision")
    assert "No experiment on run 'other'" in page.inner_text("#experiment-decision")
