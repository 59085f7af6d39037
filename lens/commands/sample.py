"""`lens sample`: choose the failures of a run to analyse."""

from __future__ import annotations

import click

from lens.stages.sample import DEFAULT_PER_CLASS, DEFAULT_STRATEGY, STRATEGIES


@click.command()
@click.option("--run", "run_id", default=None, help="Run to sample (default: the newest).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=DEFAULT_STRATEGY, show_default=True)
@click.option("--per-class", default=DEFAULT_PER_CLASS, show_default=True, type=click.IntRange(min=1),
              help="Failures per true class (per-class strategy).")
@click.option("--n", "n", default=None, type=click.IntRange(min=1),
              help="Sample size for per-pair and lowest-confidence  [default: per-class x classes]")
@click.option("--seed", default=0, show_default=True)
@click.pass_obj
def sample(wh, run_id, strategy, per_class, n, seed):
    """Choose the failures to analyse, stratified by true class.

    per-class: up to --per-class failures of each true class, at random (seeded).
    per-pair: --n failures spread round-robin over the confused (true, predicted) pairs.
    lowest-confidence: the --n failures the model was least sure of. all: every failure.
    Sampling again replaces the run's sample; hypotheses already made are kept.

    \b
    Example:
      lens sample --run baseline --per-class 15 --seed 0
      lens sample --run baseline --strategy per-pair --n 100
    """
    from lens.stages import sample as stage

    res = stage.run(wh, run_id=run_id, strategy=strategy, per_class=per_class, n=n, seed=seed)
    click.echo(f"Sampled {res.n:,} of {res.failures:,} failures of run {res.run_id!r} ({res.strategy}, seed {res.seed}).")
    for name, (have, want) in res.short.items():
        click.echo(f"  {name}: only {have} failure(s), fewer than {want}; all of them taken.")


commands = [sample]
