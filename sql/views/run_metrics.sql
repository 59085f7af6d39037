-- run_metrics: one row per run: examples, accuracy, failures, and macro / weighted averages
-- of class_metrics (macro over every class of the run). key: run_id
create or replace view run_metrics as
with per_class as (
    select
        run_id,
        count(*) as num_classes,
        sum(support)::bigint as n,
        sum(tp)::bigint as correct,
        avg("precision") as macro_precision,
        avg(recall) as macro_recall,
        avg(f1) as macro_f1,
        sum(f1 * support) / nullif(sum(support), 0) as weighted_f1
    from class_metrics
    group by run_id
),
final as (
    select
        run_id,
        num_classes,
        n,
        correct,
        n - correct as failures,
        correct::double / nullif(n, 0) as accuracy,
        macro_precision,
        macro_recall,
        macro_f1,
        weighted_f1
    from per_class
)
select * from final
