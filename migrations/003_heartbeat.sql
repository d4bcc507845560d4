-- A running attempt's worker touches heartbeat_at every few seconds. An attempt whose heartbeat stopped belongs
-- to a process that died (SIGKILL, a lost machine): the reaper closes it and hands the job back to the queue.
ALTER TABLE run_attempts ADD COLUMN heartbeat_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX runs_running_idx ON runs (id) WHERE status = 'running';
