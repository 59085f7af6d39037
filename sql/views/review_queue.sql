-- review_queue: one row per answered hypothesis of a sampled failure, with what the review
-- form filters on (class pair, tags) and how far it is reviewed. n_verdicts counts the latest
-- verdicts (any reviewer, any dimension incl. 'overall'); reviewed = at least one.
-- queue_rank orders the queue per run: answers whose data_quality tag the evidence contradicts
-- first (a checked disagreement raises a failure), then by label_error_score, then by
-- ambiguity_score (both descending), then in sample order.   key: hypothesis_id
create or replace view review_queue as
with answered as (
    select h.hypothesis_id, h.run_id, h.example_id, h.backend, h.model, h.created_at
    from hypotheses as h
    where h.status = 'ok'
),
tags as (
    select hypothesis_id, list(distinct tag order by tag) as tags, count(*) as n_dimensions
    from hypothesis_dimensions
    group by hypothesis_id
),
tag_checks as (
    select hypothesis_id, any_value(verdict) as tag_check, any_value(fact) as tag_check_fact
    from claims
    where kind = 'tag' and dimension = 'data_quality'
    group by hypothesis_id
),
reviews as (
    select hypothesis_id, count(*) as n_verdicts, max(created_at) as last_reviewed_at
    from latest_verdicts
    group by hypothesis_id
),
final as (
    select
        a.run_id,
        a.hypothesis_id,
        a.example_id,
        s.rank as sample_rank,
        f.label,
        f.pred,
        ct.class_name as true_name,
        cp.class_name as pred_name,
        f.confidence,
        a.backend,
        a.model,
        list_filter(coalesce(t.tags, []), x -> x is not null) as tags,
        coalesce(t.n_dimensions, 0) as n_dimensions,
        coalesce(r.n_verdicts, 0) as n_verdicts,
        coalesce(r.n_verdicts, 0) > 0 as reviewed,
        r.last_reviewed_at,
        e.label_error_score,
        e.ambiguity_score,
        k.tag_check,
        k.tag_check_fact,
        row_number() over (
            partition by a.run_id
            order by coalesce(k.tag_check = 'contradicted', false) desc, e.label_error_score desc nulls last,
                e.ambiguity_score desc nulls last, s.rank nulls last, a.example_id, a.hypothesis_id
        ) as queue_rank
    from answered as a
    join failures as f on f.run_id = a.run_id and f.example_id = a.example_id
    left join samples as s on s.run_id = a.run_id and s.example_id = a.example_id
    left join classes as ct on ct.run_id = a.run_id and ct.class_id = f.label
    left join classes as cp on cp.run_id = a.run_id and cp.class_id = f.pred
    left join tags as t on t.hypothesis_id = a.hypothesis_id
    left join reviews as r on r.hypothesis_id = a.hypothesis_id
    left join evidence as e on e.run_id = a.run_id and e.example_id = a.example_id
    left join tag_checks as k on k.hypothesis_id = a.hypothesis_id
)
select * from final
