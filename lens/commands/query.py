"""`lens sql` and `lens status`: look into the warehouse."""

from __future__ import annotations

import json
import sys

import click


def _print_frame(df, fmt: str, max_rows: int | None) -> None:
    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", date_format="iso", default_handler=str))
    else:
        import pandas as pd

        shown = df if max_rows is None or len(df) <= max_rows else df.head(max_rows)
        with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
            click.echo(shown.to_string(index=False) if len(shown) else "(no rows)")
        if len(shown) < len(df):
            click.echo(f"... {len(df) - len(shown):,} more rows (use --max-rows 0 or --format csv)")


@click.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--write", is_flag=True, help="Allow statements that change the warehouse.")
@click.option("--max-rows", default=50, show_default=True, help="Rows to print as a table (0 = all).")
@click.pass_obj
def sql(wh, query, fmt, write, max_rows):
    """Run SQL against the warehouse (read-only unless --write).

    Tables: runs, classes, prediction_rows, training_log, features, failures, samples,
    hypotheses, hypothesis_dimensions, evidence, claims, embeddings, clusters,
    cluster_members, verdicts. Views: predictions (prediction_rows plus confidence,
    top3_prob and loss), class_metrics, run_metrics, confusion, training_curve and more
    (see sql/views/).

    \b
    Example:
      lens sql "select class_name, f1 from class_metrics where run_id = 'demo' order by f1"
    """
    import duckdb

    from lens.errors import LensError

    with wh.connect(read_only=not write) as con:
        try:
            rel = con.execute(query)
            df = rel.df() if rel.description else None
        except duckdb.Error as exc:
            hint = ""
            if "read-only" in str(exc):
                hint = " (the warehouse is opened read-only: pass --write to change it)"
            elif "base table" in str(exc):
                hint = (" (views cannot be changed: predictions is a view whose rows live in"
                        " prediction_rows; the other views are listed in sql/views/)")
            raise LensError(f"{type(exc).__name__}: {exc}{hint}") from exc
    if df is not None:
        _print_frame(df, fmt, None if max_rows == 0 else max_rows)


STAGE_TABLES = [
    "predictions", "failures", "training_log", "features", "samples", "hypotheses",
    "evidence", "claims", "embeddings", "clusters", "cluster_members", "verdicts",
]


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def status(wh, fmt):
    """Per run: rows in each table and which stages have run.

    \b
    Example:
      lens status
    """
    with wh.connect(read_only=True) as con:
        runs = con.execute("select run_id, kind, created_at from runs order by created_at").fetchall()
        report = []
        for run_id, kind, created in runs:
            counts = {
                t: con.execute(f"select count(*) from {t} where run_id = ?", [run_id]).fetchone()[0]
                for t in STAGE_TABLES
            }
            stages = con.execute(
                "select stage, status, finished_at from stage_runs where run_id = ? order by finished_at", [run_id]
            ).fetchall()
            report.append({
                "run_id": run_id, "kind": kind, "created_at": str(created), "rows": counts,
                "stages": {s: {"status": st, "finished_at": str(f)} for s, st, f in stages},
            })
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"Warehouse: {wh.path}")
    if not report:
        click.echo("No runs yet: start with `lens train` or `lens ingest`.")
    for r in report:
        click.echo(f"\nrun {r['run_id']}  ({r['kind']}, created {r['created_at'][:19]})")
        stages = ", ".join(f"{s}" + ("" if v["status"] == "done" else f" ({v['status']})") for s, v in r["stages"].items())
        click.echo(f"  stages: {stages or 'none'}")
        click.echo("  rows:   " + "  ".join(f"{t}={n:,}" for t, n in r["rows"].items() if n))


commands = [sql, status]
