-- training_curve: per run, epoch and class, the training and evaluation curves.
-- class_id = -1 / class_name = 'all' is the whole split. key: (run_id, epoch, class_id)
create or replace view training_curve as
with final as (
    select
        l.run_id,
        l.epoch,
        l.class_id,
        case when l.class_id = -1 then 'all' else c.class_name end as class_name,
        l.train_loss,
        l.train_accuracy,
        l.eval_loss,
        l.eval_accuracy,
        l.n_train,
        l.n_eval,
        l.lr,
        l.seconds
    from training_log as l
    left join classes as c on c.run_id = l.run_id and c.class_id = l.class_id
)
select * from final
