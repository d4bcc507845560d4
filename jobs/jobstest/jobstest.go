// Package jobstest reads River's jobs for tests, through River's API as the rest of the code does.
package jobstest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"
)

// page is how many jobs List asks River for at a time.
const page = 1000

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
