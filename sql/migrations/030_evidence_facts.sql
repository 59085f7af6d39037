-- 030_evidence_facts: what `lens evidence` stores beyond 001_core's evidence columns.
--
-- evidence gains the failure's classes (so the facts can be read without a join), the
-- frame-contact fact, the colour-term shares of both regions, and how typical the
-- dominant colours are of the true and predicted classes. All JSON as VARCHAR.
alter table evidence add column label integer;              -- true class id
alter table evidence add column pred integer;               -- predicted class id
alter table evidence add column edge_share float;           -- share of luma-gradient magnitude in the border ring
alter table evidence add column border_colours varchar;     -- JSON {colour term: share of border pixels}, largest first
alter table evidence add column centre_colours varchar;     -- JSON {colour term: share of centre pixels}
alter table evidence add column colour_share_true varchar;  -- JSON {"border": share, "centre": share}: share of the true
                                                            -- class's training images whose dominant colour in that
                                                            -- region is this image's
alter table evidence add column colour_share_pred varchar;  -- the same for the predicted class

-- Per-class statistics of the image facts over a dataset's training images, the
-- reference for evidence z-scores. Shared by every run on the same dataset source and
-- image side.   key: (dataset, image_side, class_id, fact)
create table class_image_stats (
    dataset     varchar not null,   -- dataset source spec as stored in runs.dataset
    image_side  integer not null,   -- images were measured at this size (side x side)
    class_id    integer not null,
    fact        varchar not null,   -- a numeric fact ('brightness', ...; 'sharpness' on the log scale), or
                                    -- 'border_colour=<term>' / 'centre_colour=<term>' (mean = share of images)
    n           integer not null,   -- training images of the class measured
    mean        double,
    std         double,             -- null for colour shares
    computed_at timestamp not null
);
