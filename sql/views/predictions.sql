-- predictions: every evaluation example of a run, as 001_core first stored it.
-- key: (run_id, example_id)
--
-- The rows live in prediction_rows (040_prediction_rows); confidence, top3_prob and loss
-- follow from probs and are computed here, so they are stored once and can never disagree.
--   confidence  probability of pred: probs[pred], or the given confidence without probs
--   top3_prob   probabilities of top3_class, most probable first
--   loss        cross-entropy of the true class, -ln p[label] (p floored at 1e-12; null without probs)
create or replace view predictions as
select
    run_id,
    example_id,
    label,
    pred,
    coalesce(probs[pred + 1], confidence) as confidence,
    probs,
    top3_class,
    coalesce(list_select(probs, list_transform(top3_class, lambda c: c + 1)), [confidence]) as top3_prob,
    case when probs is not null then cast(-ln(greatest(probs[label + 1], 1e-12)) as float) end as loss,
    image_uri,
    source_id
from prediction_rows
