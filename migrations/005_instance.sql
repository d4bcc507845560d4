-- One random id per database (and schema): the processes of an attempt carry it in their environment, so that
-- an orchestrator only ever cleans up processes that belong to its own database.
CREATE TABLE orchestrator_instance (
    id        text    PRIMARY KEY DEFAULT md5(random()::text || clock_timestamp()::text),
    singleton boolean NOT NULL DEFAULT true UNIQUE CHECK (singleton)
);
INSERT INTO orchestrator_instance DEFAULT VALUES;
