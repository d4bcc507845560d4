package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The statements that move a run between statuses (lifecycle.go): each function here carries out the
// transitions its comment names, and no other code writes a run's or an attempt's status, apart from the
// creation of runs (RunQueued) when a delivery or an operator asks for one.

// historyDepthMax bounds the walks along a ref's recorded history (each delivery's oldSha → newSha): past it,
// two revisions count as of unknown order.
const historyDepthMax = 1000

// RunAttemptStartParams starts an attempt of a run.
type RunAttemptStartParams struct {
	RunID int64
	// Attempt is the attempt to start: one more than the run's last. A start whose attempt is not the next
	// one (another worker started it first) is refused with CodeConflict.
	Attempt int
	Argv    []string
	// Head, when not empty, is the revision the Hub names as the head of the run's ref, asked for after an
	// *UnorderedError: the head's run wins. The run's own revision passed as Head starts the run without
	// asking.
	Head string
}

// WaitError is returned by RunAttemptStart when the run may not start yet: its mapping runs as many runs as
// its concurrency allows, older runs of it wait for a slot first, or the run of the revision before it in its
// ref's history has not started (on_new_revision queue).
type WaitError struct {
	Reason string
	// Delay, when not zero, is how long until the run may start (its quiet period).
	Delay time.Duration
}

// Error implements error.
func (e *WaitError) Error() string { return "run must wait: " + e.Reason }

// UnorderedError is returned by RunAttemptStart when the recorded history of the run's ref cannot tell
// whether its revision is newer than that of another run of the ref (a delivery between them never came):
// the caller asks the Hub for the ref's head and starts again with RunAttemptStartParams.Head set.
type UnorderedError struct {
	RunID    int64  // the other run
	Revision string // its revision
}

// Error implements error.
func (e *UnorderedError) Error() string {
	return fmt.Sprintf("the recorded history does not order this run and run %d (revision %s)", e.RunID, e.Revision)
}

// RunAttemptStart carries out TransitionStart, or TransitionSupersede for a run that a newer revision of its
// ref replaces. It returns an error with CodeConflict when the run may not start: it is finished (cancelled
// or superseded meanwhile, or completed by an earlier execution of the same job), superseded now, or its
// attempt was started by another worker; the command must then not run. It returns a *WaitError when the
// run must wait, and an *UnorderedError when only the Hub can tell which revision is newer.
//
// "Newer" is later in the ref's history as the deliveries recorded it (each run's old revision is the one
// its push replaced), never later in arrival: a late delivery of an older push never replaces a newer one.
//
// It costs one round trip: BEGIN, the locks of the run and its mapping, the statement that decides and writes,
// and COMMIT travel in one pipelined batch. The statements run in order, so the decision's snapshot is taken
// after the locks were granted and sees every start committed before: the mapping's row lock serializes the
// starts of its runs across processes, and the counts hold. The lock is held for the decision and the commit
// alone, never across a round trip, and not across the commit's flush to disk either: the transaction commits
// without waiting for its flush (which releases the mapping's lock at once), and the flush is waited for by a
// second commit in the same batch (see startFlushSQL), before RunAttemptStart returns. The next start of the
// mapping's runs thus waits for a decision, not for an fsync, and a start is still durable before its command
// runs. A start seen by another transaction before its flush is in the WAL before anything that transaction
// commits, so no durable decision rests on a start a crash could lose.
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

	var d startDecision
	batch := &pgx.Batch{}
	batch.Queue(`BEGIN`)
	batch.Queue(noFlushWaitSQL)
	// The decision reads a few rows through ordered index scans that stop early.
	batch.Queue(noBitmapScansSQL)
	// Planning the decision costs more than running it (about 2.5 ms against 0.7): its plan is made once per
	// connection and kept, whatever the parameters (TestRunAttemptStartReadsLittle checks that it stays small).
	batch.Queue(planOnceSQL)
	// NO KEY UPDATE locks do not conflict with the key-share locks that inserting decisions and runs take
	// through their foreign keys, so starts and deliveries never block each other.
	batch.Queue(runLockWithMappingSQL, p.RunID)
	batch.Queue(runAttemptStartSQL, p.RunID, p.Attempt, p.Argv, p.Head).QueryRow(func(row pgx.Row) error {
		return row.Scan(&d.action, &d.status, &d.attempt, &d.running, &d.concurrency, &d.older, &d.wait,
			&d.newer, &d.newerRevision, &d.other, &d.otherRevision, &d.previous)
	})
	batch.Queue(`COMMIT`)
	batch.Queue(startFlushSQL)
	err = conn.SendBatch(ctx, batch).Close()
	if errors.Is(err, pgx.ErrNoRows) {
		return Errorf(CodeNotFound, "run %d not found", p.RunID)
	}
	if err != nil {
		return dbError(err, "start attempt")
	}
	return d.err(p)
}

