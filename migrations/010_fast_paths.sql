-- The generation of the mappings: every statement that writes mappings bumps it, so a process that keeps the
-- enabled mappings in memory can tell, within the statement that records a delivery, whether its copy is stale.
CREATE TABLE mapping_generation (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint  NOT NULL
);
INSERT INTO mapping_generation (generation) VALUES (1);

CREATE FUNCTION mapping_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mapping_generation SET generation = generation + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER mappings_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mappings
    FOR EACH STATEMENT EXECUTE FUNCTION mapping_generation_bump();

-- A run refused a slot of its mapping's concurrency is marked waiting until it starts: free slots go to the
-- marked runs first, oldest first, without counting the whole backlog of queued runs.
ALTER TABLE runs ADD COLUMN waiting_since timestamptz;
CREATE INDEX runs_waiting_idx ON runs (mapping_id, id) WHERE waiting_since IS NOT NULL AND status = 'queued';

-- The chart of a mapping's metrics reads its last succeeded runs that reported an output, without walking the
-- mapping's other runs.
CREATE INDEX runs_output_idx ON runs (mapping_id, id DESC) WHERE status = 'succeeded' AND output IS NOT NULL;
