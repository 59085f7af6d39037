"""`lens run` and `lens demo`: the whole pipeline with one configuration."""

from __future__ import annotations

import click

from lens import defaults as D
from lens.commands.hypothesize import backend_option
from lens.stages.sample import DEFAULT_PER_CLASS
from lens.stages.train import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEFAULT_EPOCHS, DEFAULT_SEED, DEVICES

ENV_DATA = "LENS_DATA"


def _pipeline_options(f):
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
                     help="lens.toml with a [run] table of these options (flags override it)."),
        click.option("--data", envvar=ENV_DATA, default=None, help=f"Dataset to train on. Env: {ENV_DATA}."),
        click.option("--run", "run_id", default=None, help="Run name (default: the dataset folder's name)."),
        click.option("--predictions", default=None, help="Import this predictions file instead of training."),
        click.option("--images", default=None, help="Dataset source that --predictions' 'index' points into."),
        click.option("--classes", default=None, help="Comma-separated class names for --predictions."),
        click.option("--epochs", type=int, default=None, help=f"Training epochs [{DEFAULT_EPOCHS}]."),
        click.option("--batch-size", type=int, default=None, help=f"Training batch size [{DEFAULT_BATCH_SIZE}]."),
        click.option("--limit-train", type=int, default=None, help="Stratified subset of the training split."),
        click.option("--limit-test", type=int, default=None, help="Stratified subset of the evaluation split."),
        click.option("--device", default=None, help=f"{'|'.join(DEVICES)} [{DEFAULT_DEVICE}]."),
        click.option("--seed", type=int, default=None, help=f"Seed of every stage [{DEFAULT_SEED}]."),
        click.option("--pretrained/--no-pretrained", default=None,
                     help="ImageNet weights (default: torchvision's, cached or downloaded; offline, from scratch)."),
        click.option("--weights", default=None, help="Local ResNet-18 state dict to start from."),
        click.option("--per-class", type=int, default=None, help=f"Failures sampled per true class [{DEFAULT_PER_CLASS}]."),
        backend_option(default=None),
        click.option("--model", default=None, help="Hypothesis model (default: the backend's)."),
        click.option("--prompt", default=None, help=f"Prompt name or .toml path [{D.PROMPT}]."),
        click.option("--concurrency", type=int, default=None, help=f"Hypothesis requests in flight [{D.CONCURRENCY}]."),
        click.option("--ollama-host", default=None, help="Ollama server URL (env OLLAMA_HOST)."),
        click.option("--base-url", default=None, help="OpenAI-compatible server URL."),
        click.option("--embedder", default=None, help=f"Sentence-transformers model [{D.EMBEDDER}]."),
        click.option("--k-min", type=int, default=None, help=f"Smallest k tried [{D.K_MIN}]."),
        click.option("--k-max", type=int, default=None, help=f"Largest k tried [{D.K_MAX}]."),
        click.option("--min-size", type=int, default=None, help=f"Smaller clusters become noise [{D.MIN_SIZE}]."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _config(config_path, **given):
    from lens.pipeline import RunConfig

    if config_path:
        return RunConfig.from_toml(config_path, **given)
    return RunConfig(**{k: v for k, v in given.items() if v is not None})


def _execute(wh, cfg) -> None:
    from lens.pipeline import format_summary, run_pipeline

    result = run_pipeline(wh, cfg, echo=click.echo)
    click.echo("")
    if not result.ran:
        click.echo("Nothing to do: every stage is up to date.")
    click.echo("Stage times: " + ", ".join(f"{s.stage} {s.seconds:.1f} s" if s.status == "ran"
                                             else f"{s.stage} skipped" for s in result.stages))
    click.echo(format_summary(result.summary))


@click.command(name="run")
@_pipeline_options
@click.pass_obj
def run_cmd(wh, config_path, **given):
    """Run the pipeline: train (or ingest), sample, evidence, hypothesize, embed, cluster.

    Stages that are up to date are skipped, so running the same command again does
    nothing new; changing an option reruns that stage and the ones after it. Ends with
    a summary: metrics, clusters per dimension, top recommendations.

    \b
    Example:
      lens run --data ../shared/data/cifar10 --run small --limit-train 2000 --limit-test 500 \\
               --epochs 1 --no-pretrained --backend measured --k-min 2 --k-max 6 --min-size 3
      lens run --config lens.toml
    """
    _execute(wh, _config(config_path, **given))


@click.command()
@click.option("--data", envvar=ENV_DATA, default=None,
              help=f"CIFAR-10 as a Parquet folder (env {ENV_DATA}); default: download it with torchvision.")
@click.option("--run", "run_id", default="demo", show_default=True)
@backend_option()
@click.option("--serve/--no-serve", default=True, show_default=True, help="Open the dashboard afterwards.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8050, show_default=True)
@click.pass_context
def demo(ctx, data, run_id, backend, serve, host, port):
    """CIFAR-10 end to end with the reference settings, then the dashboard.

    ResNet-18 for 3 epochs (ImageNet weights when available here, else from scratch),
    15 failures sampled per class, the three reference dimensions, k 15-30, clusters
    under 15 members as noise; then `lens serve`.

    \b
    Example:
      LENS_DATA=../shared/data/cifar10 lens demo
    """
    from lens.pipeline import RunConfig

    cfg = RunConfig(data=data or "cifar10", run_id=run_id, backend=backend)
    _execute(ctx.obj, cfg)
    if serve:
        serve_cmd = ctx.parent.command.get_command(ctx.parent, "serve")
        if serve_cmd is None:
            click.echo("The dashboard is not installed (no `lens serve`).")
            return
        ctx.invoke(serve_cmd, run_id=run_id, host=host, port=port)


commands = [run_cmd, demo]

