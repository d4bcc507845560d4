package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/jobs/jobstest"
	"github.com/retrainhq/orchestrator/orchestrator"
)

// The store's tests see River's jobs through River's client only, as the rest of the code does.

// jobList returns every job that params selects, page after page.
func jobList(t *testing.T, b *testBundle, params *river.JobListParams) []*rivertype.JobRow {
	t.Helper()
	return jobstest.List(t, b.river, params)
}

// jobGet returns a job.
func jobGet(t *testing.T, b *testBundle, id int64) *rivertype.JobRow {
	t.Helper()
	job, err := b.river.JobGet(context.Background(), id)
	require.NoError(t, err)
	return job
}

// runsWithTheirJobs counts the runs, read on pool, whose recorded job exists and executes them.
func runsWithTheirJobs(t *testing.T, b *testBundle, pool *pgxpool.Pool) int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT id, job_id FROM runs WHERE job_id IS NOT NULL`)
	require.NoError(t, err)
	byJob := map[int64]int64{}
	var jobIDs []int64
	for rows.Next() {
		var runID, jobID int64
		require.NoError(t, rows.Scan(&runID, &jobID))
		byJob[jobID] = runID
		jobIDs = append(jobIDs, jobID)
	}
	require.NoError(t, rows.Err())
	if len(jobIDs) == 0 {
		return 0
	}
	n := 0
	for _, job := range jobList(t, b, river.NewJobListParams().IDs(jobIDs...)) {
		var args jobs.RetrainArgs
		require.NoError(t, json.Unmarshal(job.EncodedArgs, &args))
		if job.Kind == args.Kind() && args.RunID == byJob[job.ID] {
			n++
		}
	}
	return n
}

// work is what workJobs's worker does with a run's job; stopped is closed when the worker stops.
type work func(ctx context.Context, job *river.Job[jobs.RetrainArgs], stopped <-chan struct{}) error

// workJobs starts a River client on the bundle's schema that works the runs' jobs with w, slots at a time, as
// a worker process would. With every slot taken it fetches nothing more. The test's end stops it; so does the
// returned stop.
func workJobs(t *testing.T, b *testBundle, slots int, w work) (stop func()) {
	t.Helper()
	cfg := b.pool.Config().Copy()
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	stopped := make(chan struct{})
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(ctx context.Context, job *river.Job[jobs.RetrainArgs]) error {
		return w(ctx, job, stopped)
	}))
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:            map[string]river.QueueConfig{orchestrator.QueueDefault: {MaxWorkers: slots}},
		Workers:           workers,
		JobTimeout:        -1,
		FetchCooldown:     jobs.FetchCooldownDefault,
		FetchPollInterval: jobs.FetchPollIntervalDefault,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	require.NoError(t, client.Start(context.Background()))
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(stopped)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = client.StopAndCancel(ctx)
		})
	}
	t.Cleanup(stop)
	return stop
}

// hold is the work of a process that hangs, or died: it answers nothing, not even River's cancel, until the
// worker stops, so its slot stays taken.
func hold(_ context.Context, _ *river.Job[jobs.RetrainArgs], stopped <-chan struct{}) error {
	<-stopped
	return errors.New("the worker stopped")
}

// waitJobs waits until each job is in state.
func waitJobs(t *testing.T, b *testBundle, state rivertype.JobState, ids ...int64) {
	t.Helper()
	for _, id := range ids {
		require.Eventually(t, func() bool { return jobGet(t, b, id).State == state },
			10*time.Second, 5*time.Millisecond, "job %d never %s", id, state)
	}
}
