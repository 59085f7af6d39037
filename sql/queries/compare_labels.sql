-- compare_labels: evaluation examples whose label differs between run $a and run $b (label
-- corrections, `lens train --labels-from`), with each run's label and prediction by name, and
-- whether each run is right against its own label. Parameters: $a, $b (run ids).
with pairs as (
    select
        a.example_id,
        a.label as label_a, b.label as label_b,
        a.pred as pred_a, b.pred as pred_b
    from predictions as a
    join predictions as b on b.example_id = a.example_id and b.run_id = $b
    where a.run_id = $a and a.label <> b.label
),
final as (
    select
        p.example_id,
        la.class_name as label_a,
        lb.class_name as label_b,
        pa.class_name as pred_a,
        pb.class_name as pred_b,
        p.pred_a = p.label_a as right_a,
        p.pred_b = p.label_b as right_b
    from pairs as p
    left join classes as la on la.run_id = $a and la.class_id = p.label_a
    left join classes as lb on lb.run_id = $b and lb.class_id = p.label_b
    left join classes as pa on pa.run_id = $a and pa.class_id = p.pred_a
    left join classes as pb on pb.run_id = $b and pb.class_id = p.pred_b
)
select * from final order by example_id
