"""The review page: one failure at a time, a verdict per dimension and overall.

Layout ids the callbacks in :mod:`dashboards.app` (and assets/keys.js) rely on:
``review-root`` (keys.js only acts while it exists), stores ``review-query`` (the URL's
filters), ``review-state`` ({run, ids, pos, dims}), ``selected-dim``, ``verdict-tick``,
``key-verdict`` / ``key-nav`` / ``key-dim`` (set by keys.js), the filters ``f-cluster``,
``f-pair``, ``f-tag``, ``f-unreviewed``, the ``reviewer`` input, ``note``, ``progress``,
``saving`` / ``save-status`` and ``failure-panel``.

Answers, descriptions, claims and cluster names are texts from a model or a file: the page
shows the first :data:`ANSWER_CHARS` (names :data:`~dashboards.overview.NAME_CHARS`) of
each, so a huge answer never makes a huge page; a clipped answer (or description) has a
"show all" button (``{"type": "full-text", "dim": ..., "hyp": ...}``) that adds
``"<hyp>|<dim>"`` (``"<hyp>|_description"``) to the store ``review-expanded``
(:func:`register_callbacks`); the panel then shows that text whole (an answer with its
verdict sentence), and keeps it whole when it is drawn again (a verdict, a click on its card).
"""

from __future__ import annotations

from typing import Any

from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from lens.measure import decode_evidence

from dashboards.overview import CELL_CHARS, NAME_CHARS, clip, clipped_title, image_url, nav, pct

#: characters of an answer, summary or description shown before "show all"
ANSWER_CHARS = 2000
#: characters of a claim or a dropdown label
LABEL_CHARS = 120
#: answers kept expanded ("show all") at once; the oldest is clipped again
MAX_EXPANDED = 20

VERDICT_LABELS = (("agree", "agree (a)"), ("disagree", "disagree (d)"), ("skip", "skip (s)"))
EVIDENCE_FIELDS = (
    ("label_error_score", "label-error score"), ("ambiguity_score", "ambiguity score"),
    ("confidence", "confidence"), ("margin", "margin top-1 − top-2"), ("entropy", "entropy (nats)"),
    ("true_prob", "p(true class)"), ("true_rank", "rank of true class"), ("label_quality", "label quality"),
    ("label_issue", "label issue flag"), ("neighbour_true_share", "neighbours with the true label"),
    ("neighbour_pred_share", "neighbours with the predicted label"), ("brightness", "brightness"),
    ("contrast", "contrast"), ("saturation", "saturation"), ("sharpness", "sharpness"),
    ("border_colour", "border colour"), ("centre_colour", "centre colour"), ("fg_bg_distance", "centre/border ΔE"),
    ("saliency_method", "saliency"), ("saliency_centre_share", "saliency mass in centre"),
)


def layout(run_id: str, params: dict[str, Any], options: dict[str, Any], reviewer: str | None) -> html.Div:
    cluster_opts = [{"label": f"{c['dimension']}: {clip(c['name'] or c['cluster_id'], LABEL_CHARS)} ({c['size']})",
                     "value": f"{c['dimension']}|{c['cluster_id']}"} for c in options["clusters"]]
    pair_opts = [{"label": f"{p['true_name']} → {p['pred_name']} ({p['n']})", "value": f"{p['label']}-{p['pred']}"}
                 for p in options["pairs"]]
    cluster_value = f"{params['dim']}|{params['cluster']}" if params.get("dim") and params.get("cluster") is not None else None
    return html.Div(className="page review", id="review-root", children=[
        nav(run_id, "review"),
        dcc.Store(id="review-query", data={**params, "run": run_id}),
        dcc.Store(id="review-state"),
        dcc.Store(id="selected-dim", data=params.get("dim")),
        dcc.Store(id="review-expanded", data=[]),
        dcc.Store(id="verdict-tick", data=0),
        dcc.Store(id="key-verdict"), dcc.Store(id="key-nav"), dcc.Store(id="key-dim"),
        dcc.Interval(id="retry-interval", interval=2000, disabled=True),
        html.Div(className="toolbar filters", children=[
            dcc.Dropdown(id="f-cluster", options=cluster_opts, value=cluster_value, placeholder="any cluster"),
            dcc.Dropdown(id="f-pair", options=pair_opts, value=params.get("pair"), placeholder="any class pair"),
            dcc.Dropdown(id="f-tag", options=[{"label": t, "value": t} for t in options["tags"]], value=params.get("tag"),
                         placeholder="any tag"),
            dcc.Checklist(id="f-unreviewed", options=[{"label": " unreviewed only", "value": "1"}],
                          value=["1"] if params.get("unreviewed") else []),
            dcc.Input(id="reviewer", value=reviewer or "", placeholder="your name", debounce=True,
                      className="reviewer"),
        ]),
        html.Div(className="statusbar", children=[
            html.Span(id="progress", className="progress"),
            html.Span("saving…", id="saving", className="saving", style={"display": "none"}),
            html.Span(id="save-status", className="save-status"),
        ]),
        html.Div(id="failure-panel"),
        html.Div(className="note-row", children=[
            dcc.Textarea(id="note", placeholder="optional note, saved with the next verdict", className="note"),
            html.Button("← previous (k)", id="prev", n_clicks=0),
            html.Button("next (j) →", id="next", n_clicks=0),
        ]),
        html.P("Keys: a / d / s = agree / disagree / skip the selected dimension · 1–9 or Tab select a dimension"
               " · j / k or arrows = next / previous", className="help"),
    ])


