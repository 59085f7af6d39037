"""`lens compare`: two runs side by side."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def compare(wh, run_a, run_b, fmt):
    """Compare RUN_B with RUN_A: per-class F1 deltas and how RUN_A's clusters fared.

    For each cluster of RUN_A (per dimension), counts how many of its failures RUN_B
    gets right, gets wrong the same way, or gets wrong another way (matched by example
    id, so both runs must be evaluated on the same split).

    \b
    Example:
      lens train --augment-from baseline --run augmented --data ../shared/data/cifar10 --no-pretrained
      lens compare baseline augmented
    """
    import pandas as pd

    from lens.stages import compare as stage

    res = stage.run(wh, run_a=run_a, run_b=run_b)
    if fmt == "json":
        click.echo(json.dumps({
            "run_a": res.run_a, "run_b": res.run_b, "accuracy_a": res.accuracy_a, "accuracy_b": res.accuracy_b,
            "shared_examples": res.shared_examples,
            "classes": json.loads(res.classes.to_json(orient="records")),
            "clusters": json.loads(res.clusters.to_json(orient="records")),
            "labels": json.loads(res.labels.to_json(orient="records")) if len(res.labels) else [],
            "label_changes": res.label_changes,
        }, indent=2))
        return
    fmt_acc = lambda v: "n/a" if v is None else f"{v:.2%}"  # noqa: E731
    click.echo(f"{res.run_a} -> {res.run_b}: accuracy {fmt_acc(res.accuracy_a)} -> {fmt_acc(res.accuracy_b)}"
               f" ({res.shared_examples:,} evaluation examples in common)\n")
    with pd.option_context("display.width", 160, "display.max_columns", None, "display.float_format", "{:.3f}".format):
        click.echo("Per class (F1, sorted by change):")
        click.echo(res.classes[["class_name", "f1_a", "f1_b", "f1_delta", "recall_delta", "precision_delta"]]
                   .to_string(index=False))
        if len(res.clusters):
            click.echo(f"\nFailures of {res.run_a}'s clusters in {res.run_b}:")
            shown = res.clusters.assign(name=res.clusters["name"].fillna("").str.slice(0, 48))
            click.echo(shown.to_string(index=False))
        else:
            click.echo(f"\n{res.run_a} has no clusters yet (run `lens cluster --run {res.run_a}`).")
        for run, ch in res.label_changes.items():
            click.echo(f"\n{run} was trained with the label corrections of {ch['from']!r}: {ch['train']:,} training "
                       f"and {ch['eval']:,} evaluation labels changed.")
        if len(res.labels):
            click.echo(f"Evaluation labels that differ ({len(res.labels):,}; each run is scored against its own):")
            click.echo(res.labels.to_string(index=False))


commands = [compare]
