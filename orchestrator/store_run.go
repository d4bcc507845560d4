package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reading runs, their attempts and logs, and creating the runs an operator asks for. The statements that move
// a run between statuses are in store_lifecycle.go; those that create runs for deliveries in store_ingest.go.

const runColumns = `r.id, r.mapping_id, m.name, r.dataset, r.repo_id, r.ref, r.revision, coalesce(r.old_revision, ''),
	r.trigger, r.delivery_id, r.retry_of, r.status, r.attempt, r.max_attempts, r.exit_code, coalesce(r.signal, ''),
	r.error, r.job_id, r.created_at, r.started_at, r.finished_at, r.cancel_requested_at, r.superseded_by, r.not_before,
	r.output, coalesce(r.files_check, '')`

// runDest returns the scan destinations of runColumns.
func runDest(r *Run) []any {
	return []any{&r.ID, &r.MappingID, &r.Mapping, &r.Dataset, &r.RepoID, &r.Ref, &r.Revision, &r.OldRevision,
		&r.Trigger, &r.DeliveryID, &r.RetryOf, &r.Status, &r.Attempt, &r.MaxAttempts, &r.ExitCode, &r.Signal,
		&r.Error, &r.JobID, &r.CreatedAt, &r.StartedAt, &r.FinishedAt, &r.CancelRequestedAt, &r.SupersededBy, &r.NotBefore, &r.Output,
		&r.FilesCheck}
}

// runSelectSQL selects runColumns; the statements that read runs add their conditions.
const runSelectSQL = `SELECT ` + runColumns + ` FROM runs r JOIN mappings m ON m.id = r.mapping_id`

func scanRun(row pgx.Row) (*Run, error) {
	var r Run
	if err := row.Scan(runDest(&r)...); err != nil {
		return nil, err
	}
	return &r, nil
}

// runGetByIDSQL reads the run $1.
const runGetByIDSQL = runSelectSQL + ` WHERE r.id = $1`

// RunGetByID returns one run, or an error with CodeNotFound.
func (s *Store) RunGetByID(ctx context.Context, id int64) (*Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx, runGetByIDSQL, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Errorf(CodeNotFound, "run %d not found", id)
	}
	if err != nil {
		return nil, dbError(err, "get run")
	}
	return r, nil
}

// RunListParams selects runs, newest first. Empty filters match everything.
type RunListParams struct {
	Dataset  string
	Mapping  string
	Status   RunStatus
	Trigger  Trigger
	Limit    int   // RunListLimitDefault when 0
	BeforeID int64 // only runs with a smaller id (keyset pagination); 0 for the newest
}

// Limits of RunList.
const (
	RunListLimitDefault = 50
	RunListLimitMax     = 500
)

// PageSize returns the number of runs a full page of RunList holds for p.
func (p RunListParams) PageSize() int {
	return clampLimit(p.Limit, RunListLimitDefault, RunListLimitMax)
}

// RunList returns runs matching p, newest first.
//
// The WHERE clause holds only the filters given, so that each combination is its own prepared statement with a
// plan of its own. When a filter has an index of (column, id DESC), the rows are ordered by that column and id,
// with the equality written as a range: the planner can then only serve the order from that index and stops
// after a page, where with a plain equality it may walk the primary key backwards through the whole table
// looking for the rows of a filter whose runs are old.
func (s *Store) RunList(ctx context.Context, p RunListParams) ([]Run, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	order := "r.id DESC"
	// By the index that orders the page, most selective first; the other filters only filter.
	indexed := []struct {
		value, column string
	}{
		{p.Mapping, "r.mapping_id"},
		{p.Dataset, "r.dataset"},
		{string(p.Status), "r.status"},
		{string(p.Trigger), "r.trigger"},
	}
	ordered := false
	for _, f := range indexed {
		if f.value == "" {
			continue
		}
		value := arg(f.value)
		if f.column == "r.mapping_id" {
			value = "(SELECT id FROM mappings WHERE name = " + value + ")"
		}
		if ordered {
			where = append(where, f.column+" = "+value)
			continue
		}
		where = append(where, f.column+" >= "+value+" AND "+f.column+" <= "+value)
		order = f.column + ", r.id DESC"
		ordered = true
	}
	if p.BeforeID > 0 {
		where = append(where, "r.id < "+arg(p.BeforeID))
	}
	sql := runSelectSQL
	if len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	sql += ` ORDER BY ` + order + ` LIMIT ` + arg(p.PageSize())
	return s.runQuery(ctx, "list runs", sql, args...)
}

