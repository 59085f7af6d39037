-- grounding_summary: how often each backend / model / prompt contradicts the measured evidence.
-- key: (run_id, backend, model, prompt_name)
-- contradiction_rate = contradicted / checked claims (consistent + contradicted); null when none was checkable.
-- Claims are what the answers' texts say; tags (kind 'tag': a dimension's tag checked against the
-- diagnosis scores) are counted apart: tags_checked / tags_contradicted / tag_contradiction_rate.
create or replace view grounding_summary as
with answers as (
    select run_id, backend, model, prompt_name, count(*) as answers
    from hypotheses
    where status = 'ok'
    group by run_id, backend, model, prompt_name
),
claim_counts as (
    select
        h.run_id,
        h.backend,
        h.model,
        h.prompt_name,
        count(*) filter (where c.kind <> 'tag') as claims,
        count(*) filter (where c.kind <> 'tag' and c.verdict = 'consistent') as consistent,
        count(*) filter (where c.kind <> 'tag' and c.verdict = 'contradicted') as contradicted,
        count(*) filter (where c.kind <> 'tag' and c.verdict = 'unverifiable') as unverifiable,
        count(distinct c.hypothesis_id) filter (where c.kind <> 'tag' and c.verdict = 'contradicted')
            as answers_with_contradiction,
        count(*) filter (where c.kind = 'tag') as tags,
        count(*) filter (where c.kind = 'tag' and c.verdict = 'consistent') as tags_consistent,
        count(*) filter (where c.kind = 'tag' and c.verdict = 'contradicted') as tags_contradicted
    from claims as c
    join hypotheses as h on h.hypothesis_id = c.hypothesis_id
    group by h.run_id, h.backend, h.model, h.prompt_name
),
final as (
    select
        a.run_id,
        a.backend,
        a.model,
        a.prompt_name,
        a.answers,
        coalesce(k.claims, 0) as claims,
        coalesce(k.consistent, 0) as consistent,
        coalesce(k.contradicted, 0) as contradicted,
        coalesce(k.unverifiable, 0) as unverifiable,
        coalesce(k.consistent, 0) + coalesce(k.contradicted, 0) as checked,
        coalesce(k.contradicted, 0) / nullif(coalesce(k.consistent, 0) + coalesce(k.contradicted, 0), 0)
            as contradiction_rate,
        coalesce(k.answers_with_contradiction, 0) / a.answers as share_answers_contradicted,
        coalesce(k.tags, 0) as tags,
        coalesce(k.tags_consistent, 0) as tags_consistent,
        coalesce(k.tags_contradicted, 0) as tags_contradicted,
        coalesce(k.tags_consistent, 0) + coalesce(k.tags_contradicted, 0) as tags_checked,
        coalesce(k.tags_contradicted, 0) / nullif(coalesce(k.tags_consistent, 0) + coalesce(k.tags_contradicted, 0), 0)
            as tag_contradiction_rate
    from answers as a
    left join claim_counts as k
        on k.run_id = a.run_id and k.backend = a.backend and k.model = a.model and k.prompt_name = a.prompt_name
)
select * from final
