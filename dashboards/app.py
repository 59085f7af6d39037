"""The Lens Dash app: ``create_app(warehouse, run_id=None, token=None) -> dash.Dash``.

Pages (client-side routing through ``dcc.Location``):

* ``/?run=NAME``: the dashboard (:mod:`dashboards.overview`);
* ``/review?run=NAME&dim=D&cluster=C&pair=T-P&tag=X&unreviewed=1&hyp=ID``: the review form
  (:mod:`dashboards.review`), filtered as the parameters say;
* ``/experiments?run=NAME&exp=ID``: the recommendations' controlled experiments
  (:mod:`dashboards.experiments`);
* ``/relabel?run=NAME``: suspected label errors and their download for annotators
  (:mod:`dashboards.relabel`).

Flask routes (images by failure id only, never by path):

* ``/img/<run>/<example_id>.png``: ``failures.image_png``;
* ``/saliency/<run>/<example_id>.png``: ``evidence.saliency_png``;
  ``example_id`` is any 64-bit integer, negative ones included (ingested runs keep the ids
  they were given); anything else under ``/img`` or ``/saliency`` (unknown ids, non-integer
  ids, ``..``, ``//etc``, ``%2F``, ``%00``) is 404, and so are paths outside Dash's registered
  component files.

Host header (DNS rebinding): a web page on ``evil.example`` whose name is re-pointed at
127.0.0.1 reaches a loopback server with ``Host: evil.example``. Every request must name an
IP address, ``localhost`` or one of ``allowed_hosts`` (``lens serve`` passes its ``--host``,
this machine's names when it listens on all interfaces, and each ``--allow-host``); anything
else is 400 before any route runs. An IP literal is safe to accept: rebinding needs a name
the attacker's DNS answers for.

Access log: werkzeug logs each request line; :class:`RedactTokens` (installed on the
``werkzeug`` logger by :func:`create_app`) replaces every ``token=`` query value, and the
tokens of the apps built in this process wherever they appear, with ``[redacted]``.

Access token: when ``token`` is given (``lens serve`` requires one on a non-loopback host),
every request must carry it as ``?token=``, an ``X-Lens-Token`` header or the
``lens_token`` cookie, which the first ``?token=`` visit sets (HttpOnly, SameSite=Strict);
otherwise the answer is 401.

Verdicts are written with :func:`lens.stages.verdicts.append` (the one validated way to
append them). While the warehouse is held by a CLI stage the write waits (``saving…``);
if it is still held after the lock timeout the verdict stays queued, in the app process and
in the browser's local storage (``pending-verdicts``), and is retried every 2 s until it is
stored, so a click is never lost (also when Dash drops the answer of a save overtaken by the
next key press). Verdict writes are serialised in the process and skip stored verdict ids,
so a retried verdict is stored once; they are group commits (:mod:`dashboards.verdict_queue`):
a write takes every verdict queued by then, other reviewers' too, and a record that cannot be
stored fails alone (``not saved: ...`` to its reviewer), the rest of its batch is stored.
The app's queue is ``app.server.extensions["lens_verdicts"]`` (its ``stats`` count commits).
Each request opens the warehouse and closes it again.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import DependencyException, PreventUpdate
from flask import Response, abort, g, request

from dashboards import experiments, overview, queries, relabel, review, review_nav
from dashboards.review_nav import _clicked
from dashboards.verdict_queue import SaveResult, VerdictQueue
from lens.stages import verdicts as verdict_stage
from lens.warehouse import Warehouse, utcnow

ASSETS = Path(__file__).resolve().parent / "assets"
TOKEN_COOKIE = "lens_token"
TOKEN_HEADER = "X-Lens-Token"
WRITE_LOCK_TIMEOUT = 10.0
#: example ids are BIGINT: a larger number in an image URL is no failure (404, not a DuckDB error)
_INT64 = range(-(2**63), 2**63)
_TOKEN_PARAM = re.compile(r"((?:^|[?&;])token=)[^&;\s\"]*", re.IGNORECASE)


class RedactTokens(logging.Filter):
    """Replace access tokens in log records with ``[redacted]``: the value of every ``token=``
    query parameter, and each known token (as given or percent-encoded) wherever it appears."""

    def __init__(self):
        super().__init__()
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        clean = _TOKEN_PARAM.sub(r"\1[redacted]", text)
        for tok in self.tokens:
            for form in {tok, quote(tok, safe="")}:
                clean = clean.replace(form, "[redacted]")
        if clean != text:
            record.msg, record.args = clean, ()
        return True


_redact = RedactTokens()


def _install_log_redaction(token: str | None) -> None:
    if token:
        _redact.tokens.add(token)
    logger = logging.getLogger("werkzeug")
    if _redact not in logger.filters:
        logger.addFilter(_redact)


def host_name(header: str) -> str:
    """The host name of a ``Host`` header: port and IPv6 brackets removed, lower case, no trailing dot."""
    h = header.strip()
    if h.startswith("["):
        h = h[1:h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:
        h = h.rsplit(":", 1)[0]
    return h.lower().rstrip(".")


def host_allowed(header: str | None, names: Iterable[str]) -> bool:
    """Whether a request's ``Host`` header is one this server answers to (module docstring)."""
    if header is None:  # HTTP/1.0 without Host: no browser sends that
        return True
    name = host_name(header)
    if not name:
        return False
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
        return True
    except ValueError:
        pass
    return name == "localhost" or name in {host_name(n) for n in names}


