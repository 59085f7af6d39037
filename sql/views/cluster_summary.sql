-- cluster_summary: one row per cluster of each clustered dimension of a run, with what it
-- is made of. share = size / answers clustered in that dimension. top_pairs: the 3 most
-- common 'true→pred (count)' confusions of its members; tag_distribution: the members'
-- data_quality tags as 'tag (count)', most common first; representative_failures: the
-- example_ids of the representatives (nearest the centroid first).
-- key: (run_id, dimension, cluster_id); cluster_id -1 = noise
create or replace view cluster_summary as
with members as (
    select run_id, dimension, cluster_id, hypothesis_id, example_id
    from cluster_members
),
totals as (
    select run_id, dimension, count(*) as total
    from members
    group by run_id, dimension
),
pairs as (
    select
        m.run_id,
        m.dimension,
        m.cluster_id,
        coalesce(t.class_name, p.label::varchar) || '→' || coalesce(q.class_name, p.pred::varchar) as pair,
        count(*) as n
    from members as m
    join predictions as p on p.run_id = m.run_id and p.example_id = m.example_id
    left join classes as t on t.run_id = p.run_id and t.class_id = p.label
    left join classes as q on q.run_id = p.run_id and q.class_id = p.pred
    group by all
),
top_pairs as (
    select
        run_id,
        dimension,
        cluster_id,
        list(pair || ' (' || n || ')' order by n desc, pair)[1:3] as top_pairs
    from pairs
    group by all
),
tags as (
    select m.run_id, m.dimension, m.cluster_id, d.tag, count(*) as n
    from members as m
    join hypothesis_dimensions as d
        on d.hypothesis_id = m.hypothesis_id and d.dimension = 'data_quality'
    where d.tag is not null
    group by all
),
tag_distribution as (
    select
        run_id,
        dimension,
        cluster_id,
        list(tag || ' (' || n || ')' order by n desc, tag) as tag_distribution
    from tags
    group by all
),
reps as (
    select
        run_id,
        dimension,
        cluster_id,
        unnest(representatives) as hypothesis_id,
        generate_subscripts(representatives, 1) as pos
    from clusters
),
rep_examples as (
    select r.run_id, r.dimension, r.cluster_id, list(h.example_id order by r.pos) as representative_failures
    from reps as r
    join hypotheses as h on h.hypothesis_id = r.hypothesis_id
    group by all
),
final as (
    select
        c.run_id,
        c.dimension,
        c.cluster_id,
        c.name,
        c.name_method,
        c.size,
        c.size / t.total as share,
        c.silhouette,
        c.k,
        c.embedder,
        coalesce(p.top_pairs, []) as top_pairs,
        coalesce(g.tag_distribution, []) as tag_distribution,
        coalesce(r.representative_failures, []) as representative_failures,
        c.medoid_text
    from clusters as c
    left join totals as t on t.run_id = c.run_id and t.dimension = c.dimension
    left join top_pairs as p
        on p.run_id = c.run_id and p.dimension = c.dimension and p.cluster_id = c.cluster_id
    left join tag_distribution as g
        on g.run_id = c.run_id and g.dimension = c.dimension and g.cluster_id = c.cluster_id
    left join rep_examples as r
        on r.run_id = c.run_id and r.dimension = c.dimension and r.cluster_id = c.cluster_id
)
select * from final
