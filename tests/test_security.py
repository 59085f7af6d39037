"""Security: loopback unless told otherwise, a token on every request off loopback, images by
id only, parameterised SQL, untrusted text shown as text.

Proven here:

* ``lens serve`` (a real subprocess) listens on 127.0.0.1 only by default (read from
  /proc/net/tcp); on 0.0.0.0 with ``LENS_TOKEN`` every route (pages, Dash JSON, assets,
  component suites, images, OPTIONS/HEAD and the Dash write callback
  ``POST /_dash-update-component`` that appends a verdict) answers 401 without the token, and
  the refused write stores nothing; an empty token or ``--debug`` off loopback is refused;
* image routes answer 404 to traversal (``..``, encoded, double-encoded, backslashes),
  absolute paths (``//etc/passwd``, ``%2Fetc``) and null bytes, over a raw socket (no client
  normalisation); Dash's own static routes refuse traversal with 404 too;
* every SQL string our code builds by interpolation (f-string, ``%``, ``.format``, ``+``)
  only interpolates allowlisted identifier expressions (AST scan of lens/ and dashboards/,
  with a planted violation proving the scan finds one);
* a run id ``x'; drop table runs; --`` round-trips through ingest, sample, status, sql,
  report and the image route, with every table intact;
* HTML in run names and class names is text in the dashboard (run picker, class table,
  Plotly axis labels), the review page and the HTML report (Chromium: no dialog, no element
  injected).

Proven elsewhere (not repeated): ``tests/test_dashboard.py`` — GET routes and the cookie need
the token (test_token_checked_on_every_request), plain ``../`` image requests 404
(test_images_by_failure_id_only), non-loopback without a token is refused, model output
with HTML on the dashboard and review page is text (test_untrusted_text_stays_text);
``tests/test_cli.py::test_sql_formats_and_read_only`` — ``lens sql`` is read-only unless
``--write``; ``tests/test_pipeline.py`` — the report escapes model text;
``tests/test_verdicts.py`` — CSV exports neutralise formulas.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from _live import SERVE_ENV, raw_get, raw_request, save_verdict_body, seeded_warehouse, verdict_count
from _seed import seed_complete_run
from contracts import check_contracts
from PIL import Image

from lens.warehouse import Warehouse

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-Token_42"
EVIL_SQL = "x'; drop table runs; --"
EVIL_RUN = "<img src=x onerror=alert('run')> run #1 at 100%?"  # also ? # % for the image URLs
EVIL_CLASSES = ["<script>alert('class')</script>cat", "<b>bold</b> & dog"]
ENV = SERVE_ENV


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return seeded_warehouse(tmp_path_factory, "sec")


# -- lens serve: where it listens, and the token ------------------------------------------


def _listening(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on ``port`` (from /proc/net/tcp{,6})."""
    out = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state != "0A" or int(p, 16) != port:
                continue
            if len(addr) == 8:
                out.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
            else:
                out.add("::" if set(addr) == {"0"} else addr)
    return out


def _spawn_serve(db: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lens", "--warehouse", str(db), "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=db.parent)


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float = 60) -> str:
    """The URL line ``lens serve`` printed, once its port listens."""
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    while time.monotonic() < deadline:
        assert proc.poll() is None, line + proc.stdout.read()
        if _listening(port):
            return line
        time.sleep(0.1)
    raise AssertionError(f"lens serve never listened on {port}: {line}")


