-- 045_diagnosis: scores, not only tags (lens/diagnosis.py).
--
-- Every failure's evidence row gains two scores in [0, 1] (higher = more likely) and the
-- signals behind them; the tags of the measured analyst are these scores thresholded at the
-- named constants of lens.diagnosis (versioned by diagnosis_version). Columns are null where
-- the run has none of the signals a score needs (then `diagnosis` says which were missing).
alter table evidence add column label_error_score float;   -- how likely the given label is wrong
alter table evidence add column ambiguity_score float;     -- how likely people would disagree on this image
alter table evidence add column diagnosis varchar;         -- JSON {"label_error": {"signals": {...}, "missing": [...],
                                                           --   "model": ...}, "ambiguity": {...}, "version": ...}
alter table evidence add column diagnosis_version varchar; -- lens.diagnosis.RULES_VERSION that computed the scores

-- How well Lens can find label errors with THIS run's model: random flips planted in a copy
-- of the evaluation labels (probabilities and features as they are), ranked by
-- label_error_score, scored at the tag threshold. One row per run (replaced by each
-- `lens evidence`).   key: run_id
create table detection_power (
    run_id            varchar not null,
    diagnosis_version varchar not null,
    signals           varchar not null,   -- which signals the score used ('probs+neighbours', 'probs', ...)
    eval_examples     integer not null,   -- evaluation examples the flips were planted among
    flips_per_trial   integer not null,
    trials            integer not null,
    threshold         double not null,    -- the label-error tag threshold scored at
    recall            double,             -- planted flips tagged / planted flips (pooled over trials)
    recall_low        double,             -- Wilson 95% interval
    recall_high       double,
    precision         double,             -- planted flips among the tagged failures (null: none tagged)
    precision_low     double,
    precision_high    double,
    average_precision double,             -- of label_error_score over the flipped copy's failures
    candidates        double,             -- tagged failures per trial (mean)
    verdict           varchar not null,   -- 'useful' | 'weak' | 'too weak': can this model find label errors?
    message           varchar not null,   -- the sentence shown beside the annotation candidates
    computed_at       timestamp not null
);
