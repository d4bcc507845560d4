package orchestrator

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Executions: what an external executor (a Hugging Face Job) did with an attempt, beside the attempt's own row,
// which stays the record of its outcome.

// AttemptExecution is one attempt that ran on an external executor: the Job behind it, its last seen stage, and
// its estimated cost.
type AttemptExecution struct {
	RunID    int64        `json:"run_id"`
	Attempt  int          `json:"attempt"`
	Executor ExecutorKind `json:"executor"`
	// ExternalID, Namespace, URL and Flavor are the Job's id, namespace, page on the Hub and hardware.
	ExternalID string `json:"external_id"`
	Namespace  string `json:"namespace"`
	URL        string `json:"url"`
	Flavor     string `json:"flavor"`
	// Stage and Message are the Job's status when last seen.
	Stage   string `json:"stage"`
	Message string `json:"message"`
	// CreatedAt is when the Job was created; RunningAt when it left SCHEDULING (got its hardware); EndedAt when
	// it reached a terminal stage.
	CreatedAt time.Time  `json:"created_at"`
	RunningAt *time.Time `json:"running_at"`
	EndedAt   *time.Time `json:"ended_at"`
	// UnitCostMicroUSD is the flavor's price per minute when known, else 0; CostMicroUSD the estimated cost so
	// far: running minutes times the unit cost.
	UnitCostMicroUSD int64 `json:"unit_cost_micro_usd"`
	CostMicroUSD     int64 `json:"cost_micro_usd"`
}

// StageScheduling is the stage of a Job waiting for its hardware.
const StageScheduling = "SCHEDULING"

// WaitingForHardware reports whether the Job is waiting for its hardware.
func (e *AttemptExecution) WaitingForHardware() bool {
	return e.Stage == StageScheduling && e.EndedAt == nil
}

// WaitingTime returns how long the Job waited for its hardware: until it ran, or until now (or its end) while
// it has not.
func (e *AttemptExecution) WaitingTime(now time.Time) time.Duration {
	switch {
	case e.RunningAt != nil:
		return e.RunningAt.Sub(e.CreatedAt)
	case e.EndedAt != nil:
		return e.EndedAt.Sub(e.CreatedAt)
	}
	return now.Sub(e.CreatedAt)
}

// RunningTime returns how long the Job has run on its hardware: from RunningAt to its end, or to now while it
// runs; 0 before it ran.
func (e *AttemptExecution) RunningTime(now time.Time) time.Duration {
	if e.RunningAt == nil {
		return 0
	}
	if e.EndedAt != nil {
		return e.EndedAt.Sub(*e.RunningAt)
	}
	return now.Sub(*e.RunningAt)
}

const attemptExecutionColumns = `run_id, attempt, executor, external_id, namespace, url, flavor, stage, message,
	created_at, running_at, ended_at, unit_cost_micro_usd, cost_micro_usd`

// attemptExecutionUpsertSQL records an execution, replacing what was known of it. A time once known is kept
// when a later record does not carry it, so that a record from a process that saw less never erases it.
const attemptExecutionUpsertSQL = `
INSERT INTO attempt_executions (` + attemptExecutionColumns + `)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (run_id, attempt) DO UPDATE SET
	executor = EXCLUDED.executor, external_id = EXCLUDED.external_id, namespace = EXCLUDED.namespace,
	url = EXCLUDED.url, flavor = EXCLUDED.flavor, stage = EXCLUDED.stage, message = EXCLUDED.message,
	created_at = EXCLUDED.created_at,
	running_at = coalesce(EXCLUDED.running_at, attempt_executions.running_at),
	ended_at = coalesce(EXCLUDED.ended_at, attempt_executions.ended_at),
	unit_cost_micro_usd = EXCLUDED.unit_cost_micro_usd,
	cost_micro_usd = greatest(EXCLUDED.cost_micro_usd, attempt_executions.cost_micro_usd),
	updated_at = now()`

// foreignKeyViolation is PostgreSQL's SQLSTATE for a row that references one that does not exist.
const foreignKeyViolation = "23503"

// AttemptExecutionRecord records (inserts or replaces) what an executor did with an attempt. It never changes
// the run or the attempt themselves. An attempt that does not exist is CodeNotFound; a bad value CodeInvalid.
func (s *Store) AttemptExecutionRecord(ctx context.Context, e AttemptExecution) error {
	if !e.Executor.Valid() {
		return Errorf(CodeInvalid, "executor %q must be %s", e.Executor, OneOf(ExecutorKinds))
	}
	if e.UnitCostMicroUSD < 0 || e.CostMicroUSD < 0 {
		return Errorf(CodeInvalid, "execution of run %d attempt %d: costs must not be negative", e.RunID, e.Attempt)
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = time.Now()
	}
	_, err := s.pool.Exec(ctx, attemptExecutionUpsertSQL, e.RunID, e.Attempt, e.Executor, e.ExternalID,
		e.Namespace, e.URL, e.Flavor, e.Stage, e.Message, e.CreatedAt, e.RunningAt, e.EndedAt,
		e.UnitCostMicroUSD, e.CostMicroUSD)
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == foreignKeyViolation {
		return Errorf(CodeNotFound, "run %d has no attempt %d", e.RunID, e.Attempt)
	}
	if err != nil {
		return dbError(err, "record attempt execution")
	}
	return nil
}

// runExecutionsSQL lists the executions of run $1 by attempt.
const runExecutionsSQL = `SELECT ` + attemptExecutionColumns + ` FROM attempt_executions WHERE run_id = $1 ORDER BY attempt`

// RunExecutions returns the executions of every attempt of a run that has one, by attempt; none is an empty
// list.
func (s *Store) RunExecutions(ctx context.Context, runID int64) ([]AttemptExecution, error) {
	rows, err := s.pool.Query(ctx, runExecutionsSQL, runID)
	if err != nil {
		return nil, dbError(err, "list attempt executions")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AttemptExecution, error) {
		var e AttemptExecution
		err := row.Scan(&e.RunID, &e.Attempt, &e.Executor, &e.ExternalID, &e.Namespace, &e.URL, &e.Flavor,
			&e.Stage, &e.Message, &e.CreatedAt, &e.RunningAt, &e.EndedAt, &e.UnitCostMicroUSD, &e.CostMicroUSD)
		return e, err
	})
	if err != nil {
		return nil, dbError(err, "list attempt executions")
	}
	if list == nil {
		list = []AttemptExecution{}
	}
	return list, nil
}

// mappingCostSQL sums the estimated cost of every execution of the runs of mapping $1.
// A Job adopted by a later attempt (after a crash or a shutdown) is recorded by each attempt that followed it:
// it counts once, at the most any of them saw.
const mappingCostSQL = `
SELECT coalesce(sum(cost), 0)::bigint FROM (
	SELECT max(e.cost_micro_usd) AS cost
	FROM attempt_executions e JOIN runs r ON r.id = e.run_id
	WHERE r.mapping_id = $1
	GROUP BY e.run_id, e.executor, e.external_id) jobs`

// MappingCost returns the estimated cost, in micro-USD, of every execution of the mapping's runs.
func (s *Store) MappingCost(ctx context.Context, mappingID int64) (int64, error) {
	var cost int64
	if err := s.pool.QueryRow(ctx, mappingCostSQL, mappingID).Scan(&cost); err != nil {
		return 0, dbError(err, "sum mapping cost")
	}
	return cost, nil
}