def test_serve_listens_on_loopback_by_default_and_elsewhere_only_with_a_token(seeded):
    from _servers import free_port

    wh, s = seeded
    p_local, p_all = free_port(), free_port()
    env = {k: v for k, v in ENV.items() if k != "LENS_TOKEN"}
    local = _spawn_serve(wh.path, "--port", str(p_local), env=env)
    everywhere = _spawn_serve(wh.path, "--host", "0.0.0.0", "--port", str(p_all), env={**env, "LENS_TOKEN": TOKEN})
    try:
        _wait_listening(local, p_local)
        url_line = _wait_listening(everywhere, p_all)
        assert _listening(p_local) == {"127.0.0.1"}
        assert _listening(p_all) == {"0.0.0.0"}
        assert f"?token={TOKEN}" in url_line
        assert raw_get(f"http://127.0.0.1:{p_local}", "/")[0] == 200  # loopback: no token needed

        base = f"http://127.0.0.1:{p_all}"
        ex, hyp = s.failure_ids[0], s.hypothesis_ids[0]
        body = save_verdict_body(hyp, list(s.dimensions))
        post = {"Content-Type": "application/json"}
        anonymous = [("GET", p) for p in (
            "/", "/review?run=demo", "/_dash-layout", "/_dash-dependencies", "/assets/keys.js",
            "/_dash-component-suites/dash/deps/react@18.3.1.min.js", f"/img/demo/{ex}.png",
            f"/saliency/demo/{ex}.png", "/img/demo/99999.png", "/no-such-page")] + [("HEAD", "/"), ("OPTIONS", "/")]
        for method, path in anonymous:
            assert raw_request(base, method, path)[0] == 401, (method, path)
        for headers in ({}, {"X-Lens-Token": TOKEN.lower()}, {"X-Lens-Token": TOKEN[:-1]}, {"X-Lens-Token": ""},
                        {"Cookie": "lens_token=wrong"}, {"Authorization": f"Bearer {TOKEN}"}):
            status, _ = raw_request(base, "POST", "/_dash-update-component", body, {**post, **headers})
            assert status == 401, headers
        assert raw_request(base, "POST", "/_dash-update-component?token=nope", body, post)[0] == 401
        assert verdict_count(wh) == 0  # the refused write wrote nothing

        ok = {"X-Lens-Token": TOKEN}
        status, png = raw_get(base, f"/img/demo/{ex}.png", ok)
        assert status == 200 and png.startswith(b"\x89PNG")
        status, reply = raw_request(base, "POST", "/_dash-update-component", body, {**post, **ok})
        assert status == 200 and "saved: agree on overall" in reply.decode()
        with wh.connect() as con:
            assert con.execute("select hypothesis_id, dimension, reviewer from verdicts").fetchall() == [
                (hyp, "overall", "mallory")]
        assert raw_request(base, "POST", "/_dash-update-component", body,
                           {**post, "Cookie": f"lens_token={TOKEN}"})[0] == 200
    finally:
        for proc in (local, everywhere):
            proc.terminate()
            proc.wait(10)
        with wh.transaction() as con:
            con.execute("delete from verdicts")


def test_serve_refuses_an_empty_token_and_debug_off_loopback(cli, monkeypatch):
    monkeypatch.setenv("LENS_TOKEN", "")
    out = cli("serve", "--host", "0.0.0.0", "--port", "1", expect=1)
    assert "Refusing to serve on 0.0.0.0 without an access token" in out.output
    out = cli("serve", "--host", "0.0.0.0", "--port", "1", "--token", "", expect=1)
    assert "without an access token" in out.output
    out = cli("serve", "--host", "0.0.0.0", "--port", "1", "--token", "x" * 20, "--debug", expect=1)
    assert "--debug" in out.output and "127.0.0.1 only" in out.output


# -- images by id only -------------------------------------------------------------------------


