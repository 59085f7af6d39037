"""The dashboard's recommendations section and the compare page, in a real browser."""

from __future__ import annotations

import pytest
from _seed import seed_complete_run
from sklearn.metrics import f1_score

from lens.warehouse import Warehouse

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    wh = Warehouse(tmp_path_factory.mktemp("cmp") / "lens.duckdb", lock_timeout=10)
    seed_complete_run(wh, "base", n_predictions=80, n_failures=16, seed=0)
    seed_complete_run(wh, "next", n_predictions=80, n_failures=10, seed=1)
    return wh


def test_recommendations_and_compare_page(page, live_app, two_runs):
    from dashboards.app import create_app

    wh = two_runs
    url = live_app(create_app(wh))
    with wh.connect() as con:
        sizes = con.execute(
            "select cluster_id, count(*) as n from cluster_members where run_id = 'base' and dimension = 'fix'"
            " and cluster_id >= 0 group by cluster_id order by n desc, cluster_id"
        ).fetchall()
        ya = con.execute("select label, pred from predictions where run_id = 'base' order by example_id").fetchall()
        yb = con.execute("select label, pred from predictions where run_id = 'next' order by example_id").fetchall()
        names = [r[0] for r in con.execute(
            "select class_name from classes where run_id = 'base' order by class_id").fetchall()]
        failures_a = dict(con.execute(
            "select m.cluster_id, count(*) from cluster_members m where m.run_id = 'base' and m.dimension = 'fix'"
            " group by m.cluster_id").fetchall())

    page.goto(url + "/?run=base")
    page.wait_for_selector("#recommendations")
    rows = page.locator("#recommendations tbody tr").all_inner_texts()
    # unreviewed fix clusters are ranked by size (computed here from the membership table)
    assert [int(r.split("\t")[2]) for r in rows] == [n for _, n in sizes]
    assert all("unreviewed" in r for r in rows)

    page.goto(url + "/compare?a=base&b=next")
    page.wait_for_selector("#compare-classes")
    cells = [r.split("\t") for r in page.locator("#compare-classes tbody tr").all_inner_texts()]
    f1a = f1_score([a for a, _ in ya], [b for _, b in ya], average=None, labels=range(len(names)), zero_division=0)
    f1b = f1_score([a for a, _ in yb], [b for _, b in yb], average=None, labels=range(len(names)), zero_division=0)
    expected = {n: f"{b - a:+.3f}" for n, a, b in zip(names, f1a, f1b)}
    assert {c[0]: c[3] for c in cells} == expected
    cluster_rows = page.locator("#compare-clusters tbody tr").all_inner_texts()
    fix_rows = [r.split("\t") for r in cluster_rows if r.startswith("fix")]
    assert sorted(int(r[2]) for r in fix_rows) == sorted(failures_a.values())
    assert page.locator("#nav-compare").is_visible()
