package orchestrator

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Storing catch-up with the Hub: the revisions recorded for each ref, and how asking the Hub fares per dataset.

// IsDatasetPattern reports whether a mapping's dataset is a glob pattern (it holds one of * ? [ \) rather than
// one exact dataset name. Catch-up can only ask the Hub about exact names.
func IsDatasetPattern(dataset string) bool { return strings.ContainsAny(dataset, `*?[\`) }

// refRecordedRevisionsSQL returns the newest recorded revision of each ref of mapping $1.
var refRecordedRevisionsSQL = `
SELECT DISTINCT ON (ref) ref, new_sha FROM decisions d
WHERE mapping_id = $1 AND new_sha IS NOT NULL AND decision IN (` + sqlDecisionsRecording + `)
	AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.mapping_id = $1 AND c.ref = d.ref AND c.old_revision = d.new_sha
		AND c.trigger = ` + sqlTriggerWebhook + `)
ORDER BY ref, id DESC`

// RefRecordedRevisions returns, for each ref of the mapping that has one, the newest revision recorded for it:
// the revision of its newest decision (highest id) that carries one and is queued, duplicate or baseline, and
// that no recorded push replaced (a late delivery of an older push is not the newest). It is
// what catch-up compares with the Hub's refs; a ref without an entry has never been seen.
func (s *Store) RefRecordedRevisions(ctx context.Context, mappingID int64) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, refRecordedRevisionsSQL, mappingID)
	if err != nil {
		return nil, dbError(err, "read recorded revisions")
	}
	defer rows.Close()
	out := make(map[string]string)
	for rows.Next() {
		var ref, sha string
		if err := rows.Scan(&ref, &sha); err != nil {
			return nil, dbError(err, "read recorded revisions")
		}
		out[ref] = sha
	}
	if err := rows.Err(); err != nil {
		return nil, dbError(err, "read recorded revisions")
	}
	return out, nil
}

// ReconcileStatus is how catch-up with the Hub fares for one dataset, or the note it left for a dataset
// pattern it cannot ask about.
type ReconcileStatus struct {
	Dataset string `json:"dataset"`
	// LastOKAt is when the Hub last answered for the dataset; nil when it never did.
	LastOKAt *time.Time `json:"last_ok_at,omitempty"`
	// LastError, FailingSince and Failures describe the failures since the last answer.
	LastError    string     `json:"last_error,omitempty"`
	FailingSince *time.Time `json:"failing_since,omitempty"`
	Failures     int        `json:"failures"`
	// NextAttemptAt is when a failing dataset may be asked again; Held tells whether that is still ahead.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	Held          bool       `json:"held"`
	// Note explains a dataset catch-up does not ask about (a pattern).
	Note      string    `json:"note,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Failing reports whether the Hub has not answered for the dataset since its last failure.
func (r ReconcileStatus) Failing() bool { return r.FailingSince != nil }

const reconcileColumns = `dataset, last_ok_at, last_error, failing_since, failures, next_attempt_at,
	coalesce(next_attempt_at > now(), false), note, updated_at`

// Statements that read the catch-up status.
const (
	reconcileStatusListSQL = `SELECT ` + reconcileColumns + ` FROM reconcile_status ORDER BY dataset`
	reconcileStatusGetSQL  = `SELECT ` + reconcileColumns + ` FROM reconcile_status WHERE dataset = $1`
)

func scanReconcileStatus(row pgx.Row) (ReconcileStatus, error) {
	var r ReconcileStatus
	err := row.Scan(&r.Dataset, &r.LastOKAt, &r.LastError, &r.FailingSince, &r.Failures, &r.NextAttemptAt, &r.Held,
		&r.Note, &r.UpdatedAt)
	return r, err
}

// ReconcileStatusList returns the catch-up status of every dataset, by name.
func (s *Store) ReconcileStatusList(ctx context.Context) ([]ReconcileStatus, error) {
	rows, err := s.pool.Query(ctx, reconcileStatusListSQL)
	if err != nil {
		return nil, dbError(err, "list catch-up status")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ReconcileStatus, error) {
		return scanReconcileStatus(row)
	})
	if err != nil {
		return nil, dbError(err, "list catch-up status")
	}
	return list, nil
}

// ReconcileStatusGet returns the catch-up status of one dataset, or an error with CodeNotFound.
func (s *Store) ReconcileStatusGet(ctx context.Context, dataset string) (*ReconcileStatus, error) {
	r, err := scanReconcileStatus(s.pool.QueryRow(ctx, reconcileStatusGetSQL, dataset))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Errorf(CodeNotFound, "no catch-up status for dataset %s", dataset)
	}
	if err != nil {
		return nil, dbError(err, "get catch-up status")
	}
	return &r, nil
}

