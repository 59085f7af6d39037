"""``lens report``: one self-contained HTML file for people who don't run Lens.

Sections (each an ``<section id=...>``): summary, per-class metrics, training curves,
recommendations (fix clusters with reviewed purity and measured effect), experiments (the
latest `lens experiment` on the run: arms vs control with intervals, the recommendation to
adopt or "none beats the control"), clusters per dimension with example
failures, data-quality candidates, grounding contradictions. Charts are Plotly figures
with plotly.js inlined once; images are embedded as ``data:`` URIs, so the file opens
offline. Every piece of model output is HTML-escaped: it is shown as text, never markup.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lens.warehouse import Warehouse, require_run, utcnow

SECTIONS = ("summary", "class-metrics", "training-curves", "recommendations", "experiments", "clusters",
            "data-quality", "grounding")
EXAMPLES_PER_CLUSTER = 4


@dataclass
class ReportResult:
    run_id: str
    path: Path
    bytes: int
    sections: tuple[str, ...]


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _img(png: bytes | None, alt: str, size: int = 96) -> str:
    if not png:
        return f'<div class="noimg" style="width:{size}px;height:{size}px">no image</div>'
    data = base64.b64encode(png).decode()
    return (f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" width="{size}" height="{size}" '
            f'style="image-rendering:pixelated">')


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], fmt: dict[str, str] | None = None) -> str:
    fmt = fmt or {}
    head = "".join(f"<th>{_e(label)}</th>" for _, label in columns)
    body = []
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            if v is not None and key in fmt:
                v = fmt[key].format(v)
            elif isinstance(v, list):
                v = ", ".join(str(x) for x in v)
            cells.append(f"<td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _records(con, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _exists(con, name: str) -> bool:
    return con.execute(
        "select count(*) from information_schema.tables where table_name = ?", [name]
    ).fetchone()[0] > 0


def _figures(metrics: list[dict], curve: list[dict]) -> tuple[str, str]:
    import plotly.graph_objects as go

    bar = go.Figure()
    # Plotly renders a few tags (<b>, <a href>, <br>) in labels and legends: escape class names so
    # they show as text, like every other string in the report.
    names = [html.escape(str(m["class_name"]), quote=False) for m in metrics]
    for key, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        bar.add_bar(x=names, y=[m[key] for m in metrics], name=label)
    bar.update_layout(barmode="group", height=320, margin=dict(l=40, r=10, t=30, b=40), yaxis_range=[0, 1],
                      title="Per-class precision / recall / F1")
    bar_html = bar.to_html(full_html=False, include_plotlyjs=False)
    if not curve:
        return bar_html, "<p>No training log (the run was imported).</p>"
    lines = go.Figure()
    for name in sorted({c["class_name"] for c in curve}, key=lambda n: (n != "all", n)):
        pts = [c for c in curve if c["class_name"] == name]
        lines.add_scatter(x=[p["epoch"] for p in pts], y=[p["eval_loss"] for p in pts], mode="lines+markers",
                          name=html.escape(str(name), quote=False), line=dict(width=4 if name == "all" else 1.5))
    lines.update_layout(height=340, margin=dict(l=40, r=10, t=30, b=40), xaxis_title="epoch",
                        yaxis_title="evaluation loss", title="Evaluation loss per class and epoch")
    return bar_html, lines.to_html(full_html=False, include_plotlyjs=False)


def _experiment_effects(con, run_id: str) -> list[dict[str, Any]]:
    """recommendation_effects rows (overall and cluster scope) of the run's latest experiment."""
    return _records(
        con,
        "select * from recommendation_effects where scope <> 'class' and experiment_id = ("
        "  select experiment_id from experiments where parent_run_id = ? order by created_at desc limit 1) "
        "order by scope desc, delta desc, rank, item_id",
        [run_id],
    )