TRAVERSALS = [
    "/img/demo/../../../etc/passwd", "/img/../lens.duckdb", "/img/demo/..%2F..%2Flens.duckdb",
    "/img/demo/%2e%2e/%2e%2e/lens.duckdb", "/img/demo/%252e%252e%252flens.duckdb", "/img/demo/..%5c..%5clens.duckdb",
    "/img/demo/..\\..\\lens.duckdb", "/img//etc/passwd", "/img/%2Fetc%2Fpasswd/1.png", "/img/demo//etc/passwd",
    "/img/demo/%2Fetc%2Fpasswd", "/img/demo/1%00.png", "/img/demo%00/1.png", "/img/demo/1.png%00.txt",
    "/img/demo/1.png/..", "/img/lens.duckdb", "/img/demo/-1.png", "/img/demo/1e3.png", "/img/demo/0x1.png",
    "/saliency//etc/passwd", "/saliency/demo/..%2F..%2Flens.duckdb", "/saliency/demo/%00.png", "/img", "/img/",
    "/assets/../app.py", "/assets/..%2Fapp.py", "/assets/%2e%2e/queries.py",
    "/_dash-component-suites/dash/../../../../etc/passwd", "/_dash-component-suites/dash/%2e%2e/%2e%2e/app.py",
    "/_dash-component-suites/dash/..%2F..%2Fdash.py",
]


def test_images_by_id_only_traversal_absolute_paths_and_null_bytes_are_404(seeded, live_app):
    from dashboards.app import create_app

    wh, s = seeded
    ex = s.failure_ids[1]
    with wh.connect() as con:
        png = con.execute("select image_png from failures where run_id = 'demo' and example_id = ?", [ex]).fetchone()[0]
    base = live_app(create_app(wh))
    assert raw_get(base, f"/img/demo/{ex}.png") == (200, png)
    for path in TRAVERSALS:
        status, data = raw_get(base, path)
        assert status == 404, (path, status, data[:80])
        assert b"root:" not in data and b"DUCK" not in data and b"import " not in data, path
    # a raw NUL byte in the request line is not HTTP at all: refused before any route
    status, data = raw_get(base, "/img/demo/1\x00.png")
    assert status in (400, 404) and not data.startswith(b"\x89PNG")


# -- parameterised SQL: a static scan ------------------------------------------------------

SINK_METHODS = {"execute", "executemany", "sql", "query"}

#: (file, interpolated expression) -> why it is an identifier (or SQL text) of our own code, never a value
ALLOWED_INTERPOLATIONS: dict[tuple[str, str], str] = {
    ("lens/pipeline.py", "table"): "table from a literal tuple of table names in _state",
    ("lens/stages/report.py", "t"): "t from a literal tuple of table names",
    ("lens/stages/hypothesize_writer.py", "table"): "table in _TABLES, a constant tuple of table names",
    ("lens/stages/verdicts.py", "', '.join(COLUMNS)"): "COLUMNS, the constant list of verdict columns",
    ("lens/warehouse/rows.py", "table"): "checked against [a-z_][a-z0-9_]* by _check_ident",
    ("lens/warehouse/rows.py", "col_sql"): "column names checked by _check_ident",
    ("lens/warehouse/rows.py", "clause"): "'k = ?' per column name checked by _check_ident; values are parameters",
    ("lens/warehouse/rows.py", "_check_ident(k)"): "a column name checked by _check_ident",
    ("lens/warehouse/rows.py", "view"): "'_lens_src_' + the thread id (an int)",
    ("lens/warehouse/rows.py", "threading.get_ident()"): "an int",
    ("lens/warehouse/copying.py", "table"): "checked against [a-z_][a-z0-9_]* by _check_ident",
    ("lens/warehouse/copying.py", "col_sql"): "column names checked by _check_ident",
    ("lens/warehouse/copying.py", "view"): "'_lens_copy_' + the thread id (an int)",
    ("lens/warehouse/copying.py", "threading.get_ident()"): "an int",
    ("lens/lake.py", "_literal(loc.attach_string())"): "ATTACH takes no parameters: the catalog string the user "
                                                       "gave --warehouse, quoted as a SQL literal",
    ("lens/lake.py", "_attach_options(loc, read_only)"): "ATTACH options: read_only and the --lake-data folder "
                                                         "quoted as a SQL literal",
}


