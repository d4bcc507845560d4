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

const runColumns = `r.id, r.mapping_id, m.name, r.dataset, r.repo_id, r.ref, r.revision, coalesce(r.old_revision, ''),
	r.trigger, r.delivery_id, r.retry_of, r.status, r.attempt, r.max_attempts, r.exit_code, coalesce(r.signal, ''),
	r.error, r.job_id, r.created_at, r.started_at, r.finished_at, r.cancel_requested_at, r.superseded_by, r.not_before,
	r.output`

// runDest returns the scan destinations of runColumns.
func runDest(r *Run) []any {
	return []any{&r.ID, &r.MappingID, &r.Mapping, &r.Dataset, &r.RepoID, &r.Ref, &r.Revision, &r.OldRevision,
		&r.Trigger, &r.DeliveryID, &r.RetryOf, &r.Status, &r.Attempt, &r.MaxAttempts, &r.ExitCode, &r.Signal,
		&r.Error, &r.JobID, &r.CreatedAt, &r.StartedAt, &r.FinishedAt, &r.CancelRequestedAt, &r.SupersededBy, &r.NotBefore, &r.Output}
}

func scanRun(row pgx.Row) (*Run, error) {
	var r Run
	if err := row.Scan(runDest(&r)...); err != nil {
		return nil, err
	}
	return &r, nil
}

// RunGetByID returns one run, or an error with CodeNotFound.
func (s *Store) RunGetByID(ctx context.Context, id int64) (*Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx,
		`SELECT `+runColumns+` FROM runs r JOIN mappings m ON m.id = r.mapping_id WHERE r.id = $1`, id))
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
	Trigger  string
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
		{p.Trigger, "r.trigger"},
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
	sql := `SELECT ` + runColumns + ` FROM runs r JOIN mappings m ON m.id = r.mapping_id`
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

