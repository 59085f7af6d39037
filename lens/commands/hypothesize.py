"""`lens hypothesize`: why did each sampled failure fail? Ask a vision-language model."""

from __future__ import annotations

import click

BACKENDS = ("auto", "ollama", "openai", "measured", "import")


@click.command()
@click.option("--run", "run_id", default=None, help="Run to analyse (default: the newest).")
@click.option("--prompt", default="reference", show_default=True,
              help="Prompt: a shipped name (reference, grounded) or a .toml file.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: ollama when reachable with the model, else measured.")
@click.option("--model", default=None, help="Model name (ollama default: qwen3-vl:8b).")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests in flight (match OLLAMA_NUM_PARALLEL).")
@click.option("--force", is_flag=True, help="Ask again for failures already answered.")
@click.option("--retry-errors", is_flag=True, help="Ask again for answers stored as invalid or error.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Ask for at most N failures now.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds per request (default 120).")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Upscale images to this many px on the longer side (default 128).")
@click.option("--resample", type=click.Choice(("bicubic", "nearest")), default=None,
              help="Upscaling filter (default bicubic).")
@click.option("--ollama-host", envvar="OLLAMA_HOST", multiple=True,
              help="Ollama URL (default http://127.0.0.1:11434). Several servers: repeat it or separate by commas; "
                   "URL=N gives a server N parallel requests (default --concurrency). Env: OLLAMA_HOST.")
@click.option("--base-url", multiple=True, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; several "
              "like --ollama-host.")
@click.option("--api-key-env", default=None, help="Environment variable holding the API key (default OPENAI_API_KEY).")
@click.option("--from", "from_path", type=click.Path(dir_okay=False), default=None,
              help="JSONL file of answers for --backend import.")
@click.pass_obj
def hypothesize(wh, run_id, prompt, backend, model, concurrency, force, retry_errors, limit, timeout, image_size,
                resample, ollama_host, base_url, api_key_env, from_path):
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
        wh, run_id=run_id, prompt=prompt, backend=backend, model=model, concurrency=concurrency, force=force,
        retry_errors=retry_errors, limit=limit, timeout=timeout, image_size=image_size, resample=resample,
        ollama_host=",".join(ollama_host) or None, base_url=",".join(base_url) or None, api_key_env=api_key_env,
        from_path=from_path,
        echo=click.echo,
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
