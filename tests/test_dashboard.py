"""The Dash app in a real browser (Debian chromium via Playwright) and its Flask routes.

One seeded warehouse and one app server (werkzeug on 127.0.0.1, port 0, in a thread) per
module; each browser test reads what it needs before it acts, so the order does not matter.
Screenshots of both pages go to the test's tmp folder, and to docs/img/ (the README's pictures)
when LENS_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from _seed import XSS, seed_complete_run
from scipy.stats import binomtest
from sklearn.metrics import precision_recall_fscore_support

from lens.warehouse import Warehouse

REPO = Path(__file__).resolve().parent.parent


def _shot_dir(tmp_path) -> Path:
    return REPO / "docs" / "img" if os.environ.get("LENS_UPDATE_SCREENSHOTS") == "1" else tmp_path
CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def seeded_wh(tmp_path_factory):
    wh = Warehouse(tmp_path_factory.mktemp("dash") / "lens.duckdb", lock_timeout=10)
    seeded = seed_complete_run(wh, n_predictions=80, n_failures=16)
    return wh, seeded


@pytest.fixture(scope="module")
def base_url_(seeded_wh):
    from werkzeug.serving import make_server

    from dashboards.app import create_app

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = create_app(seeded_wh[0])
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def _verdicts(wh, **where):
    sql = "select hypothesis_id, dimension, verdict, reviewer, source from verdicts"
    if where:
        sql += " where " + " and ".join(f"{k} = ?" for k in where)
    with wh.connect() as con:
        return con.execute(sql, list(where.values())).fetchall()


def _wilson_pct(k: int, n: int) -> tuple[str, str]:
    """The 95% Wilson interval as the dashboard prints it, from scipy (not a copy of lens's formula)."""
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return f"{100 * ci.low:.0f}%", f"{100 * ci.high:.0f}%"


def test_dashboard_cluster_to_review_verdict_and_purity(page, base_url_, seeded_wh, tmp_path):
    wh, seeded = seeded_wh
    page.goto(base_url_ + "/")
    page.wait_for_selector("#class-table")
    for dim in seeded.dimensions:
        page.wait_for_selector(f"#clusters-{dim}")

    # the class table matches scikit-learn on the stored predictions
    with wh.connect() as con:
        y = con.execute("select label, pred from predictions where run_id = 'demo' order by example_id").fetchall()
    _, _, f1, support = precision_recall_fscore_support([a for a, _ in y], [b for _, b in y], zero_division=0)
    rows = page.locator("#class-table tbody tr").all_inner_texts()
    assert len(rows) == len(seeded.class_names)
    for row, name, f, s in zip(rows, seeded.class_names, f1, support):
        cells = row.split("\t")
        assert cells[0] == name and cells[1] == f"{s:,}" and cells[4] == f"{f:.3f}"

    # each cluster row shows its typical answer (the medoid, stored by lens cluster) beside the name
    with wh.connect() as con:
        medoid = con.execute("select medoid_text from clusters where run_id = 'demo' and dimension = 'visual_cause'"
                             " and cluster_id = 0").fetchone()[0]
    example = page.locator("#clusters-visual_cause tbody tr").first.locator("td.example")
    assert medoid and example.get_attribute("title") == medoid and example.inner_text() == medoid

    purity = page.locator("#purity-visual_cause-0")
    before = purity.inner_text()
    members = seeded.clusters["visual_cause"][0]
    assert before.startswith("no verdicts yet") and f"reviewed 0/{len(members)}" in before

    page.click("#cluster-link-visual_cause-0")
    page.wait_for_selector("#failure-title")
    assert page.locator("#progress").inner_text().startswith(f"failure 1 of {len(members)}")
    first = page.locator(".failure").get_attribute("data-hypothesis")
    assert first == members[0]  # sample order
    assert page.locator(".dim-card.selected").get_attribute("data-dimension") == "visual_cause"
    page.locator("#failure-image").evaluate("el => el.complete && el.naturalWidth > 0")
    assert "pixelated" in page.locator("#failure-image").evaluate("el => getComputedStyle(el).imageRendering")

    page.keyboard.press("a")
    page.wait_for_selector("#save-status:has-text('saved: agree on visual_cause')")
    assert _verdicts(wh, hypothesis_id=first) == [(first, "visual_cause", "agree", "anonymous", "review")]
    page.screenshot(path=str(_shot_dir(tmp_path) / "review.png"))

    page.click("#nav-dashboard")
    page.wait_for_selector("#clusters-visual_cause")
    lo, hi = _wilson_pct(1, 1)
    after = page.locator("#purity-visual_cause-0").inner_text()
    assert after.startswith(f"100% (1/1) · 95% CI {lo}–{hi}") and f"reviewed 1/{len(members)}" in after
    page.wait_for_selector("#cluster-map .point")
    page.screenshot(path=str(_shot_dir(tmp_path) / "dashboard.png"), full_page=True)


def test_review_keys_contradicted_claims_and_reviewer(page, base_url_, seeded_wh):
    wh, seeded = seeded_wh
    hyp, dim = seeded.contradicted[0]
    page.goto(f"{base_url_}/review?run=demo&hyp={hyp}")
    page.wait_for_selector(f".failure[data-hypothesis='{hyp}']")
    with wh.connect() as con:
        claim = con.execute("select claim from claims where hypothesis_id = ? and verdict = 'contradicted'",
                            [hyp]).fetchone()[0]
    marks = page.locator(f".dim-card[data-dimension='{dim}'] mark.contradicted").all_inner_texts()
    assert [m.lower() for m in marks] == [claim.lower()]
    # the queue: by label-error score, then ambiguity score (no tag is contradicted in the seed)
    with wh.connect() as con:
        scores = dict(con.execute(
            "select h.hypothesis_id, (e.label_error_score, e.ambiguity_score) from hypotheses as h"
            " join evidence as e on e.run_id = h.run_id and e.example_id = h.example_id where h.status = 'ok'").fetchall())
    order = sorted(seeded.hypothesis_ids, key=lambda h: tuple(-v for v in scores[h]))
    pos = order.index(hyp) + 1
    assert page.locator("#progress").inner_text().startswith(f"failure {pos} of {len(seeded.hypothesis_ids)}")

    # typing in an input is not a shortcut
    page.fill("#reviewer", "ann")
    page.keyboard.press("Enter")
    page.locator("#note").type("a d s j")
    page.locator("#failure-title").click()
    page.keyboard.press("3")
    page.wait_for_selector(".dim-card.selected[data-dimension='fix']")
    page.keyboard.press("d")
    page.wait_for_selector("#save-status:has-text('saved: disagree on fix')")
    assert _verdicts(wh, hypothesis_id=hyp) == [(hyp, "fix", "disagree", "ann", "review")]
    with wh.connect() as con:
        assert con.execute("select note from verdicts where hypothesis_id = ?", [hyp]).fetchone() == ("a d s j",)
    page.keyboard.press("Tab")
    page.wait_for_selector(".dim-card.selected[data-dimension='overall']")

    step, back = ("j", "ArrowLeft") if pos < len(order) else ("k", "ArrowRight")
    page.keyboard.press(step)
    page.wait_for_selector(f"#progress:has-text('failure {pos + 1 if step == 'j' else pos - 1} of')")
    page.keyboard.press(back)
    page.wait_for_selector(f".failure[data-hypothesis='{hyp}']")
    # the reviewer name is remembered across visits (local storage)
    page.reload()
    page.wait_for_selector("#failure-title")
    assert page.input_value("#reviewer") == "ann"


def test_untrusted_text_stays_text(page, base_url_, seeded_wh):
    wh, seeded = seeded_wh
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{base_url_}/review?run=demo&hyp={seeded.xss_hypothesis_id}&dim=visual_cause")
    page.wait_for_selector(f".failure[data-hypothesis='{seeded.xss_hypothesis_id}']")
    answer = page.locator(".dim-card[data-dimension='visual_cause'] .answer").inner_text()
    assert XSS in answer
    assert XSS in page.locator(".description").inner_text()
    page.goto(base_url_ + "/")
    page.wait_for_selector("#clusters-fix")
    assert XSS + " crops" in page.locator("#clusters-fix").inner_text()
    page.wait_for_selector("#cluster-map .point")
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("[...document.scripts].filter(s => s.textContent.includes('alert(1)')).length") == 0
    assert dialogs == []


def test_map_point_opens_that_failure(page, base_url_, seeded_wh):
    _, seeded = seeded_wh
    page.goto(base_url_ + "/")
    page.locator("#cluster-map .point").first.wait_for()
    page.locator("#cluster-map").scroll_into_view_if_needed()
    # where Plotly drew the first point of the first trace, and whose hypothesis it is
    target = page.evaluate("""() => {
        const gd = document.querySelector('#cluster-map .js-plotly-plot'), fl = gd._fullLayout;
        const r = gd.getBoundingClientRect(), tr = gd.data[0];
        return {x: r.left + fl._size.l + fl.xaxis.l2p(tr.x[0]), y: r.top + fl._size.t + fl.yaxis.l2p(tr.y[0]),
                hyp: tr.customdata[0]};
    }""")
    page.mouse.move(target["x"] - 4, target["y"])
    page.mouse.move(target["x"], target["y"])
    page.mouse.click(target["x"], target["y"])
    page.wait_for_selector(f".failure[data-hypothesis='{target['hyp']}']")
    assert urlparse(page.url).path == "/review"
    assert parse_qs(urlparse(page.url).query)["hyp"] == [target["hyp"]]
    assert target["hyp"] in seeded.hypothesis_ids


# -- Flask routes, no browser ------------------------------------------------------------


def test_images_by_failure_id_only(seeded_wh):
    from dashboards.app import create_app

    wh, seeded = seeded_wh
    client = create_app(wh).server.test_client()
    ex = seeded.failure_ids[3]
    with wh.connect() as con:
        png, sal = con.execute("select f.image_png, e.saliency_png from failures f join evidence e using (run_id, example_id)"
                               " where run_id = 'demo' and example_id = ?", [ex]).fetchone()
    r = client.get(f"/img/demo/{ex}.png")
    assert r.status_code == 200 and r.data == png and r.mimetype == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(f"/saliency/demo/{ex}.png").data == sal
    for bad in ["/img/demo/99999.png", "/img/other/1.png", "/img/demo/abc.png", "/img/demo/-1.png",
                "/img/demo/..%2F..%2F..%2Fetc%2Fpasswd", "/img/..%2F..%2Fetc/passwd", "/img/../../etc/passwd",
                "/saliency/demo/%2e%2e/lens.duckdb", "/img/demo/1.png/../../../lens.duckdb", "/img/demo/1"]:
        assert client.get(bad).status_code == 404, bad


def test_token_checked_on_every_request(seeded_wh):
    from dashboards.app import create_app

    wh, seeded = seeded_wh
    app = create_app(wh, token="s3cret-token")
    anon = app.server.test_client()
    ex = seeded.failure_ids[0]
    for url in ("/", "/review", "/_dash-layout", f"/img/demo/{ex}.png", "/?token=wrong"):
        assert anon.get(url).status_code == 401, url
    assert anon.get("/_dash-layout", headers={"X-Lens-Token": "nope"}).status_code == 401
    assert anon.get("/_dash-layout", headers={"X-Lens-Token": "s3cret-token"}).status_code == 200
    browser = app.server.test_client()
    first = browser.get("/?token=s3cret-token")
    assert first.status_code == 200
    cookie = first.headers["Set-Cookie"]
    assert "lens_token=s3cret-token" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser.get(f"/img/demo/{ex}.png").status_code == 200  # the cookie carries it now
    assert create_app(wh).server.test_client().get("/").status_code == 200  # no token configured


def test_serve_refuses_non_loopback_without_token(cli, monkeypatch):
    from lens.commands.serve import is_loopback

    monkeypatch.delenv("LENS_TOKEN", raising=False)
    out = cli("serve", "--host", "0.0.0.0", "--port", "1", expect=1)
    assert re.search(r"Refusing to serve on 0\.0\.0\.0 without an access token", out.output)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_concurrent_requests_each_open_their_own_connection(seeded_wh):
    """Threads opening and closing the same file at once (a threaded server) must not fail."""
    from dashboards.app import create_app

    wh, seeded = seeded_wh
    app = create_app(wh)
    statuses: list[int] = []

    def hammer():
        client = app.server.test_client()
        for i in range(25):
            statuses.append(client.get(f"/img/demo/{seeded.failure_ids[i % 5]}.png").status_code)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 200