def _assignments(scope: ast.AST, name: str) -> list[ast.expr]:
    out = []
    for n in ast.walk(scope):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
            out.append(n.value)
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign)) and isinstance(n.target, ast.Name) and n.target.id == name \
                and n.value is not None:
            out.append(n.value)
    return out


def _interpolated(node: ast.AST, scope: ast.AST):
    """Expressions pasted into SQL text under ``node``: f-string fields, ``%`` and ``.format``
    arguments, and ``+`` operands that are neither literals nor local SQL variables."""
    for n in ast.walk(node):
        if isinstance(n, ast.JoinedStr):
            yield from (v.value for v in n.values if isinstance(v, ast.FormattedValue))
        elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) and isinstance(n.left, (ast.Constant, ast.JoinedStr)):
            yield n.right
        elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
            for side in (n.left, n.right):
                if isinstance(side, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    continue
                if isinstance(side, ast.Name) and _assignments(scope, side.id):
                    continue  # a local built from SQL text: scanned where it is assigned
                yield side
        elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "format"
              and isinstance(n.func.value, (ast.Constant, ast.JoinedStr))):
            yield from n.args
            yield from (k.value for k in n.keywords)


def _resolve(expr: ast.expr, scope: ast.AST, seen: set[str]):
    """The SQL expression and, for each local name in it, what that name is assigned."""
    yield expr
    for n in ast.walk(expr):
        if isinstance(n, ast.Name) and n.id not in seen:
            seen.add(n.id)
            for value in _assignments(scope, n.id):
                yield from _resolve(value, scope, seen)


def _sink_arg(call: ast.Call, helpers: dict[str, int]) -> int | None:
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in SINK_METHODS:
        return 0
    name = f.id if isinstance(f, ast.Name) else (f.attr if isinstance(f, ast.Attribute) else None)
    return helpers.get(name)