def _highlight(text: str, spans: list[str]) -> list[Any]:
    """Split ``text`` into plain strings and <mark> elements around the contradicted spans."""
    parts: list[Any] = [text]
    for span in spans:
        if not span:
            continue
        out: list[Any] = []
        for p in parts:
            if not isinstance(p, str):
                out.append(p)
                continue
            low, key, start = p.lower(), span.lower(), 0
            while (i := low.find(key, start)) >= 0:
                out.append(p[start:i])
                out.append(html.Mark(p[i:i + len(span)], className="contradicted", title="contradicted by the evidence"))
                start = i + len(span)
            out.append(p[start:])
        parts = [p for p in out if p != ""]
    return parts


def expandable(hypothesis_id: str, part: str, text: str, *, expanded: bool, bad: list[str] | tuple = (),
               class_name: str = "answer") -> list[Any]:
    """A text of the answer: whole when short or expanded, else its first ANSWER_CHARS and a "show all"
    button (id ``{"type": "full-text", "dim": part, "hyp": hypothesis_id}``)."""
    if expanded or len(text) <= ANSWER_CHARS:
        return [html.P(_highlight(text, list(bad)), className=class_name)]
    return [
        html.P([*_highlight(text[:ANSWER_CHARS], list(bad)), "…"], className=f"{class_name} clipped"),
        html.Button(f"show all {len(text):,} characters", id={"type": "full-text", "dim": part, "hyp": hypothesis_id},
                    n_clicks=0, className="full-text"),
    ]


def register_callbacks(app) -> None:
    """The review page's own callbacks: "show all" marks a clipped answer expanded."""

    @app.callback(Output("review-expanded", "data"),
                  Input({"type": "full-text", "dim": ALL, "hyp": ALL}, "n_clicks"),
                  State("review-expanded", "data"), prevent_initial_call=True)
    def show_full_text(_clicks, expanded):
        hit = ctx.triggered_id
        if not isinstance(hit, dict) or not any(t.get("value") for t in ctx.triggered):
            raise PreventUpdate  # buttons drawn again (n_clicks 0), not clicked
        key = f"{hit['hyp']}|{hit['dim']}"
        keep = [k for k in (expanded or []) if k != key]
        return [*keep, key][-MAX_EXPANDED:]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _evidence(ev: dict[str, Any] | None, names: dict[int, str]) -> html.Div:
    if not ev:
        return html.Div("No evidence measured yet (lens evidence).", className="empty")
    rows = [html.Tr([html.Th(label), html.Td(_fmt(ev.get(key)))]) for key, label in EVIDENCE_FIELDS if key in ev]
    if ev.get("neighbour_labels"):
        nb = ", ".join(f"{names.get(lbl, lbl)} ({s:.2f})" for lbl, s in
                       zip(ev["neighbour_labels"], ev.get("neighbour_sims") or [None] * len(ev["neighbour_labels"]))
                       if s is not None)
        rows.append(html.Tr([html.Th("nearest training images"), html.Td(nb)]))
    decoded = decode_evidence(ev)
    for key, label in (("z_true", "z vs true class"), ("z_pred", "z vs predicted class"), ("skipped", "not computed")):
        doc = decoded.get(key) or {}
        if doc:
            items = sorted(doc.items(), key=lambda kv: -abs(kv[1]) if isinstance(kv[1], (int, float)) else 0)
            rows.append(html.Tr([html.Th(label), html.Td(", ".join(f"{k} {_fmt(v)}" for k, v in items[:6]))]))
    return html.Table(rows, className="facts", id="evidence-facts")


def _tag_check(claim: dict[str, Any]) -> html.Span:
    """The tag's check against the diagnosis scores, beside the tag (verdict, facts on hover)."""
    return html.Span(f"tag check: {claim['verdict']}", className=f"tag-check {claim['verdict']}",
                     id="tag-check", title=clip(claim["fact"] or "no measured fact", CELL_CHARS))


