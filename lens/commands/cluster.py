"""`lens cluster`: named clusters of each embedded dimension's answers."""

from __future__ import annotations

import click

from lens import defaults as D


@click.command()
@click.option("--run", "run_id", default=None, help="Run name (default: the newest run).")
@click.option("--embedder", default=None, help="Embeddings to cluster (default: the run's only embedder).")
@click.option("--dimension", "dimensions", multiple=True, help="Only these dimensions (repeatable; default: all embedded).")
@click.option("--k-min", default=D.K_MIN, show_default=True, help="Smallest k tried.")
@click.option("--k-max", default=D.K_MAX, show_default=True, help="Largest k tried (clipped to answers // --min-size).")
@click.option("--min-size", default=D.MIN_SIZE, show_default=True, help="Clusters smaller than this become noise (-1).")
@click.option("--seed", default=D.CLUSTER_SEED, show_default=True, help="Seeds KMeans, the silhouette sample and the map.")
@click.option("--n-init", default=D.N_INIT, show_default=True, help="KMeans restarts per k.")
@click.option("--sample-size", default=D.SILHOUETTE_SAMPLE, show_default=True, help="Silhouette measured on this many answers at most.")
@click.option("--labeler", type=click.Choice(D.LABELERS), default=D.LABELER,
              show_default=True,
              help="How clusters are named: keyphrases the members share, ranked against the centroid with "
                   "the run's embedder (keyphrase), by c-TF-IDF alone (ctfidf), or by an Ollama text model.")
@click.option("--label-model", default=None, help="Ollama model for --labeler ollama (e.g. qwen3:8b).")
@click.option("--ollama-host", default=None, help="Ollama server for --labeler ollama (default: $OLLAMA_HOST, else http://127.0.0.1:11434).")
@click.pass_obj
def cluster(wh, run_id, embedder, dimensions, k_min, k_max, min_size, seed, n_init, sample_size, labeler,
            label_model, ollama_host):
    """Cluster each embedded dimension: KMeans with k chosen by silhouette, small clusters as noise.

    Each cluster gets a short name (at most 6 words) saying what its answers share and
    its siblings' do not; its medoid answer is kept apart as the example (medoid_text).
    Every k's silhouette is kept in cluster_k_scores; see the clusters in the
    cluster_summary view and the 2-D map in cluster_members (x, y).

    \b
    Example:
      lens cluster --run demo
      lens cluster --run demo --dimension visual_cause --k-min 5 --k-max 12 --min-size 10
      lens sql "select dimension, cluster_id, size, name from cluster_summary where run_id = 'demo'"
    """
    from lens.stages import cluster as stage

    res = stage.run(
        wh, run_id=run_id, embedder=embedder, dimensions=dimensions or None, k_min=k_min, k_max=k_max,
        min_size=min_size, seed=seed, n_init=n_init, sample_size=sample_size, labeler=labeler,
        label_model=label_model, ollama_host=ollama_host,
    )
    for w in res.warnings:
        click.echo(f"Warning: {w}", err=True)
    click.echo(f"Clustered run {res.run_id!r} ({res.embedder}) in {res.seconds:.1f}s.")
    for d in res.dimensions:
        tried = f"k {d.k_tried[0]}-{d.k_tried[-1]}" if d.k_tried else "no k sweep"
        sil = f", silhouette {d.silhouette:.3f}" if d.silhouette is not None else ""
        click.echo(f"\n{d.dimension}: {d.n:,} answers, {tried}, chose k={d.k}{sil}: "
                   f"{d.clusters} clusters, {d.noise:,} noise")
        for note in d.notes:
            click.echo(f"  note: {note}")
        for cid, name in sorted(d.names.items()):
            click.echo(f"  {cid:>3}  {name[:110]}")
            if d.examples.get(cid):
                click.echo(f"       e.g. {' '.join(d.examples[cid].split())[:100]}")


commands = [cluster]
