package jobs

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

// riverSchema returns a pool on a fresh schema with our migrations and River's applied, and an insert-only River
// client on it.
func riverSchema(t *testing.T) (*pgxpool.Pool, *river.Client[pgx.Tx]) {
	t.Helper()
	pool, _ := dbtest.NewMigratedPool(t)
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	return pool, client
}

// TestRiverSchema checks what the statements of riverschema.go rely on in River's schema, as River's migrations
// create it, and runs each statement: an upgrade of River that renames, retypes or drops any of it fails here.
func TestRiverSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, client := riverSchema(t)

	t.Run("Columns", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			column, udt, dflt string
		}{
			// River's inserts take their ids from this sequence, so a reserved id is never another job's.
			{column: "id", udt: "int8", dflt: "nextval('river_job_id_seq'::regclass)"},
			{column: "kind", udt: "text"},
			{column: "state", udt: "river_job_state", dflt: "'available'::river_job_state"},
			{column: "attempted_at", udt: "timestamptz"},
			{column: "scheduled_at", udt: "timestamptz", dflt: "now()"},
		}
		for _, tc := range cases {
			t.Run(tc.column, func(t *testing.T) {
				t.Parallel()
				var udt, dflt string
				require.NoError(t, pool.QueryRow(ctx, `SELECT udt_name, coalesce(column_default, '') FROM information_schema.columns
					WHERE table_schema = current_schema() AND table_name = 'river_job' AND column_name = $1`, tc.column).
					Scan(&udt, &dflt), "river_job.%s is gone", tc.column)
				require.Equal(t, tc.udt, udt, "type of river_job.%s", tc.column)
				require.Equal(t, tc.dflt, dflt, "default of river_job.%s", tc.column)
			})
		}
	})

	t.Run("IDSequence", func(t *testing.T) {
		t.Parallel()
		var owned, dataType string
		var increment int64
		require.NoError(t, pool.QueryRow(ctx, `SELECT pg_get_serial_sequence('river_job', 'id')::regclass::text,
			s.data_type::text, s.increment_by
			FROM pg_sequences s WHERE s.schemaname = current_schema() AND s.sequencename = 'river_job_id_seq'`).
			Scan(&owned, &dataType, &increment), "river_job_id_seq is gone")
		require.Equal(t, "river_job_id_seq", owned, "the sequence of river_job.id")
		require.Equal(t, "bigint", dataType)
		require.Positive(t, increment, "ids grow: a reserved id is never handed out again")
	})

	t.Run("States", func(t *testing.T) {
		t.Parallel()
		var labels []string
		require.NoError(t, pool.QueryRow(ctx, `SELECT array_agg(e.enumlabel::text) FROM pg_enum e
			JOIN pg_type ty ON ty.oid = e.enumtypid JOIN pg_namespace n ON n.oid = ty.typnamespace
			WHERE ty.typname = 'river_job_state' AND n.nspname = current_schema()`).Scan(&labels))
		for _, want := range []string{"available", "running"} {
			require.Contains(t, labels, want, "a state the statements read or write")
		}
	})

	t.Run("JobOrphanReap", func(t *testing.T) {
		t.Parallel()
		pool, client := riverSchema(t) // a schema of its own: it starts a client that works jobs
		insert := func(args ...river.JobArgs) []int64 {
			t.Helper()
			params := make([]river.InsertManyParams, len(args))
			for i, a := range args {
				params[i] = river.InsertManyParams{Args: a}
			}
			res, err := client.InsertMany(ctx, params)
			require.NoError(t, err)
			ids := make([]int64, len(res))
			for i, r := range res {
				ids[i] = r.Job.ID
			}
			return ids
		}
		// A worker takes two notifications and a run, and hangs (or its process died); later it takes two more
		// notifications, which it is still sending, and a catch-up pass.
		stale := insert(NotifyArgs{NotificationID: 1}, NotifyArgs{NotificationID: 2})
		run := insert(RetrainArgs{RunID: 1})
		worker := holdJobs(t, pool, map[string]int{orchestrator.QueueNotify: 4, orchestrator.QueueDefault: 1, river.QueueDefault: 1})
		attempted := waitState(t, worker, rivertype.JobStateRunning, append(stale, run...)...)
		fresh := insert(NotifyArgs{NotificationID: 3}, NotifyArgs{NotificationID: 4})
		pass := insert(ReconcileArgs{})
		for id, at := range waitState(t, worker, rivertype.JobStateRunning, append(fresh, pass...)...) {
			attempted[id] = at
		}
		at := func(ids []int64) []time.Time {
			times := make([]time.Time, len(ids))
			for i, id := range ids {
				times[i] = attempted[id]
			}
			return times
		}
		last, first := slices.MaxFunc(at(stale), time.Time.Compare), slices.MinFunc(at(fresh), time.Time.Compare)
		require.True(t, last.Before(first), "the stale notifications were taken before the fresh ones")
		cutoff := last.Add(first.Sub(last) / 2)

		// reap hands back, in a transaction whose now() it knows, the notifications taken before the cutoff and
		// any catch-up pass: each kind has its own delay.
		reap := func() map[string]int {
			t.Helper()
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }()
			var now time.Time
			require.NoError(t, tx.QueryRow(ctx, `SELECT now()`).Scan(&now))
			handed, err := jobOrphanReap(ctx, tx, map[string]time.Duration{NotifyArgs{}.Kind(): now.Sub(cutoff),
				ReconcileArgs{}.Kind(): 0})
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))
			return handed
		}
		require.Equal(t, map[string]int{NotifyArgs{}.Kind(): len(stale), ReconcileArgs{}.Kind(): 1}, reap())
		// The dead worker's jobs go back to the queue; a notification being sent is left alone, and so is a job of
		// a kind not asked for.
		waitState(t, worker, rivertype.JobStateAvailable, append(stale, pass...)...)
		waitState(t, worker, rivertype.JobStateRunning, append(fresh, run...)...)
		require.Empty(t, reap(), "each orphan is handed back once")
	})

	t.Run("JobIDReserve", func(t *testing.T) {
		t.Parallel()
		ids, err := jobIDReserve(ctx, pool, 3)
		require.NoError(t, err)
		require.Len(t, ids, 3)
		res, err := client.InsertMany(ctx, []river.InsertManyParams{{Args: NotifyArgs{NotificationID: 1}}})
		require.NoError(t, err)
		require.NotContains(t, ids, res[0].Job.ID, "River's own insert never takes a reserved id")
		require.Greater(t, res[0].Job.ID, slices.Max(ids), "River draws its ids from the same sequence")
	})
}

