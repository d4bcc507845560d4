package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The files of revisions as the Hub listed them (revision_files), and what each run's check found
// (run_files, runs.files_check).

// revisionFilesKeep is how many listed revisions of a dataset are kept: the newest ones, which the next runs
// compare against.
const revisionFilesKeep = 50

// Statements of the listings of revisions.
const (
	// revisionFilesGetSQL reads the listing of revision $2 of dataset $1.
	revisionFilesGetSQL = `SELECT files FROM revision_files WHERE dataset = $1 AND revision = $2`
	// revisionFilesPutSQL keeps the listing $3 of revision $2 of dataset $1.
	revisionFilesPutSQL = `INSERT INTO revision_files (dataset, revision, files) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`
	// revisionFilesPruneSQL forgets the listings of dataset $1 older than its newest $2.
	revisionFilesPruneSQL = `DELETE FROM revision_files WHERE dataset = $1 AND listed_at < (
	SELECT listed_at FROM revision_files WHERE dataset = $1 ORDER BY listed_at DESC OFFSET $2 - 1 LIMIT 1)`
)

// RevisionFilesGet returns the kept listing of a revision of a dataset, and false when none is kept.
func (s *Store) RevisionFilesGet(ctx context.Context, dataset, revision string) ([]RevisionFile, bool, error) {
	var raw [][]any
	err := s.pool.QueryRow(ctx, revisionFilesGetSQL, dataset, revision).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, dbError(err, "read listed files")
	}
	files := make([]RevisionFile, 0, len(raw))
	for i, f := range raw {
		rf, ok := revisionFileFromJSON(f)
		if !ok {
			return nil, false, fmt.Errorf("listed files of %s@%s: entry %d is malformed", dataset, revision, i)
		}
		files = append(files, rf)
	}
	return files, true, nil
}

// revisionFileFromJSON reads one entry of revision_files.files: [path, oid, size, lfs].
func revisionFileFromJSON(f []any) (RevisionFile, bool) {
	if len(f) != 4 {
		return RevisionFile{}, false
	}
	path, ok1 := f[0].(string)
	oid, ok2 := f[1].(string)
	size, ok3 := f[2].(float64)
	lfs, ok4 := f[3].(string)
	return RevisionFile{Path: path, OID: oid, Size: int64(size), LFS: lfs}, ok1 && ok2 && ok3 && ok4
}

// RevisionFilesPut keeps the listing of a revision of a dataset. A listing kept already stays as it is: a
// revision's files never change.
func (s *Store) RevisionFilesPut(ctx context.Context, dataset, revision string, files []RevisionFile) error {
	raw := make([][]any, len(files))
	for i, f := range files {
		raw[i] = []any{f.Path, f.OID, f.Size, f.LFS}
	}
	doc, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("encode listed files: %w", err)
	}
	// One round trip; the prune, a statement of its own, sees the listing just kept.
	batch := &pgx.Batch{}
	batch.Queue(revisionFilesPutSQL, dataset, revision, doc)
	batch.Queue(revisionFilesPruneSQL, dataset, revisionFilesKeep)
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return dbError(err, "keep listed files")
	}
	return nil
}

// RunFilesRecordParams records what a worker found out about a run's changed files.
type RunFilesRecordParams struct {
	RunID int64
	// Files is what was found. Its Check is empty for a run that needs no check (the files are recorded to be
	// shown), and otherwise ends the run's pending check: FilesWatched or FilesUnknown let it go ahead,
	// FilesUnwatched skips it (TransitionSkip) with Files.Reason as its error and its decision's reason.
	Files RunFiles
}

// Statements of RunFilesRecord.
var (
	// runFilesLockSQL locks run $1 and reads its status, its check, its mapping, ref and mapping's policy.
	runFilesLockSQL = `SELECT r.status, coalesce(r.files_check, ''), r.mapping_id, r.ref, m.on_new_revision
FROM runs r JOIN mappings m ON m.id = r.mapping_id WHERE r.id = $1 FOR NO KEY UPDATE OF r`
	// runFilesInsertSQL records what the check of run $1 found.
	runFilesInsertSQL = `INSERT INTO run_files (run_id, total, added, modified, removed, files, unknown, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run_id) DO NOTHING`
	// runFilesCheckedSQL ends the pending check of run $1 with $2, letting it go ahead.
	runFilesCheckedSQL = `UPDATE runs SET files_check = $2, updated_at = now() WHERE id = $1`
	// decisionUnwatchedSQL turns the decision that queued run $1 into ignored, for reason $2.
	decisionUnwatchedSQL = `UPDATE decisions SET decision = ` + sqlDecisionIgnored + `, reason = $2
WHERE run_id = $1 AND decision = ` + sqlDecisionQueued
)