// runQuery runs a query that selects runColumns and collects the runs.
func (s *Store) runQuery(ctx context.Context, what, sql string, args ...any) ([]Run, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbError(err, what)
	}
	runs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Run, error) {
		r, err := scanRun(row)
		if err != nil {
			return Run{}, err
		}
		return *r, nil
	})
	if err != nil {
		return nil, dbError(err, what)
	}
	return runs, nil
}

// runAttemptListSQL lists the attempts of the run $1, first first.
const runAttemptListSQL = `
SELECT attempt, argv, status, exit_code, coalesce(signal, ''), error, log_bytes, log_dropped, started_at, finished_at
FROM run_attempts WHERE run_id = $1 ORDER BY attempt`

// RunAttemptList returns the attempts of a run, first first.
func (s *Store) RunAttemptList(ctx context.Context, runID int64) ([]Attempt, error) {
	rows, err := s.pool.Query(ctx, runAttemptListSQL, runID)
	if err != nil {
		return nil, dbError(err, "list attempts")
	}
	attempts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Attempt, error) {
		var a Attempt
		err := row.Scan(&a.Number, &a.Argv, &a.Status, &a.ExitCode, &a.Signal, &a.Error, &a.LogBytes,
			&a.LogDropped, &a.StartedAt, &a.FinishedAt)
		return a, err
	})
	if err != nil {
		return nil, dbError(err, "list attempts")
	}
	return attempts, nil
}

// runLogTailSQL reads the bytes written by attempt $2 of run $1, and its newest log chunks, newest first, that
// hold the last $3 bytes.
const runLogTailSQL = `
SELECT a.log_bytes, coalesce((
	SELECT array_agg(t.data ORDER BY t.seq DESC) FROM (
		SELECT l.seq, l.data, sum(octet_length(l.data)) OVER (ORDER BY l.seq DESC) AS upto
		FROM run_logs l WHERE l.run_id = a.run_id AND l.attempt = a.attempt
		ORDER BY l.seq DESC
	) t
	-- Every chunk that ends within the limit, and the first that does not (trimmed by RunLogTail).
	WHERE t.upto - octet_length(t.data) < $3), '{}')
FROM run_attempts a WHERE a.run_id = $1 AND a.attempt = $2`

// RunLogTail returns at most maxBytes of the end of an attempt's captured output (whole chunks, so it may be a
// little less), and how many bytes of the output came before it and are not returned. It reads only the chunks
// it returns, newest first, however long the kept log is.
func (s *Store) RunLogTail(ctx context.Context, runID int64, attempt int, maxBytes int) ([]byte, int64, error) {
	var total int64
	var chunks [][]byte
	err := s.pool.QueryRow(ctx, runLogTailSQL, runID, attempt, maxBytes).Scan(&total, &chunks)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, dbError(err, "read log")
	}
	var kept [][]byte
	size := 0
	for _, data := range chunks {
		if size+len(data) > maxBytes {
			if size == 0 { // a single chunk larger than asked: keep its end
				data = data[len(data)-maxBytes:]
				kept = append(kept, data)
				size += len(data)
			}
			break
		}
		kept = append(kept, data)
		size += len(data)
	}
	slices.Reverse(kept)
	out := make([]byte, 0, size)
	for _, c := range kept {
		out = append(out, c...)
	}
	return out, total - int64(len(out)), nil
}

// mappingColumnsOfM is mappingColumns qualified by the alias m, for joins.
var mappingColumnsOfM = "m." + strings.Join(strings.Split(strings.Join(strings.Fields(mappingColumns), " "), ", "), ", m.")

// RunWork is what a worker needs to execute a run.
type RunWork struct {
	Run     *Run
	Mapping *Mapping
	// SecretEnv names the environment variables that hold the secrets of any mapping's notify targets: they
	// are the orchestrator's, and no command sees them.
	SecretEnv []string
	// FilesRecorded says that a worker recorded the run's changed files already (RunFilesRecord).
	FilesRecorded bool
}

