"""The experiments page, ``/experiments?run=NAME[&exp=ID]``: did the recommendations help?

For a run that `lens experiment` tested (the parent), the page shows its latest experiment
(or ``exp``): which recommendation to adopt, or "None beats the control"; the arms side by
side (accuracy vs the control arm with the paired 95% interval, per-seed deltas, verdict);
the effect on each arm's targeted cluster (its failures fixed vs the control's); and the
per-class F1 changes. Everything comes from the ``recommendation_effects`` view; the page
opens one short connection and has no callbacks (links navigate). Names from the warehouse
stay text (Dash children; escaped in Plotly labels).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from dash import dcc, html

from dashboards.overview import GRAPH_CONFIG, NAME_CHARS, clip, clipped_title, esc, nav, review_href
from lens.warehouse import Warehouse


def _rows(con, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def load(wh: Warehouse, run_id: str | None, experiment_id: str | None = None) -> dict[str, Any]:
    """Everything the page shows, in one connection."""
    with wh.connect() as con:
        tested = _rows(con, "select e.experiment_id, e.parent_run_id, e.created_at, e.epochs, "
                            "(select count(*) from experiment_arms a where a.experiment_id = e.experiment_id) as arms "
                            "from experiments e order by e.created_at desc, e.experiment_id", [])
        runs = list(dict.fromkeys(t["parent_run_id"] for t in tested))
        run = run_id or (runs[0] if runs else None)
        mine = [t for t in tested if t["parent_run_id"] == run]
        ids = [t["experiment_id"] for t in mine]
        exp = experiment_id if experiment_id in ids else (ids[0] if ids else None)
        out: dict[str, Any] = {"run": run, "runs": runs, "experiments": mine, "experiment_id": exp}
        if exp is None:
            return out
        out["effects"] = _rows(con, "select * from recommendation_effects where experiment_id = ? "
                                    "order by scope, rank, arm, item_id", [exp])
        out["control"] = _rows(con, "select a.seed, a.run_id, m.accuracy from experiment_arms a "
                                    "join run_metrics m using (run_id) where a.experiment_id = ? and a.is_control "
                                    "order by a.seed", [exp])
    return out


def _pp(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{100 * v:+.{digits}f} pts"


def _interval(r: dict[str, Any]) -> str:
    return f"{_pp(r['delta'])} [{_pp(r['delta_lower'])}, {_pp(r['delta_upper'])}]"


def decision(overall: list[dict[str, Any]]) -> str:
    """The sentence at the top: the arm to adopt, or that none beats the control."""
    winners = [r for r in overall if r["verdict"] == "beats control"]
    if not overall:
        return "No arm has finished yet."
    if not winners:
        return ("None beats the control: no recommendation measurably helped (a valid finding; more seeds or "
                "epochs narrow the intervals).")
    best = max(winners, key=lambda r: r["delta"])
    return (f"Adopt {best['arm']} (recommendation #{best['rank']}: {best['recommendation'] or ''}): accuracy "
            f"{_interval(best)} vs the control.")


def _forest(overall: list[dict[str, Any]], targeted: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Deltas with their intervals: accuracy and the targeted cluster's fixed share, per arm."""
    arms = [r["arm"] for r in overall]
    data = []
    for label, rows, colour in (("accuracy (all examples)", overall, "#4c78a8"),
                                ("its cluster's failures fixed", [targeted.get(a) for a in arms], "#f58518")):
        pts = [(esc(a), r) for a, r in zip(arms, rows) if r is not None]
        data.append({
            "type": "scatter", "mode": "markers", "name": label, "marker": {"color": colour, "size": 10},
            "x": [100 * r["delta"] for _, r in pts], "y": [a for a, _ in pts],
            "error_x": {"type": "data", "symmetric": False,
                        "array": [100 * (r["delta_upper"] - r["delta"]) for _, r in pts],
                        "arrayminus": [100 * (r["delta"] - r["delta_lower"]) for _, r in pts]},
        })
    return {"data": data, "layout": {
        "height": 120 + 50 * len(arms), "margin": {"l": 140, "r": 10, "t": 30, "b": 40},
        "title": {"text": "Change vs the control arm (points, 95% interval)"},
        "xaxis": {"title": {"text": "percentage points"}, "zeroline": True, "zerolinewidth": 2},
        "legend": {"orientation": "h"}}}


def _arms_table(overall: list[dict[str, Any]], data: dict[str, Any]) -> html.Table:
    control = data["control"]
    ctl_acc = sum(c["accuracy"] for c in control) / len(control) if control else None
    head = ("arm", "recommendation", "seeds", "accuracy", "vs control", "per seed", "verdict")
    rows = [html.Tr([html.Td("control"), html.Td("no change", className="muted"), html.Td(str(len(control))),
                     html.Td("—" if ctl_acc is None else f"{100 * ctl_acc:.1f}%"), html.Td(""), html.Td(""),
                     html.Td("")])]
    for r in overall:
        rows.append(html.Tr([
            html.Td(r["arm"]),
            html.Td(clip(f"#{r['rank']} {r['recommendation'] or ''}", NAME_CHARS),
                    title=clipped_title(r["recommendation"], NAME_CHARS)),
            html.Td(str(r["seeds"])),
            html.Td(f"{100 * r['arm_share']:.1f}%"),
            html.Td(_interval(r)),
            html.Td(", ".join(_pp(d) for d in r["seed_deltas"] or [])),
            html.Td(r["verdict"], className="verdict-" + r["verdict"].replace(" ", "-")),
        ]))
    return html.Table(id="experiment-arms", className="table", children=[
        html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(rows)])