def _install_host_check(server, names: Iterable[str]) -> None:
    names = frozenset(host_name(n) for n in names if n)

    @server.before_request
    def check_host():
        header = request.headers.get("Host")
        if host_allowed(header, names):
            return None
        shown = (header or "")[:100]
        return Response(f"Lens: refused a request for host {shown!r}: this server answers to IP addresses, "
                        f"localhost and the names `lens serve --allow-host NAME` allows (DNS rebinding "
                        f"protection).\n", status=400, mimetype="text/plain")


def _param(q: dict[str, list[str]], key: str) -> str | None:
    v = q.get(key)
    return v[0] if v else None


def parse_search(search: str | None) -> dict[str, Any]:
    """The page parameters from a URL query string (unknown keys ignored, bad ints dropped)."""
    q = parse_qs((search or "").lstrip("?"))
    params: dict[str, Any] = {k: _param(q, k) for k in ("run", "dim", "pair", "tag", "hyp")}
    try:
        params["cluster"] = int(_param(q, "cluster")) if _param(q, "cluster") is not None else None
    except ValueError:
        params["cluster"] = None
    params["unreviewed"] = _param(q, "unreviewed") in ("1", "true", "yes")
    return params


def _install_token_check(server, token: str) -> None:
    expected = token.encode()

    def ok(candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), expected)

    @server.before_request
    def check_token():
        from_query = request.args.get("token")
        if ok(from_query):
            g.lens_set_cookie = True
            return None
        if ok(request.headers.get(TOKEN_HEADER)) or ok(request.cookies.get(TOKEN_COOKIE)):
            return None
        return Response("Lens: this server needs its access token. Open the URL that `lens serve` printed "
                        "(it ends in ?token=...).\n", status=401, mimetype="text/plain")

    @server.after_request
    def set_cookie(resp):
        if g.get("lens_set_cookie"):
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return resp


def create_app(warehouse: Warehouse | str | Path, run_id: str | None = None, token: str | None = None,
               allowed_hosts: Iterable[str] = ()) -> dash.Dash:
    """Build the Dash app over ``warehouse``; ``run_id`` is the run shown first (default: newest).

    ``allowed_hosts``: host names, besides IP addresses and ``localhost``, that requests may
    name in their ``Host`` header.
    """
    wh = warehouse if isinstance(warehouse, Warehouse) else Warehouse(warehouse)
    write_wh = wh if wh.memory else Warehouse(wh.path, lock_timeout=min(wh.lock_timeout, WRITE_LOCK_TIMEOUT))
    app = dash.Dash(
        __name__, assets_folder=str(ASSETS), title="Lens", update_title=None,
        suppress_callback_exceptions=True, serve_locally=True,
    )
    server = app.server
    _install_log_redaction(token)
    _install_host_check(server, allowed_hosts)  # first: a rebound name gets nothing, not even a 401
    if token:
        _install_token_check(server, token)
    _install_routes(server, wh)
    app.layout = html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="reviewer-store", storage_type="local"),
        dcc.Store(id="pending-verdicts", storage_type="local", data=[]),
        html.Div(id="page"),
    ])
    queue = server.extensions["lens_verdicts"] = VerdictQueue(write_wh)  # verdicts not stored yet
    _register_page_callbacks(app, wh, run_id)
    _register_overview_callbacks(app, wh, run_id)
    review_nav.register_callbacks(app, wh)  # the queue, navigation, dimension selection
    _register_verdict_callbacks(app, queue)
    _register_failure_callbacks(app, wh)
    review.register_callbacks(app)  # "show all" of a long answer
    relabel.register_callbacks(app, wh)  # the download for annotators (/relabel)
    return app


