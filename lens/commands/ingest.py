"""`lens ingest`: predictions (and embeddings) from any model."""

from __future__ import annotations

import click


@click.command()
@click.option("--predictions", "predictions", default=None, type=click.Path(dir_okay=False),
              help="Parquet or CSV: id, label, and probs / prob_<class> columns or pred + confidence.")
@click.option("--features", "features", default=None, type=click.Path(dir_okay=False),
              help="The model's embeddings: Parquet or .npz with id, split ('train'/'eval'), vector, label. "
                   "With --predictions: stored in the same transaction; without: added to the run --run.")
@click.option("--images", default=None, help="Dataset source the 'index' column points into (Parquet folder, image folder).")
@click.option("--split", default=None, help="Split of --images that 'index' refers to (default: test).")
@click.option("--classes", default=None, help="Comma-separated class names in id order.")
@click.option("--run", "run_id", default=None, help="Run name (default: the file's name).")
@click.option("--force", is_flag=True, help="Replace an existing run of that name (or, with only --features, its features).")
@click.option("--allow-images-anywhere", is_flag=True,
              help="Let the 'image' column read files outside the predictions file's folder and --images.")
@click.pass_obj
def ingest(wh, predictions, features, images, split, classes, run_id, force, allow_images_anywhere):
    """Import predictions made by any model as a run, and optionally its embeddings.

    Everything is checked before anything is written: unknown classes, probability
    rows that do not sum to 1, NaN, text where numbers belong, duplicate ids, ids that do
    not fit 64 bits and missing images are reported with the first offending rows.
    Paths in an 'image' column must lie in the predictions file's folder (or --images)
    unless --allow-images-anywhere is given.

    --features brings the model's embeddings (one vector per example: split 'train' for
    the neighbour pool, 'eval' for evaluated examples) so that `lens evidence` finds
    nearest neighbours for an ingested run.

    \b
    Examples:
      lens ingest --predictions preds.parquet --images ../shared/data/cifar10 --run my-model
      lens ingest --predictions preds.parquet --features feats.parquet --run my-model
      lens ingest --run my-model --features feats.npz      # add features to an existing run
    """
    from lens.stages import ingest as stage

    names = [c.strip() for c in classes.split(",")] if classes else None
    res = stage.run(wh, predictions=predictions, run_id=run_id, images=images, split=split, classes=names,
                    force=force, features=features, allow_images_anywhere=allow_images_anywhere)
    if predictions is not None:
        click.echo(
            f"Ingested run {res.run_id!r}: {res.rows:,} predictions, {res.failures:,} failures "
            f"({res.images:,} with images), {len(res.classes)} classes."
        )
    if res.features is not None:
        f = res.features
        click.echo(f"Features for run {res.run_id!r}: {f.train:,} train and {f.eval:,} eval vectors of {f.dim} values.")
        if res.evidence_cleared:
            click.echo(f"Deleted {res.evidence_cleared:,} evidence rows computed without them: "
                       f"run `lens evidence --run {res.run_id}` to recompute with neighbours.")


commands = [ingest]