// holdJobs starts a River client on pool that takes jobs from the given queues, as many at once as each queue's
// count, and works each until the test ends, as a process would that hangs or died: those jobs stay running.
// With every slot taken it fetches nothing more, so a job handed back stays available.
func holdJobs(t *testing.T, pool *pgxpool.Pool, queues map[string]int) *river.Client[pgx.Tx] {
	t.Helper()
	workers := river.NewWorkers()
	hold := func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	river.AddWorker(workers, river.WorkFunc(func(ctx context.Context, _ *river.Job[NotifyArgs]) error { return hold(ctx) }))
	river.AddWorker(workers, river.WorkFunc(func(ctx context.Context, _ *river.Job[RetrainArgs]) error { return hold(ctx) }))
	river.AddWorker(workers, river.WorkFunc(func(ctx context.Context, _ *river.Job[ReconcileArgs]) error { return hold(ctx) }))
	cfg := &river.Config{Queues: map[string]river.QueueConfig{}, Workers: workers, JobTimeout: -1,
		FetchCooldown: FetchCooldownDefault, FetchPollInterval: FetchPollIntervalDefault,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for q, n := range queues {
		cfg.Queues[q] = river.QueueConfig{MaxWorkers: n}
	}
	client, err := river.NewClient(riverpgxv5.New(pool), cfg)
	require.NoError(t, err)
	require.NoError(t, client.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.StopAndCancel(ctx)
	})
	return client
}

// waitState waits until each job is in state and returns when each was last attempted.
func waitState(t *testing.T, client *river.Client[pgx.Tx], state rivertype.JobState, ids ...int64) map[int64]time.Time {
	t.Helper()
	attempted := map[int64]time.Time{}
	for _, id := range ids {
		require.Eventually(t, func() bool {
			job, err := client.JobGet(context.Background(), id)
			require.NoError(t, err)
			if job.AttemptedAt != nil {
				attempted[id] = *job.AttemptedAt
			}
			return job.State == state
		}, 10*time.Second, 5*time.Millisecond, "job %d never %s", id, state)
	}
	return attempted
}

// TestRiverTablesOnlyHere fails, naming file and line, for every mention of River's job table or its sequence in a
// Go file of the repository, tests included, other than riverschema.go and this file: everywhere else River's jobs
// are reached through River's client.
func TestRiverTablesOnlyHere(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the repository's root holds go.mod")
	allowed := map[string]bool{"jobs/riverschema.go": true, "jobs/riverschema_test.go": true}
	hits := map[string][]string{} // by file, its lines that name River's tables
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir // the repository's metadata and local state
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "river_job") {
				hits[rel] = append(hits[rel], fmt.Sprintf("%s:%d: %s", rel, i+1, strings.TrimSpace(line)))
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, hits["jobs/riverschema.go"], "the walk finds the statements of jobs/riverschema.go")
	for _, file := range slices.Sorted(maps.Keys(hits)) {
		if allowed[file] {
			continue
		}
		for _, hit := range hits[file] {
			t.Errorf("%s\n\tRiver's tables outside jobs/riverschema.go: reach them through River's client, or move the "+
				"statement there with a comment saying why River's API cannot do it, and a check in TestRiverSchema", hit)
		}
	}
}
