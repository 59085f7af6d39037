"""The relabelling page, ``/relabel?run=NAME``: suspected label errors, and the download for annotators.

Shows the run's top annotation candidates (thumbnail, given → suggested label, label-error
score, what reviewers said), the detection power of the run's model, and a button that
downloads the same export as ``lens export relabel`` (candidates.csv, the Label Studio tasks
and config, the images, a README) as one zip. The data comes from
:func:`lens.stages.relabel.collect` / :func:`~lens.stages.relabel.export_zip`, which only read
the warehouse; the page writes nothing. Names stay text (Dash children).
"""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from dashboards.overview import CELL_CHARS, NAME_CHARS, clip, clipped_title, image_url, nav
from lens.errors import LensError
from lens.warehouse import Warehouse

SHOWN = 30
DEFAULT_TOP = 100


def page(wh: Warehouse, run_id: str | None) -> html.Div:
    from lens.stages import relabel as stage

    children: list[Any] = [nav(run_id, "relabel"), html.H2("Label errors for annotators")]
    try:
        rows, res, _ = stage.collect(wh, run_id=run_id, top=SHOWN, images=False)
    except LensError as exc:
        children.append(html.P(str(exc), className="empty"))
        return html.Div(className="page", children=children)
    run = res.run_id
    children += [
        dcc.Store(id="relabel-run", data=run),
        html.P(f"Run {run}: {res.scored:,} failures scored; the top {res.candidates:,} by label-error score"
               f" ({res.confirmed:,} confirmed by a reviewer, each followed by the training images with the same "
               f"label nearest to it). The suggested label is the model's prediction.", className="muted"),
    ]
    if res.detection:
        children.append(html.P(res.detection, className="detection", id="relabel-detection"))
    children.append(html.Div(className="download", children=[
        html.Label(["Candidates to export ", dcc.Input(id="relabel-top", type="number", min=1, value=DEFAULT_TOP,
                                                       debounce=True, style={"width": "6em"})]),
        html.Button("Download for annotators (CSV + Label Studio, zip)", id="relabel-download-btn", n_clicks=0),
        html.Span(id="relabel-status", className="muted"),
        dcc.Download(id="relabel-download"),
    ]))
    head = html.Tr([html.Th(h) for h in ("rank", "image", "split", "given → suggested", "score", "review")])
    body = []
    for r in rows:
        img = (html.Img(src=image_url(run, r["example_id"]), className="thumb", alt=f"example {r['example_id']}")
               if r["split"] != "train" else html.Span(f"train #{r['example_id']}", className="muted"))
        pair = f"{r['given_label'] or '?'} → {r['suggested_label'] or '?'}"
        score = "" if r["label_error_score"] is None else f"{r['label_error_score']:.2f}"
        review = r["review"] or ""
        body.append(html.Tr(className="neighbour" if r["split"] == "train" else "", children=[
            html.Td(str(r["rank"])), html.Td(img), html.Td(r["split"]),
            html.Td(clip(pair, NAME_CHARS), title=clipped_title(pair, NAME_CHARS)), html.Td(score),
            html.Td(clip(review, CELL_CHARS)),
        ]))
    children.append(html.Table([html.Thead(head), html.Tbody(body)], className="table", id="relabel-table"))
    children.append(html.P("Bring the labels back with `lens labels import FILE`, then train with "
                           f"`lens train --labels-from {run}`.", className="muted"))
    return html.Div(className="page", children=children)


def register_callbacks(app, wh: Warehouse) -> None:
    """The download button: the export as a zip (``relabel-<run>.zip``)."""

    @app.callback(Output("relabel-download", "data"), Output("relabel-status", "children"),
                  Input("relabel-download-btn", "n_clicks"), State("relabel-top", "value"),
                  State("relabel-run", "data"), prevent_initial_call=True)
    def download(n_clicks, top, run):
        from dash import dcc as _dcc

        from lens.stages import relabel as stage

        if not n_clicks or not run:
            raise PreventUpdate
        try:
            top = max(1, int(top or DEFAULT_TOP))
            data, res = stage.export_zip(wh, run_id=run, top=top)
        except (LensError, ValueError) as exc:
            return None, f"not exported: {exc}"
        return (_dcc.send_bytes(data, f"relabel-{run}.zip"),
                f"{res.candidates:,} candidates, {res.neighbours:,} training images, {res.images:,} image files")
