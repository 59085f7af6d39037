-- recommendation_effects: what each arm of an experiment (`lens experiment`) did, measured
-- against the control arm of the same experiment and seed (same checkpoint, budget, data
-- order and evaluation examples), pooled over the experiment's seeds.
--
-- One row per (experiment_id, arm, scope, cluster_id, class_id):
--   scope 'overall': every evaluation example: accuracy of the arm vs the control;
--   scope 'cluster': the parent's failures in one fix cluster (every cluster, noise = -1;
--                    `targeted` marks the cluster the arm's recommendation came from): the
--                    share of them the arm fixed vs the share the control fixed;
--   scope 'class':   the examples of one true class: recall (share right) and F1 of the arm
--                    vs the control.
-- n counts (example, seed) pairs. delta = arm_share - control_share. The 95% interval
-- [delta_lower, delta_upper] combines two sources of error:
--   * the evaluation examples (eval_lower, eval_upper): both arms are judged on the same
--     examples, so it is the paired interval: of the m discordant pairs (right in one arm
--     only), b favour the arm; with a Wilson 95% interval [L, U] for b / m, delta is in
--     [(2L - 1) m / n, (2U - 1) m / n] (with no discordant pair, +-z^2 / (n + z^2));
--   * training noise: two fine-tunings that differ only in seed differ by more than their
--     evaluation noise. seed_noise_sd is the standard deviation of the per-seed deltas
--     (seed_deltas) around each arm's mean, pooled over the experiment's arms for the same
--     scope and item (noise_df = seeds - 1 summed over arms); its half-width
--     t(noise_df, 0.975) x seed_noise_sd / sqrt(seeds) is added to each side of the
--     evaluation interval in quadrature. With one seed it is not measured (noise_df 0,
--     seed_noise_sd null) and the interval covers the evaluation examples only.
-- This is conservative (the per-seed deltas include evaluation noise too).
-- verdict: 'beats control' when delta_lower > 0 and every seed's delta > 0; 'worse than
-- control' when delta_upper < 0 and every seed's delta < 0; else 'no clear effect'.
-- item_id: the cluster_id (scope 'cluster'), the class_id (scope 'class'), 0 ('overall').
-- key: (experiment_id, arm, scope, item_id)
create or replace view recommendation_effects as
with pairs as (
    select
        a.experiment_id,
        a.parent_run_id,
        a.arm,
        a.rank,
        a.recommendation,
        a.cluster_id as targeted_cluster_id,
        a.seed,
        a.run_id,
        c.run_id as control_run_id
    from experiment_arms as a
    join experiment_arms as c
        on c.experiment_id = a.experiment_id and c.seed = a.seed and c.is_control
    where not a.is_control
),
-- the stored rows, not the `predictions` view: only label and pred are needed
outcomes as (
    select
        p.experiment_id,
        p.parent_run_id,
        p.arm,
        p.seed,
        pa.example_id,
        pa.label,
        pa.pred as arm_pred,
        pc.pred as control_pred,
        pa.pred = pa.label as arm_right,
        pc.pred = pc.label as control_right
    from pairs as p
    join prediction_rows as pa on pa.run_id = p.run_id
    join prediction_rows as pc on pc.run_id = p.control_run_id and pc.example_id = pa.example_id
),
fix_members as (
    select distinct run_id, cluster_id, example_id
    from cluster_members
    where dimension = 'fix'
),
scoped as (
    select experiment_id, arm, seed, 'overall' as scope, 0 as item_id, null::integer as cluster_id,
           null::integer as class_id, arm_right, control_right
    from outcomes
    union all
    select o.experiment_id, o.arm, o.seed, 'cluster', m.cluster_id, m.cluster_id, null::integer,
           o.arm_right, o.control_right
    from outcomes as o
    join fix_members as m on m.run_id = o.parent_run_id and m.example_id = o.example_id
    union all
    select experiment_id, arm, seed, 'class', label, null::integer, label, arm_right, control_right
    from outcomes
),
per_seed as (
    select
        experiment_id,
        arm,
        scope,
        item_id,
        cluster_id,
        class_id,
        seed,
        count(*) as n,
        count(*) filter (where arm_right) as arm_correct,
        count(*) filter (where control_right) as control_correct,
        count(*) filter (where arm_right and not control_right) as only_arm,
        count(*) filter (where control_right and not arm_right) as only_control
    from scoped
    group by all
),
predicted as (
    -- how often each class was predicted, for F1 (pooled over seeds)
    select experiment_id, arm, label_class as class_id,
           sum(arm_n)::bigint as arm_predicted, sum(control_n)::bigint as control_predicted
    from (
        select experiment_id, arm, arm_pred as label_class, count(*) as arm_n, 0 as control_n
        from outcomes group by all
        union all
        select experiment_id, arm, control_pred, 0, count(*)
        from outcomes group by all
    )
    group by all
),
pooled as (
    select
        experiment_id,
        arm,
        scope,
        item_id,
        cluster_id,
        class_id,
        count(*) as seeds,
        sum(n)::bigint as n,
        sum(arm_correct)::bigint as arm_correct,
        sum(control_correct)::bigint as control_correct,
        sum(only_arm)::bigint as only_arm,
        sum(only_control)::bigint as only_control,
        list((arm_correct - control_correct)::double / n order by seed) as seed_deltas,
        min((arm_correct - control_correct)::double / n) as seed_delta_min,
        max((arm_correct - control_correct)::double / n) as seed_delta_max,
        -- sum of squared deviations of the per-seed deltas from their mean (0 with one seed)
        coalesce(var_samp((arm_correct - control_correct)::double / n) * (count(*) - 1), 0) as seed_ss
    from per_seed
    group by all
),
seed_noise as (
    select
        experiment_id,
        scope,
        item_id,
        sum(seeds - 1) as noise_df,
        sqrt(sum(seed_ss) / nullif(sum(seeds - 1), 0)) as seed_noise_sd
    from pooled
    group by all
),
t_quantiles as (
    -- Student's t, 97.5th percentile, by degrees of freedom (over 30: the normal 1.96)
    select * from (values
        (1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447), (7, 2.365), (8, 2.306),
        (9, 2.262), (10, 2.228), (11, 2.201), (12, 2.179), (13, 2.160), (14, 2.145), (15, 2.131), (16, 2.120),
        (17, 2.110), (18, 2.101), (19, 2.093), (20, 2.086), (21, 2.080), (22, 2.074), (23, 2.069), (24, 2.064),
        (25, 2.060), (26, 2.056), (27, 2.052), (28, 2.048), (29, 2.045), (30, 2.042), (31, 1.960)
    ) as t (df, t975)
),
intervals as (
    select
        *,
        arm_correct::double / n as arm_share,
        control_correct::double / n as control_share,
        (arm_correct - control_correct)::double / n as delta,
        (only_arm + only_control)::double as m,
        1.959964 as z
    from pooled
),
wilson as (
    select
        *,
        case when m > 0 then
            greatest(0.0, ((only_arm / m) + z * z / (2 * m)
                - z * sqrt((only_arm / m) * (1 - only_arm / m) / m + z * z / (4 * m * m))) / (1 + z * z / m))
        end as b_lower,
        case when m > 0 then
            least(1.0, ((only_arm / m) + z * z / (2 * m)
                + z * sqrt((only_arm / m) * (1 - only_arm / m) / m + z * z / (4 * m * m))) / (1 + z * z / m))
        end as b_upper
    from intervals
),
bounded as (
    select
        w.*,
        case when w.m > 0 then (2 * w.b_lower - 1) * w.m / w.n else -w.z * w.z / (w.n + w.z * w.z) end
            as eval_lower,
        case when w.m > 0 then (2 * w.b_upper - 1) * w.m / w.n else w.z * w.z / (w.n + w.z * w.z) end
            as eval_upper,
        s.noise_df,
        s.seed_noise_sd,
        coalesce(t.t975 * s.seed_noise_sd / sqrt(w.seeds), 0.0) as noise_half_width
    from wilson as w
    join seed_noise as s on s.experiment_id = w.experiment_id and s.scope = w.scope and s.item_id = w.item_id
    left join t_quantiles as t on t.df = least(s.noise_df, 31)
),
arms as (
    select distinct experiment_id, parent_run_id, arm, rank, recommendation, targeted_cluster_id
    from pairs
),
final as (
    select
        b.experiment_id,
        a.parent_run_id,
        b.arm,
        a.rank,
        a.recommendation,
        a.targeted_cluster_id,
        b.scope,
        b.item_id,
        b.cluster_id,
        b.class_id,
        case b.scope
            when 'overall' then 'all examples'
            when 'cluster' then coalesce(c.name, case when b.cluster_id = -1 then 'noise' end)
            else k.class_name
        end as name,
        coalesce(b.scope = 'cluster' and b.cluster_id = a.targeted_cluster_id, false) as targeted,
        b.seeds,
        b.n,
        b.arm_correct,
        b.control_correct,
        b.arm_share,
        b.control_share,
        b.delta,
        greatest(-1.0, b.delta - sqrt((b.delta - b.eval_lower) ** 2 + b.noise_half_width ** 2)) as delta_lower,
        least(1.0, b.delta + sqrt((b.eval_upper - b.delta) ** 2 + b.noise_half_width ** 2)) as delta_upper,
        b.eval_lower,
        b.eval_upper,
        b.only_arm,
        b.only_control,
        b.seed_deltas,
        b.seed_noise_sd,
        b.noise_df,
        case when b.scope = 'class' then 2.0 * b.arm_correct / nullif(b.n + p.arm_predicted, 0) end as f1_arm,
        case when b.scope = 'class' then 2.0 * b.control_correct / nullif(b.n + p.control_predicted, 0) end
            as f1_control,
        case when b.scope = 'class' then
            2.0 * b.arm_correct / nullif(b.n + p.arm_predicted, 0)
            - 2.0 * b.control_correct / nullif(b.n + p.control_predicted, 0)
        end as f1_delta,
        case
            when b.delta - sqrt((b.delta - b.eval_lower) ** 2 + b.noise_half_width ** 2) > 0
                and b.seed_delta_min > 0 then 'beats control'
            when b.delta + sqrt((b.eval_upper - b.delta) ** 2 + b.noise_half_width ** 2) < 0
                and b.seed_delta_max < 0 then 'worse than control'
            else 'no clear effect'
        end as verdict
    from bounded as b
    join arms as a on a.experiment_id = b.experiment_id and a.arm = b.arm
    left join clusters as c
        on c.run_id = a.parent_run_id and c.dimension = 'fix' and c.cluster_id = b.cluster_id
    left join classes as k on k.run_id = a.parent_run_id and k.class_id = b.class_id
    left join predicted as p
        on p.experiment_id = b.experiment_id and p.arm = b.arm and p.class_id = b.class_id
)
select * from final
