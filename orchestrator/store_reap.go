package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RunAttemptHeartbeat records that the worker running an attempt is alive. It returns false when the attempt
// is no longer running (the reaper closed it because the heartbeat had stopped, or the run was finished by
// someone else): the worker must then stop its command, since the run may be executing elsewhere.
func (s *Store) RunAttemptHeartbeat(ctx context.Context, runID int64, attempt int) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE run_attempts SET heartbeat_at = now()
		WHERE run_id = $1 AND attempt = $2 AND finished_at IS NULL`, runID, attempt)
	if err != nil {
		return true, dbError(err, "heartbeat")
	}
	return tag.RowsAffected() == 1, nil
}

// ReapedRun is a run whose worker stopped sending heartbeats, and what became of it.
type ReapedRun struct {
	RunID   int64
	Attempt int
	Status  RunStatus // retrying when its job was handed back to the queue, failed when it had no attempt left
}

// RunReapOrphans finds running attempts whose heartbeat is older than silence: their process died (SIGKILL, a
// lost machine) without finishing them. Each is closed as interrupted; its queue job is made available again
// when it has attempts left, so another worker picks it up at once, and discarded otherwise, failing the run.
// It is safe to run from several processes at once: each orphan is handled once, under row locks.
func (s *Store) RunReapOrphans(ctx context.Context, silence time.Duration) ([]ReapedRun, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT r.id FROM runs r JOIN run_attempts a ON a.run_id = r.id AND a.attempt = r.attempt
		WHERE r.status = 'running' AND a.finished_at IS NULL AND a.heartbeat_at < now() - $1::interval`,
		silence)
	if err != nil {
		return nil, dbError(err, "find orphaned runs")
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, dbError(err, "find orphaned runs")
	}
	var reaped []ReapedRun
	// Jobs a worker took but whose run never started (the process died in between): River still holds them as
	// running. They are made available again without spending the attempt.
	rows, err = s.pool.Query(ctx, `
		UPDATE river_job j SET state = 'available', attempt = greatest(j.attempt - 1, 0), scheduled_at = now()
		FROM runs r
		WHERE r.job_id = j.id AND r.status IN ('queued', 'retrying') AND j.state = 'running'
			AND j.attempted_at < now() - $1::interval
		RETURNING r.id, r.status`, silence)
	if err != nil {
		return nil, dbError(err, "hand back unstarted jobs")
	}
	for rows.Next() {
		var r ReapedRun
		if err := rows.Scan(&r.RunID, &r.Status); err != nil {
			rows.Close()
			return nil, dbError(err, "hand back unstarted jobs")
		}
		reaped = append(reaped, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, dbError(err, "hand back unstarted jobs")
	}
	for _, id := range ids {
		r, err := s.reapOne(ctx, id, silence)
		if err != nil {
			return reaped, err
		}
		if r != nil {
			reaped = append(reaped, *r)
		}
	}
	return reaped, nil
}

