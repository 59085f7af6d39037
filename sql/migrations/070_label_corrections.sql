-- 070_label_corrections: labels corrected by annotators (`lens labels import`), append-only.
--
-- The relabelling loop: `lens export relabel` sends a run's ranked annotation candidates (and,
-- for errors a reviewer confirmed, the nearest training images with the same given label) to
-- annotators; `lens labels import FILE` brings their labels back here; `lens train
-- --labels-from RUN` trains and evaluates with them. A correction names a dataset example by
-- the dataset split it lives in ('train', or the run's evaluation split such as 'test') and its
-- index there (example_id), so it holds for every run on that dataset.
--
-- Append-only, like verdicts: an annotator who changes their mind adds a newer row, and the
-- latest row per (run_id, split, example_id) counts (lens/corrections.py). A row whose new
-- label equals the old one records that the given label was checked and kept.
-- Portability as in 001_core: no sequences, keys or ON CONFLICT; ids are made in Python.
-- key: correction_id
create table label_corrections (
    correction_id varchar not null,     -- sha256 prefix of (run, split, example, new label, who, annotated_at or file digest)
    run_id        varchar not null,     -- the run whose export (or ids) the correction was made on
    dataset       varchar,              -- runs.dataset of that run when imported (corrections follow the data)
    split         varchar not null,     -- dataset split: 'train' or the run's eval split
    example_id    bigint not null,      -- index of the example in that split
    old_label     integer not null,     -- the label the run had for it
    new_label     integer not null,     -- the annotator's label (class id of the run)
    old_name      varchar,
    new_name      varchar,
    who           varchar not null,     -- annotator (Label Studio user, CSV column, or --who)
    annotated_at  timestamp,            -- when the annotator labelled it, when the file says (UTC)
    imported_at   timestamp not null,   -- when it was imported (UTC)
    source_file   varchar not null,     -- the imported file, as given
    source_format varchar not null,     -- 'csv' | 'label-studio'
    note          varchar
);