def _install_routes(server, wh: Warehouse) -> None:
    """Security headers, the image routes (by failure id only) and 404 for unknown component files."""

    @server.after_request
    def security_headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        return resp

    def png(kind: str, run: str, example_id: int):
        if example_id not in _INT64:
            abort(404)
        data = queries.image(wh, kind, run, example_id)
        if data is None:
            abort(404)
        return Response(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @server.route("/img/<run>/<int(signed=True):example_id>.png")
    def failure_image(run: str, example_id: int):
        return png("img", run, example_id)

    @server.route("/saliency/<run>/<int(signed=True):example_id>.png")
    def saliency_image(run: str, example_id: int):
        return png("saliency", run, example_id)

    @server.before_request
    def images_by_id_only():
        # Anything under /img or /saliency that is not exactly <run>/<int>.png is 404, including
        # what no route matches ('//etc/passwd', '%2Fetc'), which Dash's catch-all would answer.
        if request.path.split("/")[1] in ("img", "saliency") and request.endpoint not in (
                "failure_image", "saliency_image"):
            abort(404)

    @server.errorhandler(DependencyException)
    def no_such_dependency(_exc):
        # /_dash-component-suites/<pkg>/<path outside the registered files> (e.g. '../../app.py')
        return Response("Not Found\n", status=404, mimetype="text/plain")


def _pick_run(wh: Warehouse, default: str | None, requested: str | None) -> tuple[str | None, list[str]]:
    """The run to show (the requested one, else ``default``, else the newest) and all runs."""
    runs = queries.runs(wh)
    for cand in (requested, default):
        if cand in runs:
            return cand, runs
    return (runs[0] if runs else None), runs


# -- routing -------------------------------------------------------------------------------


def _register_page_callbacks(app: dash.Dash, wh: Warehouse, run_id: str | None) -> None:
    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"),
                  State("reviewer-store", "data"))
    def render_page(pathname, search, reviewer):
        params = parse_search(search)
        if (pathname or "/").rstrip("/") == "/experiments":
            return experiments.page(wh, params["run"] or run_id, _param(parse_qs((search or "").lstrip("?")), "exp"))
        if (pathname or "/").rstrip("/") == "/relabel":
            return relabel.page(wh, params["run"] or run_id)
        if (pathname or "/").rstrip("/") != "/review":
            # one connection: the requested (or default) run's overview, if it exists
            data = queries.overview(wh, params["run"] or run_id) if (params["run"] or run_id) else None
            if data is not None and data["metrics"]:
                return overview.layout(data, data["runs"])
        run, runs = _pick_run(wh, run_id, params["run"])
        if run is None:
            return overview.empty("The warehouse has no runs yet: start with `lens train` or `lens ingest`.")
        if (pathname or "/").rstrip("/") == "/compare":
            q = parse_qs((search or "").lstrip("?"))
            a = _param(q, "a") if _param(q, "a") in runs else run
            b = _param(q, "b") if _param(q, "b") in runs else next((r for r in runs if r != a), None)
            data = queries.compare(wh, a, b) if b and b != a else None
            return overview.compare_layout(runs, a, b, data)
        if (pathname or "/").rstrip("/") == "/review":
            return review.layout(run, params, queries.review_options(wh, run), reviewer)
        return overview.layout(queries.overview(wh, run), runs)


def _register_overview_callbacks(app: dash.Dash, wh: Warehouse, run_id: str | None) -> None:
    @app.callback(Output("class-chart-slot", "children"), Output("confusion-slot", "children"),
                  Output("curves-slot", "children"), Output("map-slot", "children"),
                  Input("dashboard-run", "data"))
    def render_graphs(run):
        if not run:
            raise PreventUpdate
        data = queries.overview(wh, run)
        points = queries.map_points(wh, run, data["dimensions"][0]) if data["dimensions"] else []
        return overview.graphs(data, points)

    @app.callback(Output("url", "search", allow_duplicate=True), Input("run-picker", "value"),
                  State("url", "search"), prevent_initial_call=True)
    def change_run(run, search):
        # the dropdown reports its value when it mounts: only a different run navigates
        if not run or run == _pick_run(wh, run_id, parse_search(search)["run"])[0]:
            raise PreventUpdate
        return "?" + overview.urlencode({"run": run})

    @app.callback(Output("url", "search", allow_duplicate=True), Input("compare-a", "value"),
                  Input("compare-b", "value"), State("url", "search"), prevent_initial_call=True)
    def change_compare(a, b, search):
        q = parse_qs((search or "").lstrip("?"))
        if not a or not b or (a == _param(q, "a") and b == _param(q, "b")):
            raise PreventUpdate
        return "?" + overview.urlencode({"a": a, "b": b})

    @app.callback(Output("cluster-map", "figure"), Input("map-dim", "value"), State("url", "search"),
                  prevent_initial_call=True)
    def change_map(dim, search):
        run, _ = _pick_run(wh, run_id, parse_search(search)["run"])
        if not dim or run is None:
            raise PreventUpdate
        return overview.map_figure(queries.map_points(wh, run, dim), dim)

    @app.callback(Output("url", "pathname"), Output("url", "search", allow_duplicate=True),
                  Input("cluster-map", "clickData"), State("map-dim", "value"), State("url", "search"),
                  prevent_initial_call=True)
    def open_point(click, dim, search):
        if not click or not click.get("points"):
            raise PreventUpdate
        hyp = click["points"][0].get("customdata")
        if not hyp:
            raise PreventUpdate
        run, _ = _pick_run(wh, run_id, parse_search(search)["run"])
        return "/review", "?" + overview.urlencode({"run": run, "hyp": hyp, "dim": dim})