// RunFilesRecord records what a run's check of its changed files found, and what follows from it: a run whose
// revision changed no watched file is skipped (TransitionSkip) and the decision that queued it becomes
// ignored, with the reason; a run that goes ahead now replaces older runs of its ref as its mapping's policy
// says (with cancel_running, the running ones are asked to stop). It returns an error with CodeConflict when
// the run's check is not pending (checked already, or the run needs none) or, to skip it, the run is not
// queued any more (an operator cancelled it meanwhile).
func (s *Store) RunFilesRecord(ctx context.Context, p RunFilesRecordParams) error {
	f := p.Files
	if f.Check != "" && f.Check != FilesWatched && f.Check != FilesUnknown && f.Check != FilesUnwatched {
		return Errorf(CodeInvalid, "%q does not end a check of changed files", f.Check)
	}
	shown, err := json.Marshal(nonNil(f.Files))
	if err != nil {
		return fmt.Errorf("encode changed files: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return dbError(err, "begin record changed files")
	}
	defer func() { _ = tx.Rollback(ctx) }()

	var status RunStatus
	var check FilesCheck
	var mappingID int64
	var ref string
	var policy NewRevisionPolicy
	err = tx.QueryRow(ctx, runFilesLockSQL, p.RunID).Scan(&status, &check, &mappingID, &ref, &policy)
	if errors.Is(err, pgx.ErrNoRows) {
		return Errorf(CodeNotFound, "run %d not found", p.RunID)
	}
	if err != nil {
		return dbError(err, "lock run")
	}
	switch {
	case f.Check != "" && check != FilesPending:
		return Errorf(CodeConflict, "run %d has no pending check of its changed files", p.RunID)
	case f.Check == FilesUnwatched && !TransitionSkip.Allows(status):
		return Errorf(CodeConflict, "run %d is %s; only a queued run is skipped", p.RunID, status)
	}
	if _, err := tx.Exec(ctx, runFilesInsertSQL, p.RunID, f.Total, f.Added, f.Modified, f.Removed, shown, f.Unknown, f.Reason); err != nil {
		return dbError(err, "record changed files")
	}
	var stop []int64
	switch f.Check {
	case FilesUnwatched:
		if _, err := tx.Exec(ctx, runSkipSQL, p.RunID, f.Reason); err != nil {
			return dbError(err, "skip run")
		}
		if _, err := tx.Exec(ctx, decisionUnwatchedSQL, p.RunID, f.Reason); err != nil {
			return dbError(err, "record decision")
		}
	case FilesWatched, FilesUnknown:
		if _, err := tx.Exec(ctx, runFilesCheckedSQL, p.RunID, f.Check); err != nil {
			return dbError(err, "record check")
		}
		if policy == OnNewRevisionCancelRunning {
			// Held back while the run could still be skipped (scheduleRun).
			if stop, err = stopEarlier(ctx, tx, p.RunID, mappingID, ref); err != nil {
				return dbError(err, "stop older runs")
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return dbError(err, "commit changed files")
	}
	for _, jobID := range stop {
		_ = s.queue.Cancel(context.WithoutCancel(ctx), jobID)
	}
	return nil
}

// runFilesGetSQL reads what the check of run $1 found.
const runFilesGetSQL = `SELECT coalesce(r.files_check, ''), f.total, f.added, f.modified, f.removed, f.files, f.unknown,
	f.checked_at, f.reason
FROM run_files f JOIN runs r ON r.id = f.run_id WHERE f.run_id = $1`

// RunFilesGet returns what the check of a run's changed files found, or nil when no worker has looked yet.
func (s *Store) RunFilesGet(ctx context.Context, runID int64) (*RunFiles, error) {
	var f RunFiles
	err := s.pool.QueryRow(ctx, runFilesGetSQL, runID).Scan(&f.Check, &f.Total, &f.Added, &f.Modified, &f.Removed,
		&f.Files, &f.Unknown, &f.CheckedAt, &f.Reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, dbError(err, "read changed files")
	}
	return &f, nil
}

// nonNil returns s, or an empty slice for nil, so that it encodes as [].
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
