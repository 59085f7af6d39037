"""The review page's callbacks besides verdict saving (:func:`dashboards.app.create_app`).

The queue of failures (filters), moving through it (keys and buttons), choosing the
dimension a verdict is about (keys ``1``..``n``, tab, or a click on a card), and remembering
the reviewer's name in local storage.
"""

from __future__ import annotations

import json
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from dashboards import queries
from lens.stages import verdicts as verdict_stage
from lens.warehouse import Warehouse


def _clicked(triggered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pattern-matching ids among the triggers that were really clicked (n_clicks > 0).

    Dash also triggers ALL-pattern callbacks when the components are re-rendered (n_clicks
    0), and may merge such a trigger with a key press into one request.
    """
    out = []
    for t in triggered:
        prop_id = t.get("prop_id", "")
        if prop_id.startswith("{") and t.get("value"):
            out.append(json.loads(prop_id.rsplit(".", 1)[0]))
    return out


def register_callbacks(app: dash.Dash, wh: Warehouse) -> None:
    """The review page's queue (filters), navigation, dimension selection and reviewer name."""

    @app.callback(Output("review-state", "data"),
                  Input("f-cluster", "value"), Input("f-pair", "value"), Input("f-tag", "value"),
                  Input("f-unreviewed", "value"), State("review-query", "data"), State("review-state", "data"))
    def build_queue(cluster, pair, tag, unreviewed, query, state):
        run = query["run"]
        cl = None
        if cluster:
            dim, _, cid = cluster.rpartition("|")
            cl = (dim, int(cid))
        pr = tuple(int(x) for x in pair.split("-")) if pair else None
        ids = queries.queue(wh, run, cluster=cl, pair=pr, tag=tag, unreviewed=bool(unreviewed))
        pos = 0
        if state is None and query.get("hyp") in ids:
            pos = ids.index(query["hyp"])
        dims = queries.review_options(wh, run)["dimensions"] if state is None else state["dims"]
        return {"run": run, "ids": ids, "pos": pos, "dims": dims}

    @app.callback(Output("review-state", "data", allow_duplicate=True), Output("note", "value"),
                  Input("key-nav", "data"), Input("prev", "n_clicks"), Input("next", "n_clicks"),
                  State("review-state", "data"), prevent_initial_call=True)
    def navigate(key, _prev, _next, state):
        if not state or not state["ids"]:
            raise PreventUpdate
        if "key-nav.data" in ctx.triggered_prop_ids:
            step = (key or {}).get("dir", 0)
        else:
            step = {"prev": -1, "next": 1}.get(ctx.triggered_id, 0)
        pos = min(max(state["pos"] + int(step), 0), len(state["ids"]) - 1)
        if pos == state["pos"]:
            raise PreventUpdate
        return {**state, "pos": pos}, ""

    @app.callback(Output("selected-dim", "data"),
                  Input("key-dim", "data"), Input({"type": "dim-card", "dim": ALL}, "n_clicks"),
                  State("review-state", "data"), State("selected-dim", "data"), prevent_initial_call=True)
    def select_dimension(key, _clicks, state, selected):
        if not state:
            raise PreventUpdate
        choices = state["dims"] + [verdict_stage.OVERALL]
        if "key-dim.data" not in ctx.triggered_prop_ids:
            clicked = _clicked(ctx.triggered)
            if not clicked:
                raise PreventUpdate  # cards re-rendered (n_clicks 0), not clicked
            return clicked[-1]["dim"]
        key = key or {}
        if "n" in key:
            n = int(key["n"])
            if not 1 <= n <= len(choices):
                raise PreventUpdate
            return choices[n - 1]
        if "tab" in key:
            cur = choices.index(selected) if selected in choices else 0
            return choices[(cur + int(key["tab"])) % len(choices)]
        raise PreventUpdate

    @app.callback(Output("reviewer-store", "data"), Input("reviewer", "value"), prevent_initial_call=True)
    def remember_reviewer(name):
        return (name or "").strip()