# -- review: verdicts ----------------------------------------------------------------------


def _register_verdict_callbacks(app: dash.Dash, queue: VerdictQueue) -> None:
    @app.callback(
        Output("verdict-tick", "data"), Output("save-status", "children"),
        Output("pending-verdicts", "data"), Output("retry-interval", "disabled"),
        Input("key-verdict", "data"), Input({"type": "vbtn", "dim": ALL, "v": ALL}, "n_clicks"),
        Input("retry-interval", "n_intervals"),
        State("review-state", "data"), State("selected-dim", "data"), State("reviewer", "value"),
        State("note", "value"), State("pending-verdicts", "data"), State("verdict-tick", "data"),
        running=[(Output("saving", "style"), {"display": "inline"}, {"display": "none"})],
        prevent_initial_call=True,
    )
    def save_verdict(key, _clicks, _n, state, selected, reviewer, note, pending, tick):
        records = [r for r in (pending or []) if isinstance(r, dict)]
        new = None
        clicked = _clicked(ctx.triggered)
        if "key-verdict.data" in ctx.triggered_prop_ids and key:
            new = (key.get("v"), selected or (state["dims"][0] if state and state["dims"] else verdict_stage.OVERALL))
        elif clicked:
            new = (clicked[-1]["v"], clicked[-1]["dim"])
        elif "retry-interval.n_intervals" not in ctx.triggered_prop_ids:
            raise PreventUpdate  # buttons re-rendered (n_clicks 0), not clicked
        if new is not None:
            if not state or not state["ids"]:
                raise PreventUpdate
            records.append({
                "verdict_id": str(uuid.uuid4()), "hypothesis_id": state["ids"][state["pos"]],
                "dimension": new[1], "verdict": new[0], "reviewer": (reviewer or "").strip() or "anonymous",
                "note": (note or "").strip() or None, "created_at": utcnow().isoformat(),
            })
        # Every record goes to the process's queue before the write is tried: Dash drops the answer
        # of a save still running when the next key press starts another one, so a record handed
        # back to the browser only (pending-verdicts) would be lost with it.
        return _save_answer(queue.submit(records), records, tick)


def _save_answer(res: SaveResult, records: list[dict[str, Any]], tick: int | None) -> tuple:
    """The save callback's outputs (tick, status line, the browser's pending records, retry off)."""
    retry = f"{len(res.left)} verdict(s) waiting (retrying)"
    if res.errors:  # only the bad records fail: the rest of the batch is stored (or still queued)
        ticked = (tick or 0) + 1 if res.written else tick
        return ticked, f"not saved: {next(iter(res.errors.values()))}", res.left, not res.left
    if res.state == "waiting":
        return no_update, f"saving… {retry}", res.left, False
    if res.state == "busy":
        return no_update, f"saving… the warehouse is busy, {retry}", res.left, False
    if res.left:  # queued meanwhile by a save whose answer Dash dropped
        return (tick or 0) + 1, f"saving… {retry}", res.left, False
    last = records[-1] if records else res.last
    if last is None:
        return no_update, no_update, [], True
    return ((tick or 0) + 1, f"saved: {last['verdict']} on {last['dimension']} at {last['created_at'][11:19]} UTC",
            [], True)


def _register_failure_callbacks(app: dash.Dash, wh: Warehouse) -> None:
    @app.callback(Output("failure-panel", "children"), Output("progress", "children"),
                  Input("review-state", "data"), Input("selected-dim", "data"), Input("verdict-tick", "data"),
                  Input("review-expanded", "data"), State("reviewer", "value"))
    def render_failure(state, selected, _tick, expanded, reviewer):
        if not state:
            raise PreventUpdate
        ids = state["ids"]
        if not ids:
            return html.P("No failures match these filters.", className="empty"), "0 of 0"
        item = queries.failure(wh, ids[state["pos"]], ids)
        if item is None:
            return html.P("This hypothesis is gone (re-run?).", className="empty"), ""
        dims = state["dims"]
        sel = selected if selected in dims + [verdict_stage.OVERALL] else (dims[0] if dims else verdict_stage.OVERALL)
        progress = (f"failure {state['pos'] + 1} of {len(ids)} · {item['queue_reviewed']} of {len(ids)} reviewed"
                    f" · dimension: {sel}")
        return review.panel(item, dims, sel, (reviewer or "").strip() or "anonymous", expanded or []), progress
