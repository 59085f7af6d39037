"""Defaults of the stages whose modules are heavy to import (embed, cluster, hypothesize, experiment).

Each value is written here once and read by the stage function's signature, its click
command, ``lens run``'s options and help, and :class:`lens.pipeline.RunConfig`. The train
and sample stages keep theirs as ``DEFAULT_*`` constants in their own (light) modules; the
embedder's name is here too (``lens.backends.embedders.DEFAULT_EMBEDDER`` is this). This module imports
nothing, so ``lens --help`` stays fast.
"""

from __future__ import annotations

# -- hypothesize ------------------------------------------------------------------------
#: the prompt file (a shipped name or a .toml path)
PROMPT = "reference"
#: hypothesis requests in flight (match the server's parallel slots, e.g. OLLAMA_NUM_PARALLEL)
CONCURRENCY = 4
#: requests each model server gets beyond its slots, waiting in its queue (Ollama, vLLM queue
#: them), so a slot that frees starts the next at once instead of idling while Lens turns around
QUEUE_AHEAD = 1
#: the backend ``auto`` picks from the registry (Ollama when it answers, else ``measured``)
BACKEND = "auto"

# -- embed ------------------------------------------------------------------------------
#: the sentence-transformers model (the bundled copy of all-MiniLM-L6-v2 works offline)
EMBEDDER = "all-MiniLM-L6-v2"
#: texts per sentence-transformers batch
EMBED_BATCH_SIZE = 64

# -- cluster ----------------------------------------------------------------------------
#: smallest and largest k tried (k_max is clipped to answers // min_size)
K_MIN = 15
K_MAX = 30
#: clusters smaller than this become noise (-1)
MIN_SIZE = 15
#: KMeans restarts per k
N_INIT = 3
#: the silhouette is measured on at most this many answers
SILHOUETTE_SAMPLE = 5000
#: how clusters are named
LABELERS = ("keyphrase", "ctfidf", "ollama")
LABELER = "keyphrase"
#: seeds KMeans, the silhouette sample and the map
CLUSTER_SEED = 0

# -- experiment -------------------------------------------------------------------------
#: fine-tuning epochs per arm, recommendations tested, seeds per arm
EXPERIMENT_EPOCHS = 1
EXPERIMENT_TOP = 3
EXPERIMENT_SEEDS = 1