// Statements of RunAttemptStart's transaction, beside runAttemptStartSQL.
const (
	// noBitmapScansSQL keeps the planner to plain index scans for the rest of the transaction.
	noBitmapScansSQL = `SET LOCAL enable_bitmapscan = off`
	// runLockWithMappingSQL locks the run $1 and its mapping.
	runLockWithMappingSQL = `SELECT 1 FROM runs r JOIN mappings m ON m.id = r.mapping_id WHERE r.id = $1 FOR NO KEY UPDATE OF r, m`
	// noFlushWaitSQL lets the transaction's commit return, and release its locks, before its WAL is flushed.
	noFlushWaitSQL = `SET LOCAL synchronous_commit = off`
	// startFlushSQL, sent after the COMMIT, runs in a transaction of its own (the implicit one that ends with
	// the batch) and takes a transaction id, so that its commit writes a commit record and waits, with the
	// session's synchronous_commit, for the WAL to be flushed up to it: the start committed before it is then
	// durable too. The batch's answer comes after that commit.
	startFlushSQL = `SELECT pg_current_xact_id()`
)

// startDecision is what runAttemptStartSQL decided, and the figures behind it.
type startDecision struct {
	action, status                string
	attempt, running, concurrency int
	older                         int
	wait                          time.Duration
	newer, other, previous        *int64
	newerRevision, otherRevision  *string
}

// err returns the error RunAttemptStart returns for d.
func (d startDecision) err(p RunAttemptStartParams) error {
	switch d.action {
	case "finished":
		return Errorf(CodeConflict, "run %d is already %s", p.RunID, d.status)
	case "taken":
		if d.status == string(RunRunning) {
			return Errorf(CodeConflict, "run %d is running attempt %d already", p.RunID, d.attempt)
		}
		return Errorf(CodeConflict, "run %d is at attempt %d already, not %d", p.RunID, d.attempt, p.Attempt-1)
	case "supersede":
		return Errorf(CodeConflict, "run %d is superseded by run %d", p.RunID, *d.newer)
	case "unordered":
		return &UnorderedError{RunID: *d.other, Revision: *d.otherRevision}
	case "quiet":
		return &WaitError{Reason: "the quiet period is not over", Delay: d.wait}
	case "order":
		return &WaitError{Reason: fmt.Sprintf("run %d, of the revision before this one in the ref's history, has not started", *d.previous)}
	case "slot":
		if d.running >= d.concurrency {
			return &WaitError{Reason: fmt.Sprintf("%d of %d runs of the mapping are running", d.running, d.concurrency)}
		}
		return &WaitError{Reason: fmt.Sprintf("%d older runs of the mapping wait for the free slots first", d.older)}
	}
	return nil
}

// planOnceSQL makes the statements that follow in its transaction use the plan made once for their prepared
// statement, rather than planning them again for each call's parameters.
const planOnceSQL = `SET LOCAL plan_cache_mode = force_generic_plan`

