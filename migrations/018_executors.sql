-- Executors: where a mapping's commands run. executor is local (a child process of the worker) or hf-jobs (a
-- Hugging Face Job), whose settings hf_jobs holds as a JSON object ({namespace, image, space, flavor, secrets,
-- mount_dataset, labels}; secrets are names of the orchestrator's environment variables, never values).
ALTER TABLE mappings ADD COLUMN executor text NOT NULL DEFAULT 'local' CHECK (executor IN ('local', 'hf-jobs'));
ALTER TABLE mappings ADD COLUMN hf_jobs jsonb CHECK (hf_jobs IS NULL OR jsonb_typeof(hf_jobs) = 'object');
ALTER TABLE mappings ADD CONSTRAINT mappings_hf_jobs_executor CHECK ((executor = 'hf-jobs') = (hf_jobs IS NOT NULL));

-- One row per attempt that ran on an external executor: the Job behind it, its last seen stage, when it got
-- hardware and when it ended, and its estimated cost. The attempt's own row stays the record of its outcome.
CREATE TABLE attempt_executions (
    run_id              bigint      NOT NULL,
    attempt             integer     NOT NULL,
    executor            text        NOT NULL CHECK (executor IN ('local', 'hf-jobs')),
    external_id         text        NOT NULL DEFAULT '',
    namespace           text        NOT NULL DEFAULT '',
    url                 text        NOT NULL DEFAULT '',
    flavor              text        NOT NULL DEFAULT '',
    stage               text        NOT NULL DEFAULT '',
    message             text        NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now(),
    running_at          timestamptz,
    ended_at            timestamptz,
    unit_cost_micro_usd bigint      NOT NULL DEFAULT 0 CHECK (unit_cost_micro_usd >= 0),
    cost_micro_usd      bigint      NOT NULL DEFAULT 0 CHECK (cost_micro_usd >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, attempt),
    FOREIGN KEY (run_id, attempt) REFERENCES run_attempts (run_id, attempt) ON DELETE CASCADE
);
