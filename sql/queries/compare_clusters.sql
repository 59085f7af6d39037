-- compare_clusters: how the failures of each cluster of run $a fared in run $b.
-- Failures are matched by example_id (the same evaluation examples). Parameters: $a, $b.
with members as (
    select m.dimension, m.cluster_id, m.example_id
    from cluster_members as m
    where m.run_id = $a
),
outcome as (
    select
        m.dimension,
        m.cluster_id,
        m.example_id,
        p.example_id is not null as in_b,
        p.pred = p.label as fixed,
        p.pred is not null and p.pred <> p.label and p.pred = f.pred as same_mistake
    from members as m
    join failures as f on f.run_id = $a and f.example_id = m.example_id
    left join predictions as p on p.run_id = $b and p.example_id = m.example_id
),
final as (
    select
        o.dimension,
        o.cluster_id,
        c.name,
        count(*) as failures_a,
        count(*) filter (where o.in_b) as evaluated_in_b,
        count(*) filter (where o.fixed) as fixed_in_b,
        count(*) filter (where o.same_mistake) as same_mistake_in_b,
        count(*) filter (where o.in_b and not o.fixed and not o.same_mistake) as other_mistake_in_b,
        count(*) filter (where o.fixed)::double / nullif(count(*) filter (where o.in_b), 0) as fixed_share
    from outcome as o
    left join clusters as c on c.run_id = $a and c.dimension = o.dimension and c.cluster_id = o.cluster_id
    group by o.dimension, o.cluster_id, c.name
)
select * from final order by dimension, fixed_share desc nulls last, failures_a desc