def scan_sql(sources: dict[str, str]) -> list[tuple[str, int, str]]:
    """(file, line, interpolated expression) for every SQL string built by interpolation.

    Sinks: ``.execute / .executemany / .sql / .query`` calls, and helper functions that pass
    one of their parameters on to a sink (``_rows(con, sql, params)``), found to a fixpoint.
    """
    trees = {name: ast.parse(text) for name, text in sources.items()}
    funcs = {name: [n for n in ast.walk(t) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
             for name, t in trees.items()}
    helpers: dict[str, int] = {}
    changed = True
    while changed:
        changed = False
        for fs in funcs.values():
            for f in fs:
                params = [a.arg for a in f.args.args]
                for n in ast.walk(f):
                    idx = _sink_arg(n, helpers) if isinstance(n, ast.Call) else None
                    if idx is None or len(n.args) <= idx:
                        continue
                    a = n.args[idx]
                    if isinstance(a, ast.Name) and a.id in params and f.name not in SINK_METHODS:
                        pos = params.index(a.id) - (1 if params[0] in ("self", "cls") else 0)
                        if helpers.get(f.name) != pos:
                            helpers[f.name] = pos
                            changed = True
    found = []
    for name, tree in trees.items():
        scope_of: dict[int, ast.AST] = {}
        for f in funcs[name]:
            for n in ast.walk(f):
                scope_of.setdefault(id(n), f)  # the innermost function comes first in ast.walk order
        for n in ast.walk(tree):
            idx = _sink_arg(n, helpers) if isinstance(n, ast.Call) else None
            if idx is None or len(n.args) <= idx:
                continue
            scope = scope_of.get(id(n), tree)
            for expr in _resolve(n.args[idx], scope, set()):
                found += [(name, n.lineno, ast.unparse(v)) for v in _interpolated(expr, scope)]
    return found


def _our_sources() -> dict[str, str]:
    files = sorted([*REPO.joinpath("lens").rglob("*.py"), *REPO.joinpath("dashboards").rglob("*.py")])
    return {str(p.relative_to(REPO)): p.read_text() for p in files}


def test_sql_scan_finds_planted_value_interpolation():
    planted = {"bad.py": (
        "def rows(con, sql):\n    return con.execute(sql).fetchall()\n"
        "def a(con, run_id):\n    con.execute(f\"select * from runs where run_id = '{run_id}'\")\n"
        "def b(con, name):\n    sql = 'select * from classes where class_name = ' + repr(name)\n    rows(con, sql)\n"
        "def c(con, ex):\n    q = 'select * from failures where example_id = %d' % ex\n    con.sql(q)\n"
        "def d(wh, who):\n    wh.query(\"delete from verdicts where reviewer = '{}'\".format(who))\n"
        "def e(con, t):\n    con.execute('select count(*) from ' + t)\n"
        "def ok(con, run_id):\n    con.execute('select * from runs where run_id = ?', [run_id])\n"
    )}
    assert sorted(x[2] for x in scan_sql(planted)) == ["ex", "repr(name)", "run_id", "t", "who"]


def test_every_interpolated_sql_name_is_an_allowlisted_identifier():
    found = scan_sql(_our_sources())
    unexpected = [f"{f}:{line}: {expr}" for f, line, expr in found if (f, expr) not in ALLOWED_INTERPOLATIONS]
    assert not unexpected, ("SQL built from values (use ? parameters), or a new identifier to justify in "
                            "ALLOWED_INTERPOLATIONS:\n  " + "\n  ".join(unexpected))
    stale = set(ALLOWED_INTERPOLATIONS) - {(f, e) for f, _, e in found}
    assert not stale, f"allowlist entries no longer used (remove them): {sorted(stale)}"


# -- a hostile run id end to end -------------------------------------------------------------


def test_hostile_run_id_round_trips_through_ingest_sample_status_sql_report_and_images(cli, tmp_path):
    from dashboards.app import create_app

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 10, 200 - i * 30)).save(imgs / f"{i}.png")
    csv = tmp_path / "p.csv"
    csv.write_text("id,label,prob_cat,prob_dog,image\n" + "".join(
        f"{i},{'cat' if i % 2 else 'dog'},{0.8 if i < 3 else 0.3},{0.2 if i < 3 else 0.7},imgs/{i}.png\n"
        for i in range(6)))
    cli("ingest", "--predictions", str(csv), "--run", EVIL_SQL)
    out = cli("ingest", "--predictions", str(csv), "--run", EVIL_SQL, expect=1)
    assert "already exists" in out.output
    cli("sample", "--run", EVIL_SQL, "--per-class", "5")
    status = json.loads(cli("status", "--format", "json").output)
    assert [r["run_id"] for r in status] == [EVIL_SQL]
    assert status[0]["rows"]["predictions"] == 6 and status[0]["rows"]["failures"] == 4
    assert status[0]["rows"]["samples"] == 4 and set(status[0]["stages"]) == {"ingest", "sample"}
    out = cli("sql", "select run_id, count(*) as n from predictions group by run_id", "--format", "json")
    assert json.loads(out.output) == [{"run_id": EVIL_SQL, "n": 6}]
    report = tmp_path / "r.html"
    cli("report", "--run", EVIL_SQL, "--out", str(report))
    assert "<h1>Lens report: x&#39;; drop table runs; --</h1>" in report.read_text()  # Jinja2 autoescape

    wh = cli.wh
    with wh.connect() as con:
        fails = con.execute("select example_id, image_png from failures where run_id = ? order by 1",
                            [EVIL_SQL]).fetchall()
    client = create_app(wh).server.test_client()
    for ex, png in fails:
        r = client.get(f"/img/{quote(EVIL_SQL, safe='')}/{ex}.png")
        assert r.status_code == 200 and r.data == png
    assert client.get(f"/saliency/{quote(EVIL_SQL, safe='')}/{fails[0][0]}.png").status_code == 404  # no evidence
    assert client.get(f"/img/{quote(EVIL_SQL, safe='')}/1.png").status_code == 404  # predicted right: no failure
    with wh.connect() as con:
        assert con.execute("select run_id from runs").fetchall() == [(EVIL_SQL,)]
        counts = check_contracts(con, require_rows=("runs", "predictions", "failures", "samples"))
    assert counts["predictions"] == 6 and counts["samples"] == 4


