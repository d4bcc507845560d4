-- The worker pool a mapping's runs go to: only orchestrator processes serving that queue run them.
ALTER TABLE mappings ADD COLUMN queue text NOT NULL DEFAULT 'runs' CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,63}$');
