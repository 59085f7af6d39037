-- compare_classes: per-class precision / recall / F1 of run $a and run $b, and the F1 delta.
-- Classes are matched by name. Parameters: $a, $b (run ids).
with a as (
    select class_name, support, "precision", recall, f1 from class_metrics where run_id = $a
),
b as (
    select class_name, support, "precision", recall, f1 from class_metrics where run_id = $b
),
final as (
    select
        coalesce(a.class_name, b.class_name) as class_name,
        a.f1 as f1_a,
        b.f1 as f1_b,
        b.f1 - a.f1 as f1_delta,
        b.recall - a.recall as recall_delta,
        b."precision" - a."precision" as precision_delta,
        a.support as support_a,
        b.support as support_b
    from a
    full outer join b on a.class_name = b.class_name
)
select * from final order by f1_delta desc nulls last
