"""`lens export relabel` and `lens labels import`: the relabelling loop."""

from __future__ import annotations

import click


@click.group("export")
def export():
    """Write what people outside Lens work on (annotators).

    \b
    Example:
      lens export relabel --run demo --top 50 --out relabel-demo
    """


@export.command("relabel")
@click.option("--run", "run_id", default=None, help="Run whose suspected label errors to export (default: the newest).")
@click.option("--top", default=100, show_default=True, type=click.IntRange(min=1),
              help="Candidates by label_error_score rank (errors a reviewer confirmed always come too).")
@click.option("--neighbours", default=5, show_default=True, type=click.IntRange(min=0),
              help="Nearest training images with the same given label, listed under each confirmed error.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write (must be new or empty, unless --force).")
@click.option("--image-url", default="/data/local-files/?d=", show_default=True,
              help="Prefix of the image references in the Label Studio tasks (Label Studio's local-files URL; "
                   "or where you serve the folder, e.g. http://host:8081/).")
@click.option("--force", is_flag=True, help="Replace the folder if it is not empty.")
@click.pass_obj
def relabel(wh, run_id, top, neighbours, out_dir, image_url, force):
    """Send suspected label errors to annotators: CSV, Label Studio tasks and images.

    Ranked by label_error_score (the suggested label is the model's prediction), with the
    evidence behind each score. For each error a reviewer confirmed (agree on an
    annotation_issue answer), the nearest training images carrying the same given label
    follow, so the training split can be checked for the same mistake. Fill corrected_label
    in candidates.csv, or label the tasks in Label Studio, then bring the labels back with
    `lens labels import`.

    \b
    Example:
      lens export relabel --run demo --top 50 --out relabel-demo
      lens labels import relabel-demo/candidates.csv
      lens train --data ../shared/data/cifar10 --no-pretrained --labels-from demo --run demo-relabelled
    """
    from lens.stages import relabel as stage

    res = stage.export(wh, run_id=run_id, out_dir=out_dir, top=top, neighbours=neighbours, image_url=image_url,
                       force=force)
    for w in res.warnings:
        click.echo(f"Note: {w}", err=True)
    click.echo(f"Exported {res.candidates:,} of the {res.scored:,} scored failures of run {res.run_id!r} "
               f"({res.confirmed:,} confirmed by a reviewer) and {res.neighbours:,} training images with the same "
               f"label, {res.images:,} images, to {res.out_dir}/ (candidates.csv, label_studio_tasks.json, "
               f"label_studio_config.xml, README.txt).")
    if res.detection:
        click.echo(res.detection)


@click.group("labels")
def labels():
    """Label corrections from annotators (append-only, with who and when).

    \b
    Example:
      lens labels import relabel-demo/candidates.csv
      lens sql "select split, example_id, old_name, new_name, who from label_corrections"
    """


@labels.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--run", "run_id", default=None, help="Run the labels are for (default: the file's run_id column).")
@click.option("--who", default=None, help="Annotator for rows that name none.")
@click.pass_obj
def import_cmd(wh, file, run_id, who):
    """Bring corrected labels back: the exported CSV or a Label Studio export (JSON or JSON-MIN).

    Every row is checked before anything is written: unknown example ids or class names,
    a given label that differs from the run's, or no annotator refuse the whole file,
    naming the rows. Rows without a label are skipped; importing a file twice adds nothing.

    \b
    Example:
      lens labels import relabel-demo/candidates.csv --who alice
      lens labels import project-3-at-2024-05-01.json
      lens train --data ../shared/data/cifar10 --no-pretrained --labels-from demo --run demo-relabelled
    """
    from lens.stages import relabel as stage

    res = stage.import_labels(wh, file, run_id=run_id, who=who)
    splits = ", ".join(f"{n:,} {s}" for s, n in sorted(res.by_split.items())) or "none"
    click.echo(f"Imported {res.written:,} label corrections for run {res.run_id!r} ({splits}; {res.changed:,} change "
               f"the label) from {res.rows:,} rows: {res.blank:,} without a label, {res.already:,} already stored.")
    if res.written:
        click.echo(f"Train with them: lens train --labels-from {res.run_id} --run {res.run_id}-relabelled --data ...")


commands = [export, labels]