// RunAttemptList returns the attempts of a run, first first.
func (s *Store) RunAttemptList(ctx context.Context, runID int64) ([]Attempt, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT attempt, argv, status, exit_code, coalesce(signal, ''), error, log_bytes, log_dropped, started_at, finished_at
		FROM run_attempts WHERE run_id = $1 ORDER BY attempt`, runID)
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

// RunLogTail returns at most maxBytes of the end of an attempt's captured output (whole chunks, so it may be a
// little less), and how many bytes of the output came before it and are not returned. It reads only the chunks
// it returns, newest first, however long the kept log is.
func (s *Store) RunLogTail(ctx context.Context, runID int64, attempt int, maxBytes int) ([]byte, int64, error) {
	var total int64
	var chunks [][]byte
	err := s.pool.QueryRow(ctx, `
		SELECT a.log_bytes, coalesce((
			SELECT array_agg(t.data ORDER BY t.seq DESC) FROM (
				SELECT l.seq, l.data, sum(octet_length(l.data)) OVER (ORDER BY l.seq DESC) AS upto
				FROM run_logs l WHERE l.run_id = a.run_id AND l.attempt = a.attempt
				ORDER BY l.seq DESC
			) t
			-- Every chunk that ends within the limit, and the first that does not (trimmed below).
			WHERE t.upto - octet_length(t.data) < $3), '{}')
		FROM run_attempts a WHERE a.run_id = $1 AND a.attempt = $2`, runID, attempt, maxBytes).Scan(&total, &chunks)
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
}

// RunForWork returns a run, its mapping and the names of the notification secrets, for a worker about to
// execute it, in one round trip. It locks nothing: RunAttemptStart decides on what it finds under its locks.
func (s *Store) RunForWork(ctx context.Context, runID int64) (*RunWork, error) {
	var run Run
	var m Mapping
	var secrets []string
	dest := append(runDest(&run), mappingDest(&m)...)
	err := s.pool.QueryRow(ctx, `SELECT `+runColumns+`, `+mappingColumnsOfM+`,
			(SELECT coalesce(array_agg(DISTINCT t->>'secret_env'), '{}') FROM mappings a, jsonb_array_elements(a.notify) AS t
				WHERE coalesce(t->>'secret_env', '') <> '')
		FROM runs r JOIN mappings m ON m.id = r.mapping_id WHERE r.id = $1`, runID).
		Scan(append(dest, &secrets)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Errorf(CodeNotFound, "run %d not found", runID)
	}
	if err != nil {
		return nil, dbError(err, "get run for work")
	}
	m.fromMillis()
	return &RunWork{Run: &run, Mapping: &m, SecretEnv: secrets}, nil
}

// RunAttemptStartParams starts an attempt of a run.
type RunAttemptStartParams struct {
	RunID   int64
	Attempt int
	Argv    []string
}

// AttemptInterrupted is the status of an attempt whose process stopped (shutdown or crash) before its command
// finished; the run goes on with another execution.
const AttemptInterrupted RunStatus = "interrupted"

// WaitError is returned by RunAttemptStart when the run may not start yet: its mapping runs as many runs as
// its concurrency allows, or an older run of the mapping is waiting for a slot first.
type WaitError struct {
	Reason string
	// Delay, when not zero, is how long until the run may start (its quiet period).
	Delay time.Duration
}

// Error implements error.
func (e *WaitError) Error() string { return "run must wait: " + e.Reason }

// RunAttemptStart marks the run running with the given attempt. It returns an error with CodeConflict when the
// run is already finished (cancelled or superseded meanwhile, or completed by an earlier execution of the same
// job), in which case the command must not run, and a *WaitError when the mapping's concurrency is used up or
// an older run of it waits first. An attempt left unfinished by a crashed process is closed as interrupted.
//
// It costs one round trip: BEGIN, the locks of the run and its mapping, the statement that decides and writes,
// and COMMIT travel in one pipelined batch. The statements run in order, so the decision's snapshot is taken
// after the locks were granted and sees every start committed before: the mapping's row lock serializes the
// starts of its runs across processes, and the counts hold. The lock is held for the decision and the commit
// alone, never across a round trip.
func (s *Store) RunAttemptStart(ctx context.Context, p RunAttemptStartParams) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return dbError(err, "begin attempt")
	}
	// A connection released inside a transaction (after an error) is closed by the pool, never reused.
	defer conn.Release()
	defer func() {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	var action, status string
	var running, concurrency, olderWaiting int
	var wait time.Duration
	var newer *int64
	batch := &pgx.Batch{}
	batch.Queue(`BEGIN`)
	// The decision reads a few rows through ordered index scans that stop early. A bitmap scan would also
	// visit every dead entry of River's index of running jobs, one per job since the last vacuum, where a plain
	// index scan marks them dead once and skips them after.
	batch.Queue(`SET LOCAL enable_bitmapscan = off`)
	// NO KEY UPDATE locks do not conflict with the key-share locks that inserting decisions and runs take
	// through their foreign keys, so starts and deliveries never block each other.
	batch.Queue(`SELECT 1 FROM runs r JOIN mappings m ON m.id = r.mapping_id WHERE r.id = $1 FOR NO KEY UPDATE OF r, m`, p.RunID)
	batch.Queue(runAttemptStartSQL, p.RunID, p.Attempt, p.Argv).QueryRow(func(row pgx.Row) error {
		return row.Scan(&action, &status, &running, &concurrency, &olderWaiting, &wait, &newer)
	})
	batch.Queue(`COMMIT`)
	err = conn.SendBatch(ctx, batch).Close()
	if errors.Is(err, pgx.ErrNoRows) {
		return Errorf(CodeNotFound, "run %d not found", p.RunID)
	}
	if err != nil {
		return dbError(err, "start attempt")
	}
	switch action {
	case "finished":
		return Errorf(CodeConflict, "run %d is already %s", p.RunID, status)
	case "supersede":
		return Errorf(CodeConflict, "run %d is superseded by run %d", p.RunID, *newer)
	case "quiet":
		return &WaitError{Reason: "the quiet period is not over", Delay: wait}
	case "slot":
		if running >= concurrency {
			return &WaitError{Reason: fmt.Sprintf("%d of %d runs of the mapping are running", running, concurrency)}
		}
		return &WaitError{Reason: fmt.Sprintf("%d older runs of the mapping wait for the free slots first", olderWaiting)}
	}
	return nil
}

// runAttemptStartSQL decides whether a run may start, and writes what follows, in one statement; it returns
// the decision and the figures behind it.
//
//   - finished: the run has a final status already; nothing is written.
//   - supersede: a webhook run that has not started gives way to a newer revision of its ref, unless the
//     mapping queues every revision (cancel_running also replaces runs waiting to be retried).
//   - quiet: its quiet period is not over; nothing is written.
//   - slot: the mapping's concurrency is used up, or older runs wait for the free slots first. Free slots go to
//     the oldest waiting runs, so runs start in the order their revisions arrived. The runs that wait are those
//     refused a slot before (waiting_since, which this marks) and those a worker has taken from the queue but
//     not started yet (their job running, their run queued); the rest of the backlog is not counted, so a long
//     queue costs nothing here.
//   - start: an attempt left unfinished by a crashed process is closed as interrupted, and the attempt and the
//     run become running.
const runAttemptStartSQL = `
WITH g AS MATERIALIZED (
	SELECT r.id, r.status, r.trigger, m.on_new_revision AS policy, m.concurrency,
		greatest(r.not_before - now(), interval '0') AS wait,
		(SELECT count(*) FROM runs x WHERE x.mapping_id = r.mapping_id AND x.status = 'running' AND x.id <> r.id) AS running,
		-- The older runs that wait for a slot: those refused one before, and those a worker has taken but not
		-- started yet. Each candidate is checked by its primary key, so that no plan walks the mapping's backlog
		-- (nor River's index of job kinds, which holds every retrain job).
		(SELECT count(*) FROM (
			SELECT w.id FROM runs w WHERE w.mapping_id = r.mapping_id AND w.waiting_since IS NOT NULL
				AND w.status = 'queued' AND w.id < r.id
			UNION
			SELECT (j.args->>'run_id')::bigint FROM river_job j WHERE j.state = 'running' AND (j.kind = 'retrain') IS TRUE
		) c WHERE coalesce((
			SELECT x.mapping_id = r.mapping_id AND x.id < r.id AND x.status = 'queued'
				AND coalesce(x.not_before, x.created_at) <= now()
				AND (m.on_new_revision = 'queue' OR x.trigger <> 'webhook' OR (
					SELECT n.id FROM runs n WHERE n.mapping_id = x.mapping_id AND n.id > x.id
						AND (n.ref = x.ref AND n.trigger = 'webhook' AND n.status <> 'superseded') IS TRUE
					ORDER BY n.id DESC LIMIT 1) IS NULL)
			FROM runs x WHERE x.id = c.id), false)) AS older,
		-- The newest run of the same ref, for the policies that supersede. It walks the mapping's runs newer
		-- than this one, newest first, and stops at the first match: at most the mapping's runs newer than this
		-- one (all of them when none matches), never the ref's older history. The conditions no index serves are wrapped in "IS TRUE" so that the planner,
		-- with statistics gone stale after a burst of deliveries, cannot prefer the dedup index (mapping, ref)
		-- and sort the whole history of the ref (the same in the count of older runs above).
		CASE WHEN m.on_new_revision <> 'queue' THEN (
			SELECT n.id FROM runs n WHERE n.mapping_id = r.mapping_id AND n.id > r.id
				AND (n.ref = r.ref AND n.trigger = 'webhook' AND n.status <> 'superseded') IS TRUE
			ORDER BY n.id DESC LIMIT 1) END AS newer
	FROM runs r JOIN mappings m ON m.id = r.mapping_id WHERE r.id = $1
), d AS (
	SELECT g.*, CASE
		WHEN g.status IN ('succeeded', 'failed', 'cancelled', 'superseded') THEN 'finished'
		WHEN g.newer IS NOT NULL AND g.trigger = 'webhook' AND g.policy <> 'queue'
			AND (g.status = 'queued' OR (g.status = 'retrying' AND g.policy = 'cancel_running')) THEN 'supersede'
		WHEN g.wait > interval '0' THEN 'quiet'
		WHEN g.running >= g.concurrency OR g.running + g.older >= g.concurrency THEN 'slot'
		ELSE 'start' END AS action
	FROM g
), superseded AS (
	UPDATE runs SET status = 'superseded', superseded_by = d.newer, finished_at = now(), updated_at = now(),
		error = 'superseded by run ' || d.newer || ' on a newer revision'
	FROM d WHERE runs.id = d.id AND d.action = 'supersede'
), waiting AS (
	UPDATE runs SET waiting_since = coalesce(runs.waiting_since, now())
	FROM d WHERE runs.id = d.id AND d.action = 'slot'
), interrupted AS (
	UPDATE run_attempts SET status = 'interrupted', finished_at = now(),
		error = 'interrupted: the orchestrator stopped while the command ran'
	FROM d WHERE run_attempts.run_id = d.id AND d.action = 'start' AND run_attempts.finished_at IS NULL
		AND run_attempts.attempt <> $2
), dropped AS (
	DELETE FROM run_logs USING d WHERE run_logs.run_id = d.id AND d.action = 'start' AND run_logs.attempt = $2
), attempt AS (
	INSERT INTO run_attempts (run_id, attempt, argv, status)
	SELECT d.id, $2, $3, 'running' FROM d WHERE d.action = 'start'
	ON CONFLICT (run_id, attempt) DO UPDATE SET argv = EXCLUDED.argv, status = 'running', exit_code = NULL,
		signal = NULL, error = '', log_bytes = 0, log_dropped = 0, started_at = now(), finished_at = NULL,
		heartbeat_at = now()
), started AS (
	UPDATE runs SET status = 'running', attempt = $2, started_at = coalesce(runs.started_at, now()),
		exit_code = NULL, signal = NULL, error = '', waiting_since = NULL, updated_at = now()
	FROM d WHERE runs.id = d.id AND d.action = 'start'
)
SELECT d.action, d.status, d.running, d.concurrency, d.older, d.wait, d.newer FROM d`

// RunAttemptFinishParams records how an attempt ended and what the run's status becomes.
type RunAttemptFinishParams struct {
	RunID         int64
	Attempt       int
	AttemptStatus RunStatus // succeeded, failed, cancelled or interrupted
	RunStatus     RunStatus // the run's new status: a final one, retrying, or queued after an interruption
	ExitCode      *int
	Signal        string
	Error         string
	Output        []byte // the JSON object from RUN_OUTPUT, or nil
	// NoTargets says that the run's mapping had no notify targets when the run started. The finish is then one
	// round trip without a transaction of its own; a target added while the run ran is still notified, in a
	// transaction that follows.
	NoTargets bool
	// WakeMapping, when set, is the run's mapping: the runs of it that wait for the slot this attempt frees
	// are found in the same round trip and their jobs woken once the finish is committed.
	WakeMapping int64
}

// RunAttemptFinish closes an attempt and moves the run to its next status. A run that an operator finished
// meanwhile keeps its status. When the run ends succeeded or failed, the notifications its mapping asks for are
// written and queued in the same transaction.
func (s *Store) RunAttemptFinish(ctx context.Context, p RunAttemptFinishParams) error {
	fin, err := s.runAttemptFinish(ctx, p)
	// Waiting runs are found only once the finish is committed, which an error that follows (notifying a target
	// added while the run ran) does not undo: the slot is free either way. A run not woken here is picked up
	// when its snooze ends.
	if len(fin.Waiting) > 0 && s.queue != nil {
		_ = s.queue.Wake(context.WithoutCancel(ctx), fin.Waiting)
	}
	return err
}

func (s *Store) runAttemptFinish(ctx context.Context, p RunAttemptFinishParams) (finishedRun, error) {
	if p.NoTargets {
		return s.runAttemptFinishAlone(ctx, p)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return finishedRun{}, dbError(err, "begin finish attempt")
	}
	defer func() { _ = tx.Rollback(ctx) }()
	batch := &pgx.Batch{}
	queueFinish(batch, p)
	results := tx.SendBatch(ctx, batch)
	fin, changed, err := readFinish(results, p.RunID)
	if cerr := results.Close(); err == nil && cerr != nil {
		err = dbError(cerr, "finish attempt")
	}
	if err != nil {
		return finishedRun{}, err
	}
	if changed {
		if err := s.notifyTx(ctx, tx, fin); err != nil {
			return finishedRun{}, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return finishedRun{}, dbError(err, "commit finish attempt")
	}
	if p.WakeMapping != 0 {
		fin.Waiting, _ = s.RunWaitingJobs(ctx, p.WakeMapping)
	}
	return fin, nil
}

// runAttemptFinishAlone finishes an attempt whose mapping had no notify targets in one round trip: the
// transaction that closes the attempt and moves the run, then, in a transaction of its own so that its failure
// cannot undo the finish, the lookup of the runs waiting for the slot.
func (s *Store) runAttemptFinishAlone(ctx context.Context, p RunAttemptFinishParams) (finishedRun, error) {
	batch := &pgx.Batch{}
	batch.Queue(`BEGIN`)
	queueFinish(batch, p)
	batch.Queue(`COMMIT`)
	if p.WakeMapping != 0 {
		batch.Queue(runWaitingJobsSQL, p.WakeMapping)
	}
	// A statement that fails leaves the transaction aborted; the pool then closes the connection instead of
	// reusing it, which ends the transaction.
	results := s.pool.SendBatch(ctx, batch)
	defer results.Close()
	if _, err := results.Exec(); err != nil {
		return finishedRun{}, dbError(err, "finish attempt")
	}
	fin, changed, err := readFinish(results, p.RunID)
	if err != nil {
		return finishedRun{}, err
	}
	if _, err := results.Exec(); err != nil {
		return finishedRun{}, dbError(err, "commit finish attempt")
	}
	if p.WakeMapping != 0 {
		if rows, err := results.Query(); err == nil {
			fin.Waiting, _ = pgx.CollectRows(rows, pgx.RowTo[int64])
		}
	}
	// The finish is committed: an error left to read belongs to the lookup of waiting runs.
	_ = results.Close()
	if changed && len(fin.Targets) > 0 {
		return fin, s.notifyLate(ctx, fin)
	}
	return fin, nil
}

// queueFinish queues the statements that close the attempt and move the run to its next status.
func queueFinish(batch *pgx.Batch, p RunAttemptFinishParams) {
	batch.Queue(`
		UPDATE run_attempts SET status = $3, exit_code = $4, signal = NULLIF($5, ''), error = $6, finished_at = now(),
			output = $7::jsonb
		WHERE run_id = $1 AND attempt = $2`,
		p.RunID, p.Attempt, string(p.AttemptStatus), p.ExitCode, p.Signal, p.Error, nullJSON(p.Output))
	// A run stopped for a newer revision (cancel_running) ends superseded rather than cancelled.
	batch.Queue(`
		UPDATE runs SET status = CASE WHEN $2 = 'cancelled' AND superseded_by IS NOT NULL THEN 'superseded' ELSE $2 END,
			error = CASE WHEN $2 = 'cancelled' AND superseded_by IS NOT NULL
				THEN 'stopped: superseded by run ' || superseded_by || ' on a newer revision' ELSE $5 END,
			exit_code = $3, signal = NULLIF($4, ''), updated_at = now(), finished_at = CASE WHEN $6 THEN now() END,
			output = coalesce($7::jsonb, output)
		WHERE id = $1 AND status NOT IN ('succeeded', 'failed', 'cancelled', 'superseded')
		RETURNING status, mapping_id, ref, (SELECT m.notify FROM mappings m WHERE m.id = runs.mapping_id)`,
		p.RunID, string(p.RunStatus), p.ExitCode, p.Signal, p.Error, p.RunStatus.Finished(), nullJSON(p.Output))
}

// readFinish reads the results of queueFinish: the run as it was left, and whether this call changed it (a run
// finished meanwhile is left alone).
func readFinish(results pgx.BatchResults, runID int64) (finishedRun, bool, error) {
	fin := finishedRun{RunID: runID}
	if _, err := results.Exec(); err != nil {
		return fin, false, dbError(err, "finish attempt")
	}
	err := results.QueryRow().Scan(&fin.Status, &fin.MappingID, &fin.Ref, &fin.Targets)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fin, false, dbError(err, "finish attempt")
	}
	return fin, err == nil, nil
}

// notifyLate writes and queues the notifications of a run whose mapping gained notify targets while it ran, in
// a transaction of its own after the one that finished the run.
func (s *Store) notifyLate(ctx context.Context, fin finishedRun) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return dbError(err, "begin notifications")
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := s.notifyTx(ctx, tx, fin); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return dbError(err, "commit notifications")
	}
	return nil
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

// RunLogAppend stores one chunk of output, deletes chunks that fell out of the kept window and updates the
// attempt's byte counts, in one round trip.
func (s *Store) RunLogAppend(ctx context.Context, p RunLogAppendParams) error {
	batch := &pgx.Batch{}
	if len(p.Data) > 0 {
		batch.Queue(`INSERT INTO run_logs (run_id, attempt, seq, data) VALUES ($1, $2, $3, $4)`,
			p.RunID, p.Attempt, p.Seq, p.Data)
	}
	if p.DropBelowSeq > 0 {
		batch.Queue(`DELETE FROM run_logs WHERE run_id = $1 AND attempt = $2 AND seq < $3`,
			p.RunID, p.Attempt, p.DropBelowSeq)
	}
	batch.Queue(`UPDATE run_attempts SET log_bytes = $3, log_dropped = $4 WHERE run_id = $1 AND attempt = $2`,
		p.RunID, p.Attempt, p.LogBytes, p.LogDropped)
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return dbError(err, fmt.Sprintf("append log of run %d", p.RunID))
	}
	return nil
}

// RunListRetries returns the runs that retry run id, oldest first.
func (s *Store) RunListRetries(ctx context.Context, id int64) ([]Run, error) {
	return s.runQuery(ctx, "list retries", `SELECT `+runColumns+` FROM runs r JOIN mappings m ON m.id = r.mapping_id
		WHERE r.retry_of = $1 ORDER BY r.id`, id)
}

// RunWakeWaiting wakes, through the queue, the jobs of the runs of a mapping that wait for its free slots: see
// RunWaitingJobs.
func (s *Store) RunWakeWaiting(ctx context.Context, mappingID int64) error {
	ids, err := s.RunWaitingJobs(ctx, mappingID)
	if err != nil || len(ids) == 0 || s.queue == nil {
		return err
	}
	return s.queue.Wake(ctx, ids)
}

// RunWaitingJobs returns the jobs of the oldest runs of a mapping that wait for a slot (refused one, their jobs
// snoozed), as many as the mapping has free slots, so that a worker that just freed one can wake them at once.
func (s *Store) RunWaitingJobs(ctx context.Context, mappingID int64) ([]int64, error) {
	rows, err := s.pool.Query(ctx, runWaitingJobsSQL, mappingID)
	if err != nil {
		return nil, dbError(err, "find waiting runs")
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, dbError(err, "find waiting runs")
	}
	return ids, nil
}

const runWaitingJobsSQL = `
	SELECT r.job_id FROM runs r JOIN river_job j ON j.id = r.job_id
	WHERE r.mapping_id = $1 AND r.waiting_since IS NOT NULL AND r.status = 'queued'
		AND j.state IN ('scheduled', 'available') AND j.scheduled_at > now()
		AND coalesce(r.not_before, r.created_at) <= now()
	ORDER BY r.id
	LIMIT greatest((SELECT concurrency FROM mappings WHERE id = $1)
		- (SELECT count(*) FROM runs WHERE mapping_id = $1 AND status = 'running'), 0)`

// nullJSON passes a JSON document as text, or NULL when there is none.
func nullJSON(doc []byte) *string {
	if len(doc) == 0 {
		return nil
	}
	v := string(doc)
	return &v
}

// RunOutputList returns the outputs of a mapping's last succeeded runs that reported one, oldest first, for
// the chart of how its metrics moved.
func (s *Store) RunOutputList(ctx context.Context, mappingID int64, limit int) ([]Run, error) {
	runs, err := s.runQuery(ctx, "list outputs", `SELECT `+runColumns+` FROM runs r JOIN mappings m ON m.id = r.mapping_id
		WHERE r.mapping_id >= $1 AND r.mapping_id <= $1 AND r.status = 'succeeded' AND r.output IS NOT NULL
		ORDER BY r.mapping_id, r.id DESC LIMIT $2`,
		mappingID, limit)
	slices.Reverse(runs)
	return runs, err
}

// QueueStats is how many runs wait and since when the oldest has waited.
type QueueStats struct {
	Waiting      int
	Running      int
	OldestWaitAt *time.Time
}

// RunQueueStats counts the waiting (queued or retrying) and running runs, through the partial index on active
// runs, so it stays cheap however many finished runs there are.
func (s *Store) RunQueueStats(ctx context.Context) (*QueueStats, error) {
	var q QueueStats
	err := s.pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE status IN ('queued', 'retrying')), count(*) FILTER (WHERE status = 'running'),
			min(created_at) FILTER (WHERE status IN ('queued', 'retrying'))
		FROM runs WHERE status IN ('queued', 'retrying', 'running')`).Scan(&q.Waiting, &q.Running, &q.OldestWaitAt)
	if err != nil {
		return nil, dbError(err, "queue stats")
	}
	return &q, nil
}
