package main

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs/jobstest"
)

// jobList returns every job on pool's schema that params selects, page after page, through River's API: an
// insert-only River client, which is all the tests need to read the queue, as the orchestrator does.
func jobList(t *testing.T, pool *pgxpool.Pool, params *river.JobListParams) []*rivertype.JobRow {
	t.Helper()
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	return jobstest.List(t, client, params)
}