def _experiments_html(run_id: str, rows: list[dict[str, Any]]) -> str:
    """The experiments section: arms vs control with intervals, targeted clusters, the decision."""
    pp = "{:+.1%}"
    head = "<section id='experiments'><h2>Experiments</h2>"
    if not rows:
        return (f"{head}<p>No controlled experiment yet: every recommendation is untested. "
                f"<code>lens experiment --from {_e(run_id)} --seeds 2</code> tests the top ones against a control "
                f"arm (same checkpoint, seed, data order and budget).</p></section>")
    overall = [r for r in rows if r["scope"] == "overall"]
    winners = [r for r in overall if r["verdict"] == "beats control"]
    if winners:
        best = max(winners, key=lambda r: r["delta"])
        decision = (f"Adopt <b>{_e(best['arm'])}</b> (recommendation #{_e(best['rank'])}: "
                    f"{_e(best['recommendation'])}): accuracy {pp.format(best['delta'])} "
                    f"[{pp.format(best['delta_lower'])}, {pp.format(best['delta_upper'])}] vs the control.")
    else:
        decision = "<b>None beats the control</b>: no recommendation measurably helped."
    cols = [("arm", "arm"), ("recommendation", "recommendation"), ("name", "scope"), ("seeds", "seeds"),
            ("n", "n"), ("arm_share", "arm"), ("control_share", "control"), ("delta", "change (points)"),
            ("delta_lower", "95% lower"), ("delta_upper", "95% upper"), ("verdict", "verdict")]
    fmt = {"arm_share": "{:.1%}", "control_share": "{:.1%}", "delta": pp, "delta_lower": pp, "delta_upper": pp}
    targeted = [r for r in rows if r["scope"] == "cluster" and r["targeted"]]
    return "".join([
        head, f"<p>Experiment {_e(rows[0]['experiment_id'])}: {decision}</p>",
        "<p>Each arm fine-tuned the run's checkpoint with one recommended change; the control arm with none, "
        "with the same budget, seed and data order. 95% intervals cover the evaluation examples (paired) and, with "
        "several seeds, the seed-to-seed training noise.</p>",
        "<h3>Accuracy, all examples</h3>", _table(overall, cols, fmt),
        "<h3>Each arm's targeted fix cluster: share of its failures fixed</h3>",
        _table(targeted, cols, fmt) if targeted else "<p>No targeted cluster rows.</p>", "</section>",
    ])


