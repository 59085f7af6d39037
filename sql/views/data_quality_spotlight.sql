-- data_quality_spotlight: how often each data_quality tag was given per true class of a run,
-- from the run's most recent hypothesis set (latest created_at among its 'ok' answers per
-- backend, model and prompt_sha256; the set `lens embed` uses by default).
-- share = count / tagged answers of that class.
-- key: (run_id, class_id, tag)
create or replace view data_quality_spotlight as
with sets as (
    select run_id, backend, model, prompt_sha256, max(created_at) as latest
    from hypotheses
    where status = 'ok'
    group by all
),
latest_set as (
    select *
    from sets
    qualify row_number() over (
        partition by run_id order by latest desc, backend, model, prompt_sha256
    ) = 1
),
answers as (
    select h.run_id, h.example_id, d.tag
    from hypotheses as h
    join latest_set as s
        on s.run_id = h.run_id
        and s.backend = h.backend
        and s.model = h.model
        and s.prompt_sha256 = h.prompt_sha256
    join hypothesis_dimensions as d
        on d.hypothesis_id = h.hypothesis_id and d.dimension = 'data_quality'
    where h.status = 'ok' and d.tag is not null
),
counts as (
    select a.run_id, p.label as class_id, a.tag, count(*) as count
    from answers as a
    join predictions as p on p.run_id = a.run_id and p.example_id = a.example_id
    group by all
),
final as (
    select
        c.run_id,
        c.class_id,
        k.class_name,
        c.tag,
        c.count,
        c.count / sum(c.count) over (partition by c.run_id, c.class_id) as share
    from counts as c
    left join classes as k on k.run_id = c.run_id and k.class_id = c.class_id
)
select * from final
