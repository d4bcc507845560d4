-- Run notifications: a mapping's notify targets (a JSON array of {url, format, on, secret_env}; the secret
-- itself stays in the environment variable named by secret_env), and one row per notification a finished run
-- fired, written in the same transaction as the run's final status, with every delivery attempt.
ALTER TABLE mappings ADD COLUMN notify jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(notify) = 'array');
-- A succeeded run recovers when the run of its mapping and ref that finished before it failed.
CREATE INDEX runs_finished_idx ON runs (mapping_id, ref, finished_at DESC) WHERE status IN ('succeeded', 'failed');

CREATE TABLE notifications (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       bigint      NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    event        text        NOT NULL CHECK (event IN ('failed', 'succeeded', 'recovered')),
    url          text        NOT NULL,
    format       text        NOT NULL CHECK (format IN ('json', 'slack')),
    secret_env   text        NOT NULL DEFAULT '',
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error   text        NOT NULL DEFAULT '',
    job_id       bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX notifications_run_idx ON notifications (run_id, id);

-- Each try to deliver a notification: when, how long, the HTTP status (NULL when no answer came), the error,
-- and the start of the receiver's answer.
CREATE TABLE notification_attempts (
    notification_id bigint      NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt         integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer     NOT NULL CHECK (duration_ms >= 0),
    status_code     integer,
    error           text        NOT NULL DEFAULT '',
    response        text        NOT NULL DEFAULT '',
    PRIMARY KEY (notification_id, attempt)
);
