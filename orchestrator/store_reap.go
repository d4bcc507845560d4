package orchestrator

import (
	"context"
	"time"
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
