package orchestrator

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// RunAttemptAbandonParams names an attempt whose command stopped before it finished, and why.
type RunAttemptAbandonParams struct {
	RunID   int64
	Attempt int
	Reason  string
}

// RunAttemptAbandon closes the attempt as interrupted, without spending one of the run's attempts, and hands the
// run back to the queue; it returns false, changing nothing, when the attempt was closed already (the reaper got
// there first).
//
// The run's job goes back to available as the reaper hands it back, with one more attempt allowed, since
// River counts the next execution as one.
func (s *Store) RunAttemptAbandon(ctx context.Context, p RunAttemptAbandonParams) (bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, dbError(err, "begin abandon attempt")
	}
	defer func() { _ = tx.Rollback(ctx) }()

	var jobID *int64
	err = tx.QueryRow(ctx, `
		SELECT r.job_id FROM runs r JOIN run_attempts a ON a.run_id = r.id AND a.attempt = r.attempt
		WHERE r.id = $1 AND r.attempt = $2 AND r.status = 'running' AND a.finished_at IS NULL
		FOR NO KEY UPDATE OF r, a`, p.RunID, p.Attempt).Scan(&jobID)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, dbError(err, "lock abandoned attempt")
	}
	batch := &pgx.Batch{}
	batch.Queue(`UPDATE run_attempts SET status = 'interrupted', error = $3, finished_at = now()
		WHERE run_id = $1 AND attempt = $2`, p.RunID, p.Attempt, p.Reason)
	batch.Queue(`UPDATE runs SET status = 'queued', error = $2, updated_at = now() WHERE id = $1`, p.RunID, p.Reason)
	if jobID != nil {
		batch.Queue(`UPDATE river_job SET state = 'available', scheduled_at = now(), max_attempts = max_attempts + 1
			WHERE id = $1 AND state = 'running'`, *jobID)
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return false, dbError(err, "abandon attempt")
	}
	if err := tx.Commit(ctx); err != nil {
		return false, dbError(err, "commit abandon attempt")
	}
	return true, nil
}
