-- recommendations: what to fix first, from the clusters of the `fix` dimension.
-- Reviewed clusters (at least one agree/disagree) are ranked by size x purity_lower (the
-- Wilson 95% lower bound of reviewed purity) and come first: verdicts move a cluster up
-- or down. Unreviewed clusters follow, ranked by size, with reviewed = false.
-- Clusters whose purity upper bound is below 0.5 (reviewers mostly disagree with them)
-- are hidden, and so is noise (cluster_id -1).
-- Once an experiment (`lens experiment`) has tested some of a run's recommendations, the
-- measured lift ranks them: effect is the verdict of the arm that tested the cluster in the
-- run's latest experiment (recommendation_effects, scope 'overall': accuracy vs the control
-- arm), or 'untested'. Order: 'beats control' (by lift), then untested (as above), then
-- 'no clear effect', then 'worse than control' (each by lift). lift = accuracy delta vs
-- control with its paired 95% interval; cluster_lift = the same for the cluster's own failures.
-- key: (run_id, cluster_id)
create or replace view recommendations as
with fix_clusters as (
    select
        s.run_id,
        s.cluster_id,
        s.name,
        s.size,
        s.share,
        s.medoid_text,
        s.top_pairs,
        s.tag_distribution,
        s.representative_failures,
        p.agree,
        p.disagree,
        p.purity,
        p.purity_lower,
        p.purity_upper,
        p.agree + p.disagree > 0 as reviewed
    from cluster_summary as s
    join cluster_purity as p
        on p.run_id = s.run_id and p.dimension = s.dimension and p.cluster_id = s.cluster_id
    where s.dimension = 'fix' and s.cluster_id >= 0
),
visible as (
    select * from fix_clusters
    where not reviewed or purity_upper >= 0.5
),
latest_experiment as (
    select parent_run_id, experiment_id
    from (
        select
            e.parent_run_id,
            e.experiment_id,
            row_number() over (partition by e.parent_run_id order by e.created_at desc, e.experiment_id desc) as r
        from experiments as e
        where exists (
            select 1 from experiment_arms as a where a.experiment_id = e.experiment_id and not a.is_control
        )
    )
    where r = 1
),
tested as (
    -- the overall row and the targeted-cluster row of each arm, read once
    select
        e.parent_run_id as run_id,
        e.targeted_cluster_id as cluster_id,
        e.experiment_id,
        e.arm,
        max(e.seeds) as seeds,
        max(case when e.scope = 'overall' then e.verdict end) as effect,
        max(case when e.scope = 'overall' then e.delta end) as lift,
        max(case when e.scope = 'overall' then e.delta_lower end) as lift_lower,
        max(case when e.scope = 'overall' then e.delta_upper end) as lift_upper,
        max(case when e.scope = 'cluster' then e.delta end) as cluster_lift,
        max(case when e.scope = 'cluster' then e.delta_lower end) as cluster_lift_lower,
        max(case when e.scope = 'cluster' then e.delta_upper end) as cluster_lift_upper,
        max(case when e.scope = 'cluster' then e.verdict end) as cluster_effect
    from recommendation_effects as e
    join latest_experiment as l on l.experiment_id = e.experiment_id
    where e.scope = 'overall' or e.targeted
    group by all
),
measured as (
    select
        v.*,
        coalesce(t.effect, 'untested') as effect,
        t.lift,
        t.lift_lower,
        t.lift_upper,
        t.cluster_lift,
        t.cluster_lift_lower,
        t.cluster_lift_upper,
        t.cluster_effect,
        t.experiment_id,
        t.arm,
        t.seeds
    from visible as v
    left join tested as t on t.run_id = v.run_id and t.cluster_id = v.cluster_id
),
final as (
    select
        run_id,
        row_number() over (
            partition by run_id
            order by
                case effect when 'beats control' then 0 when 'untested' then 1 when 'no clear effect' then 2 else 3 end,
                lift desc nulls last,
                reviewed desc, case when reviewed then size * purity_lower else size end desc, cluster_id
        ) as rank,
        cluster_id,
        name,
        size,
        share,
        reviewed,
        case when reviewed then size * purity_lower end as score,
        purity,
        purity_lower,
        purity_upper,
        agree,
        disagree,
        medoid_text,
        top_pairs,
        tag_distribution,
        representative_failures,
        effect,
        lift,
        lift_lower,
        lift_upper,
        cluster_lift,
        cluster_lift_lower,
        cluster_lift_upper,
        cluster_effect,
        experiment_id,
        arm,
        seeds
    from measured
)
select * from final
