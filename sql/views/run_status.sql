-- run_status: per run, the rows each stage wrote and which stages have run (`lens status`).
-- key: run_id
--   rows    struct of row counts per stage table (0 when a stage wrote nothing), in pipeline order
--   stages  list of {stage, status, finished_at} from stage_runs, oldest first (empty: none yet)
create or replace view run_status as
with row_counts as (
    select
        r.run_id,
        struct_pack(
            predictions := (select count(*) from prediction_rows as t where t.run_id = r.run_id),
            failures := (select count(*) from failures as t where t.run_id = r.run_id),
            training_log := (select count(*) from training_log as t where t.run_id = r.run_id),
            features := (select count(*) from features as t where t.run_id = r.run_id),
            samples := (select count(*) from samples as t where t.run_id = r.run_id),
            hypotheses := (select count(*) from hypotheses as t where t.run_id = r.run_id),
            evidence := (select count(*) from evidence as t where t.run_id = r.run_id),
            claims := (select count(*) from claims as t where t.run_id = r.run_id),
            embeddings := (select count(*) from embeddings as t where t.run_id = r.run_id),
            clusters := (select count(*) from clusters as t where t.run_id = r.run_id),
            cluster_members := (select count(*) from cluster_members as t where t.run_id = r.run_id),
            verdicts := (select count(*) from verdicts as t where t.run_id = r.run_id)
        ) as rows
    from runs as r
),
stages as (
    select
        run_id,
        list(struct_pack(stage := stage, status := status, finished_at := finished_at) order by finished_at) as stages
    from stage_runs
    group by run_id
),
final as (
    select
        r.run_id,
        r.kind,
        r.created_at,
        c.rows,
        coalesce(s.stages, []) as stages
    from runs as r
    inner join row_counts as c on c.run_id = r.run_id
    left join stages as s on s.run_id = r.run_id
)
select * from final
