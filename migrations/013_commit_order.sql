-- A ref's history, as the deliveries recorded it: each webhook run's old_revision is the revision its push
-- replaced. Walking from a revision to the runs whose old_revision it is finds what came after it in the
-- ref's history, which is what decides "newer", whatever order the deliveries arrived in.
CREATE INDEX runs_history_idx ON runs (mapping_id, ref, old_revision) WHERE trigger = 'webhook' AND old_revision IS NOT NULL;
