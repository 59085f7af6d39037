"""The dashboard page: headline numbers, classes, confusion, training, spotlight, clusters, map.

Every string from the warehouse (class names, model answers, cluster names) is passed to
Dash components as plain text children, which React renders as text. Strings that go
into Plotly figures (axis labels, hover text, legend names) are HTML-escaped first,
because Plotly interprets a few tags in them.
"""

from __future__ import annotations

import html as _html
from typing import Any
from urllib.parse import quote, urlencode

from dash import dcc, html

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6",
           "#9d755d", "#bab0ac"]
GRAPH_CONFIG = {"displaylogo": False, "responsive": True}


def esc(text: Any) -> str:
    """Escape text for Plotly (which renders a few HTML tags in labels)."""
    return _html.escape("" if text is None else str(text), quote=False)


#: characters of a model- or file-made text shown in a table cell, a name or a label; the rest
#: is on demand (a ``title`` tooltip up to TITLE_CHARS, the review page for whole answers)
CELL_CHARS = 300
NAME_CHARS = 160
TITLE_CHARS = 2000


def clip(text: Any, limit: int) -> str:
    """``text`` cut to ``limit`` characters with "…" (the pages stay small whatever the answers hold)."""
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clipped_title(text: Any, limit: int) -> str | None:
    """The tooltip for a clipped text: more of it (None when it was not clipped)."""
    text = "" if text is None else str(text)
    return None if len(text) <= limit else clip(text, TITLE_CHARS)


def pct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def image_url(run_id: str, example_id: int, kind: str = "img") -> str:
    """``/img/<run>/<id>.png`` with the run name percent-encoded (names may hold ``?``, ``#``, ``%``)."""
    return f"/{kind}/{quote(str(run_id), safe='')}/{int(example_id)}.png"


def review_href(run_id: str, **params: Any) -> str:
    return "/review?" + urlencode({"run": run_id, **{k: v for k, v in params.items() if v is not None}})


def nav(run_id: str | None, active: str) -> html.Nav:
    q = f"?{urlencode({'run': run_id})}" if run_id else ""
    return html.Nav(className="nav", children=[
        html.Span("Lens", className="brand"),
        dcc.Link("Dashboard", href="/" + q, className="active" if active == "dashboard" else "", id="nav-dashboard"),
        dcc.Link("Review", href="/review" + q, className="active" if active == "review" else "", id="nav-review"),
        dcc.Link("Compare", href="/compare" + (f"?{urlencode({'a': run_id})}" if run_id else ""),
                 className="active" if active == "compare" else "", id="nav-compare"),
        dcc.Link("Experiments", href="/experiments" + q, className="active" if active == "experiments" else "",
                 id="nav-experiments"),
        dcc.Link("Relabel", href="/relabel" + q, className="active" if active == "relabel" else "", id="nav-relabel"),
    ])


def purity_text(c: dict[str, Any]) -> str:
    judged = int(c["agree"]) + int(c["disagree"])
    reviewed = f"reviewed {c['reviewed']}/{c['size']}"
    if not judged:
        return f"no verdicts yet · {reviewed}"
    return (f"{pct(c['purity'])} ({c['agree']}/{judged}) · 95% CI {pct(c['purity_lower'])}–{pct(c['purity_upper'])}"
            f" · {reviewed}")


def _card(label: str, value: str, ident: str) -> html.Div:
    return html.Div(className="card", id=ident, children=[html.Div(value, className="value"), html.Div(label, className="label")])


def _table(header: list[str], rows: list[list[Any]], **kw) -> html.Table:
    return html.Table(**kw, children=[
        html.Thead(html.Tr([html.Th(h) for h in header])),
        html.Tbody([html.Tr([c if not isinstance(c, (str, int, float)) else html.Td(str(c)) for c in r])
                    for r in rows]),
    ])


def _td(x) -> html.Td:
    return x if isinstance(x, html.Td) else html.Td(x)


def class_section(data: dict[str, Any]) -> html.Section:
    rows = [[c["class_name"], f"{c['support']:,}", f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}"]
            for c in data["classes"]]
    return html.Section(className="panel", children=[
        html.H2("Classes"),
        html.Div(className="two", children=[
            _table(["class", "support", "precision", "recall", "F1"], rows, id="class-table", className="grid"),
            html.Div(id="class-chart-slot", className="slot"),
        ]),
    ])


