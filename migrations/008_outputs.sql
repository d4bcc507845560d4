-- What a run's command reported through RUN_OUTPUT: a JSON object such as
-- {"model": "acme/ticket-classifier", "model_revision": "<sha>", "metrics": {"f1": 0.91}}.
ALTER TABLE runs ADD COLUMN output jsonb;
ALTER TABLE run_attempts ADD COLUMN output jsonb;