// runForWorkSQL reads the run $1, its mapping, the variables every mapping's notify targets name, and whether
// the run's changed files are recorded.
var runForWorkSQL = `
SELECT ` + runColumns + `, ` + mappingColumnsOfM + `,
	(SELECT coalesce(array_agg(DISTINCT t->>'secret_env'), '{}') FROM mappings a, jsonb_array_elements(a.notify) AS t
		WHERE coalesce(t->>'secret_env', '') <> ''),
	EXISTS (SELECT 1 FROM run_files f WHERE f.run_id = r.id)
FROM runs r JOIN mappings m ON m.id = r.mapping_id WHERE r.id = $1`

// RunForWork returns a run, its mapping and the names of the notification secrets, for a worker about to
// execute it, in one round trip. It locks nothing: RunAttemptStart decides on what it finds under its locks.
func (s *Store) RunForWork(ctx context.Context, runID int64) (*RunWork, error) {
	var run Run
	var m Mapping
	var secrets []string
	var recorded bool
	dest := append(runDest(&run), mappingDest(&m)...)
	err := s.pool.QueryRow(ctx, runForWorkSQL, runID).Scan(append(dest, &secrets, &recorded)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Errorf(CodeNotFound, "run %d not found", runID)
	}
	if err != nil {
		return nil, dbError(err, "get run for work")
	}
	m.fromMillis()
	return &RunWork{Run: &run, Mapping: &m, SecretEnv: secrets, FilesRecorded: recorded}, nil
}

// RunLogAppendParams appends a chunk of captured output to an attempt's log.
type RunLogAppendParams struct {
	RunID        int64
	Attempt      int
	Seq          int
	Data         []byte
	DropBelowSeq int   // chunks with a smaller seq are deleted, to keep the log bounded
	LogBytes     int64 // bytes the command has written so far
	LogDropped   int64 // bytes no longer kept
}

// Statements that keep an attempt's log.
const (
	// runLogInsertSQL stores chunk $3 of the log of attempt $2 of run $1.
	runLogInsertSQL = `INSERT INTO run_logs (run_id, attempt, seq, data) VALUES ($1, $2, $3, $4)`
	// runLogDropSQL deletes the chunks before chunk $3.
	runLogDropSQL = `DELETE FROM run_logs WHERE run_id = $1 AND attempt = $2 AND seq < $3`
	// runAttemptLogBytesSQL records the bytes the command wrote ($3) and those no longer kept ($4).
	runAttemptLogBytesSQL = `UPDATE run_attempts SET log_bytes = $3, log_dropped = $4 WHERE run_id = $1 AND attempt = $2`
)

// RunLogAppend stores one chunk of output, deletes chunks that fell out of the kept window and updates the
// attempt's byte counts, in one round trip.
func (s *Store) RunLogAppend(ctx context.Context, p RunLogAppendParams) error {
	batch := &pgx.Batch{}
	if len(p.Data) > 0 {
		batch.Queue(runLogInsertSQL, p.RunID, p.Attempt, p.Seq, p.Data)
	}
	if p.DropBelowSeq > 0 {
		batch.Queue(runLogDropSQL, p.RunID, p.Attempt, p.DropBelowSeq)
	}
	batch.Queue(runAttemptLogBytesSQL, p.RunID, p.Attempt, p.LogBytes, p.LogDropped)
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return dbError(err, fmt.Sprintf("append log of run %d", p.RunID))
	}
	return nil
}

// runListRetriesSQL lists the runs that retry run $1, oldest first.
const runListRetriesSQL = runSelectSQL + ` WHERE r.retry_of = $1 ORDER BY r.id`

// RunListRetries returns the runs that retry run id, oldest first.
func (s *Store) RunListRetries(ctx context.Context, id int64) ([]Run, error) {
	return s.runQuery(ctx, "list retries", runListRetriesSQL, id)
}

// nullJSON passes a JSON document as text, or NULL when there is none.
func nullJSON(doc []byte) *string {
	if len(doc) == 0 {
		return nil
	}
	v := string(doc)
	return &v
}

