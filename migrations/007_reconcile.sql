-- Catch-up with the Hub: one row per dataset catch-up asks the Hub about (and per dataset pattern it cannot ask
-- about, with a note). last_ok_at is when the Hub last answered for it; while it does not, failing_since says
-- since when, last_error why, failures how many passes in a row failed, and next_attempt_at when the dataset may
-- be asked again (the Hub's Retry-After, or an exponential backoff).
CREATE TABLE reconcile_status (
    dataset         text        PRIMARY KEY,
    last_ok_at      timestamptz,
    last_error      text        NOT NULL DEFAULT '',
    failing_since   timestamptz,
    failures        integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    next_attempt_at timestamptz,
    note            text        NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The newest revision recorded for a (mapping, ref): what catch-up compares with the Hub, and what tells a
-- catch-up delivery's first sight of a ref (a baseline) from a new revision.
CREATE INDEX decisions_mapping_ref_idx ON decisions (mapping_id, ref, id DESC) WHERE new_sha IS NOT NULL;