func (s *Store) reapOne(ctx context.Context, runID int64, silence time.Duration) (*ReapedRun, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, dbError(err, "begin reap")
	}
	defer func() { _ = tx.Rollback(ctx) }()

	// Check again under lock: the worker may have finished, or another reaper got here first.
	var attempt int
	var jobID *int64
	var heartbeat time.Time
	err = tx.QueryRow(ctx, `
		SELECT r.attempt, r.job_id, a.heartbeat_at
		FROM runs r JOIN run_attempts a ON a.run_id = r.id AND a.attempt = r.attempt
		WHERE r.id = $1 AND r.status = 'running' AND a.finished_at IS NULL AND a.heartbeat_at < now() - $2::interval
		FOR NO KEY UPDATE OF r, a SKIP LOCKED`, runID, silence).Scan(&attempt, &jobID, &heartbeat)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, dbError(err, "lock orphaned run")
	}

	msg := fmt.Sprintf("interrupted: the process running it stopped (no heartbeat since %s)", heartbeat.UTC().Format(time.RFC3339))
	status := RunFailed
	if jobID != nil {
		// Hand the job back: River's rescuer would do the same, but only after its rescue delay, which must
		// stay above the longest timeout.
		var jobAttempt, jobMax int
		var state string
		err := tx.QueryRow(ctx, `SELECT attempt, max_attempts, state FROM river_job WHERE id = $1 FOR UPDATE`, *jobID).
			Scan(&jobAttempt, &jobMax, &state)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, dbError(err, "lock orphaned job")
		case state == "running" && jobAttempt < jobMax:
			status = RunRetrying
			_, err = tx.Exec(ctx, `UPDATE river_job SET state = 'available', scheduled_at = now() WHERE id = $1`, *jobID)
		case state == "running":
			_, err = tx.Exec(ctx, `UPDATE river_job SET state = 'discarded', finalized_at = now() WHERE id = $1`, *jobID)
		case state == "available" || state == "retryable" || state == "scheduled":
			status = RunRetrying // River rescued it already
		}
		if err != nil {
			return nil, dbError(err, "hand back orphaned job")
		}
	}

	batch := &pgx.Batch{}
	batch.Queue(`UPDATE run_attempts SET status = 'interrupted', error = $3, finished_at = now()
		WHERE run_id = $1 AND attempt = $2`, runID, attempt, msg)
	batch.Queue(`UPDATE runs SET status = $2, error = $3, updated_at = now(),
		finished_at = CASE WHEN $2 = 'failed' THEN now() END WHERE id = $1
		RETURNING mapping_id, ref, (SELECT m.notify FROM mappings m WHERE m.id = runs.mapping_id)`, runID, string(status), msg)
	results := tx.SendBatch(ctx, batch)
	fin := finishedRun{RunID: runID, Status: status}
	_, err = results.Exec()
	if err == nil {
		err = results.QueryRow().Scan(&fin.MappingID, &fin.Ref, &fin.Targets)
	}
	if closeErr := results.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return nil, dbError(err, "close orphaned attempt")
	}
	// A run that failed for good this way notifies like any other failure.
	if err := s.notifyTx(ctx, tx, fin); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, dbError(err, "commit reap")
	}
	return &ReapedRun{RunID: runID, Attempt: attempt, Status: status}, nil
}

// InstanceID returns the random id of this database, the same for every orchestrator process that uses it.
func (s *Store) InstanceID(ctx context.Context) (string, error) {
	var id string
	if err := s.pool.QueryRow(ctx, `SELECT id FROM orchestrator_instance`).Scan(&id); err != nil {
		return "", dbError(err, "read instance id")
	}
	return id, nil
}

// AttemptKey names one attempt of one run.
type AttemptKey struct {
	RunID   int64
	Attempt int
}

// AttemptsAbandoned returns which of the given attempts no process should be running any more: attempts that
// are finished (or unknown), and attempts whose heartbeat is older than silence.
func (s *Store) AttemptsAbandoned(ctx context.Context, keys []AttemptKey, silence time.Duration) (map[AttemptKey]bool, error) {
	runIDs, attempts := make([]int64, len(keys)), make([]int32, len(keys))
	for i, k := range keys {
		runIDs[i], attempts[i] = k.RunID, int32(k.Attempt)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT u.run_id, u.attempt
		FROM unnest($1::bigint[], $2::int[]) AS u(run_id, attempt)
		LEFT JOIN run_attempts a ON a.run_id = u.run_id AND a.attempt = u.attempt
		WHERE a.run_id IS NULL OR a.finished_at IS NOT NULL OR a.heartbeat_at < now() - $3::interval`,
		runIDs, attempts, silence)
	if err != nil {
		return nil, dbError(err, "check attempts")
	}
	out := map[AttemptKey]bool{}
	for rows.Next() {
		var k AttemptKey
		if err := rows.Scan(&k.RunID, &k.Attempt); err != nil {
			rows.Close()
			return nil, dbError(err, "check attempts")
		}
		out[k] = true
	}
	rows.Close()
	return out, dbError(rows.Err(), "check attempts")
}
