package bench

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
)

// The benchmark reads and withdraws River's jobs through River's API, like the orchestrator, with an insert-only
// River client on its own pool: its reads stay off the orchestrator's pool, whose round trips it counts.

// riverBatch is how many jobs one call of River's list or delete covers, its most.
const riverBatch = 10_000

// queueView returns an insert-only River client on pool.
func queueView(pool *pgxpool.Pool) (*river.Client[pgx.Tx], error) {
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		return nil, fmt.Errorf("create River client: %w", err)
	}
	return client, nil
}

// jobsDelete deletes the jobs params selects, batch after batch, and returns how many went. River never deletes
// a running job.
func jobsDelete(ctx context.Context, client *river.Client[pgx.Tx], params *river.JobDeleteManyParams) (int, error) {
	params = params.First(riverBatch)
	deleted := 0
	for {
		res, err := client.JobDeleteMany(ctx, params)
		if err != nil {
			return deleted, fmt.Errorf("delete jobs: %w", err)
		}
		deleted += len(res.Jobs)
		if len(res.Jobs) < riverBatch {
			return deleted, nil
		}
	}
}

// jobsDeleteByID deletes those of the jobs with ids that are in one of states.
func jobsDeleteByID(ctx context.Context, client *river.Client[pgx.Tx], ids []int64, states ...rivertype.JobState) (int, error) {
	deleted := 0
	for len(ids) > 0 {
		n := min(len(ids), riverBatch)
		d, err := jobsDelete(ctx, client, river.NewJobDeleteManyParams().IDs(ids[:n]...).States(states...))
		deleted += d
		if err != nil {
			return deleted, err
		}
		ids = ids[n:]
	}
	return deleted, nil
}

// jobsByID returns River's rows of the jobs with ids, by id; a job River has deleted is missing.
func jobsByID(ctx context.Context, client *river.Client[pgx.Tx], ids []int64) (map[int64]*rivertype.JobRow, error) {
	jobs := make(map[int64]*rivertype.JobRow, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), riverBatch)
		res, err := client.JobList(ctx, river.NewJobListParams().IDs(ids[:n]...).First(riverBatch))
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		for _, j := range res.Jobs {
			jobs[j.ID] = j
		}
		ids = ids[n:]
	}
	return jobs, nil
}
