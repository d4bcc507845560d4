package jobs_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

// TestNewClientRescuesNoLiveRun builds the client as the serve command does, with whatever mappings exist at
// start, then creates or changes a mapping through the store's API calls to the longest timeout a mapping may
// set. River's stuck-job rescue delay, read from the River client itself, must stay above that timeout plus the
// kill grace: otherwise River would rescue the run while its command still runs, start it again, and kill it
// again every few hours.
func TestNewClientRescuesNoLiveRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	apiMapping := func(name string, timeout time.Duration) orchestrator.Mapping {
		return orchestrator.Mapping{Name: name, Dataset: "acme/" + name, Command: []string{"true"}, Timeout: timeout}
	}
	longest := apiMapping("longest", orchestrator.TimeoutMax)
	cases := []struct {
		name      string
		atStart   []orchestrator.Mapping // created before the client
		killGrace time.Duration          // 0: the default
		later     orchestrator.Mapping   // created, or updated when it exists at start, after the client
	}{
		{name: "NoMappingsAtStart", later: longest},
		{name: "ShortMappingAtStart", atStart: []orchestrator.Mapping{apiMapping("short", 30*time.Minute)}, later: longest},
		{name: "ShortMappingMadeLongest", atStart: []orchestrator.Mapping{apiMapping("grown", time.Hour)},
			later: apiMapping("grown", orchestrator.TimeoutMax)},
		{name: "DefaultTimeoutAtStart", atStart: []orchestrator.Mapping{apiMapping("default", 0)}, later: longest},
		{name: "LongKillGrace", killGrace: 10 * time.Minute, later: longest},
		{name: "LongestAtStart", atStart: []orchestrator.Mapping{apiMapping("first", orchestrator.TimeoutMax)},
			killGrace: 30 * time.Second, later: longest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool, _ := dbtest.NewMigratedPool(t)
			store := orchestrator.NewStore(pool)
			existing := map[string]bool{}
			for _, m := range tc.atStart {
				_, err := store.MappingCreate(ctx, m)
				require.NoError(t, err)
				existing[m.Name] = true
			}

			cfg := jobs.ClientConfig{Worker: jobs.WorkerConfig{KillGrace: tc.killGrace}, Logger: quietLogger}
			client, err := jobs.NewClient(pool, store, cfg)
			require.NoError(t, err)
			rescue := rescueAfter(t, client)
			require.Equal(t, cfg.RescueAfter(), rescue, "River holds the delay RescueAfter documents")

			if existing[tc.later.Name] {
				_, err = store.MappingUpdate(ctx, tc.later)
			} else {
				_, err = store.MappingCreate(ctx, tc.later)
			}
			require.NoError(t, err)
			mappings, err := store.MappingList(ctx)
			require.NoError(t, err)
			grace := cfg.Worker.WithDefaults().KillGrace
			for _, m := range mappings {
				require.Greater(t, rescue, m.Timeout+grace,
					"River would rescue a run of %q (timeout %s, kill grace %s) while its command may still run", m.Name, m.Timeout, grace)
			}
			require.Greater(t, rescue, orchestrator.TimeoutMax+grace, "any mapping may set the longest timeout")
		})
	}
}

// rescueAfter returns the stuck-job rescue delay a River client works with. River keeps its configuration, with
// its own defaults applied, in an unexported field and has no getter for it; the test reads that field so that
// it checks what River's rescuer will use, and fails saying so if an upgrade of River moves it.
func rescueAfter(t *testing.T, client *river.Client[pgx.Tx]) time.Duration {
	t.Helper()
	config := reflect.ValueOf(client).Elem().FieldByName("config")
	require.True(t, config.IsValid() && config.Kind() == reflect.Pointer && !config.IsNil(),
		"river.Client no longer keeps its configuration in a field named config")
	field := config.Elem().FieldByName("RescueStuckJobsAfter")
	require.True(t, field.IsValid(), "River's configuration has no RescueStuckJobsAfter")
	require.Equal(t, reflect.TypeFor[time.Duration](), field.Type())
	return time.Duration(field.Int())
}

// countingTracer counts the statements sent on a pool.
type countingTracer struct{ n atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestQueueReserveJobIDs checks that reserved job ids are never handed out twice, by the queue or by River, and
// that taking them costs a round trip only once per block.
func TestQueueReserveJobIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		name       string
		calls, n   int // calls of n ids each, from as many goroutines at once
		statements int // at most
	}{
		{name: "OneAtATime", calls: 600, n: 1, statements: 3},
		{name: "Groups", calls: 40, n: 20, statements: 4},
		{name: "AboveABlock", calls: 3, n: 300, statements: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, url := dbtest.NewMigratedPool(t)
			poolCfg, err := pgxpool.ParseConfig(url)
			require.NoError(t, err)
			tracer := &countingTracer{}
			poolCfg.ConnConfig.Tracer = tracer
			pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			store := orchestrator.NewStore(pool)
			client, err := jobs.NewClient(pool, store, jobs.ClientConfig{Logger: quietLogger})
			require.NoError(t, err)
			queue := jobs.NewQueue(pool, client)

			got, errs := make([][]int64, tc.calls), make([]error, tc.calls)
			var wg sync.WaitGroup
			for i := range tc.calls {
				wg.Go(func() { got[i], errs[i] = queue.ReserveJobIDs(ctx, tc.n) })
			}
			wg.Wait()
			require.NoError(t, errors.Join(errs...))
			require.LessOrEqual(t, tracer.n.Load(), int64(tc.statements), "statements for %d ids", tc.calls*tc.n)

			seen := map[int64]bool{}
			for _, ids := range got {
				require.Len(t, ids, tc.n)
				for _, id := range ids {
					require.False(t, seen[id], "id %d reserved twice", id)
					seen[id] = true
				}
			}
			// River's own inserts draw from the same sequence and never take a reserved id.
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }()
			inserted, err := jobs.NewQueue(pool, client).EnqueueTx(ctx, tx, []orchestrator.RunJob{{RunID: 1, MaxAttempts: 1}, {RunID: 2, MaxAttempts: 1}})
			require.NoError(t, err)
			for _, id := range inserted {
				require.False(t, seen[id], "River inserted job %d with a reserved id", id)
			}
		})
	}
}
