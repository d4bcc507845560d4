// Package jobstest helps tests with River's jobs: it wires a River client to a store as the service does, and
// reads jobs through River's API as the rest of the code does.
package jobstest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
)

// page is how many jobs List asks River for at a time.
const page = 1000

// stopTimeout bounds the stop of a client started by Start, at the end of its test.
const stopTimeout = 10 * time.Second

// NewClient returns the River client jobs.NewClient builds on pool for store with cfg, and makes store enqueue
// the jobs of its runs through it, as the service wires them. The client is not started: see Start.
func NewClient(t testing.TB, pool *pgxpool.Pool, store *orchestrator.Store, cfg jobs.ClientConfig) *river.Client[pgx.Tx] {
	t.Helper()
	client, err := jobs.NewClient(pool, store, cfg)
	require.NoError(t, err)
	store.SetQueue(jobs.NewQueue(pool, client))
	return client
}

// Start starts client's workers, and stops them, cancelling the jobs they run, when the test ends.
func Start(t testing.TB, client *river.Client[pgx.Tx]) {
	t.Helper()
	require.NoError(t, client.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		_ = client.StopAndCancel(ctx)
	})
}

// List returns every job that params selects, page after page.
func List(t testing.TB, client *river.Client[pgx.Tx], params *river.JobListParams) []*rivertype.JobRow {
	t.Helper()
	params = params.First(page)
	var jobs []*rivertype.JobRow
	for {
		res, err := client.JobList(context.Background(), params)
		require.NoError(t, err)
		jobs = append(jobs, res.Jobs...)
		if len(res.Jobs) < page {
			return jobs
		}
		params = params.After(res.LastCursor)
	}
}
