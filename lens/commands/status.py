"""`lens status`: per run, the rows each stage wrote and which stages have run (the run_status view)."""

from __future__ import annotations

import json

import click


def _report(wh) -> list[dict]:
    with wh.connect(read_only=True) as con:
        rows = con.execute("select run_id, kind, created_at, rows, stages from run_status order by created_at").fetchall()
    return [
        {"run_id": run_id, "kind": kind, "created_at": str(created), "rows": counts,
         "stages": {s["stage"]: {"status": s["status"], "finished_at": str(s["finished_at"])} for s in stages}}
        for run_id, kind, created, counts, stages in rows
    ]


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def status(wh, fmt):
    """Per run: rows in each table and which stages have run.

    \b
    Example:
      lens status
      lens sql "select run_id, rows.failures, stages from run_status"
    """
    report = _report(wh)
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


commands = [status]
