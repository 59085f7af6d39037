"""`lens ingest`: predictions from any model."""

from __future__ import annotations

import click


@click.command()
@click.option("--predictions", "predictions", required=True, type=click.Path(dir_okay=False),
              help="Parquet or CSV: id, label, and probs / prob_<class> columns or pred + confidence.")
@click.option("--images", default=None, help="Dataset source the 'index' column points into (Parquet folder, image folder).")
@click.option("--split", default=None, help="Split of --images that 'index' refers to (default: test).")
@click.option("--classes", default=None, help="Comma-separated class names in id order.")
@click.option("--run", "run_id", default=None, help="Run name (default: the file's name).")
@click.option("--force", is_flag=True, help="Replace an existing run of that name.")
@click.pass_obj
def ingest(wh, predictions, images, split, classes, run_id, force):
    """Import predictions made by any model as a run.

    Everything is checked before anything is written: unknown classes, probability
    rows that do not sum to 1, NaN, duplicate ids and missing images are reported with
    the first offending rows.

    \b
    Example:
      lens ingest --predictions preds.parquet --images ../shared/data/cifar10 --run my-model
    """
    from lens.stages import ingest as stage

    names = [c.strip() for c in classes.split(",")] if classes else None
    res = stage.run(wh, predictions=predictions, run_id=run_id, images=images, split=split, classes=names, force=force)
    click.echo(
        f"Ingested run {res.run_id!r}: {res.rows:,} predictions, {res.failures:,} failures "
        f"({res.images:,} with images), {len(res.classes)} classes."
    )


commands = [ingest]