// runChild is the condition on c of a run of the same mapping, repository and ref as r whose push replaced
// r's revision: the next revision of the ref's history, as recorded.
var runChild = `c.mapping_id = r.mapping_id AND c.ref = r.ref AND c.trigger = ` + sqlTriggerWebhook + `
	AND c.repo_id = r.repo_id`

// runAttemptStartSQL decides whether a run may start, and writes what follows, in one statement; it returns
// the decision and the figures behind it.
//
//   - finished: the run has a final status already; nothing is written.
//   - taken: the run runs, or its last attempt is not the one before this one: another worker started it.
//   - supersede (TransitionSupersede): a webhook run that has not started gives way to a newer revision of its
//     ref, unless the mapping queues every revision (cancel_running also replaces runs waiting to be retried).
//     Newer is the nearest revision after it in the ref's recorded history that was not superseded itself;
//     with Head ($4) it is the Hub's head of the ref, when a run has it.
//   - unordered: no newer revision is recorded, but the newest other run of the ref (running, waiting, or
//     the last to finish) is not recorded as older either: the caller asks the Hub (Head).
//   - quiet: its quiet period is not over; nothing is written.
//   - order: with on_new_revision queue, the run of the revision before it in the ref's history has not
//     started: revisions start in the order of the history, whatever the order of their deliveries.
//   - slot: the mapping's concurrency is used up, or older runs wait for the free slots first. The runs that
//     wait are those refused a slot before (waiting_since, which this marks), oldest first, less those that
//     will give way to a newer revision; the rest of the backlog is not counted, so a long queue costs
//     nothing here.
//   - start (TransitionStart): the attempt and the run become running. An attempt is only ever left open
//     while its run runs, until its worker, or the reaper, ends it.
var runAttemptStartSQL = `
WITH g AS MATERIALIZED (
	SELECT r.id, r.status, r.trigger, r.attempt, r.revision, m.on_new_revision AS policy, m.concurrency,
		greatest(r.not_before - now(), interval '0') AS wait,
		(SELECT count(*) FROM runs x WHERE x.mapping_id = r.mapping_id AND x.status = ` + sqlStatus(RunRunning) + `
			AND x.id <> r.id) AS running,
		(SELECT count(*) FROM runs w WHERE w.mapping_id = r.mapping_id AND w.waiting_since IS NOT NULL
			AND w.status = ` + sqlStatus(RunQueued) + ` AND w.id < r.id AND coalesce(w.not_before, w.created_at) <= now()
			AND NOT (m.on_new_revision <> ` + sqlPolicyQueue + ` AND w.trigger = ` + sqlTriggerWebhook + ` AND EXISTS (
				SELECT 1 FROM runs c WHERE c.mapping_id = w.mapping_id AND c.ref = w.ref AND c.old_revision = w.revision
					AND c.trigger = ` + sqlTriggerWebhook + ` AND c.repo_id = w.repo_id AND ` + sqlMayReplace("c") + `))) AS older,
		nx.id AS newer, nx.revision AS newer_revision,
		CASE WHEN nx.id IS NULL AND r.trigger = ` + sqlTriggerWebhook + ` AND m.on_new_revision <> ` + sqlPolicyQueue + `
			AND $4 = '' THEN (
			-- The newest other run of the ref that is not superseded: among those running or waiting, and the
			-- last to finish. The walk back from this run's revision looks for it.
			SELECT o.id FROM (
				(SELECT a.id, a.revision FROM runs a WHERE a.mapping_id = r.mapping_id AND a.ref = r.ref
					AND a.status IN (` + sqlActive + `) AND a.trigger = ` + sqlTriggerWebhook + ` AND a.repo_id = r.repo_id
					AND a.id <> r.id AND ` + sqlMayReplace("a") + `
					ORDER BY a.id DESC LIMIT 1)
				UNION ALL
				(SELECT f.id, f.revision FROM runs f WHERE f.mapping_id = r.mapping_id AND f.ref = r.ref
					AND f.status IN (` + sqlList(RunSucceeded, RunFailed) + `) AND f.trigger = ` + sqlTriggerWebhook + `
					AND f.repo_id = r.repo_id
					ORDER BY f.finished_at DESC LIMIT 1)
				ORDER BY id DESC LIMIT 1) o
			WHERE NOT EXISTS (
				WITH RECURSIVE earlier(revision, old_revision, depth) AS (
					SELECT r.revision, r.old_revision, 0
					UNION ALL
					-- Each step is one lookup of the dedup index by revision.
					SELECT p.revision, p.old_revision, e.depth + 1 FROM earlier e, LATERAL (
						SELECT p.revision, p.old_revision FROM runs p
						WHERE p.mapping_id = r.mapping_id AND p.repo_id = r.repo_id AND p.ref = r.ref
							AND p.revision = e.old_revision AND p.trigger = ` + sqlTriggerWebhook + ` LIMIT 1) p
					WHERE e.revision <> o.revision AND e.depth < ` + fmt.Sprint(historyDepthMax) + `)
				SELECT 1 FROM earlier e WHERE e.revision = o.revision)) END AS other,
		-- The run of the revision before this one, when it has not started. It is looked up by revision in the
		-- dedup index: its status is wrapped in "IS TRUE" so that no plan prefers the index of active runs,
		-- which would walk the mapping's whole backlog.
		CASE WHEN r.trigger = ` + sqlTriggerWebhook + ` AND m.on_new_revision = ` + sqlPolicyQueue + `
			AND r.old_revision IS NOT NULL THEN (
			SELECT p.id FROM runs p WHERE p.mapping_id = r.mapping_id AND p.repo_id = r.repo_id AND p.ref = r.ref
				AND p.revision = r.old_revision AND p.trigger = ` + sqlTriggerWebhook + `
				AND (p.status = ` + sqlStatus(RunQueued) + ` AND p.attempt = 0) IS TRUE) END AS previous
	FROM runs r JOIN mappings m ON m.id = r.mapping_id
	LEFT JOIN LATERAL (
		SELECT n.id, n.revision FROM runs n
		WHERE r.trigger = ` + sqlTriggerWebhook + ` AND m.on_new_revision <> ` + sqlPolicyQueue + `
			AND $4 <> '' AND $4 <> r.revision
			AND n.mapping_id = r.mapping_id AND n.repo_id = r.repo_id AND n.ref = r.ref AND n.revision = $4
			AND n.trigger = ` + sqlTriggerWebhook + ` AND n.status <> ` + sqlStatus(RunSuperseded) + ` AND ` + sqlMayReplace("n") + `
		UNION ALL
		(WITH RECURSIVE later(id, revision, replaces, depth) AS (
			SELECT c.id, c.revision, c.status <> ` + sqlStatus(RunSuperseded) + ` AND ` + sqlMayReplace("c") + `, 1 FROM runs c
			WHERE r.trigger = ` + sqlTriggerWebhook + ` AND m.on_new_revision <> ` + sqlPolicyQueue + ` AND $4 = ''
				AND c.old_revision = r.revision AND ` + runChild + `
			UNION ALL
			-- OFFSET 0 keeps the lookup a subquery run once per step, through the history index: flattened into
			-- a join, its plan may scan the ref's whole history once instead.
			SELECT c.id, c.revision, c.replaces, l.depth + 1 FROM later l, LATERAL (
				SELECT c.id, c.revision, c.status <> ` + sqlStatus(RunSuperseded) + ` AND ` + sqlMayReplace("c") + ` AS replaces
				FROM runs c WHERE c.old_revision = l.revision AND ` + runChild + ` OFFSET 0) c
			WHERE NOT l.replaces AND l.depth < ` + fmt.Sprint(historyDepthMax) + `)
		SELECT l.id, l.revision FROM later l WHERE l.replaces ORDER BY l.depth, l.id LIMIT 1)
		LIMIT 1
	) nx ON true
	WHERE r.id = $1
), d AS (
	SELECT g.*, (SELECT o.revision FROM runs o WHERE o.id = g.other) AS other_revision, CASE
		WHEN g.status IN (` + sqlFinal + `) THEN 'finished'
		WHEN g.status NOT IN (` + sqlWaits + `) OR g.attempt <> $2 - 1 THEN 'taken'
		WHEN g.newer IS NOT NULL AND (g.status = ` + sqlStatus(RunQueued) + `
			OR (g.status = ` + sqlStatus(RunRetrying) + ` AND g.policy = ` + sqlPolicyCancelRunning + `)) THEN 'supersede'
		WHEN g.other IS NOT NULL AND g.status IN (` + sqlWaits + `) THEN 'unordered'
		WHEN g.wait > interval '0' THEN 'quiet'
		WHEN g.previous IS NOT NULL THEN 'order'
		WHEN g.running >= g.concurrency OR g.running + g.older >= g.concurrency THEN 'slot'
		ELSE 'start' END AS action
	FROM g
), superseded AS (
	UPDATE runs SET status = ` + sqlStatus(TransitionSupersede.To()) + `, superseded_by = d.newer, finished_at = now(),
		updated_at = now(),
		error = 'superseded by run ' || d.newer || ' on revision ' || left(d.newer_revision, 12) || ', newer in the history of ' || runs.ref
	FROM d WHERE runs.id = d.id AND d.action = 'supersede'
), waiting AS (
	UPDATE runs SET waiting_since = CASE WHEN d.action = 'slot' THEN coalesce(runs.waiting_since, now()) END
	FROM d WHERE runs.id = d.id AND d.action IN ('slot', 'order')
), attempt AS (
	INSERT INTO run_attempts (run_id, attempt, argv, status)
	SELECT d.id, $2, $3, ` + sqlStatus(TransitionStart.AttemptStatus()) + ` FROM d WHERE d.action = 'start'
), started AS (
	UPDATE runs SET status = ` + sqlStatus(TransitionStart.To()) + `, attempt = $2, started_at = coalesce(runs.started_at, now()),
		exit_code = NULL, signal = NULL, error = '', waiting_since = NULL, updated_at = now()
	FROM d WHERE runs.id = d.id AND d.action = 'start'
)
SELECT d.action, d.status, d.attempt, d.running, d.concurrency, d.older, d.wait, d.newer, d.newer_revision,
	d.other, d.other_revision, d.previous FROM d`