def class_figure(data: dict[str, Any]) -> dict[str, Any]:
    names = [esc(c["class_name"]) for c in data["classes"]]
    return {
        "data": [{"type": "bar", "name": m, "x": names, "y": [c[k] for c in data["classes"]], "marker": {"color": col}}
                 for m, k, col in (("precision", "precision", PALETTE[0]), ("recall", "recall", PALETTE[1]),
                                   ("F1", "f1", PALETTE[2]))],
        "layout": {"barmode": "group", "height": 280, "margin": {"l": 40, "r": 10, "t": 10, "b": 60},
                   "yaxis": {"range": [0, 1]}, "legend": {"orientation": "h"}},
    }


def confusion_figure(data: dict[str, Any]) -> dict[str, Any]:
    k = len(data["classes"])
    z = [[0] * k for _ in range(k)]
    for cell in data["confusion"]:
        if 0 <= cell["true_class"] < k and 0 <= cell["pred_class"] < k:
            z[cell["true_class"]][cell["pred_class"]] = cell["count"]
    names = [esc(c["class_name"]) for c in data["classes"]]
    return {
        "data": [{"type": "heatmap", "z": z, "x": names, "y": names, "colorscale": "Blues", "reversescale": True,
                  "hovertemplate": "true %{y}<br>predicted %{x}<br>%{z}<extra></extra>"}],
        "layout": {"height": 360, "margin": {"l": 80, "r": 10, "t": 10, "b": 80},
                   "xaxis": {"title": {"text": "predicted"}}, "yaxis": {"title": {"text": "true"}, "autorange": "reversed"}},
    }


def curve_figures(data: dict[str, Any]) -> tuple[dict, dict]:
    overall = [r for r in data["curve"] if r["class_id"] == -1]
    per_class = [r for r in data["curve"] if r["class_id"] != -1]
    epochs = [r["epoch"] for r in overall]
    fig_all = {
        "data": [
            {"type": "scatter", "mode": "lines+markers", "name": "train loss", "x": epochs, "y": [r["train_loss"] for r in overall]},
            {"type": "scatter", "mode": "lines+markers", "name": "eval loss", "x": epochs, "y": [r["eval_loss"] for r in overall]},
            {"type": "scatter", "mode": "lines+markers", "name": "eval accuracy", "x": epochs,
             "y": [r["eval_accuracy"] for r in overall], "yaxis": "y2"},
        ],
        "layout": {"height": 280, "margin": {"l": 40, "r": 40, "t": 30, "b": 40}, "title": {"text": "all classes"},
                   "xaxis": {"title": {"text": "epoch"}, "dtick": 1},
                   "yaxis2": {"overlaying": "y", "side": "right", "range": [0, 1]}, "legend": {"orientation": "h"}},
    }
    by_class: dict[int, list] = {}
    for r in per_class:
        by_class.setdefault(r["class_id"], []).append(r)
    fig_cls = {
        "data": [{"type": "scatter", "mode": "lines", "name": esc(rows[0]["class_name"]),
                  "x": [r["epoch"] for r in rows], "y": [r["eval_loss"] for r in rows],
                  "line": {"color": PALETTE[cid % len(PALETTE)]}} for cid, rows in sorted(by_class.items())],
        "layout": {"height": 280, "margin": {"l": 40, "r": 10, "t": 30, "b": 40},
                   "title": {"text": "evaluation loss per class"}, "xaxis": {"title": {"text": "epoch"}, "dtick": 1}},
    }
    return fig_all, fig_cls


