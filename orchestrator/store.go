package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RunJob is what the work queue needs to know of a new run.
type RunJob struct {
	RunID       int64
	MaxAttempts int
	Queue       string // the mapping's worker pool
	// JobID, when not 0, is the id the job must have: one reserved from the queue (Queue.ReserveJobIDs) that
	// the statement that created the run recorded on it, sparing an update of the run once the job exists.
	JobID int64
}

// Queue is the work queue that executes runs.
type Queue interface {
	// EnqueueTx puts one job per new run into the queue as part of tx and returns the job ids in order. A job
	// whose RunJob has a JobID gets that id. The jobs exist if and only if tx commits.
	EnqueueTx(ctx context.Context, tx pgx.Tx, jobs []RunJob) ([]int64, error)
	// Cancel cancels a job: at once when it waits, and by stopping its command, in whichever process runs
	// it, when it runs.
	Cancel(ctx context.Context, jobID int64) error
	// EnqueueNotificationsTx puts one job per notification into the notify queue as part of tx and returns the
	// job ids in order. The jobs exist if and only if tx commits.
	EnqueueNotificationsTx(ctx context.Context, tx pgx.Tx, notificationIDs []int64) ([]int64, error)
	// Wake makes snoozed jobs available at once: the runs waiting for a slot that a finished run freed.
	Wake(ctx context.Context, jobIDs []int64) error
	// CancelTx cancels a job as part of tx: one that waits at once, one that runs by stopping it, in whichever
	// process runs it, once tx commits. A job that is gone or finished is no error.
	CancelTx(ctx context.Context, tx pgx.Tx, jobID int64) error
	// StalledJobs returns the run jobs that a worker took from the queue longer than after ago and still
	// holds: their process may have died before starting them.
	StalledJobs(ctx context.Context, after time.Duration) ([]StalledJob, error)
	// ReserveJobIDs returns n ids for the jobs of new runs (RunJob.JobID), which the queue gives to no other
	// job. An id reserved and never used is only lost; most calls cost no round trip.
	ReserveJobIDs(ctx context.Context, n int) ([]int64, error)
}

// StalledJob is a run's job that a worker took from the queue and has not given back.
type StalledJob struct {
	JobID int64
	RunID int64
}

// Store keeps mappings, deliveries, decisions, runs and their logs in PostgreSQL.
type Store struct {
	pool  *pgxpool.Pool
	queue Queue

	mappings mappingCache // the enabled mappings, for deciding deliveries
	ingest   ingester     // deliveries waiting to be written
}

// NewStore returns a Store on pool. Creating and cancelling runs needs a queue: see SetQueue.
func NewStore(pool *pgxpool.Pool) *Store {
	s := &Store{pool: pool}
	s.ingest.write = s.writeDeliveries
	return s
}

// SetQueue sets the work queue. It must be called before the store creates or cancels runs, and is separate
// from NewStore because the queue's workers themselves need the store.
func (s *Store) SetQueue(q Queue) { s.queue = q }

// runJobIDsSQL records the job ids ($2) of runs ($1).
const runJobIDsSQL = `UPDATE runs SET job_id = u.job_id FROM unnest($1::bigint[], $2::bigint[]) AS u(run_id, job_id)
	WHERE runs.id = u.run_id`

// enqueueTx enqueues the jobs of new runs within tx and records their job ids on the runs that do not have
// them yet: those whose job id was not reserved when they were created.
func (s *Store) enqueueTx(ctx context.Context, tx pgx.Tx, jobs []RunJob) error {
	if len(jobs) == 0 {
		return nil
	}
	if s.queue == nil {
		return errors.New("store has no queue")
	}
	ids, err := s.queue.EnqueueTx(ctx, tx, jobs)
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	var runIDs, jobIDs []int64
	for i, j := range jobs {
		if ids[i] != j.JobID {
			runIDs, jobIDs = append(runIDs, j.RunID), append(jobIDs, ids[i])
		}
	}
	if len(runIDs) == 0 {
		return nil
	}
	// Sent with the simple protocol, so that it is planned for the ids it is given: a plan cached while runs
	// was small (or a generic one, which the ingest's transaction asks for) reads the whole table instead of
	// looking the runs up by id.
	if _, err := tx.Exec(ctx, runJobIDsSQL, pgx.QueryExecModeSimpleProtocol, runIDs, jobIDs); err != nil {
		return fmt.Errorf("record job ids: %w", err)
	}
	return nil
}

// sqlLiteral returns a constant as an SQL literal. The statements spell the triggers, decisions, policies and
// sources they compare with only through the literals below, and statuses through sqlStatus and sqlList: a
// literal rather than a parameter, so that the planner can use the partial indexes whose predicates name one
// (webhook runs, active runs).
func sqlLiteral[S ~string](s S) string { return sqlList(s) }

// SQL literals of the constants the statements compare with.
var (
	sqlTriggerWebhook = sqlLiteral(TriggerWebhook)
	sqlTriggerManual  = sqlLiteral(TriggerManual)

	sqlDecisionQueued    = sqlLiteral(DecisionQueued)
	sqlDecisionDuplicate = sqlLiteral(DecisionDuplicate)
	sqlDecisionIgnored   = sqlLiteral(DecisionIgnored)
	// sqlDecisionsRecording lists the decisions that record a revision of their ref as seen.
	sqlDecisionsRecording = sqlList(DecisionQueued, DecisionDuplicate, DecisionBaseline)

	sqlPolicyQueue         = sqlLiteral(OnNewRevisionQueue)
	sqlPolicyCancelRunning = sqlLiteral(OnNewRevisionCancelRunning)

	sqlSourceFile = sqlLiteral(SourceFile)
	sqlSourceAPI  = sqlLiteral(SourceAPI)

	sqlNotificationDelivered = sqlLiteral(NotificationDelivered)
)

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return WrapError(CodeUnavailable, err, "database unavailable")
	}
	return nil
}

// dbError wraps a database error: a fault that retrying may cure (connection lost, server shutting down,
// timeout, serialization failure) becomes CodeUnavailable, anything else CodeInternal.
func dbError(err error, message string) error {
	if err == nil {
		return nil
	}
	var appErr *Error
	if errors.As(err, &appErr) {
		return err
	}
	if isTransient(err) {
		return WrapError(CodeUnavailable, err, "database unavailable")
	}
	return WrapError(CodeInternal, err, message)
}

func isTransient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, pgx.ErrTxClosed) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "53", "57", "58": // connection, resources, operator intervention, system
			return true
		}
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}
