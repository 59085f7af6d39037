-- class_metrics: per run and class, support, precision, recall and F1 over all predictions.
-- key: (run_id, class_id). A class never predicted (or never true) gets 0, as scikit-learn's
-- precision_recall_fscore_support(zero_division=0) does.
create or replace view class_metrics as
with true_counts as (
    select run_id, label as class_id, count(*) as support, count(*) filter (where pred = label) as tp
    from predictions
    group by run_id, label
),
pred_counts as (
    select run_id, pred as class_id, count(*) as predicted
    from predictions
    group by run_id, pred
),
joined as (
    select
        c.run_id,
        c.class_id,
        c.class_name,
        coalesce(t.support, 0) as support,
        coalesce(p.predicted, 0) as predicted,
        coalesce(t.tp, 0) as tp
    from classes as c
    left join true_counts as t on t.run_id = c.run_id and t.class_id = c.class_id
    left join pred_counts as p on p.run_id = c.run_id and p.class_id = c.class_id
),
final as (
    select
        run_id,
        class_id,
        class_name,
        support,
        predicted,
        tp,
        case when predicted > 0 then tp::double / predicted else 0.0 end as "precision",
        case when support > 0 then tp::double / support else 0.0 end as recall,
        case when support + predicted > 0 then 2.0 * tp / (support + predicted) else 0.0 end as f1
    from joined
)
select * from final
