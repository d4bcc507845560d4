-- The running runs, by mapping: a start counts its mapping's running runs, and a policy that cancels running
-- runs looks for them, without walking the mapping's backlog of queued runs. The reaper, which wants every
-- running run, reads the whole index; it stays as small as the number of runs running.
DROP INDEX runs_running_idx;
CREATE INDEX runs_running_idx ON runs (mapping_id, id) WHERE status = 'running';
