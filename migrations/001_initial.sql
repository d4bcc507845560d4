-- Mappings say which training command runs for which dataset and refs. A mapping is never deleted, only
-- disabled, so that its run history stays readable.
CREATE TABLE mappings (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_-]+$'),
    dataset      text        NOT NULL,
    refs         text[]      NOT NULL,
    command      text[]      NOT NULL CHECK (cardinality(command) > 0),
    workdir      text        NOT NULL DEFAULT '',
    env          jsonb       NOT NULL DEFAULT '{}',
    timeout_ms   bigint      NOT NULL CHECK (timeout_ms > 0),
    max_attempts integer     NOT NULL CHECK (max_attempts > 0),
    source       text        NOT NULL DEFAULT 'file',
    enabled      boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Deliveries are every authenticated, well-formed webhook request, kept with its raw body so that a user can see
-- why it did or did not train.
CREATE TABLE deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text        NOT NULL DEFAULT 'webhook',
    scope       text        NOT NULL,
    action      text        NOT NULL,
    repo_type   text        NOT NULL,
    repo_name   text        NOT NULL,
    repo_id     text        NOT NULL DEFAULT '',
    webhook_id  text        NOT NULL DEFAULT '',
    remote_addr text        NOT NULL DEFAULT '',
    payload     bytea       NOT NULL
);
CREATE INDEX deliveries_repo_name_idx ON deliveries (repo_name, id DESC);

-- The refs a delivery reported, in the order it reported them.
CREATE TABLE delivery_refs (
    delivery_id bigint  NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    ref         text    NOT NULL,
    old_sha     text,
    new_sha     text,
    PRIMARY KEY (delivery_id, position)
);

-- Runs are the history of training: one row per triggered (mapping, ref, revision), kept after the queue forgets
-- the job. River's rows are only the work queue.
CREATE TABLE runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mapping_id   bigint      NOT NULL REFERENCES mappings (id),
    dataset      text        NOT NULL,
    repo_id      text        NOT NULL DEFAULT '',
    ref          text        NOT NULL,
    revision     text        NOT NULL,
    old_revision text,
    trigger      text        NOT NULL,
    delivery_id  bigint REFERENCES deliveries (id),
    retry_of     bigint REFERENCES runs (id),
    status       text        NOT NULL,
    attempt      integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL,
    exit_code    integer,
    signal       text,
    error        text        NOT NULL DEFAULT '',
    job_id       bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Webhook deliveries are at least once: the same (mapping, repo, ref, revision) triggers one run, however often
-- it is delivered. Manual re-runs use another trigger and are not constrained.
CREATE UNIQUE INDEX runs_webhook_dedup_idx ON runs (mapping_id, repo_id, ref, revision) WHERE trigger = 'webhook';
CREATE INDEX runs_mapping_idx ON runs (mapping_id, id DESC);
CREATE INDEX runs_dataset_idx ON runs (dataset, id DESC);
CREATE INDEX runs_status_idx ON runs (status, id DESC);

-- One row per (delivery, mapping, ref): what was decided and why.
CREATE TABLE decisions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id bigint  NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    mapping_id  bigint REFERENCES mappings (id),
    ref         text    NOT NULL DEFAULT '',
    new_sha     text,
    decision    text    NOT NULL,
    reason      text    NOT NULL DEFAULT '',
    run_id      bigint REFERENCES runs (id)
);
CREATE INDEX decisions_delivery_idx ON decisions (delivery_id);
CREATE INDEX decisions_run_idx ON decisions (run_id) WHERE run_id IS NOT NULL;

-- Attempts of a run: each execution of its command.
CREATE TABLE run_attempts (
    run_id      bigint      NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    argv        text[]      NOT NULL DEFAULT '{}',
    status      text        NOT NULL,
    exit_code   integer,
    signal      text,
    error       text        NOT NULL DEFAULT '',
    log_bytes   bigint      NOT NULL DEFAULT 0,
    log_dropped bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (run_id, attempt)
);

-- Captured output of an attempt, in chunks so that it can be appended and read while the command runs. Only
-- the newest chunks are kept; run_attempts.log_dropped counts the bytes let go.
CREATE TABLE run_logs (
    run_id  bigint  NOT NULL,
    attempt integer NOT NULL,
    seq     integer NOT NULL,
    data    bytea   NOT NULL,
    PRIMARY KEY (run_id, attempt, seq),
    FOREIGN KEY (run_id, attempt) REFERENCES run_attempts (run_id, attempt) ON DELETE CASCADE
);
