package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reaping: the heartbeats of running attempts, and the runs whose worker stopped sending them, or took their
// job and never started them, handed back to the queue.

// attemptHeartbeatSQL records a heartbeat of attempt $2 of run $1 while it is open.
const attemptHeartbeatSQL = `UPDATE run_attempts SET heartbeat_at = now()
	WHERE run_id = $1 AND attempt = $2 AND finished_at IS NULL`

// RunAttemptHeartbeat records that the worker running an attempt is alive. It returns false when the attempt
// is no longer running (the reaper closed it because the heartbeat had stopped, or the run was finished by
// someone else): the worker must then stop its command, since the run may be executing elsewhere.
func (s *Store) RunAttemptHeartbeat(ctx context.Context, runID int64, attempt int) (bool, error) {
	tag, err := s.pool.Exec(ctx, attemptHeartbeatSQL, runID, attempt)
	if err != nil {
		return true, dbError(err, "heartbeat")
	}
	return tag.RowsAffected() == 1, nil
}

// instanceIDSQL reads the id of the database.
const instanceIDSQL = `SELECT id FROM orchestrator_instance`

// InstanceID returns the random id of this database, the same for every orchestrator process that uses it.
func (s *Store) InstanceID(ctx context.Context) (string, error) {
	var id string
	if err := s.pool.QueryRow(ctx, instanceIDSQL).Scan(&id); err != nil {
		return "", dbError(err, "read instance id")
	}
	return id, nil
}

// AttemptKey names one attempt of one run.
type AttemptKey struct {
	RunID   int64
	Attempt int
}

// attemptsAbandonedSQL returns which of the attempts ($2) of the runs ($1) are unknown, finished, or have a
// heartbeat older than $3.
const attemptsAbandonedSQL = `
SELECT u.run_id, u.attempt
FROM unnest($1::bigint[], $2::int[]) AS u(run_id, attempt)
LEFT JOIN run_attempts a ON a.run_id = u.run_id AND a.attempt = u.attempt
WHERE a.run_id IS NULL OR a.finished_at IS NOT NULL OR a.heartbeat_at < now() - $3::interval`

// AttemptsAbandoned returns which of the given attempts no process should be running any more: attempts that
// are finished (or unknown), and attempts whose heartbeat is older than silence.
func (s *Store) AttemptsAbandoned(ctx context.Context, keys []AttemptKey, silence time.Duration) (map[AttemptKey]bool, error) {
	runIDs, attempts := make([]int64, len(keys)), make([]int32, len(keys))
	for i, k := range keys {
		runIDs[i], attempts[i] = k.RunID, int32(k.Attempt)
	}
	rows, err := s.pool.Query(ctx, attemptsAbandonedSQL, runIDs, attempts, silence)
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

// ReapedRun is a run whose worker stopped sending heartbeats, or died before it started the run, and was
// handed back to the queue.
type ReapedRun struct {
	RunID   int64
	Attempt int // 0 for a run that had not started
}

// runOrphanedAttemptsSQL finds the open attempts of running runs whose heartbeat is older than $1.
var runOrphanedAttemptsSQL = `
SELECT r.id, r.attempt, a.heartbeat_at FROM runs r JOIN run_attempts a ON a.run_id = r.id AND a.attempt = r.attempt
WHERE r.status = ` + sqlStatus(RunRunning) + ` AND a.finished_at IS NULL AND a.heartbeat_at < now() - $1::interval`

// RunReapOrphans finds running attempts whose heartbeat is older than silence: their process died (SIGKILL, a
// lost machine) or was cut off from the database without finishing them. Each is abandoned
// (RunAttemptAbandon). It also hands back the runs whose job a worker took from the queue longer than silence
// ago without starting them (its process died in between). It is safe to run from several processes at once:
// each orphan is handled once, under row locks.
func (s *Store) RunReapOrphans(ctx context.Context, silence time.Duration) ([]ReapedRun, error) {
	rows, err := s.pool.Query(ctx, runOrphanedAttemptsSQL, silence)
	if err != nil {
		return nil, dbError(err, "find orphaned runs")
	}
	type orphan struct {
		runID     int64
		attempt   int
		heartbeat time.Time
	}
	orphans, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (orphan, error) {
		var o orphan
		err := row.Scan(&o.runID, &o.attempt, &o.heartbeat)
		return o, err
	})
	if err != nil {
		return nil, dbError(err, "find orphaned runs")
	}
	var reaped []ReapedRun
	for _, o := range orphans {
		ok, err := s.RunAttemptAbandon(ctx, RunAttemptAbandonParams{
			RunID: o.runID, Attempt: o.attempt, Silence: silence,
			Reason: fmt.Sprintf("interrupted: the process running it stopped, or lost the database (no heartbeat since %s)",
				o.heartbeat.UTC().Format(time.RFC3339)),
		})
		if err != nil {
			return reaped, err
		}
		if ok {
			reaped = append(reaped, ReapedRun{RunID: o.runID, Attempt: o.attempt})
		}
	}
	if s.queue == nil {
		return reaped, nil
	}
	stalled, err := s.queue.StalledJobs(ctx, silence)
	if err != nil {
		return reaped, fmt.Errorf("find jobs taken but not started: %w", err)
	}
	for _, j := range stalled {
		ok, err := s.runJobReplace(ctx, j)
		if err != nil {
			return reaped, err
		}
		if ok {
			reaped = append(reaped, ReapedRun{RunID: j.RunID})
		}
	}
	return reaped, nil
}

// runLockStalledSQL locks the run $1 while it waits with the job $2, unless someone else holds it, and reads
// what a new job of it needs.
var runLockStalledSQL = `
SELECT r.max_attempts, m.queue, ` + runFailedAttemptsSQL + `
FROM runs r JOIN mappings m ON m.id = r.mapping_id
WHERE r.id = $1 AND r.job_id = $2 AND r.status IN (` + sqlWaits + `)
FOR NO KEY UPDATE OF r SKIP LOCKED`

// runJobReplace hands a run whose job a worker took but never started back to the queue under a new job,
// the old one cancelled, without spending an attempt. It changes nothing unless the job is still the run's and
// the run still waits.
func (s *Store) runJobReplace(ctx context.Context, j StalledJob) (bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, dbError(err, "begin replace job")
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var maxAttempts, failed int
	var queue string
	err = tx.QueryRow(ctx, runLockStalledSQL, j.RunID, j.JobID).Scan(&maxAttempts, &queue, &failed)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, dbError(err, "lock run of a stalled job")
	}
	if err := s.queue.CancelTx(ctx, tx, j.JobID); err != nil {
		return false, fmt.Errorf("cancel stalled job: %w", err)
	}
	if err := s.enqueueTx(ctx, tx, []RunJob{{RunID: j.RunID, MaxAttempts: max(maxAttempts-failed, 1), Queue: queue}}); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, dbError(err, "commit replace job")
	}
	return true, nil
}
