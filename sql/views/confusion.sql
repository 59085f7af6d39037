-- confusion: how often each true class was predicted as each class (non-zero cells only).
-- key: (run_id, true_class, pred_class)
create or replace view confusion as
with counts as (
    select run_id, label as true_class, pred as pred_class, count(*) as count
    from predictions
    group by run_id, label, pred
),
final as (
    select
        k.run_id,
        k.true_class,
        k.pred_class,
        t.class_name as true_name,
        p.class_name as pred_name,
        k.count
    from counts as k
    left join classes as t on t.run_id = k.run_id and t.class_id = k.true_class
    left join classes as p on p.run_id = k.run_id and p.class_id = k.pred_class
)
select * from final