// reconcileStatusOKSQL records that the Hub answered for dataset $1, and returns when its failure had started.
const reconcileStatusOKSQL = `
WITH prev AS (SELECT failing_since FROM reconcile_status WHERE dataset = $1)
INSERT INTO reconcile_status AS r (dataset, last_ok_at, updated_at) VALUES ($1, now(), now())
ON CONFLICT (dataset) DO UPDATE SET last_ok_at = now(), last_error = '', failing_since = NULL, failures = 0,
	next_attempt_at = NULL, note = '', updated_at = now()
RETURNING (SELECT failing_since FROM prev)`

// ReconcileStatusOK records that the Hub answered for the dataset now, which ends a failure. It returns when
// the failure it ended had started, or nil when the dataset was not failing.
func (s *Store) ReconcileStatusOK(ctx context.Context, dataset string) (*time.Time, error) {
	var failingSince *time.Time
	err := s.pool.QueryRow(ctx, reconcileStatusOKSQL, dataset).Scan(&failingSince)
	if err != nil {
		return nil, dbError(err, "record catch-up success")
	}
	return failingSince, nil
}

// ReconcileFailure is a failed attempt to ask the Hub about a dataset.
type ReconcileFailure struct {
	Dataset string
	Error   string
	// RetryAfter is how long the Hub asked us to wait; the dataset is not asked again before.
	RetryAfter time.Duration
	// BackoffBase and BackoffMax shape the exponential backoff of repeated failures: the nth failure in a row
	// waits BackoffBase·2ⁿ⁻¹, at most BackoffMax (and at least RetryAfter).
	BackoffBase time.Duration
	BackoffMax  time.Duration
}

// reconcileStatusFailedSQL records failure $2 for dataset $1, and when it may be asked again: after the $3 ms
// the Hub asked for, and after $4 ms doubled for each failure in a row, at most $5 ms. It returns the status.
const reconcileStatusFailedSQL = `
WITH w AS (
	SELECT coalesce((SELECT failures FROM reconcile_status WHERE dataset = $1), 0) AS failures
), upsert AS (
	INSERT INTO reconcile_status AS r (dataset, last_error, failing_since, failures, next_attempt_at, updated_at)
	SELECT $1, $2, now(), w.failures + 1,
		now() + greatest($3::bigint, least($5::bigint, $4::bigint * power(2, least(w.failures, 30))::bigint))
			* interval '1 millisecond',
		now()
	FROM w
	ON CONFLICT (dataset) DO UPDATE SET last_error = excluded.last_error,
		failing_since = coalesce(r.failing_since, excluded.failing_since), failures = excluded.failures,
		next_attempt_at = excluded.next_attempt_at, note = '', updated_at = now()
	RETURNING *
)
SELECT dataset, last_ok_at, last_error, failing_since, failures, next_attempt_at,
	coalesce(next_attempt_at > now(), false), note, updated_at
FROM upsert`

// ReconcileStatusFailed records a failure for the dataset and when it may be asked again, and returns the
// dataset's status after it. The failure's start (FailingSince) stays that of the first failure in a row.
func (s *Store) ReconcileStatusFailed(ctx context.Context, f ReconcileFailure) (*ReconcileStatus, error) {
	msg := strings.ToValidUTF8(strings.ReplaceAll(f.Error, "\x00", ""), "")
	r, err := scanReconcileStatus(s.pool.QueryRow(ctx, reconcileStatusFailedSQL,
		f.Dataset, msg, f.RetryAfter.Milliseconds(), f.BackoffBase.Milliseconds(), f.BackoffMax.Milliseconds()))
	if err != nil {
		return nil, dbError(err, "record catch-up failure")
	}
	return &r, nil
}

// reconcileStatusNoteSQL records note $2 for dataset $1, which ends a failure.
const reconcileStatusNoteSQL = `
INSERT INTO reconcile_status AS r (dataset, note, updated_at) VALUES ($1, $2, now())
ON CONFLICT (dataset) DO UPDATE SET note = excluded.note, last_error = '', failing_since = NULL, failures = 0,
	next_attempt_at = NULL, updated_at = now()
WHERE r.note IS DISTINCT FROM excluded.note OR r.failing_since IS NOT NULL`

// ReconcileStatusNote records a note for a dataset (or pattern) that catch-up does not ask the Hub about.
func (s *Store) ReconcileStatusNote(ctx context.Context, dataset, note string) error {
	_, err := s.pool.Exec(ctx, reconcileStatusNoteSQL, dataset, note)
	return dbError(err, "record catch-up note")
}

// reconcileStatusPruneSQL deletes the status of every dataset not in $1.
const reconcileStatusPruneSQL = `DELETE FROM reconcile_status WHERE NOT (dataset = ANY($1::text[]))`

// ReconcileStatusPrune deletes the status of every dataset not in keep: those no enabled mapping names anymore.
func (s *Store) ReconcileStatusPrune(ctx context.Context, keep []string) error {
	if keep == nil {
		keep = []string{}
	}
	if _, err := s.pool.Exec(ctx, reconcileStatusPruneSQL, keep); err != nil {
		return dbError(err, "prune catch-up status")
	}
	return nil
}
