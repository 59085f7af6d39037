-- annotation_candidates: every failure with a label-error score, ranked by it (rank 1 = the
-- label most likely wrong), with the suggested label (the prediction), the signals, the
-- run's detection power (how often such a candidate is a real error with this model) and the
-- tag check of the latest data_quality answer, if any. candidate = the score reaches the
-- run's annotation_issue threshold (lens.diagnosis.LABEL_ERROR_THRESHOLD, as stored with the
-- detection power).   key: (run_id, example_id)
create or replace view annotation_candidates as
with scored as (
    select
        run_id, example_id, label, pred, label_error_score, ambiguity_score, label_quality, true_prob,
        confidence, neighbour_ids, neighbour_labels, neighbour_true_share, neighbour_pred_share, diagnosis,
        diagnosis_version
    from evidence
    where label_error_score is not null
),
tag_checks as (
    -- the latest answer with a data_quality part for each failure, with its tag check when the
    -- tag was checked (an answer without a tag, or one stored before tag checks, has none)
    select
        h.run_id,
        h.example_id,
        d.tag,
        c.verdict as tag_check,
        c.fact as tag_check_fact,
        h.hypothesis_id,
        h.backend
    from hypotheses as h
    join hypothesis_dimensions as d on d.hypothesis_id = h.hypothesis_id and d.dimension = 'data_quality'
    left join claims as c
        on c.hypothesis_id = h.hypothesis_id and c.kind = 'tag' and c.dimension = 'data_quality'
    where h.status = 'ok'
    qualify row_number() over (
        partition by h.run_id, h.example_id order by h.created_at desc, h.hypothesis_id
    ) = 1
),
final as (
    select
        s.run_id,
        row_number() over (partition by s.run_id order by s.label_error_score desc, s.example_id) as rank,
        s.example_id,
        s.label,
        ct.class_name as given_name,
        s.pred as suggested,
        cp.class_name as suggested_name,
        s.label_error_score,
        s.label_error_score >= d.threshold as candidate,
        s.ambiguity_score,
        s.label_quality,
        s.true_prob,
        s.confidence,
        s.neighbour_true_share,
        s.neighbour_pred_share,
        s.neighbour_ids,
        s.neighbour_labels,
        s.diagnosis,
        s.diagnosis_version,
        t.tag,
        t.tag_check,
        t.tag_check_fact,
        t.hypothesis_id,
        t.backend,
        d.verdict as detection_verdict,
        d.precision as detection_precision,
        d.recall as detection_recall,
        d.message as detection_message
    from scored as s
    left join classes as ct on ct.run_id = s.run_id and ct.class_id = s.label
    left join classes as cp on cp.run_id = s.run_id and cp.class_id = s.pred
    left join detection_power as d on d.run_id = s.run_id
    left join tag_checks as t on t.run_id = s.run_id and t.example_id = s.example_id
)
select * from final
