-- 040_prediction_rows: store each prediction fact once; `predictions` becomes a view.
--
-- 001_core stored confidence, top3_prob and loss beside probs, though all three follow from
-- probs. Writing them cost a fifth of `lens ingest` (DuckDB compresses every float it
-- stores), so the table now holds only what was given or chosen, and the view
-- sql/views/predictions.sql adds the derived columns with the same names and types as before:
-- queries against `predictions` are unchanged. Stages write to prediction_rows
-- (lens.predictions.insert_predictions).
--
-- Rows of a warehouse made before this migration are copied over; their derived values are
-- recomputed by the view from probs.

-- Every evaluation example of a run.   key: (run_id, example_id)
create table prediction_rows (
    run_id     varchar not null,
    example_id bigint not null,         -- index of the example in the evaluation split / ingest id
    label      integer not null,        -- true class id
    pred       integer not null,        -- predicted class id (argmax of probs when given)
    confidence float,                   -- probability of pred as given, only when probs is null
                                        -- (with probs the view reads it from probs)
    probs      float[],                 -- full probability vector (null when only pred+confidence were given)
    top3_class integer[],               -- up to 3 class ids, most probable first ([pred] without probs)
    image_uri  varchar,                 -- where the image lives, when known (path, URI or 'source:split:index')
    source_id  varchar                  -- the id as given to `lens ingest` when it was not an integer
);

insert into prediction_rows
select run_id, example_id, label, pred, case when probs is null then confidence end,
       probs, top3_class, image_uri, source_id
from predictions;

drop table predictions;
