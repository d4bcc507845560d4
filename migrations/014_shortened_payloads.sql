-- A large delivery that cannot trigger a run (a storage bucket's list of changed files, a model's push) keeps a
-- shortened payload: its small members as received, a summary of each large one. payload_shortened_from is the
-- size in bytes of the body received then; NULL when payload is the body as received.
ALTER TABLE deliveries ADD COLUMN payload_shortened_from bigint CHECK (payload_shortened_from > 0);
