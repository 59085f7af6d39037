"""Dashboard speed in a real browser, against a bare Dash app as the floor.

Seeds a warehouse with 100,000 predictions (10 classes), 10,000 failures and 5,000
hypotheses (3 dimensions, 5 clusters each; tests/_seed.py, seeded), serves the Lens app
and a bare Dash app (one table, one key-driven callback) on 127.0.0.1, and measures in
headless Chromium (performance.now(), ms since navigation start / since the key press):

* dashboard first render: fresh browser context (empty cache) until the class table and
  every cluster grid are in the page; also until all Plotly graphs are drawn;
* next failure in review: press ``j`` until the next failure's panel is shown.

Targets (issue 7): first render < 1.5 s, next failure < 300 ms.

    .venv/bin/python benchmarks/bench_dashboard.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

NEXT_JS = """async ([key, target, expected]) => {
    const el = document.getElementById(target);
    const t0 = performance.now();
    const done = new Promise((res, rej) => {
        setTimeout(() => rej(new Error('no ' + expected + ' after 10 s')), 10000);
        const obs = new MutationObserver(() => {
            if (el.innerText.startsWith(expected)) { obs.disconnect(); res(); }
        });
        obs.observe(el, {childList: true, subtree: true, characterData: true});
    });
    document.body.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true}));
    await done;
    return performance.now() - t0;
}"""


def serve(flask_app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def bare_app():
    """The floor: Dash with one table and one store-driven callback, no warehouse."""
    import dash
    from dash import Input, Output, dcc, html

    assets = Path(tempfile.mkdtemp())
    (assets / "keys.js").write_text(
        "document.addEventListener('keydown', e => { if (e.key === 'j')"
        " window.dash_clientside.set_props('key', {data: {t: Date.now()}}); });")
    app = dash.Dash(__name__, assets_folder=str(assets), update_title=None)
    app.layout = html.Div([dcc.Store(id="key"), dcc.Store(id="n", data=0), html.Div(id="out"),
                           html.Table(id="bare-table", children=[html.Tr([html.Td("a"), html.Td("1")])])])

    @app.callback(Output("out", "children"), Output("n", "data"), Input("key", "data"), dash.State("n", "data"),
                  prevent_initial_call=True)
    def step(_key, n):
        return f"item {n + 1}", n + 1

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--hypotheses", type=int, default=5_000)
    parser.add_argument("--screenshots", action="store_true", help="save docs/img/{dashboard,review}.png")
    args = parser.parse_args()

    from _seed import seed_complete_run
    from playwright.sync_api import sync_playwright

    from dashboards.app import create_app
    from lens.warehouse import Warehouse

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp())
    wh = Warehouse(tmp / "bench.duckdb")
    t = time.perf_counter()
    seeded = seed_complete_run(wh, "bench", n_classes=10, n_predictions=args.predictions,
                               n_failures=max(args.hypotheses, args.predictions // 10), n_hypotheses=args.hypotheses,
                               n_clusters=5, image_side=32, seed=1)
    print(f"seeded {args.predictions:,} predictions, {args.hypotheses:,} hypotheses in {time.perf_counter() - t:.1f} s")
    lens_server, lens_url = serve(create_app(wh, run_id="bench").server)
    bare_server, bare_url = serve(bare_app().server)
    first, graphs, bare_first, nxt, bare_next = [], [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for i in range(args.repeats + 1):  # the first round warms the server-side caches; not counted
            ctx = browser.new_context(viewport={"width": 1200, "height": 800})
            page = ctx.new_page()
            page.goto(lens_url + "/?run=bench")
            page.wait_for_selector("#class-table")
            for d in seeded.dimensions:
                page.wait_for_selector(f"#clusters-{d}")
            t_first = page.evaluate("performance.now()")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5")
            t_graphs = page.evaluate("performance.now()")
            if args.screenshots and i == 0:
                page.screenshot(path=str(REPO / "docs" / "img" / "dashboard.png"))
            page.goto(bare_url + "/")
            page.wait_for_selector("#bare-table")
            t_bare = page.evaluate("performance.now()")

            page.goto(lens_url + "/review?run=bench")
            page.wait_for_selector("#failure-title")
            page.wait_for_timeout(300)
            steps = [page.evaluate(NEXT_JS, ["j", "progress", f"failure {k + 2} of"]) for k in range(5)]
            if args.screenshots and i == 0:
                page.screenshot(path=str(REPO / "docs" / "img" / "review.png"))
            page.goto(bare_url + "/")
            page.wait_for_selector("#bare-table")
            page.wait_for_timeout(300)
            bare_steps = [page.evaluate(NEXT_JS, ["j", "out", f"item {k + 1}"]) for k in range(5)]
            ctx.close()
            if i == 0:
                continue
            first.append(t_first)
            graphs.append(t_graphs)
            bare_first.append(t_bare)
            nxt += steps
            bare_next += bare_steps
        browser.close()
    lens_server.shutdown()
    bare_server.shutdown()

    med = statistics.median
    print(f"\n{'measure (median ms)':<40}{'lens':>10}{'bare dash':>12}{'ratio':>8}{'target':>10}")
    print(f"{'dashboard first render (tables)':<40}{med(first):>10.0f}{med(bare_first):>12.0f}"
          f"{med(first) / med(bare_first):>8.1f}{'< 1500':>10}")
    print(f"{'dashboard, all graphs drawn':<40}{med(graphs):>10.0f}{'':>12}{'':>8}{'':>10}")
    print(f"{'next failure in review (j)':<40}{med(nxt):>10.0f}{med(bare_next):>12.0f}"
          f"{med(nxt) / med(bare_next):>8.1f}{'< 300':>10}")
    print(f"(repeats {args.repeats}; next-failure p90 {sorted(nxt)[int(0.9 * (len(nxt) - 1))]:.0f} ms over {len(nxt)} presses)")
    ok = med(first) < 1500 and med(nxt) < 300
    print("targets met" if ok else "targets NOT met")


if __name__ == "__main__":
    main()
