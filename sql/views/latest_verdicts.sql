-- latest_verdicts: the verdict that counts for each (hypothesis, dimension, reviewer).
-- verdicts is append-only; a reviewer changes their mind by appending a newer row.
-- Ties on created_at are broken by verdict_id so the choice is deterministic.
-- key: (hypothesis_id, dimension, reviewer)
create or replace view latest_verdicts as
with ranked as (
    select
        *,
        row_number() over (
            partition by hypothesis_id, dimension, reviewer
            order by created_at desc, verdict_id desc
        ) as rn
    from verdicts
),
final as (
    select
        verdict_id,
        run_id,
        hypothesis_id,
        example_id,
        dimension,
        verdict,
        reviewer,
        note,
        created_at,
        source
    from ranked
    where rn = 1
)
select * from final