def _clusters_table(clusters: list[dict[str, Any]], run: str) -> html.Table:
    head = ("arm", "cluster", "targeted", "failures x seeds", "fixed (arm)", "fixed (control)", "difference",
            "verdict")
    rows = [html.Tr([
        html.Td(r["arm"]),
        html.Td(dcc.Link(clip(r["name"] or f"cluster {r['cluster_id']}", NAME_CHARS),
                         href=review_href(run, dim="fix", cluster=r["cluster_id"]),
                         title=clipped_title(r["name"], NAME_CHARS))),
        html.Td("targeted" if r["targeted"] else ""),
        html.Td(str(r["n"])),
        html.Td(f"{100 * r['arm_share']:.0f}%"),
        html.Td(f"{100 * r['control_share']:.0f}%"),
        html.Td(_interval(r)),
        html.Td(r["verdict"]),
    ], className="targeted" if r["targeted"] else "") for r in clusters]
    return html.Table(id="experiment-clusters", className="table", children=[
        html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(rows)])


def _classes_table(classes: list[dict[str, Any]], arms: list[str]) -> html.Table:
    by_class: dict[int, dict[str, dict[str, Any]]] = {}
    for r in classes:
        by_class.setdefault(r["class_id"], {})[r["arm"]] = r
    rows = []
    for cid in sorted(by_class):
        cells = by_class[cid]
        first = next(iter(cells.values()))
        rows.append(html.Tr([html.Td(first["name"]), html.Td(f"{first['f1_control']:.3f}")] + [
            html.Td("—" if a not in cells else f"{cells[a]['f1_arm']:.3f} ({cells[a]['f1_delta']:+.3f})")
            for a in arms]))
    return html.Table(id="experiment-classes", className="table", children=[
        html.Thead(html.Tr([html.Th("class"), html.Th("F1 control")] + [html.Th(f"F1 {a} (change)") for a in arms])),
        html.Tbody(rows)])


def layout(data: dict[str, Any]) -> html.Div:
    run = data["run"]
    children: list[Any] = [nav(run, "experiments")]
    if data["runs"]:
        children.append(html.Div(className="toolbar", children=[html.Span("Tested runs:")] + [
            dcc.Link(r, href="/experiments?" + urlencode({"run": r}), className="active" if r == run else "")
            for r in data["runs"]] + [html.Span("Experiments:")] + [
            dcc.Link(e["experiment_id"], href="/experiments?" + urlencode({"run": run, "exp": e["experiment_id"]}),
                     className="active" if e["experiment_id"] == data["experiment_id"] else "")
            for e in data["experiments"]]))
    if data["experiment_id"] is None:
        what = f"run {run!r}" if run else "any run"
        children.append(html.P(f"No experiment on {what} yet: every recommendation is untested. Run "
                               f"`lens experiment --from {run or 'RUN'} --seeds 2` to test the top ones against a "
                               f"control arm.", id="experiment-decision", className="empty"))
        return html.Div(className="page experiments", children=children)
    effects = data["effects"]
    overall = sorted([r for r in effects if r["scope"] == "overall"], key=lambda r: -r["delta"])
    clusters = sorted([r for r in effects if r["scope"] == "cluster"],
                      key=lambda r: (r["rank"] or 0, not r["targeted"], r["cluster_id"]))
    targeted = {r["arm"]: r for r in clusters if r["targeted"]}
    classes = [r for r in effects if r["scope"] == "class"]
    children += [
        html.Section(className="panel", children=[
            html.H2(f"Experiment {data['experiment_id']}"),
            html.P(decision(overall), id="experiment-decision", className="decision"),
            html.P("Every arm fine-tuned the same checkpoint with the same budget, seed and data order as the "
                   "control; only its recommended change differs. The 95% intervals cover the evaluation examples "
                   "(paired) and, with several seeds, the seed-to-seed training noise ('per seed').",
                   className="muted"),
            dcc.Graph(id="experiment-forest", figure=_forest(overall, targeted), config=GRAPH_CONFIG)
            if overall else html.Div(),
        ]),
        html.Section(className="panel", children=[html.H2("Arms side by side"), _arms_table(overall, data)]),
        html.Section(className="panel", children=[
            html.H2("Effect on the fix clusters (failures of the parent run fixed, arm vs control)"),
            _clusters_table(clusters, run) if clusters else html.P("No fix clusters.", className="empty")]),
        html.Section(className="panel", children=[
            html.H2("Per-class F1"), _classes_table(classes, [r["arm"] for r in overall])]),
    ]
    return html.Div(className="page experiments", children=children)


def page(wh: Warehouse, run_id: str | None, experiment_id: str | None = None) -> html.Div:
    """The page for ``run_id`` (default: the most recently tested run)."""
    return layout(load(wh, run_id, experiment_id))
