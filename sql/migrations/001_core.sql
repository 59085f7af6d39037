-- 001_core: the tables every stage of Lens writes.
--
-- Portability (docs/ARCHITECTURE.md, "Portability"): this schema must move to DuckLake
-- (Parquet + a PostgreSQL catalog) unchanged, so:
--   * no sequences: ids are made in Python (run names, dataset indices, sha256 prefixes, uuids);
--   * no ENUM types: categorical columns are VARCHAR, validated in code and by view-contract tests;
--   * vectors are variable-length FLOAT[] (cast to FLOAT[n] inside a query when needed);
--   * no PRIMARY KEY / UNIQUE constraints and no INSERT OR REPLACE / ON CONFLICT: each stage
--     deletes its own rows for a run and inserts the new ones in one transaction; the keys
--     listed below are checked by tests (tests/test_contracts.py);
--   * verdicts are append-only.
-- JSON documents are stored as VARCHAR holding JSON text.

-- One row per run: a trained or imported model evaluated on one dataset.   key: run_id
create table runs (
    run_id          varchar not null,   -- user-chosen name (or generated), unique
    kind            varchar not null,   -- 'train' | 'ingest'
    created_at      timestamp not null, -- UTC
    dataset         varchar,            -- dataset source as given (path or name)
    eval_split      varchar,            -- split the predictions are on, e.g. 'test'
    num_classes     integer not null,
    model           varchar,            -- e.g. 'resnet18'; null for ingested predictions
    checkpoint_path varchar,            -- model weights saved with the run (train only)
    parent_run_id   varchar,            -- run whose recommendations shaped this one (--augment-from)
    config          varchar             -- JSON: every option the run was made with
);

-- Class names of a run.   key: (run_id, class_id)
create table classes (
    run_id     varchar not null,
    class_id   integer not null,        -- 0..num_classes-1
    class_name varchar not null
);

-- Every evaluation example of a run.   key: (run_id, example_id)
create table predictions (
    run_id     varchar not null,
    example_id bigint not null,         -- index of the example in the evaluation split / ingest id
    label      integer not null,        -- true class id
    pred       integer not null,        -- predicted class id (argmax of probs when given)
    confidence float not null,          -- probability of pred
    probs      float[],                 -- full probability vector (null when only pred+confidence were given)
    top3_class integer[],               -- up to 3 class ids, most probable first
    top3_prob  float[],                 -- their probabilities
    loss       float,                   -- cross-entropy of the true class, -log p[label] (null without probs)
    image_uri  varchar,                 -- where the image lives, when known (path, URI or 'source:split:index')
    source_id  varchar                  -- the id as given to `lens ingest` when it was not an integer
);

-- Per-epoch training log.   key: (run_id, epoch, class_id)   class_id = -1 is the whole split
create table training_log (
    run_id         varchar not null,
    epoch          integer not null,    -- 1-based
    class_id       integer not null,    -- -1 for all classes together
    train_loss     double,              -- mean training loss over the epoch
    train_accuracy double,
    eval_loss      double,              -- mean evaluation loss after the epoch
    eval_accuracy  double,
    n_train        bigint,
    n_eval         bigint,
    lr             double,              -- learning rate of the head at the end of the epoch
    seconds        double               -- wall time of the epoch (training + evaluation)
);

-- Penultimate-layer features of evaluation and training examples (for nearest neighbours).
-- key: (run_id, split, example_id)
create table features (
    run_id     varchar not null,
    split      varchar not null,        -- 'train' | 'eval'
    example_id bigint not null,
    label      integer not null,
    vector     float[] not null         -- 512-d for ResNet-18
);

-- Every misclassification of a run, with its image so later stages need no dataset.
-- key: (run_id, example_id)
create table failures (
    run_id       varchar not null,
    example_id   bigint not null,
    label        integer not null,
    pred         integer not null,
    confidence   float not null,
    true_prob    float,                 -- probability the model gave the true class
    image_png    blob,                  -- PNG bytes (images up to 256 px a side)
    image_uri    varchar,               -- otherwise where to read it
    width        integer,
    height       integer
);

-- The analysed subset of failures.   key: (run_id, example_id)
create table samples (
    run_id     varchar not null,
    example_id bigint not null,
    strategy   varchar not null,        -- 'per-class' | 'per-pair' | 'lowest-confidence' | 'all'
    seed       integer,
    rank       integer not null         -- order within the sample
);

-- One answer from a hypothesis backend for one failure.
-- key: hypothesis_id = sha256(run_id, example_id, backend, model, prompt_sha256)[:16]
create table hypotheses (
    hypothesis_id varchar not null,
    run_id        varchar not null,
    example_id    bigint not null,
    backend       varchar not null,     -- 'ollama' | 'openai' | 'measured' | 'import'
    model         varchar not null,     -- model name ('measured' for the measured analyst)
    prompt_name   varchar not null,
    prompt_sha256 varchar not null,
    status        varchar not null,     -- 'ok' | 'invalid' | 'error'
    error         varchar,              -- why, when status is not 'ok'
    description   varchar,              -- literal description (prompts that ask for one first)
    raw_response  varchar,              -- the model's text, as received
    latency_s     double,               -- seconds spent waiting on the backend (all attempts)
    attempts      integer not null,
    created_at    timestamp not null
);

-- Per-dimension parts of an answer; the dimension set comes from the prompt file.
-- key: (hypothesis_id, dimension)
create table hypothesis_dimensions (
    hypothesis_id varchar not null,
    run_id        varchar not null,
    example_id    bigint not null,
    dimension     varchar not null,     -- e.g. 'data_quality', 'visual_cause', 'fix'
    tag           varchar,              -- from the dimension's tag vocabulary, when it has one
    text          varchar,              -- the answer (for data_quality: the short reason)
    summary       varchar               -- one-sentence verdict; embedded instead of text when present
);

