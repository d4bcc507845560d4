-- A mapping's paths and ignore_paths: the globs of the files whose change makes a revision worth a run, and of
-- those whose change alone never does. Empty lists, the default, watch every file.
ALTER TABLE mappings
    ADD COLUMN paths text[] NOT NULL DEFAULT '{}',
    ADD COLUMN ignore_paths text[] NOT NULL DEFAULT '{}';