def panel(item: dict[str, Any], dims: list[str], selected: str, reviewer: str,
          expanded: list[str] | tuple[str, ...] = ()) -> list[Any]:
    """The failure panel; answers whose ``"<hypothesis_id>|<dimension>"`` is in ``expanded`` are shown whole."""
    run, ex, hid = item["run_id"], item["example_id"], item["hypothesis_id"]
    mine = {v["dimension"]: v["verdict"] for v in item["verdicts"] if v["reviewer"] == reviewer}
    others = {}
    for v in item["verdicts"]:
        if v["reviewer"] != reviewer:
            others.setdefault(v["dimension"], []).append(f"{v['reviewer']}: {v['verdict']}")
    answers = {a["dimension"]: a for a in item["answers"]}
    claims: dict[str, list] = {}
    for c in item["claims"]:
        claims.setdefault(c["dimension"], []).append(c)

    def buttons(dim: str) -> html.Div:
        return html.Div(className="verdicts", children=[
            html.Button(label, id={"type": "vbtn", "dim": dim, "v": v}, n_clicks=0,
                        className=f"vbtn {v}" + (" chosen" if mine.get(dim) == v else ""))
            for v, label in VERDICT_LABELS
        ] + [html.Span(" · ".join(others.get(dim, [])), className="others")])

    cards = []
    for n, dim in enumerate(dims + ["overall"], start=1):
        a = answers.get(dim)
        body: list[Any] = []
        if dim == "overall":
            body.append(html.P("The analysis of this failure as a whole.", className="muted"))
        elif a is None:
            body.append(html.P("No answer for this dimension.", className="muted"))
        else:
            bad = [c["claim"] for c in claims.get(dim, []) if c["verdict"] == "contradicted" and c["kind"] != "tag"]
            cluster = a["cluster_name"] or ("noise" if a["cluster_id"] == -1 else
                                            (f"cluster {a['cluster_id']}" if a["cluster_id"] is not None else "not clustered"))
            body.append(html.Div(className="meta", children=[
                html.Span(f"cluster: {clip(cluster, NAME_CHARS)}", className="cluster-name",
                          title=clipped_title(cluster, NAME_CHARS)),
                html.Span(f"tag: {clip(a['tag'], LABEL_CHARS)}", className="tag") if a["tag"] else None,
                *([] if not a["tag"] else [_tag_check(c) for c in claims.get(dim, []) if c["kind"] == "tag"][:1]),
            ]))
            whole = f"{hid}|{dim}" in expanded
            body.extend(expandable(hid, dim, a["text"] or "", expanded=whole, bad=bad))
            if a["summary"]:  # expanded with the answer
                body.append(html.P(a["summary"] if whole else clip(a["summary"], ANSWER_CHARS), className="summary"))
            text_claims = [c for c in claims.get(dim, []) if c["kind"] != "tag"]
            if text_claims:
                body.append(html.Ul(className="claims", children=[
                    html.Li(className=c["verdict"], children=[
                        html.Span(c["verdict"], className="claim-verdict"), f" “{clip(c['claim'], CELL_CHARS)}” ",
                        html.Span(f"({c['kind']}; {clip(c['fact'] or 'no fact', CELL_CHARS)})", className="muted")])
                    for c in text_claims]))
        cards.append(html.Div(
            id={"type": "dim-card", "dim": dim}, n_clicks=0,
            className="dim-card" + (" selected" if dim == selected else ""),
            **{"data-dimension": dim},
            children=[html.H3(f"{n}. {dim}"), *body, buttons(dim)],
        ))

    top3 = html.Ol([html.Li(f"{name} {pct(p, 1)}") for name, p in item["top3"]], className="top3")
    ev = item["evidence"]
    images = [html.Figure([html.Img(src=image_url(run, ex), className="pixelated big", alt="failure image",
                                    id="failure-image"), html.Figcaption("image")])]
    if ev and ev.get("has_saliency"):
        images.append(html.Figure([html.Img(src=image_url(run, ex, "saliency"), className="pixelated big",
                                            alt="saliency overlay", id="saliency-image"),
                                   html.Figcaption(f"saliency ({ev.get('saliency_method') or '?'})")]))
    return [html.Div(className="failure", **{"data-hypothesis": item["hypothesis_id"]}, children=[
        html.Div(className="left", children=[
            html.Div(images, className="images"),
            html.P(["true label: ", html.B(item["true_name"] or str(item["label"]), id="true-label")]),
            html.Div(["top-3:", top3]),
            *(expandable(hid, "_description", item["description"], expanded=f"{hid}|_description" in expanded,
                         class_name="description") if item.get("description") else []),
            html.H3("Evidence"),
            _evidence(ev, item["neighbour_names"]),
        ]),
        html.Div(className="right", children=[html.H2(f"Failure #{ex}", id="failure-title"), *cards]),
    ])]
