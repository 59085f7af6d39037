-- cluster_purity: how far reviewers agree with each cluster of each dimension.
-- Counts the latest verdict of every reviewer (latest_verdicts) on the cluster's own
-- dimension for every member hypothesis. purity = agree / (agree + disagree) (null when
-- nobody agreed or disagreed yet), with a Wilson score 95% interval (z = 1.959964);
-- reviewed_share = members with at least one verdict on this dimension / size.
-- key: (run_id, dimension, cluster_id)
create or replace view cluster_purity as
with member_verdicts as (
    select
        m.run_id,
        m.dimension,
        m.cluster_id,
        m.hypothesis_id,
        count(*) filter (where v.verdict = 'agree') as agree,
        count(*) filter (where v.verdict = 'disagree') as disagree,
        count(*) filter (where v.verdict = 'skip') as skip
    from cluster_members as m
    left join latest_verdicts as v
        on v.hypothesis_id = m.hypothesis_id and v.dimension = m.dimension
    group by m.run_id, m.dimension, m.cluster_id, m.hypothesis_id
),
per_cluster as (
    select
        run_id,
        dimension,
        cluster_id,
        count(*) as members,
        sum(agree)::bigint as agree,
        sum(disagree)::bigint as disagree,
        sum(skip)::bigint as skip,
        count(*) filter (where agree + disagree + skip > 0) as reviewed
    from member_verdicts
    group by run_id, dimension, cluster_id
),
scored as (
    select
        c.run_id,
        c.dimension,
        c.cluster_id,
        c.name,
        c.size,
        coalesce(p.agree, 0) as agree,
        coalesce(p.disagree, 0) as disagree,
        coalesce(p.skip, 0) as skip,
        coalesce(p.reviewed, 0) as reviewed,
        (coalesce(p.agree, 0) + coalesce(p.disagree, 0))::double as n,
        1.959964 as z
    from clusters as c
    left join per_cluster as p
        on p.run_id = c.run_id and p.dimension = c.dimension and p.cluster_id = c.cluster_id
),
final as (
    select
        run_id,
        dimension,
        cluster_id,
        name,
        size,
        agree,
        disagree,
        skip,
        reviewed,
        case when size > 0 then reviewed::double / size else 0.0 end as reviewed_share,
        case when n > 0 then agree / n end as purity,
        case when n > 0 then
            greatest(0.0, ((agree / n) + z * z / (2 * n)
                - z * sqrt((agree / n) * (1 - agree / n) / n + z * z / (4 * n * n)))
                / (1 + z * z / n))
        end as purity_lower,
        case when n > 0 then
            least(1.0, ((agree / n) + z * z / (2 * n)
                + z * sqrt((agree / n) * (1 - agree / n) / n + z * z / (4 * n * n)))
                / (1 + z * z / n))
        end as purity_upper
    from scored
)
select * from final
