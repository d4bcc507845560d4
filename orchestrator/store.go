package orchestrator

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RunJob is what the work queue needs to know of a new run.
type RunJob struct {
	RunID       int64
	MaxAttempts int
}

// EnqueueFunc puts one job per new run into the work queue as part of tx, and returns the job ids in order.
// The queue job exists if and only if tx commits.
type EnqueueFunc func(ctx context.Context, tx pgx.Tx, jobs []RunJob) ([]int64, error)

// Store keeps mappings, deliveries, decisions, runs and their logs in PostgreSQL.
type Store struct {
	pool    *pgxpool.Pool
	enqueue EnqueueFunc
}

// NewStore returns a Store on pool. Deliveries that trigger runs need an enqueuer: see SetEnqueuer.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// SetEnqueuer sets the function that enqueues jobs for new runs. It must be called before the store records
// deliveries, and is separate from NewStore because the queue's workers themselves need the store.
func (s *Store) SetEnqueuer(f EnqueueFunc) { s.enqueue = f }

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
