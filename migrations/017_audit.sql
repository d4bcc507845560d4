-- The audit trail: one row per state-changing request (retry, cancel, run on latest, mapping create, update,
-- disable) and per login attempt, kept for ORCHESTRATOR_AUDIT_RETENTION. status is the HTTP status answered;
-- auth is how the caller proved it holds the admin token, never the token itself.
CREATE TABLE audit_log (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    action  text        NOT NULL CHECK (action IN ('run.retry', 'run.cancel', 'mapping.run_latest', 'mapping.create',
                                                   'mapping.update', 'mapping.disable', 'login')),
    target  text        NOT NULL DEFAULT '',
    outcome text        NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
    status  integer     NOT NULL DEFAULT 0 CHECK (status >= 0),
    client  text        NOT NULL DEFAULT '',
    auth    text        NOT NULL CHECK (auth IN ('session', 'bearer', 'basic', 'none')),
    detail  text        NOT NULL DEFAULT ''
);
-- The listing is newest first by id, filtered by action, target or both: each filter has an index that serves
-- the order, so a page reads a page's worth of rows whatever the table holds. The retention's delete reads at.
CREATE INDEX audit_log_action_idx ON audit_log (action, id DESC);
CREATE INDEX audit_log_target_idx ON audit_log (target, id DESC);
CREATE INDEX audit_log_target_action_idx ON audit_log (target, action, id DESC);
CREATE INDEX audit_log_at_idx ON audit_log (at);
