package jobs

// River's own tables (river_job and its id sequence) are read and written through River's client everywhere but
// here: River's schema is its own and changes between releases. Each statement below does what River's API has
// no call for, and says why. TestRiverSchema (riverschema_test.go) runs each one on River's migrations and checks
// the tables, columns, types and sequence it relies on, so that an upgrade of River that changes them fails that
// test first.

import (
	"context"
	"fmt"

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