def _score(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _prob(x: float) -> str:
    return f"{x:.3f}" if x >= 0.001 or x == 0 else f"{x:.0e}"


def _signals(c: dict[str, Any]) -> str:
    parts = []
    if c["true_prob"] is not None:
        parts.append(f"p(given) {_prob(c['true_prob'])}")
    if c["confidence"] is not None:
        parts.append(f"p(pred) {c['confidence']:.2f}")
    if c["neighbour_true_share"] is not None:
        parts.append(f"nbrs {pct(c['neighbour_true_share'])} given / {pct(c['neighbour_pred_share'])} pred")
    if c["ambiguity_score"] is not None:
        parts.append(f"ambiguity {c['ambiguity_score']:.2f}")
    return " · ".join(parts) or "—"


def spotlight_section(data: dict[str, Any]) -> html.Section:
    """Annotation candidates ranked by label-error score, full width, one line per candidate."""
    run = data["run_id"]
    tags = _table(["dimension", "tag", "answers"], [[t["dimension"], t["tag"], f"{t['n']:,}"] for t in data["tag_counts"]],
                  id="tag-counts", className="grid")
    rows = []
    for c in data["candidates"]:
        reason = c["text"] or "No answer (not in the sample)."
        link = (dcc.Link(f"#{c['example_id']}", href=review_href(run, hyp=c["hypothesis_id"], dim="data_quality"))
                if c["hypothesis_id"] else f"#{c['example_id']}")
        check = c["tag_check"] or "—"
        rows.append(html.Tr(className="candidate" + (" over" if c["candidate"] else ""), children=[
            html.Td(c["rank"], className="num"),
            html.Td(link),
            html.Td(html.Img(src=image_url(run, c["example_id"]), className="thumb", alt="")),
            html.Td(f"{clip(c['given_name'], NAME_CHARS)} → {clip(c['suggested_name'], NAME_CHARS)}", className="pair"),
            html.Td(_score(c["label_error_score"]), className="num score"),
            html.Td(html.Div(clip(reason, CELL_CHARS), className="one-line"), title=clip(reason, TITLE_CHARS),
                    className="reason"),
            html.Td(_signals(c), className="signals"),
            html.Td(f"{c['tag'] or '—'}: {check}" if c["tag"] else "—", title=c["tag_check_fact"] or None,
                    className="bad" if check == "contradicted" else ""),
        ]))
    cands = html.Table(id="annotation-candidates", className="grid wide", children=[
        html.Thead(html.Tr([html.Th(h) for h in ("rank", "failure", "", "given → suggested", "label-error score",
                                                  "reason", "signals", "tag check")])),
        html.Tbody(rows or [html.Tr(html.Td("No failure has a label-error score yet (lens evidence).", colSpan=8))]),
    ])
    dp = data.get("detection_power")
    power = html.P(
        f"Detection power ({dp['verdict']}): {dp['message']}" if dp else
        "Detection power not measured yet (lens evidence).",
        id="detection-power", className="bad" if dp and dp["verdict"] == "too weak" else "muted")
    return html.Section(className="panel", children=[
        html.H2("Data-quality spotlight"),
        html.H3("Annotation candidates, ranked by label-error score"),
        power,
        cands,
        html.H3("Tags"),
        tags,
    ])


def cluster_section(data: dict[str, Any]) -> html.Section:
    run = data["run_id"]
    blocks = []
    for dim in data["dimensions"]:
        rows = []
        for c in (c for c in data["clusters"] if c["dimension"] == dim):
            cid = int(c["cluster_id"])
            name = c["name"] or ("noise" if cid == -1 else f"cluster {cid}")
            thumbs = [html.Img(src=image_url(run, e), className="thumb", alt="") for e in (c["rep_examples"] or [])[:5]]
            rows.append(html.Tr(className="noise" if cid == -1 else "", children=[
                html.Td(dcc.Link(clip(name, NAME_CHARS), href=review_href(run, dim=dim, cluster=cid),
                                 className="cluster-link", id=f"cluster-link-{dim}-{cid}",
                                 title=clipped_title(name, NAME_CHARS))),
                html.Td(f"{c['size']:,}", className="num"),
                html.Td(purity_text(c), className="purity", id=f"purity-{dim}-{cid}"),
                html.Td(thumbs, className="thumbs"),
                html.Td(html.Div(clip(c["medoid_text"] or "—", CELL_CHARS), className="one-line"),
                        title=clip(c["medoid_text"], TITLE_CHARS) if c["medoid_text"] else None,
                        className="example"),
            ]))
        blocks.append(html.Div(className="dimension", children=[
            html.H3(dim),
            html.Table(className="grid cluster-grid wide", id=f"clusters-{dim}", children=[
                html.Thead(html.Tr([html.Th(h) for h in ("cluster", "size", "purity so far", "representatives",
                                                          "typical answer (the medoid)")])),
                html.Tbody(rows or [html.Tr(html.Td("Not clustered yet (lens cluster).", colSpan=5))]),
            ]),
        ]))
    return html.Section(className="panel", children=[html.H2("Clusters"), *blocks])


def map_figure(points: list[dict[str, Any]], dimension: str) -> dict[str, Any]:
    groups: dict[int, list] = {}
    for p in points:
        groups.setdefault(int(p["cluster_id"]), []).append(p)
    traces = []
    for cid, pts in sorted(groups.items()):
        name = pts[0]["name"] or ("noise" if cid == -1 else f"cluster {cid}")
        traces.append({
            "type": "scatter", "mode": "markers", "name": esc(name)[:60],
            "x": [p["x"] for p in pts], "y": [p["y"] for p in pts],
            "customdata": [p["hypothesis_id"] for p in pts],
            "hovertext": [f"#{p['example_id']}: {esc((p['text'] or '')[:100])}" for p in pts],
            "hovertemplate": "%{hovertext}<extra></extra>",
            "marker": {"size": 7, "color": "#bbbbbb" if cid == -1 else PALETTE[cid % len(PALETTE)],
                       "line": {"width": 0}},
        })
    return {"data": traces, "layout": {
        "height": 420, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "hovermode": "closest",
        "title": {"text": f"{esc(dimension)}: click a point to review that failure"},
        "xaxis": {"visible": False}, "yaxis": {"visible": False}, "uirevision": dimension}}


def layout(data: dict[str, Any], runs: list[str]) -> html.Div:
    """The page as first shown: numbers and tables. The Plotly graphs follow in a second
    callback (:func:`graphs`) so the tables are on screen before Plotly loads and draws."""
    run = data["run_id"]
    m = data["metrics"]
    return html.Div(className="page dashboard", id="dashboard-root", children=[
        nav(run, "dashboard"),
        dcc.Store(id="dashboard-run", data=run),
        html.Div(className="toolbar", children=[
            html.Label("Run", htmlFor="run-picker"),
            dcc.Dropdown(id="run-picker", options=[{"label": r, "value": r} for r in runs], value=run,
                         clearable=False, className="run-picker"),
        ]),
        html.Div(className="cards", id="headline", children=[
            _card("accuracy", pct(m.get("accuracy"), 1), "head-accuracy"),
            _card("failures", f"{m.get('failures') or 0:,}", "head-failures"),
            _card("sampled", f"{data['sampled']:,}", "head-sampled"),
            _card("hypotheses", f"{data['hypotheses']:,}", "head-hypotheses"),
            _card("reviewed", f"{data['reviewed']:,}", "head-reviewed"),
        ]),
        class_section(data),
        html.Section(className="panel", children=[html.H2("Confusion"), html.Div(id="confusion-slot", className="slot")]),
        html.Section(className="panel", children=[html.H2("Training"), html.Div(id="curves-slot", className="two slot")]),
        spotlight_section(data),
        recommendations_section(data),
        cluster_section(data),
        html.Section(className="panel", children=[html.H2("Map of hypotheses"), html.Div(id="map-slot", className="slot")]),
    ])


def effect_text(r: dict[str, Any]) -> str:
    """'untested', or the measured verdict with the accuracy change vs control and its 95% interval."""
    if r.get("lift") is None:
        return r.get("effect") or "untested"
    return (f"{r['effect']}: {100 * r['lift']:+.1f} pts [{100 * r['lift_lower']:+.1f}, "
            f"{100 * r['lift_upper']:+.1f}]")


def recommendations_section(data: dict[str, Any]) -> html.Section:
    """Fix clusters ranked by size x reviewed purity (the `recommendations` view)."""
    recs = data.get("recommendations") or []
    run = data["run_id"]
    if not recs:
        body: Any = html.P("No fix clusters yet (lens cluster).", className="empty")
    else:
        rows = []
        for r in recs:
            purity = (f"{pct(r['purity'])} · 95% CI {pct(r['purity_lower'])}–{pct(r['purity_upper'])}"
                      if r["reviewed"] else "unreviewed")
            rows.append(html.Tr([
                html.Td(str(r["rank"])),
                html.Td(dcc.Link(clip(r["name"] or f"cluster {r['cluster_id']}", NAME_CHARS),
                                 href=review_href(run, dim="fix", cluster=r["cluster_id"]),
                                 title=clipped_title(r["name"], NAME_CHARS))),
                html.Td(str(r["size"])),
                html.Td(purity),
                html.Td(clip(r["medoid_text"], CELL_CHARS), className="muted",
                        title=clipped_title(r["medoid_text"], CELL_CHARS)),
                html.Td(dcc.Link(effect_text(r), href="/experiments?" + urlencode({"run": run}))),
            ]))
        body = html.Table(id="recommendations", className="table", children=[
            html.Thead(html.Tr([html.Th(h) for h in ("#", "fix cluster", "failures", "purity", "typical answer",
                                                     "measured effect")])),
            html.Tbody(rows),
        ])
    return html.Section(className="panel", children=[
        html.H2("Recommendations"),
        html.P("Fix clusters ranked by size x the lower bound of reviewed purity; unreviewed ones follow by size. "
               "Your verdicts move them. Once `lens experiment` has tested them, the measured effect on accuracy "
               "vs a control arm ranks them.", className="muted"),
        body,
    ])


def compare_layout(runs: list[str], a: str | None, b: str | None, data: dict[str, Any] | None) -> html.Div:
    """The compare page: pick two runs; per-class F1 deltas and how run A's clusters fared in B."""
    pickers = html.Div(className="toolbar", children=[
        html.Label("Run A", htmlFor="compare-a"),
        dcc.Dropdown(id="compare-a", options=[{"label": r, "value": r} for r in runs], value=a, clearable=False,
                     className="run-picker"),
        html.Label("Run B", htmlFor="compare-b"),
        dcc.Dropdown(id="compare-b", options=[{"label": r, "value": r} for r in runs], value=b, clearable=False,
                     className="run-picker"),
    ])
    children: list[Any] = [nav(a, "compare"), pickers]
    if data is None:
        children.append(html.P("Pick two different runs evaluated on the same examples.", className="empty"))
        return html.Div(className="page compare", children=children)
    classes = data["classes"]
    fig = {"data": [{"type": "bar", "x": [esc(c["class_name"]) for c in classes],
                     "y": [c["f1_delta"] for c in classes],
                     "marker": {"color": ["#54a24b" if (c["f1_delta"] or 0) >= 0 else "#e45756" for c in classes]}}],
           "layout": {"height": 300, "margin": {"l": 40, "r": 10, "t": 30, "b": 40},
                      "title": {"text": f"F1 change per class ({esc(data['b'])} minus {esc(data['a'])})"}}}
    f3 = lambda v: "—" if v is None else f"{v:+.3f}"  # noqa: E731
    children += [
        html.Div(className="cards", children=[
            _card(f"accuracy {data['a']}", pct(data["accuracy_a"], 1), "compare-acc-a"),
            _card(f"accuracy {data['b']}", pct(data["accuracy_b"], 1), "compare-acc-b"),
        ]),
        html.Section(className="panel", children=[
            html.H2("Per class"),
            dcc.Graph(id="compare-f1", figure=fig, config=GRAPH_CONFIG),
            html.Table(id="compare-classes", className="table", children=[
                html.Thead(html.Tr([html.Th(h) for h in ("class", "F1 A", "F1 B", "F1 change", "recall change",
                                                         "precision change")])),
                html.Tbody([html.Tr([html.Td(c["class_name"]), html.Td(f"{c['f1_a'] or 0:.3f}"),
                                     html.Td(f"{c['f1_b'] or 0:.3f}"), html.Td(f3(c["f1_delta"])),
                                     html.Td(f3(c["recall_delta"])), html.Td(f3(c["precision_delta"]))])
                            for c in classes]),
            ]),
        ]),
        html.Section(className="panel", children=[
            html.H2(f"How the failures of {data['a']}'s clusters fared in {data['b']}"),
            html.Table(id="compare-clusters", className="table", children=[
                html.Thead(html.Tr([html.Th(h) for h in ("dimension", "cluster", "failures", "fixed",
                                                         "same mistake", "other mistake", "fixed share")])),
                html.Tbody([html.Tr([html.Td(c["dimension"]),
                                     html.Td(clip(c["name"] or str(c["cluster_id"]), NAME_CHARS),
                                             title=clipped_title(c["name"], NAME_CHARS)),
                                     html.Td(str(c["failures_a"])), html.Td(str(c["fixed_in_b"])),
                                     html.Td(str(c["same_mistake_in_b"])), html.Td(str(c["other_mistake_in_b"])),
                                     html.Td(pct(c["fixed_share"]))])
                            for c in data["clusters"]]),
            ]) if data["clusters"] else html.P(f"{data['a']} has no clusters yet.", className="empty"),
        ]),
    ]
    return html.Div(className="page compare", children=children)


def graphs(data: dict[str, Any], points: list[dict[str, Any]]) -> tuple[Any, Any, Any, Any]:
    """Children of the graph slots: class chart, confusion, training curves, cluster map."""
    fig_all, fig_cls = curve_figures(data)
    dims = data["dimensions"]
    cmap = [
        dcc.RadioItems(id="map-dim", options=[{"label": d, "value": d} for d in dims],
                       value=dims[0] if dims else None, inline=True),
        dcc.Graph(id="cluster-map", figure=map_figure(points, dims[0]) if dims else {}, config=GRAPH_CONFIG),
    ] if dims else html.P("No hypotheses clustered yet (lens cluster).", className="empty")
    return (
        dcc.Graph(id="class-chart", figure=class_figure(data), config=GRAPH_CONFIG),
        dcc.Graph(id="confusion", figure=confusion_figure(data), config=GRAPH_CONFIG),
        [dcc.Graph(id="curve-all", figure=fig_all, config=GRAPH_CONFIG),
         dcc.Graph(id="curve-class", figure=fig_cls, config=GRAPH_CONFIG)],
        cmap,
    )


def empty(message: str) -> html.Div:
    return html.Div(className="page", children=[nav(None, "dashboard"), html.P(message, className="empty")])
