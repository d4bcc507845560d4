-- Smarter triggers: coalescing bursts, a concurrency limit per mapping, what a new revision does to older runs,
-- and the optional guards of catch-up and revision checks.
ALTER TABLE mappings
    ADD COLUMN quiet_period_ms bigint  NOT NULL DEFAULT 0 CHECK (quiet_period_ms >= 0),
    ADD COLUMN max_wait_ms     bigint  NOT NULL DEFAULT 0 CHECK (max_wait_ms >= 0),
    ADD COLUMN concurrency     integer NOT NULL DEFAULT 1 CHECK (concurrency > 0),
    ADD COLUMN on_new_revision text    NOT NULL DEFAULT 'supersede'
        CHECK (on_new_revision IN ('queue', 'supersede', 'cancel_running')),
    ADD COLUMN run_on_baseline boolean NOT NULL DEFAULT false,
    ADD COLUMN verify_revision boolean NOT NULL DEFAULT false;

-- A run replaced by a newer revision before it started (or stopped for one, with cancel_running) ends
-- 'superseded' and points at the run that replaced it. burst_started_at is when the first revision of a burst
-- arrived, so that max_wait bounds the quiet period across replacements; not_before is when the run may start.
ALTER TABLE runs
    ADD COLUMN superseded_by    bigint REFERENCES runs (id),
    ADD COLUMN burst_started_at timestamptz,
    ADD COLUMN not_before       timestamptz;
-- The scheduler looks for the waiting and running runs of a mapping and ref.
CREATE INDEX runs_mapping_active_idx ON runs (mapping_id, ref, id) WHERE status IN ('queued', 'retrying', 'running');
