package orchestrator

import (
	"context"
)

// RunRetry creates a new run of the same mapping on the same revision as a finished run, with trigger manual
// and linked to the run it retries, and enqueues it. The webhook deduplication does not apply to it.
func (s *Store) RunRetry(ctx context.Context, id int64) (*Run, error) {
	orig, err := s.RunGetByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if !orig.Status.Finished() {
		return nil, Errorf(CodeConflict, "run %d is %s; only a finished run can be retried", id, orig.Status)
	}
	return s.runCreateManual(ctx, orig.MappingID, orig.Dataset, orig.RepoID, orig.Ref, orig.Revision, orig.OldRevision, &orig.ID)
}

// RunOnLatest creates a manual run of a mapping on the newest revision recorded for one of its refs and
// enqueues it. It is CodeConflict when no delivery has reported a revision the mapping watches.
func (s *Store) RunOnLatest(ctx context.Context, mappingName string) (*Run, error) {
	m, err := s.MappingGetByName(ctx, mappingName)
	if err != nil {
		return nil, err
	}
	if !m.Enabled {
		return nil, Errorf(CodeConflict, "mapping %q is disabled", m.Name)
	}
	// Newest first; the first ref the mapping watches, on a dataset it matches, with a valid sha, wins.
	rows, err := s.pool.Query(ctx, `
		SELECT d.repo_name, d.repo_id, r.ref, r.new_sha, coalesce(r.old_sha, '')
		FROM delivery_refs r JOIN deliveries d ON d.id = r.delivery_id
		WHERE d.repo_type = 'dataset' AND (d.scope = 'repo.content' OR d.scope LIKE 'repo.content.%')
			AND r.new_sha IS NOT NULL
		ORDER BY r.delivery_id DESC, r.position
		LIMIT 1000`)
	if err != nil {
		return nil, dbError(err, "find latest revision")
	}
	var dataset, repoID, ref, sha, old string
	found := false
	for rows.Next() {
		if err := rows.Scan(&dataset, &repoID, &ref, &sha, &old); err != nil {
			rows.Close()
			return nil, dbError(err, "find latest revision")
		}
		if m.MatchesDataset(dataset) && m.WatchesRef(ref) && ValidSha(sha) {
			found = true
			break
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, dbError(err, "find latest revision")
	}
	if !found {
		return nil, Errorf(CodeConflict, "no revision recorded yet for mapping %q: wait for a delivery", m.Name)
	}
	if !ValidSha(old) {
		old = ""
	}
	return s.runCreateManual(ctx, m.ID, dataset, repoID, ref, sha, old, nil)
}

func (s *Store) runCreateManual(ctx context.Context, mappingID int64, dataset, repoID, ref, revision, oldRevision string, retryOf *int64) (*Run, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, dbError(err, "begin")
	}
	defer func() { _ = tx.Rollback(ctx) }()

	var id int64
	var maxAttempts int
	var enabled bool
	var queue string
	err = tx.QueryRow(ctx, `SELECT max_attempts, enabled, queue FROM mappings WHERE id = $1`, mappingID).Scan(&maxAttempts, &enabled, &queue)
	if err != nil {
		return nil, dbError(err, "read mapping")
	}
	if !enabled {
		return nil, Errorf(CodeConflict, "the run's mapping is disabled")
	}
	err = tx.QueryRow(ctx, `
		INSERT INTO runs (mapping_id, dataset, repo_id, ref, revision, old_revision, trigger, retry_of, status, max_attempts)
		VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), 'manual', $7, `+sqlStatus(RunQueued)+`, $8)
		RETURNING id`, mappingID, dataset, repoID, ref, revision, oldRevision, retryOf, maxAttempts).Scan(&id)
	if err != nil {
		return nil, dbError(err, "insert run")
	}
	if err := s.enqueueTx(ctx, tx, []RunJob{{RunID: id, MaxAttempts: maxAttempts, Queue: queue}}); err != nil {
		return nil, dbError(err, "enqueue run")
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, dbError(err, "commit")
	}
	return s.RunGetByID(ctx, id)
}
