-- Operator actions: a cancel is requested before the worker stops the command, and runs are listed by trigger.
ALTER TABLE runs ADD COLUMN cancel_requested_at timestamptz;
CREATE INDEX runs_trigger_idx ON runs (trigger, id DESC);
CREATE INDEX runs_retry_of_idx ON runs (retry_of) WHERE retry_of IS NOT NULL;
-- "Run on latest" looks for the newest revision recorded for a ref.
CREATE INDEX delivery_refs_ref_idx ON delivery_refs (ref, delivery_id DESC);
