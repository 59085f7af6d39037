-- 060_experiments: controlled experiments for recommendations (`lens experiment`).
--
-- An experiment fine-tunes a trained run's checkpoint once per arm: one arm per top
-- recommendation (its augmentation or data change) and a control arm with no change, all with
-- the same budget, seed, data order and evaluation split. Every arm is an ordinary run
-- (runs.kind 'train', runs.parent_run_id = the experiment's parent) with its predictions,
-- failures and training_log; these two tables say which experiment, arm and seed it is.
-- Effects are computed by the view sql/views/recommendation_effects.sql.
--
-- Portability as in 001_core: no sequences, ENUMs, keys or ON CONFLICT; the stage deletes
-- and inserts inside its own transaction, and the keys below are checked by tests.

-- One row per experiment: its options and its plan, written before the first arm trains, so a
-- resumed experiment runs the arms it planned even when the ranking has changed since.
-- key: experiment_id
create table experiments (
    experiment_id varchar not null,     -- '<parent run>.<name>' (name: --name, default 'exp')
    parent_run_id varchar not null,     -- the run whose checkpoint every arm starts from
    name          varchar not null,
    created_at    timestamp not null,   -- UTC
    epochs        integer not null,     -- fine-tuning epochs of every arm
    top           integer not null,     -- recommendations considered
    config        varchar               -- JSON: options, planned arms (kind, params, cluster, why), skipped recommendations
);

-- One row per finished arm run, written in the same transaction as the run's rows.
-- key: run_id; also (experiment_id, arm, seed)
create table experiment_arms (
    experiment_id     varchar not null,
    run_id            varchar not null, -- the arm's run: '<parent>.<name>.<arm>.s<seed>'
    parent_run_id     varchar not null,
    arm               varchar not null, -- 'control', an augmentation kind, or 'oversample'
    is_control        boolean not null,
    seed              integer not null, -- seeds the data order, the augmentations and torch
    rank              integer,          -- the recommendation's rank when planned (null: control)
    dimension         varchar,          -- 'fix' (null: control)
    cluster_id        integer,          -- the parent's targeted fix cluster (null: control)
    recommendation    varchar,          -- that cluster's name
    change            varchar,          -- JSON: kind, params, why (null: control)
    epochs            integer not null,
    batches_sha256    varchar not null, -- digest of every training batch as the loop drew it (labels, pixel sums), in order
    checkpoint_sha256 varchar not null, -- the parent checkpoint the arm started from
    seconds           double,           -- wall time of the arm (training + evaluation)
    created_at        timestamp not null
);
