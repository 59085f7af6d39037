"""`lens evidence`: measured facts for every failure of a run."""

from __future__ import annotations

import click


@click.command()
@click.option("--run", "run_id", default=None, help="Run name (default: the newest run).")
@click.option("--force", is_flag=True, help="Recompute every failure (and the class statistics) and replace them.")
@click.option("--neighbours", "k", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Nearest training images per failure.")
@click.option("--saliency/--no-saliency", default=True, show_default=True,
              help="Saliency of the predicted class from the run's checkpoint.")
@click.option("--saliency-method", type=click.Choice(["gradcam-layer1", "gradcam-layer2", "occlusion"]),
              default="gradcam-layer1", show_default=True,
              help="captum method (Grad-CAM on layer4 is useless on 32x32: it is 1x1).")
@click.option("--stats-limit", default=10_000, show_default=True, type=click.IntRange(0),
              help="Training images measured for the per-class statistics (0 = all).")
@click.option("--data", default=None, help="Dataset source for the class statistics (default: the run's).")
@click.option("--device", default="cpu", show_default=True, help="Torch device for saliency (cpu, cuda, mps).")
@click.pass_obj
def evidence(wh, run_id, force, k, saliency, saliency_method, stats_limit, data, device):
    """Measure every failure of a run: model signals, label quality, neighbours,
    image facts and saliency.

    Label quality comes from confident learning (cleanlab) over the whole evaluation
    split; neighbours from the run's stored features; z-scores from the training images
    of the run's dataset. Parts that cannot be computed (an ingested run has no model)
    are skipped and the reason is printed and stored. Failures that already have
    evidence are skipped unless --force.

    \b
    Example:
      lens evidence --run demo
      lens sql "select example_id, border_colour, saliency_centre_share from evidence limit 5"
    """
    from lens.stages import evidence as stage

    res = stage.run(wh, run_id=run_id, force=force, k=k, saliency=saliency, saliency_method=saliency_method,
                    stats_limit=stats_limit or None, data=data, device=device)
    if res.computed == 0:
        click.echo(f"Run {res.run_id!r}: all {res.failures:,} failures already have evidence (--force to recompute).")
        return
    click.echo(f"Evidence for {res.computed:,} failures of run {res.run_id!r}"
               + (f" ({res.already:,} already had evidence)." if res.already else "."))
    if res.label_issues_eval is not None:
        click.echo(
            f"Confident learning flags {res.label_issues_eval:,} of {res.eval_rows:,} evaluation examples as possible "
            f"label issues; {res.label_issues_failures:,} of them are among these {res.computed:,} failures "
            f"({res.label_issues_failures / max(res.computed, 1):.0%}). Flags are leads, not verdicts: their "
            f"precision is only as good as the model."
        )
    if res.tagged:
        click.echo("Diagnosis (scores thresholded by lens.diagnosis): " + ", ".join(
            f"{res.tagged.get(t, 0):,} {t}" for t in ("annotation_issue", "ambiguous_image", "model_error")) + ".")
    if res.detection is not None:
        d = res.detection
        click.echo(f"Detection power ({d.verdict}): {d.message}")
    for part, reason in res.skipped.items():
        click.echo(f"Skipped {part}: {reason}.")


commands = [evidence]
