-- failure_claims: per answer (one failure, one backend/model/prompt), its claim counts for the review UI.
-- key: hypothesis_id
create or replace view failure_claims as
with counts as (
    select
        hypothesis_id,
        count(*) as claims,
        count(*) filter (where verdict = 'consistent') as consistent,
        count(*) filter (where verdict = 'contradicted') as contradicted,
        count(*) filter (where verdict = 'unverifiable') as unverifiable,
        list(claim || ' (vs ' || coalesce(fact, 'no fact') || ')' order by dimension, claim_index)
            filter (where verdict = 'contradicted') as contradicted_claims
    from claims
    group by hypothesis_id
),
final as (
    select
        h.run_id,
        h.example_id,
        h.hypothesis_id,
        h.backend,
        h.model,
        h.prompt_name,
        coalesce(c.claims, 0) as claims,
        coalesce(c.consistent, 0) as consistent,
        coalesce(c.contradicted, 0) as contradicted,
        coalesce(c.unverifiable, 0) as unverifiable,
        coalesce(c.contradicted_claims, []::varchar[]) as contradicted_claims
    from hypotheses as h
    left join counts as c on c.hypothesis_id = h.hypothesis_id
    where h.status = 'ok'
)
select * from final
