"""`lens report`: a self-contained HTML report of a run."""

from __future__ import annotations

import click


@click.command()
@click.option("--run", "run_id", default=None, help="Run to report on (default: the newest).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.pass_obj
def report(wh, run_id, out):
    """Write a self-contained HTML report of a run, for people who don't run Lens.

    Per-class metrics, training curves, recommendations, clusters per dimension with
    example failures, data-quality candidates and grounding contradictions; images and
    charts are embedded, so the file opens anywhere offline.

    \b
    Example:
      lens report --run demo --out demo-report.html
    """
    from lens.stages import report as stage

    res = stage.run(wh, run_id=run_id, out=out)
    click.echo(f"Wrote {res.path} ({res.bytes / 1e6:.1f} MB) for run {res.run_id!r}.")


commands = [report]
