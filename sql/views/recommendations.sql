-- recommendations: what to fix first, from the clusters of the `fix` dimension.
-- Reviewed clusters (at least one agree/disagree) are ranked by size x purity_lower (the
-- Wilson 95% lower bound of reviewed purity) and come first: verdicts move a cluster up
-- or down. Unreviewed clusters follow, ranked by size, with reviewed = false.
-- Clusters whose purity upper bound is below 0.5 (reviewers mostly disagree with them)
-- are hidden, and so is noise (cluster_id -1).
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
final as (
    select
        run_id,
        row_number() over (
            partition by run_id
            order by reviewed desc, case when reviewed then size * purity_lower else size end desc, cluster_id
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
        representative_failures
    from visible
)
select * from final