// runOutputListSQL lists the last $2 succeeded runs of mapping $1 that reported an output, newest first.
var runOutputListSQL = runSelectSQL + `
WHERE r.mapping_id >= $1 AND r.mapping_id <= $1 AND r.status = ` + sqlStatus(RunSucceeded) + ` AND r.output IS NOT NULL
ORDER BY r.mapping_id, r.id DESC LIMIT $2`

// RunOutputList returns the outputs of a mapping's last succeeded runs that reported one, oldest first, for
// the chart of how its metrics moved.
func (s *Store) RunOutputList(ctx context.Context, mappingID int64, limit int) ([]Run, error) {
	runs, err := s.runQuery(ctx, "list outputs", runOutputListSQL, mappingID, limit)
	slices.Reverse(runs)
	return runs, err
}

// QueueStats is how many runs wait and since when the oldest has waited.
type QueueStats struct {
	Waiting      int
	Running      int
	OldestWaitAt *time.Time
}

// runQueueStatsSQL counts the waiting and running runs, and finds when the oldest waiting one was created.
var runQueueStatsSQL = `
SELECT count(*) FILTER (WHERE status IN (` + sqlWaits + `)), count(*) FILTER (WHERE status = ` + sqlStatus(RunRunning) + `),
	min(created_at) FILTER (WHERE status IN (` + sqlWaits + `))
FROM runs WHERE status IN (` + sqlActive + `)`

// RunQueueStats counts the waiting (queued or retrying) and running runs, through the partial index on active
// runs, so it stays cheap however many finished runs there are.
func (s *Store) RunQueueStats(ctx context.Context) (*QueueStats, error) {
	var q QueueStats
	err := s.pool.QueryRow(ctx, runQueueStatsSQL).Scan(&q.Waiting, &q.Running, &q.OldestWaitAt)
	if err != nil {
		return nil, dbError(err, "queue stats")
	}
	return &q, nil
}

// Runs an operator asks for.

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

// refLatestRevisionsSQL lists the last 1,000 revisions that content updates of datasets reported, newest first
// (Delivery.MayTrigger in SQL).
const refLatestRevisionsSQL = `
SELECT d.repo_name, d.repo_id, r.ref, r.new_sha, coalesce(r.old_sha, '')
FROM delivery_refs r JOIN deliveries d ON d.id = r.delivery_id
WHERE d.repo_type = 'dataset' AND (d.scope = 'repo.content' OR d.scope LIKE 'repo.content.%')
	AND r.new_sha IS NOT NULL
ORDER BY r.delivery_id DESC, r.position
LIMIT 1000`

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
	rows, err := s.pool.Query(ctx, refLatestRevisionsSQL)
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

// mappingRunSettingsSQL reads what a new run of mapping $1 needs of it.
const mappingRunSettingsSQL = `SELECT max_attempts, enabled, queue, cardinality(paths) + cardinality(ignore_paths) > 0
FROM mappings WHERE id = $1`

// runInsertManualSQL creates a manual run, queued, and returns its id. A run on latest ($7 NULL) of a mapping
// with paths or ignore_paths ($9) is checked as a delivery's run is; a retry is not.
var runInsertManualSQL = `
INSERT INTO runs (mapping_id, dataset, repo_id, ref, revision, old_revision, trigger, retry_of, status, max_attempts,
	files_check)
VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), ` + sqlTriggerManual + `, $7, ` + sqlStatus(RunQueued) + `, $8,
	CASE WHEN $9 AND $7::bigint IS NULL THEN ` + sqlLiteral(FilesPending) + ` END)
RETURNING id`

// runCreateManual creates a manual run and enqueues it, in one transaction, unless its mapping is disabled.
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
	var filtered bool
	err = tx.QueryRow(ctx, mappingRunSettingsSQL, mappingID).Scan(&maxAttempts, &enabled, &queue, &filtered)
	if err != nil {
		return nil, dbError(err, "read mapping")
	}
	if !enabled {
		return nil, Errorf(CodeConflict, "the run's mapping is disabled")
	}
	err = tx.QueryRow(ctx, runInsertManualSQL, mappingID, dataset, repoID, ref, revision, oldRevision, retryOf,
		maxAttempts, filtered).Scan(&id)
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