# -- HTML in names: text everywhere ------------------------------------------------------------


@pytest.fixture(scope="module")
def named_wh(tmp_path_factory):
    from datetime import datetime

    wh = Warehouse(tmp_path_factory.mktemp("names") / "lens.duckdb", lock_timeout=30)
    seed_complete_run(wh, run_id=EVIL_RUN, n_predictions=40, n_failures=8, created_at=datetime(2024, 1, 1))
    seed_complete_run(wh, run_id=EVIL_SQL, n_predictions=40, n_failures=8, seed=1, created_at=datetime(2024, 1, 2))
    with wh.transaction() as con:
        for cid, name in enumerate(EVIL_CLASSES):
            con.execute("update classes set class_name = ? where run_id = ? and class_id = ?", [name, EVIL_RUN, cid])
    return wh


@pytest.mark.browser
def test_html_in_run_and_class_names_is_text_in_dashboard_review_and_report(page, named_wh, tmp_path, live_app):
    from dashboards.app import create_app
    from lens.stages import report

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    names = EVIL_CLASSES + ["bird", "cat"]
    injected = ("() => document.querySelectorAll('img[src=\"x\"], #class-table b, .xtick b').length"
                " + [...document.scripts].filter(s => s.textContent.includes(\"alert('\")"
                " && !s.textContent.includes('Plotly')).length")
    base = live_app(create_app(named_wh))
    page.goto(f"{base}/?run={quote(EVIL_RUN, safe='')}")
    page.wait_for_selector("#class-table")
    cells = [r.split("\t")[0] for r in page.locator("#class-table tbody tr").all_inner_texts()]
    assert cells == names
    assert EVIL_RUN in page.locator("#run-picker").inner_text()
    page.wait_for_selector("#class-chart .xtick text")
    assert page.locator("#class-chart .xtick text").all_text_contents() == names
    page.locator("#run-picker").click()
    page.get_by_text(EVIL_SQL, exact=True).click()  # the other run, picked by its name shown as text
    page.wait_for_function("() => new URLSearchParams(location.search).get('run') === " + json.dumps(EVIL_SQL))
    page.wait_for_function("() => document.querySelector('#class-table tbody td')?.textContent === 'airplane'")
    assert [r.split("\t")[0] for r in page.locator("#class-table tbody tr").all_inner_texts()] == [
        "airplane", "automobile", "bird", "cat"]
    assert EVIL_SQL in page.locator("#run-picker").inner_text()
    # the review page of the run whose id is SQL: its image loads through the id-only route
    page.goto(f"{base}/review?run={quote(EVIL_SQL, safe='')}")
    page.wait_for_selector("#failure-image")
    page.wait_for_function("() => document.querySelector('#failure-image').naturalWidth > 0")
    page.goto(f"{base}/review?run={quote(EVIL_RUN, safe='')}")
    page.wait_for_selector("#true-label")
    assert page.locator("#true-label").inner_text() in names
    page.wait_for_function("() => document.querySelector('#failure-image').naturalWidth > 0")
    assert page.evaluate(injected) == 0

    out = report.run(named_wh, run_id=EVIL_RUN, out=tmp_path / "report.html")
    page.goto(out.path.resolve().as_uri())
    page.wait_for_selector("#class-metrics .xtick text")
    assert [r.split("\t")[0] for r in page.locator("#class-metrics tbody tr").all_inner_texts()] == names
    assert page.locator("#class-metrics .xtick text").all_text_contents() == names
    assert page.locator("h1").inner_text() == f"Lens report: {EVIL_RUN}"
    assert page.evaluate(injected) == 0
    assert dialogs == []
