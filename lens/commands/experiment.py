"""`lens experiment`: test a run's recommendations against a control arm."""

from __future__ import annotations

import click

from lens import defaults as D

from lens.stages.train import DEFAULT_DEVICE, DEVICES


def _pct(v) -> str:
    """A difference of two shares, in percentage points."""
    return "n/a" if v is None else f"{100 * v:+.1f} pts"


def format_effects(res) -> list[str]:
    """Lines for the terminal: per arm, the accuracy and targeted-cluster effects with intervals, and the decision."""
    lines = []
    for e in res.effects:
        lines.append(
            f"  {e['arm']:<20} accuracy {e['arm_share']:.2%} vs control {e['control_share']:.2%}: "
            f"{_pct(e['delta'])} [{_pct(e['delta_lower'])}, {_pct(e['delta_upper'])}] over {e['seeds']} seed(s) "
            f"-> {e['verdict']}")
        if e.get("cluster_n"):
            lines.append(
                f"  {'':<20} its cluster #{e['targeted_cluster_id']} ({(e['recommendation'] or '')[:50]}): fixed "
                f"{e['cluster_arm_share']:.0%} vs {e['cluster_control_share']:.0%} of {e['cluster_n']} "
                f"(failure, seed) pairs, {_pct(e['cluster_delta'])} [{_pct(e['cluster_delta_lower'])}, "
                f"{_pct(e['cluster_delta_upper'])}] -> {e['cluster_verdict']}")
    best = res.adopt
    if best is not None:
        lines.append(f"Adopt: {best['arm']} (recommendation #{best['rank']}: {best['recommendation']}), "
                     f"{_pct(best['delta'])} accuracy vs control [{_pct(best['delta_lower'])}, "
                     f"{_pct(best['delta_upper'])}].")
    elif res.effects:
        lines.append("None beats the control: no recommendation measurably helped (a valid finding; more --seeds or "
                     "--epochs narrow the intervals).")
    return lines


@click.command()
@click.option("--from", "from_run", required=True, metavar="RUN",
              help="The trained run whose checkpoint every arm starts from and whose recommendations it tests.")
@click.option("--epochs", default=D.EXPERIMENT_EPOCHS, show_default=True, type=click.IntRange(min=1),
              help="Fine-tuning epochs per arm (the same for every arm).")
@click.option("--top", default=D.EXPERIMENT_TOP, show_default=True, type=click.IntRange(min=1),
              help="How many of RUN's top recommendations get an arm.")
@click.option("--seeds", default=D.EXPERIMENT_SEEDS, show_default=True, type=click.IntRange(min=1),
              help="Repeat every arm (and the control) with seeds 0..N-1 to see the training noise.")
@click.option("--name", default="exp", show_default=True,
              help="Experiment name; arms are runs named RUN.NAME.ARM.sSEED.")
@click.option("--batch-size", default=None, type=click.IntRange(min=2), help="[default: RUN's]")
@click.option("--head-lr", default=None, type=float, help="[default: RUN's]")
@click.option("--backbone-lr", default=None, type=float, help="[default: RUN's]")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULT_DEVICE, show_default=True)
@click.option("--keep-checkpoints", is_flag=True, help="Save every arm's weights (about 45 MB each).")
@click.option("--force", is_flag=True, help="Delete this experiment's arms and plan it again.")
@click.pass_obj
def experiment(wh, from_run, epochs, top, seeds, name, batch_size, head_lr, backbone_lr, device, keep_checkpoints,
               force):
    """Does a recommendation help? Fine-tune RUN once per top recommendation and once without change.

    Every arm starts from RUN's checkpoint with the same budget, seed, data order and
    evaluation split; only the recommended change differs (an augmentation, or more
    examples of the cluster's classes for "collect more data"). Each arm is a run in the
    warehouse; a killed experiment resumes arm by arm. The effects, with 95% intervals, are
    in the view recommendation_effects, and `recommendations` ranks by them.

    \b
    Example:
      lens experiment --from demo --top 3 --epochs 1 --seeds 2
      lens sql "select arm, scope, name, delta, delta_lower, delta_upper, verdict
                from recommendation_effects where scope <> 'class'"
    """
    from lens.stages import experiment as stage

    res = stage.run(wh, from_run=from_run, name=name, epochs=epochs, top=top, seeds=seeds, batch_size=batch_size,
                    head_lr=head_lr, backbone_lr=backbone_lr, device=device, keep_checkpoints=keep_checkpoints,
                    force=force, echo=click.echo)
    trained = sum(not a.resumed for a in res.arms)
    click.echo(f"Experiment {res.experiment_id!r}: {len(res.arms)} arm run(s) ({trained} trained now) in "
               f"{res.seconds:.0f}s. Effects vs control (95% intervals: the evaluation examples, paired, and the "
               f"seed-to-seed training noise when there are several seeds):")
    for line in format_effects(res):
        click.echo(line)
    click.echo(f"More: lens sql \"select * from recommendation_effects where experiment_id = '{res.experiment_id}'\"")


commands = [experiment]
