"""`lens embed`: sentence vectors for each dimension of a run's hypothesis answers."""

from __future__ import annotations

import click

from lens import defaults as D


@click.command()
@click.option("--run", "run_id", default=None, help="Run name (default: the newest run).")
@click.option("--embedder", default=D.EMBEDDER, show_default=True,
              help="sentence-transformers model: a name (the bundled all-MiniLM-L6-v2 offline; any other, e.g. "
                   "BAAI/bge-base-en-v1.5, from the Hugging Face cache or downloaded on first use) or a model folder.")
@click.option("--dimension", "dimensions", multiple=True, help="Only these dimensions (repeatable; default: all).")
@click.option("--backend", default=None, help="Hypothesis set: backend (default: the most recent set).")
@click.option("--model", default=None, help="Hypothesis set: model name.")
@click.option("--prompt", default=None, help="Hypothesis set: prompt name or sha256 prefix.")
@click.option("--batch-size", default=D.EMBED_BATCH_SIZE, show_default=True, help="Texts per model call.")
@click.option("--mask-classes/--no-mask-classes", default=True, show_default=True,
              help="Replace class names with [CLASS] before embedding, so clusters group by kind of cause.")
@click.pass_obj
def embed(wh, run_id, embedder, dimensions, backend, model, prompt, batch_size, mask_classes):
    """Embed each dimension of a run's hypothesis answers (cached, idempotent).

    The embedded text is a dimension's one-sentence summary when it has one (data_quality's
    verdict), else its text. Vectors are cached by (embedder, text): a rerun, or the same
    text in another run, costs nothing.

    \b
    Example:
      lens embed --run demo
      lens embed --run demo --embedder BAAI/bge-base-en-v1.5 --no-mask-classes
    """
    from lens.stages import embed as stage

    res = stage.run(
        wh, run_id=run_id, embedder=embedder, dimensions=dimensions or None, backend=backend, model=model,
        prompt=prompt, batch_size=batch_size, mask=mask_classes,
    )
    dims = ", ".join(f"{d} {n:,}" for d, n in sorted(res.per_dimension.items()))
    click.echo(
        f"Embedded run {res.run_id!r} with {res.embedder} ({res.dim}-d{', class names masked' if res.masked else ''}): "
        f"{res.rows:,} answers ({dims}) from {res.backend}/{res.model} prompt {res.prompt_sha256[:12]}."
    )
    click.echo(
        f"{res.unique_texts:,} distinct texts: {res.cache_hits:,} cache hits, {res.encoded:,} encoded "
        f"in {res.seconds:.1f}s."
    )


commands = [embed]
