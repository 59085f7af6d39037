"""`lens verdicts export|import`: share review verdicts with annotators."""

from __future__ import annotations

import click


@click.group()
def verdicts():
    """Share review verdicts: export them for annotators, import theirs.

    \b
    Example:
      lens verdicts export reviews.csv --run demo
      lens verdicts import annotator-b.parquet
    """


@verdicts.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--run", "run_id", default=None, help="Only this run's verdicts (default: all).")
@click.pass_obj
def export_cmd(wh, file, run_id):
    """Write the verdict log to FILE (.csv or .parquet), oldest first.

    CSV cells a spreadsheet would run as a formula are prefixed with a quote.

    \b
    Example:
      lens verdicts export reviews.csv --run demo
    """
    from lens.stages import verdicts as stage

    n = stage.export(wh, file, run_id=run_id)
    click.echo(f"Exported {n:,} verdicts to {file}.")


@verdicts.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def import_cmd(wh, file):
    """Append the verdicts in FILE (.csv or .parquet) after checking every row.

    Needs hypothesis_id, dimension, verdict (agree/disagree/skip) and reviewer columns;
    anything wrong and nothing is written. Verdict ids already stored are skipped.

    \b
    Example:
      lens verdicts import annotator-b.csv
    """
    from lens.stages import verdicts as stage

    res = stage.import_file(wh, file)
    click.echo(f"Imported {res.written:,} verdicts from {file} ({res.skipped:,} already stored, {res.rows:,} rows).")


commands = [verdicts]
