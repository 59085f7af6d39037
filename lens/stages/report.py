"""``lens report``: one self-contained HTML file for people who don't run Lens.

Sections (each an ``<section id=...>``): summary, per-class metrics, training curves,
recommendations (fix clusters with reviewed purity and measured effect), experiments (the
latest `lens experiment` on the run: arms vs control with intervals, the recommendation to
adopt or "none beats the control"), clusters per dimension with example
failures, data-quality candidates, grounding contradictions. Charts are Plotly figures
with plotly.js inlined once; images are embedded as ``data:`` URIs, so the file opens
offline. The page is the Jinja2 template ``lens/templates/report.html.j2`` with autoescape on:
every string from the warehouse (model answers, class and run names) is shown as text, never
markup; only plotly.js and Plotly's figure HTML go in unescaped.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from functools import lru_cache
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


def _data_uri(png: bytes | None) -> str | None:
    return "data:image/png;base64," + base64.b64encode(png).decode() if png else None


def _records(con, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _exists(con, name: str) -> bool:
    return con.execute(
        "select count(*) from information_schema.tables where table_name = ?", [name]
    ).fetchone()[0] > 0


def _figures(metrics: list[dict], curve: list[dict]) -> tuple[str, str | None]:
    """Plotly's HTML of the per-class bar chart and of the loss curves (None without a training log)."""
    import plotly.graph_objects as go

    bar = go.Figure()
    # Plotly renders a few tags (<b>, <a href>, <br>) in labels and legends: escape class names so
    # they show as text, like every other string in the report (the template escapes the rest).
    names = [html.escape(str(m["class_name"]), quote=False) for m in metrics]
    for key, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        bar.add_bar(x=names, y=[m[key] for m in metrics], name=label)
    bar.update_layout(barmode="group", height=320, margin=dict(l=40, r=10, t=30, b=40), yaxis_range=[0, 1],
                      title="Per-class precision / recall / F1")
    bar_html = bar.to_html(full_html=False, include_plotlyjs=False)
    if not curve:
        return bar_html, None
    lines = go.Figure()
    for name in sorted({c["class_name"] for c in curve}, key=lambda n: (n != "all", n)):
        pts = [c for c in curve if c["class_name"] == name]
        lines.add_scatter(x=[p["epoch"] for p in pts], y=[p["eval_loss"] for p in pts], mode="lines+markers",
                          name=html.escape(str(name), quote=False), line=dict(width=4 if name == "all" else 1.5))
    lines.update_layout(height=340, margin=dict(l=40, r=10, t=30, b=40), xaxis_title="epoch",
                        yaxis_title="evaluation loss", title="Evaluation loss per class and epoch")
    return bar_html, lines.to_html(full_html=False, include_plotlyjs=False)


def _experiment(con, run_id: str) -> dict[str, Any]:
    """recommendation_effects rows (overall and cluster scope) of the run's latest experiment, and
    the arm to adopt (the best overall 'beats control', None when no arm does)."""
    rows = _records(
        con,
        "select * from recommendation_effects where scope <> 'class' and experiment_id = ("
        "  select experiment_id from experiments where parent_run_id = ? order by created_at desc limit 1) "
        "order by scope desc, delta desc, rank, item_id",
        [run_id],
    ) if _exists(con, "recommendation_effects") else []
    overall = [r for r in rows if r["scope"] == "overall"]
    winners = [r for r in overall if r["verdict"] == "beats control"]
    return {"rows": rows, "overall": overall, "best": max(winners, key=lambda r: r["delta"]) if winners else None,
            "targeted": [r for r in rows if r["scope"] == "cluster" and r["targeted"]]}


def _clusters(con, run_id: str) -> list[dict[str, Any]]:
    """cluster_summary rows with reviewed purity, each with up to EXAMPLES_PER_CLUSTER example failures."""
    if not _exists(con, "cluster_summary"):
        return []
    clusters = _records(
        con,
        "select s.*, p.purity, p.purity_lower, p.purity_upper, p.agree, p.disagree from cluster_summary s "
        "left join cluster_purity p using (run_id, dimension, cluster_id) where s.run_id = ? "
        "order by s.dimension, s.cluster_id = -1, s.size desc",
        [run_id],
    )
    for c in clusters:
        c["purity_text"] = ("unreviewed" if c.get("purity") is None else
                            f"purity {c['purity']:.2f} [{c['purity_lower']:.2f}, {c['purity_upper']:.2f}]")
        ids = list(c.get("representative_failures") or [])[:EXAMPLES_PER_CLUSTER]
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
        ) if ids else []
        order = {e: i for i, e in enumerate(ids)}
        c["examples"] = sorted(rows, key=lambda r: order.get(r["example_id"], 99))
        for ex in c["examples"]:
            ex["image_uri"] = _data_uri(ex.pop("image_png"))
    return clusters


def _data_quality(con, run_id: str) -> dict[str, Any]:
    """Annotation candidates, detection power and data_quality tag counts."""
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
    for r in spotlight:
        r["image_uri"] = _data_uri(r.pop("image_png"))
    power = _records(con, "select verdict, message from detection_power where run_id = ?", [run_id])
    tags = _records(con, "select tag, count(*) as n from hypothesis_dimensions where run_id = ? "
                         "and dimension = 'data_quality' and tag is not null group by tag order by n desc, tag", [run_id])
    return {"spotlight": spotlight, "power": power[0] if power else None, "tags": tags}


def _grounding(con, run_id: str) -> dict[str, Any]:
    """Claim counts per backend/model/prompt and the first 50 contradicted claims."""
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
    return {"grounding": grounding, "contradicted": contradicted}


def _context(con, run_id: str) -> dict[str, Any]:
    """Everything the template shows, read in one connection."""
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
    s = summary[0] if summary else {}
    return {
        "run_id": run_id, "run": run, "metrics": metrics, "curve": curve,
        "summary": {"n": s.get("n"), "accuracy": s.get("accuracy"), "macro_f1": s.get("macro_f1"),
                    "failures": counts["failures"], "sampled": counts["samples"],
                    "hypotheses": counts["hypotheses"], "verdicts": counts["verdicts"]},
        "recs": _records(con, "select * from recommendations where run_id = ? order by rank limit 10", [run_id])
        if _exists(con, "recommendations") else [],
        "experiment": _experiment(con, run_id), "clusters": _clusters(con, run_id),
        **_data_quality(con, run_id), **_grounding(con, run_id),
    }


@lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("lens", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("report.html.j2")


def build(warehouse: Warehouse, run_id: str | None = None) -> tuple[str, str]:
    """Return (run_id, HTML text) of the report."""
    with warehouse.connect(read_only=True) as con:
        run_id = require_run(con, run_id)
        context = _context(con, run_id)

    import plotly.offline
    from markupsafe import Markup

    bar_html, curve_html = _figures(context["metrics"], context.pop("curve"))
    # the only markup not escaped: plotly.js and the figures' HTML, both made by Plotly from our own data
    return run_id, _template().render(
        **context, generated=utcnow().strftime("%Y-%m-%d %H:%M"), plotly_js=Markup(plotly.offline.get_plotlyjs()),
        bar_html=Markup(bar_html), curve_html=Markup(curve_html) if curve_html else None,
    )


def run(warehouse: Warehouse, *, run_id: str | None = None, out: str | Path) -> ReportResult:
    run_id, text = build(warehouse, run_id)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return ReportResult(run_id, path, len(text.encode()), SECTIONS)


__all__ = ["run", "build", "ReportResult", "SECTIONS"]