-- Measured facts per failure (lens evidence).   key: (run_id, example_id)
create table evidence (
    run_id               varchar not null,
    example_id           bigint not null,
    -- model signals
    confidence           float,
    margin               float,         -- p(top-1) - p(top-2)
    entropy              float,         -- nats
    true_prob            float,
    true_rank            integer,       -- 1 = most probable
    label_quality        float,         -- cleanlab self-confidence score in [0, 1]; low = suspicious
    label_issue          boolean,       -- cleanlab find_label_issues flag
    -- nearest training neighbours in feature space (cosine)
    neighbour_ids        bigint[],
    neighbour_labels     integer[],
    neighbour_sims       float[],
    neighbour_true_share float,
    neighbour_pred_share float,
    -- image facts
    brightness           float,         -- mean luma in [0, 1]
    contrast             float,         -- std of luma
    saturation           float,         -- mean HSV saturation
    sharpness            float,         -- variance of the Laplacian of luma
    border_colour        varchar,       -- basic colour term of the border region (background proxy)
    centre_colour        varchar,       -- of the centre region (foreground proxy)
    fg_bg_distance       float,         -- colour distance centre vs border (CIELAB delta E)
    z_true               varchar,       -- JSON {fact: z-score vs the true class's training images}
    z_pred               varchar,       -- JSON {fact: z-score vs the predicted class's training images}
    -- saliency of the predicted class
    saliency_method      varchar,
    saliency_centre_share float,        -- share of attribution mass in the central region
    saliency_png         blob,          -- heatmap overlay
    skipped              varchar,       -- JSON {part: reason} for parts that could not be computed
    computed_at          timestamp
);

-- Checkable claims found in an answer, and whether the evidence supports them.
-- key: (hypothesis_id, dimension, claim_index)
create table claims (
    hypothesis_id varchar not null,
    run_id        varchar not null,
    example_id    bigint not null,
    dimension     varchar not null,
    claim_index   integer not null,
    kind          varchar not null,     -- e.g. 'background_colour', 'dark', 'looks_like'
    claim         varchar not null,     -- the text span that makes the claim
    verdict       varchar not null,     -- 'consistent' | 'contradicted' | 'unverifiable'
    fact          varchar               -- the measured fact it was checked against
);

-- Sentence embeddings of each dimension of each answer.   key: (hypothesis_id, dimension, embedder)
create table embeddings (
    run_id        varchar not null,
    hypothesis_id varchar not null,
    dimension     varchar not null,
    embedder      varchar not null,
    masked        boolean not null,     -- class names replaced by a placeholder before embedding
    text          varchar not null,     -- the text that was embedded (after masking)
    text_sha256   varchar not null,
    dim           integer not null,
    vector        float[] not null      -- L2-normalised
);

-- Embedding cache shared by all runs.   key: (embedder, text_sha256)
create table embedding_cache (
    embedder    varchar not null,
    text_sha256 varchar not null,
    dim         integer not null,
    vector      float[] not null
);

-- One clustering of one dimension of a run.   key: (run_id, dimension, cluster_id); -1 = noise
create table clusters (
    run_id          varchar not null,
    dimension       varchar not null,
    cluster_id      integer not null,
    name            varchar,
    name_method     varchar,            -- 'ctfidf+medoid' | 'ollama:<model>' | 'noise'
    size            integer not null,
    silhouette      float,              -- mean silhouette of the members
    k               integer,            -- chosen k of the clustering
    embedder        varchar,
    representatives varchar[],          -- hypothesis_ids nearest the centroid, nearest first
    medoid_text     varchar,
    created_at      timestamp
);

-- Cluster membership and 2-D map coordinates.   key: (run_id, dimension, hypothesis_id)
create table cluster_members (
    run_id        varchar not null,
    dimension     varchar not null,
    hypothesis_id varchar not null,
    example_id    bigint not null,
    cluster_id    integer not null,     -- -1 = noise (member of a cluster below --min-size)
    kmeans_label  integer not null,     -- the KMeans label before noise filtering
    distance      float,                -- cosine distance to its KMeans centroid
    x             float,                -- 2-D map
    y             float
);

-- Silhouette of every k tried.   key: (run_id, dimension, k)
create table cluster_k_scores (
    run_id     varchar not null,
    dimension  varchar not null,
    k          integer not null,
    silhouette float not null,
    chosen     boolean not null
);

-- Human review verdicts: append-only; the latest per (hypothesis_id, dimension, reviewer) counts.
create table verdicts (
    verdict_id    varchar not null,     -- uuid4
    run_id        varchar not null,
    hypothesis_id varchar not null,
    example_id    bigint not null,
    dimension     varchar not null,     -- a prompt dimension, or 'overall'
    verdict       varchar not null,     -- 'agree' | 'disagree' | 'skip'
    reviewer      varchar not null,
    note          varchar,
    created_at    timestamp not null,   -- UTC
    source        varchar not null      -- 'review' | 'import'
);

-- What each stage did for a run, for `lens status` and `lens run`.   key: (run_id, stage)
create table stage_runs (
    run_id      varchar not null,
    stage       varchar not null,
    started_at  timestamp,
    finished_at timestamp,
    status      varchar not null,       -- 'done' | 'partial' | 'failed'
    details     varchar                 -- JSON summary of what the stage did
);