def build(warehouse: Warehouse, run_id: str | None = None) -> tuple[str, str]:
    """Return (run_id, HTML text) of the report."""
    with warehouse.connect(read_only=True) as con:
        run_id = require_run(con, run_id)
        run = _records(con, "select * from runs where run_id = ?", [run_id])[0]
        summary = _records(con, "select * from run_metrics where run_id = ?", [run_id])
        metrics = _records(con, 'select class_name, support, "precision", recall, f1 from class_metrics '
                                "where run_id = ? order by class_id", [run_id])
        curve = _records(con, "select epoch, class_name, eval_loss, eval_accuracy, train_loss from training_curve "
                              "where run_id = ? order by epoch, class_id", [run_id])
        counts = {
            t: con.execute(f"select count(*) from {t} where run_id = ?", [run_id]).fetchone()[0]
            for t in ("failures", "samples", "hypotheses", "verdicts")
        }
        recs = _records(con, "select * from recommendations where run_id = ? order by rank limit 10", [run_id]) \
            if _exists(con, "recommendations") else []
        experiment = _experiment_effects(con, run_id) if _exists(con, "recommendation_effects") else []
        clusters = _records(
            con,
            "select s.*, p.purity, p.purity_lower, p.purity_upper, p.agree, p.disagree from cluster_summary s "
            "left join cluster_purity p using (run_id, dimension, cluster_id) where s.run_id = ? "
            "order by s.dimension, s.cluster_id = -1, s.size desc",
            [run_id],
        ) if _exists(con, "cluster_summary") else []
        examples: dict[tuple[str, int], list[dict]] = {}
        for c in clusters:
            ids = list(c.get("representative_failures") or [])[:EXAMPLES_PER_CLUSTER]
            if not ids:
                continue
            rows = _records(
                con,
                "select f.example_id, f.image_png, t.class_name as true_name, q.class_name as pred_name, "
                "d.summary, d.text from failures f "
                "left join classes t on t.run_id = f.run_id and t.class_id = f.label "
                "left join classes q on q.run_id = f.run_id and q.class_id = f.pred "
                "left join cluster_members m on m.run_id = f.run_id and m.example_id = f.example_id "
                "  and m.dimension = ? "
                "left join hypothesis_dimensions d on d.hypothesis_id = m.hypothesis_id and d.dimension = ? "
                "where f.run_id = ? and list_contains(?, f.example_id)",
                [c["dimension"], c["dimension"], run_id, ids],
            )
            order = {e: i for i, e in enumerate(ids)}
            examples[(c["dimension"], c["cluster_id"])] = sorted(rows, key=lambda r: order.get(r["example_id"], 99))
        spotlight = _records(
            con,
            "select c.rank, c.example_id, c.given_name as true_name, c.suggested_name as pred_name, "
            "c.label_error_score, c.true_prob, c.neighbour_true_share, c.tag, c.tag_check, f.image_png, d.text, "
            "d.summary from annotation_candidates c "
            "join failures f on f.run_id = c.run_id and f.example_id = c.example_id "
            "left join hypothesis_dimensions d on d.hypothesis_id = c.hypothesis_id and d.dimension = 'data_quality' "
            "where c.run_id = ? and c.candidate order by c.rank limit 24",
            [run_id],
        )
        power = _records(con, "select verdict, message from detection_power where run_id = ?", [run_id])
        tags = _records(con, "select tag, count(*) as n from hypothesis_dimensions where run_id = ? "
                             "and dimension = 'data_quality' and tag is not null group by tag order by n desc",
                        [run_id])
        contradicted = _records(
            con,
            "select c.example_id, c.dimension, c.kind, c.claim, c.fact, h.backend, h.model from claims c "
            "join hypotheses h using (hypothesis_id) where c.run_id = ? and c.verdict = 'contradicted' "
            "order by c.example_id, c.dimension, c.claim_index limit 50",
            [run_id],
        )
        grounding = _records(
            con,
            "select h.backend, h.model, h.prompt_name, count(*) as claims, "
            "count(*) filter (where c.verdict = 'contradicted') as contradicted, "
            "count(*) filter (where c.verdict = 'consistent') as consistent "
            "from claims c join hypotheses h using (hypothesis_id) where c.run_id = ? group by all",
            [run_id],
        )

    import plotly.offline

    bar_html, curve_html = _figures(metrics, curve)
    s = summary[0] if summary else {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Lens report: {_e(run_id)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;"
        "text-align:left;vertical-align:top}th{background:#f4f4f4}.cards{display:flex;flex-wrap:wrap;gap:10px}"
        ".card{border:1px solid #ddd;border-radius:6px;padding:6px;width:240px;font-size:12px}"
        ".noimg{background:#eee;display:flex;align-items:center;justify-content:center;font-size:10px}"
        "h2{border-bottom:2px solid #333;padding-bottom:4px;margin-top:36px}.muted{color:#777}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>",
        f"<h1>Lens report: {_e(run_id)}</h1>",
        f"<p class='muted'>Generated {_e(utcnow().strftime('%Y-%m-%d %H:%M'))} UTC from the Lens warehouse. "
        f"Model: {_e(run.get('model') or 'imported predictions')}; dataset: {_e(run.get('dataset'))}.</p>",
        "<section id='summary'><h2>Summary</h2>",
        _table([{
            "n": s.get("n"), "accuracy": s.get("accuracy"), "macro_f1": s.get("macro_f1"),
            "failures": counts["failures"], "sampled": counts["samples"], "hypotheses": counts["hypotheses"],
            "verdicts": counts["verdicts"],
        }], [("n", "examples"), ("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("failures", "failures"),
             ("sampled", "sampled"), ("hypotheses", "hypotheses"), ("verdicts", "review verdicts")],
            {"accuracy": "{:.2%}", "macro_f1": "{:.3f}"}),
        "</section>",
        "<section id='class-metrics'><h2>Per-class metrics</h2>",
        _table(metrics, [("class_name", "class"), ("support", "support"), ("precision", "precision"),
                         ("recall", "recall"), ("f1", "F1")],
               {"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}"}),
        bar_html, "</section>",
        "<section id='training-curves'><h2>Training curves</h2>", curve_html, "</section>",
        "<section id='recommendations'><h2>Recommendations</h2>",
        "<p>Fix clusters ranked by size x the lower bound of reviewed purity (Wilson 95%); unreviewed clusters "
        "follow by size. Clusters reviewers mostly rejected are hidden.</p>",
        _table(recs, [("rank", "#"), ("name", "fix cluster"), ("size", "failures"), ("reviewed", "reviewed"),
                      ("purity", "purity"), ("purity_lower", "lower"), ("purity_upper", "upper"),
                      ("medoid_text", "typical answer"), ("effect", "measured effect"), ("lift", "accuracy vs control")],
               {"purity": "{:.2f}", "purity_lower": "{:.2f}", "purity_upper": "{:.2f}", "lift": "{:+.1%}"})
        if recs else "<p>No fix clusters yet.</p>",
        "</section>",
        _experiments_html(run_id, experiment),
        "<section id='clusters'><h2>Clusters per dimension</h2>",
    ]
    if not clusters:
        parts.append("<p>No clusters yet (run <code>lens embed</code> and <code>lens cluster</code>).</p>")
    current = None
    for c in clusters:
        if c["dimension"] != current:
            current = c["dimension"]
            parts.append(f"<h3>{_e(current)}</h3>")
        purity = ("unreviewed" if c.get("purity") is None else
                  f"purity {c['purity']:.2f} [{c['purity_lower']:.2f}, {c['purity_upper']:.2f}]")
        label = "noise" if c["cluster_id"] == -1 else f"#{c['cluster_id']}"
        parts.append(f"<h4>{_e(label)} {_e(c['name'])} <span class='muted'>({c['size']} answers, "
                     f"{_e(purity)}; top pairs: {_e(', '.join(c.get('top_pairs') or []))})</span></h4>")
        cards = []
        for ex in examples.get((c["dimension"], c["cluster_id"]), []):
            cards.append(
                f"<div class='card'>{_img(ex['image_png'], 'failure ' + str(ex['example_id']))}"
                f"<div><b>{_e(ex['true_name'])} → {_e(ex['pred_name'])}</b> (#{ex['example_id']})</div>"
                f"<div>{_e(ex.get('summary') or ex.get('text'))}</div></div>"
            )
        parts.append(f"<div class='cards'>{''.join(cards)}</div>")
    parts.append("</section>")
    parts.append("<section id='data-quality'><h2>Data-quality candidates</h2>")
    parts.append(_table(tags, [("tag", "tag"), ("n", "answers")]) if tags else "<p>No data-quality answers.</p>")
    if power:
        parts.append(f"<p id='detection-power'>Detection power ({_e(power[0]['verdict'])}): "
                     f"{_e(power[0]['message'])}</p>")
    if spotlight:
        parts.append("<p>Annotation candidates (label-error score at or above the tag threshold), ranked by score, "
                     "with the signals:</p><div class='cards'>")
        for r in spotlight:
            gp = "n/a" if r["true_prob"] is None else f"{r['true_prob']:.3f}"
            nb = "n/a" if r["neighbour_true_share"] is None else f"{r['neighbour_true_share']:.0%}"
            check = f"; tag {_e(r['tag'])}: {_e(r['tag_check'])}" if r["tag"] else ""
            parts.append(
                f"<div class='card'>{_img(r['image_png'], 'failure ' + str(r['example_id']))}"
                f"<div><b>{_e(r['true_name'])} → {_e(r['pred_name'])}</b> (#{r['example_id']}, rank {r['rank']})</div>"
                f"<div>label-error score {r['label_error_score']:.2f}; p(given label) {_e(gp)}; "
                f"neighbours with the given label {_e(nb)}{check}</div>"
                f"<div>{_e(r['summary'] or r['text'] or '')}</div></div>"
            )
        parts.append("</div>")
    parts.append("</section>")
    parts.append("<section id='grounding'><h2>Grounding contradictions</h2>")
    parts.append(_table(grounding, [("backend", "backend"), ("model", "model"), ("prompt_name", "prompt"),
                                    ("claims", "checkable claims"), ("consistent", "consistent"),
                                    ("contradicted", "contradicted")])
                 if grounding else "<p>No checkable claims recorded.</p>")
    if contradicted:
        parts.append("<p>Claims the measurements contradict:</p>")
        parts.append(_table(contradicted, [("example_id", "failure"), ("dimension", "dimension"), ("kind", "kind"),
                                           ("claim", "claim"), ("fact", "measured"), ("backend", "backend")]))
    parts.append("</section></body></html>")
    return run_id, "\n".join(parts)


def run(warehouse: Warehouse, *, run_id: str | None = None, out: str | Path) -> ReportResult:
    run_id, text = build(warehouse, run_id)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return ReportResult(run_id, path, len(text.encode()), SECTIONS)


__all__ = ["run", "build", "ReportResult", "SECTIONS"]
