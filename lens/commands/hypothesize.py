"""`lens hypothesize`: why did each sampled failure fail? Ask a vision-language model.

The ``--backend`` choices and the backends' own options (``--ollama-host``, ``--timeout``,
``--from``, ...) are built from :mod:`lens.backends.registry`: a backend installed as a plugin
appears here with its flags.
"""

from __future__ import annotations

import click

from lens import defaults as D
from lens.backends import registry


def _click_type(spec):
    if spec.choices:
        return click.Choice(spec.choices)
    if spec.is_file:
        return click.Path(dir_okay=False)
    if spec.kind is float:
        return click.FloatRange(min=spec.minimum, min_open=spec.min_open)
    if spec.kind is int:
        return click.IntRange(min=spec.minimum, min_open=spec.min_open)
    return None


def backend_options(command):
    """Add every registered backend's options to a click command (once each, as declared)."""
    for name, spec, users in reversed(registry.option_specs()):
        used = ", ".join(users)
        command = click.option(spec.flag, name, type=_click_type(spec), default=None, multiple=spec.multiple,
                               envvar=spec.envvar, help=f"{spec.help} [{used}]")(command)
    return command


def option_values(given: dict) -> dict:
    """Backend option values as the stage takes them: repeated flags joined by commas."""
    multiple = {name for name, spec, _ in registry.option_specs() if spec.multiple}
    return {k: (",".join(v) or None) if k in multiple else v for k, v in given.items()}


def backend_option(*, default: str | None = "auto", help: str | None = None):
    """``--backend``: a choice among the registered backends and ``auto``."""
    first = registry.auto_candidates()
    auto = " or ".join(c.name for c in first[:1]) + (f" when usable, else {first[-1].name}" if len(first) > 1 else "")
    return click.option("--backend", type=click.Choice(["auto", *registry.names()]), default=default,
                        show_default=default is not None,
                        help=help or f"auto: {auto}." + (" [auto]" if default is None else ""))


@click.command()
@click.option("--run", "run_id", default=None, help="Run to analyse (default: the newest).")
@click.option("--prompt", default=D.PROMPT, show_default=True,
              help="Prompt: a shipped name (reference, grounded) or a .toml file.")
@backend_option()
@click.option("--model", default=None, help="Model name (ollama default: qwen3-vl:8b).")
@click.option("--concurrency", type=click.IntRange(min=1), default=D.CONCURRENCY, show_default=True,
              help="Requests in flight (match OLLAMA_NUM_PARALLEL).")
@click.option("--queue-ahead", type=click.IntRange(min=0), default=D.QUEUE_AHEAD, show_default=True,
              help="Requests each server gets beyond --concurrency (or URL=N), waiting in its queue so a "
                   "freed slot never idles while Lens turns around; 0: exactly N.")
@click.option("--force", is_flag=True, help="Ask again for failures already answered.")
@click.option("--retry-errors", is_flag=True, help="Ask again for answers stored as invalid or error.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Ask for at most N failures now.")
@backend_options
@click.pass_obj
def hypothesize(wh, run_id, prompt, backend, model, concurrency, queue_ahead, force, retry_errors, limit,
                **options):
    """Ask a vision-language model why each sampled failure failed.

    For every failure in `lens sample`'s sample, the model sees the image, the true and
    predicted class with their confidences and the top-3, and answers the prompt's
    questions (default: data_quality with a tag and a one-sentence verdict,
    visual_cause, fix) as JSON. Answers land in hypotheses / hypothesis_dimensions
    (and claims, when `lens evidence` has run). Invalid answers get one repair request;
    transport faults are retried; nothing stops the stage. Rerunning skips what is
    answered, so an interrupted run resumes where it stopped.

    --backend import --from FILE.jsonl reads answers made elsewhere, one JSON object a
    line keyed by the failure's dataset index: {"example_id": 17, "answer": {"data_quality":
    {"tag": ..., "reason": ..., "verdict": ...}, "visual_cause": "...", "fix": "..."}} or
    {"example_id": 17, "text": "1. DATA ISSUE? ... 2. VISUAL CAUSE: ... 3. FIX: ..."},
    optionally with "model".

    Exits non-zero only when nothing succeeded.

    \b
    Example:
      ollama pull qwen3-vl:8b && OLLAMA_NUM_PARALLEL=4 ollama serve
      lens hypothesize --run cifar --concurrency 4
      lens hypothesize --backend openai --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
      lens hypothesize --backend import --from answers.jsonl
      lens hypothesize --ollama-host http://gpu1:11434=8 --ollama-host http://gpu2:11434=4
    """
    from lens.stages import hypothesize as stage

    res = stage.run(
        wh, run_id=run_id, prompt=prompt, backend=backend, model=model, concurrency=concurrency,
        queue_ahead=queue_ahead, force=force, retry_errors=retry_errors, limit=limit, echo=click.echo, **option_values(options),
    )
    if res.not_failures:
        shown = ", ".join(map(str, res.not_failures[:5])) + (" ..." if len(res.not_failures) > 5 else "")
        click.echo(f"Skipped {len(res.not_failures)} lines whose example_id is no failure of run "
                   f"{res.run_id!r}: {shown}")
    if res.requested == 0:
        click.echo(
            f"Nothing to ask: all {res.skipped} failures of run {res.run_id!r} are answered by {res.backend} "
            f"{res.model} with prompt {res.prompt_name} (--force to ask again, --retry-errors for failed ones)."
        )
        return
    rate = res.requested / res.seconds if res.seconds > 0 else 0.0
    click.echo(
        f"Run {res.run_id!r}, {res.backend} {res.model}, prompt {res.prompt_name}: {res.requested} asked "
        f"({res.skipped} already answered) in {res.seconds:.1f}s ({rate:.1f}/s): "
        f"{res.ok} ok, {res.invalid} invalid, {res.error} error; {res.claims} claims checked."
    )
    for line in res.errors:
        click.echo(f"  {line}")
    for line in res.grounding_errors:
        click.echo(f"  grounding failed for {line}")
    if res.failed:
        raise click.ClickException("No answer succeeded: see the errors above (the answers are stored).")


commands = [hypothesize]
