package jobs

// River's own tables (river_job and its id sequence) are read and written through River's client everywhere but
// here: River's schema is its own and changes between releases. Each statement below does what River's API has
// no call for, and says why. TestRiverSchema (riverschema_test.go) runs each one on River's migrations and checks
// the tables, columns, types and sequence it relies on, so that an upgrade of River that changes them fails that
// test first; TestRiverTablesOnlyHere fails when River's tables are named in any other Go file.

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// riverDB is what the statements run on: a pool, a connection or a transaction.
type riverDB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// jobIDReserveSQL takes $1 ids from the sequence River's inserts draw job ids from (the default of river_job.id).
// River has no call that hands out a job's id before the job is inserted, and the ingest records each new run's
// job id in the statement that creates the run, before River inserts the job with that id (JobInsertParams.ID,
// set by the reservedIDs middleware). Drawn from River's own sequence, an id is never given to another job,
// reserved or not; one reserved and never used is a gap in the sequence.
const jobIDReserveSQL = `SELECT nextval('river_job_id_seq') FROM generate_series(1, $1::int)`

// jobIDReserve returns n ids from River's job id sequence.
func jobIDReserve(ctx context.Context, db riverDB, n int) ([]int64, error) {
	rows, err := db.Query(ctx, jobIDReserveSQL, n)
	if err != nil {
		return nil, fmt.Errorf("reserve job ids: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("reserve job ids: %w", err)
	}
	if len(ids) != n {
		return nil, fmt.Errorf("reserve job ids: got %d ids for %d", len(ids), n)
	}
	return ids, nil
}

// jobOrphanReapSQL makes the running jobs of the kinds in $1 available again when their attempt began longer
// ago than the kind's delay in $2: the process working them died. River's rescuer does the same, but after one
// delay for every kind (Config.RescueStuckJobsAfter), which must stay above the longest run (see
// ClientConfig.RescueAfter), and River's JobRetry leaves running jobs alone. It returns the kind of each job
// handed back.
const jobOrphanReapSQL = `
	UPDATE river_job j SET state = 'available', scheduled_at = now()
	FROM unnest($1::text[], $2::interval[]) AS k(kind, after)
	WHERE j.kind = k.kind AND j.state = 'running' AND j.attempted_at < now() - k.after
	RETURNING j.kind`

// jobOrphanReap hands back the running jobs of each kind in after whose attempt began longer ago than the kind's
// delay, and returns how many of each kind went back to the queue.
func jobOrphanReap(ctx context.Context, db riverDB, after map[string]time.Duration) (map[string]int, error) {
	kinds, delays := make([]string, 0, len(after)), make([]time.Duration, 0, len(after))
	for kind, d := range after {
		kinds, delays = append(kinds, kind), append(delays, d)
	}
	rows, err := db.Query(ctx, jobOrphanReapSQL, kinds, delays)
	if err != nil {
		return nil, fmt.Errorf("hand back orphaned jobs: %w", err)
	}
	reaped, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("hand back orphaned jobs: %w", err)
	}
	counts := map[string]int{}
	for _, kind := range reaped {
		counts[kind]++
	}
	return counts, nil
}