// RunAttemptFinishParams records how an attempt ended.
type RunAttemptFinishParams struct {
	RunID   int64
	Attempt int
	// Transition is what the end of the attempt does to the run: TransitionSucceed, TransitionFail,
	// TransitionRetry, TransitionInterrupt (a shutdown) or TransitionCancel (an operator's cancel, or, for a
	// run that a newer revision stopped, TransitionSupersede).
	Transition Transition
	ExitCode   *int
	Signal     string
	Error      string
	Output     []byte // the JSON object from RUN_OUTPUT, or nil
	// NoTargets says that the run's mapping had no notify targets when the run started. The finish is then one
	// round trip without a transaction of its own; a target added while the run ran is still notified, in a
	// transaction that follows.
	NoTargets bool
	// WakeMapping, when set, is the run's mapping: the runs of it that wait for the slot this attempt frees
	// are found in the same round trip and their jobs woken once the finish is committed.
	WakeMapping int64
}

// RunAttemptFinish closes an attempt with p.Transition. It changes nothing when the attempt is not the run's
// open attempt any more (the reaper closed it and handed the run to another worker, or an operator finished
// the run). When the run ends succeeded or failed, the notifications its mapping asks for are written and
// queued in the same transaction.
func (s *Store) RunAttemptFinish(ctx context.Context, p RunAttemptFinishParams) error {
	if !p.Transition.Allows(RunRunning) || p.Transition == TransitionStart {
		return Errorf(CodeInvalid, "%s does not end an attempt", p.Transition)
	}
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
// transaction that closes the attempt and moves the run, then, outside it, the lookup of the runs waiting for
// the slot.
func (s *Store) runAttemptFinishAlone(ctx context.Context, p RunAttemptFinishParams) (finishedRun, error) {
	batch := &pgx.Batch{}
	// A batch runs in one implicit transaction: the finish commits before the lookup, so that the lookup's
	// failure cannot undo it.
	batch.Queue(`BEGIN`)
	batch.Queue(planOnceSQL)
	queueFinish(batch, p)
	batch.Queue(`COMMIT`)
	if p.WakeMapping != 0 {
		batch.Queue(runWaitingJobsSQL, p.WakeMapping)
	}
	// A statement that fails leaves the transaction aborted; the pool then closes the connection instead of
	// reusing it, which ends the transaction.
	results := s.pool.SendBatch(ctx, batch)
	defer results.Close()
	for range 2 { // BEGIN, and the plan's setting
		if _, err := results.Exec(); err != nil {
			return finishedRun{}, dbError(err, "finish attempt")
		}
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

// runAttemptFinishSQL closes the attempt, if it is still open, and moves the run with the transition, in one
// statement: a run whose attempt was closed by someone else is left alone. A run stopped for a newer revision
// (cancel_running, which sets superseded_by) ends superseded rather than cancelled.
var runAttemptFinishSQL = `
WITH a AS (
	UPDATE run_attempts SET status = $3, exit_code = $5, signal = NULLIF($6, ''), error = $7, finished_at = now(),
		output = $8::jsonb
	WHERE run_id = $1 AND attempt = $2 AND finished_at IS NULL
	RETURNING run_id
)
UPDATE runs SET
	status = CASE WHEN $4 = ` + sqlStatus(RunCancelled) + ` AND superseded_by IS NOT NULL
		THEN ` + sqlStatus(RunSuperseded) + ` ELSE $4 END,
	error = CASE WHEN $4 = ` + sqlStatus(RunCancelled) + ` AND superseded_by IS NOT NULL
		THEN 'stopped: superseded by run ' || superseded_by || ' on a newer revision' ELSE $7 END,
	exit_code = $5, signal = NULLIF($6, ''), updated_at = now(),
	finished_at = CASE WHEN $4 IN (` + sqlFinal + `) THEN now() END,
	output = coalesce($8::jsonb, output)
WHERE runs.id = $1 AND runs.attempt = $2 AND runs.status = ` + sqlStatus(RunRunning) + ` AND EXISTS (SELECT 1 FROM a)
RETURNING runs.status, runs.mapping_id, runs.ref, (SELECT m.notify FROM mappings m WHERE m.id = runs.mapping_id)`

// queueFinish queues the statement that closes the attempt and moves the run to its next status.
func queueFinish(batch *pgx.Batch, p RunAttemptFinishParams) {
	batch.Queue(runAttemptFinishSQL, p.RunID, p.Attempt, string(p.Transition.AttemptStatus()),
		string(p.Transition.To()), p.ExitCode, p.Signal, p.Error, nullJSON(p.Output))
}

// readFinish reads the result of queueFinish: the run as it was left, and whether this call changed it.
func readFinish(results pgx.BatchResults, runID int64) (finishedRun, bool, error) {
	fin := finishedRun{RunID: runID}
	err := results.QueryRow().Scan(&fin.Status, &fin.MappingID, &fin.Ref, &fin.Targets)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fin, false, dbError(err, "finish attempt")
	}
	return fin, err == nil, nil
}

// RunAttemptAbandonParams names an attempt whose command stopped, or was lost, before it finished, and why.
type RunAttemptAbandonParams struct {
	RunID   int64
	Attempt int
	Reason  string
	// Silence, when not zero, abandons the attempt only if its heartbeat is older than that: the reaper's
	// check that its worker is gone. The worker that fenced its own command passes zero.
	Silence time.Duration
}

// runAttemptOpenSQL finds the open attempt $2 of the running run $1, when its heartbeat is older than $3 (or
// $3 is 0), with what abandoning it needs: the run's job, the attempts it has left and whether it is to be
// cancelled. runAttemptLockSQL locks the attempt and its run, waiting for them; runAttemptLockOrSkipSQL skips
// them when someone else holds them.
var (
	runAttemptOpenSQL = `
SELECT r.job_id, r.max_attempts, m.queue, r.cancel_requested_at IS NOT NULL, ` + runFailedAttemptsSQL + `
FROM runs r JOIN run_attempts a ON a.run_id = r.id AND a.attempt = r.attempt JOIN mappings m ON m.id = r.mapping_id
WHERE r.id = $1 AND r.attempt = $2 AND r.status = ` + sqlStatus(RunRunning) + ` AND a.finished_at IS NULL
	AND ($3::interval = interval '0' OR a.heartbeat_at < now() - $3::interval)`
	runAttemptLockSQL       = runAttemptOpenSQL + ` FOR NO KEY UPDATE OF r, a`
	runAttemptLockOrSkipSQL = runAttemptLockSQL + ` SKIP LOCKED`
)

// RunAttemptAbandon carries out TransitionInterrupt for an attempt whose worker cannot finish it (the worker
// fenced its command after losing the database, or the reaper found it silent): the attempt is closed as
// interrupted, which spends none of the run's attempts, and the run is handed to the queue again under a new
// job, the old one cancelled. A run an operator asked to cancel (or that a newer revision stopped) is
// cancelled (or superseded) instead. It returns false, changing nothing, when the attempt is not open any
// more (someone got there first) or, with Silence, its heartbeat is recent.
func (s *Store) RunAttemptAbandon(ctx context.Context, p RunAttemptAbandonParams) (bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, dbError(err, "begin abandon attempt")
	}
	defer func() { _ = tx.Rollback(ctx) }()

	var jobID *int64
	var maxAttempts, failed int
	var queue string
	var cancelRequested bool
	// The reaper skips a run that someone else holds; the worker that fenced itself waits for it.
	lock := runAttemptLockSQL
	if p.Silence > 0 {
		lock = runAttemptLockOrSkipSQL
	}
	err = tx.QueryRow(ctx, lock, p.RunID, p.Attempt, p.Silence).
		Scan(&jobID, &maxAttempts, &queue, &cancelRequested, &failed)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, dbError(err, "lock abandoned attempt")
	}
	t := TransitionInterrupt
	if cancelRequested {
		t = TransitionCancel
	}
	// The run ends queued, cancelled or superseded: none of them notifies.
	_, changed, err := func() (finishedRun, bool, error) {
		batch := &pgx.Batch{}
		queueFinish(batch, RunAttemptFinishParams{RunID: p.RunID, Attempt: p.Attempt, Transition: t, Error: p.Reason})
		results := tx.SendBatch(ctx, batch)
		defer results.Close()
		return readFinish(results, p.RunID)
	}()
	if err != nil {
		return false, err
	}
	if !changed {
		return false, nil
	}
	if s.queue == nil {
		return false, errors.New("store has no queue")
	}
	if jobID != nil {
		if err := s.queue.CancelTx(ctx, tx, *jobID); err != nil {
			return false, fmt.Errorf("cancel the abandoned attempt's job: %w", err)
		}
	}
	if t == TransitionInterrupt {
		job := RunJob{RunID: p.RunID, MaxAttempts: max(maxAttempts-failed, 1), Queue: queue}
		if err := s.enqueueTx(ctx, tx, []RunJob{job}); err != nil {
			return false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, dbError(err, "commit abandon attempt")
	}
	return true, nil
}

// runFailedAttemptsSQL counts the failed attempts of the run r: a new job for the run gets the attempts left
// after them (interrupted ones are not spent).
var runFailedAttemptsSQL = `(SELECT count(*) FROM run_attempts f WHERE f.run_id = r.id AND f.status = ` +
	sqlStatus(AttemptFailed) + `)`

// runSkipSQL carries out TransitionSkip for the queued run $1, whose revision changed no watched file: reason $2
// (RunFilesRecord, which holds the run's lock and checked its status).
var runSkipSQL = `UPDATE runs SET status = ` + sqlStatus(TransitionSkip.To()) + `, files_check = ` + sqlLiteral(FilesUnwatched) + `,
	error = $2, finished_at = now(), updated_at = now(), waiting_since = NULL
WHERE id = $1 AND status IN (` + sqlList(TransitionSkip.From()...) + `)`

// sqlMayReplace is the condition on the run alias a that it may replace an older run of its ref: it was not
// skipped, and its check of changed files is not pending, since it may yet be skipped.
func sqlMayReplace(a string) string {
	return "(" + a + ".status <> " + sqlStatus(RunSkipped) + " AND " + a + ".files_check IS DISTINCT FROM " +
		sqlLiteral(FilesPending) + ")"
}

// runCancelSQL carries out TransitionCancel for the run $1 when it waits, and records the request when it runs;
// it returns the status the run had and its job.
var runCancelSQL = `
WITH r AS (SELECT id, status FROM runs WHERE id = $1 FOR NO KEY UPDATE)
UPDATE runs SET cancel_requested_at = coalesce(runs.cancel_requested_at, now()), updated_at = now(),
	status = CASE WHEN r.status IN (` + sqlWaits + `) THEN ` + sqlStatus(TransitionCancel.To()) + ` ELSE runs.status END,
	error = CASE WHEN r.status IN (` + sqlWaits + `) THEN 'cancelled by an operator' ELSE runs.error END,
	finished_at = CASE WHEN r.status IN (` + sqlWaits + `) THEN now() ELSE runs.finished_at END
FROM r WHERE runs.id = r.id AND r.status NOT IN (` + sqlFinal + `)
RETURNING r.status, runs.job_id`

// RunCancel carries out TransitionCancel at an operator's request. A waiting run (queued or retrying) is
// cancelled at once; a running one gets a cancel request, its command is stopped by whichever process runs
// it, and the worker then finishes it with TransitionCancel. Cancelling a finished run is CodeConflict.
func (s *Store) RunCancel(ctx context.Context, id int64) (*Run, error) {
	if s.queue == nil {
		return nil, errors.New("store has no queue")
	}
	var status RunStatus
	var jobID *int64
	// One statement: a waiting run is final at once (the worker, which locks the run before it starts, will
	// then not start it); a running one only records the request.
	err := s.pool.QueryRow(ctx, runCancelSQL, id).Scan(&status, &jobID)
	if errors.Is(err, pgx.ErrNoRows) {
		run, gerr := s.RunGetByID(ctx, id)
		if gerr != nil {
			return nil, gerr
		}
		return nil, Errorf(CodeConflict, "run %d is already %s", id, run.Status)
	}
	if err != nil {
		return nil, dbError(err, "cancel run")
	}
	if jobID != nil {
		if err := s.queue.Cancel(ctx, *jobID); err != nil {
			return nil, WrapError(CodeUnavailable, err, fmt.Sprintf("run %d: the queue did not take the cancel; try again", id))
		}
	}
	return s.RunGetByID(ctx, id)
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

// runWaitingJobsSQL finds the waiting runs' jobs. Waking a job that runs or waits no more changes nothing.
var runWaitingJobsSQL = `
	SELECT r.job_id FROM runs r
	WHERE r.mapping_id = $1 AND r.waiting_since IS NOT NULL AND r.status = ` + sqlStatus(RunQueued) + `
		AND r.job_id IS NOT NULL AND coalesce(r.not_before, r.created_at) <= now()
	ORDER BY r.id
	LIMIT greatest((SELECT concurrency FROM mappings WHERE id = $1)
		- (SELECT count(*) FROM runs WHERE mapping_id = $1 AND status = ` + sqlStatus(RunRunning) + `), 0)`
