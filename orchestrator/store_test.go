package orchestrator_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/jobs/jobstest"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

type testBundle struct {
	pool  *pgxpool.Pool
	store *orchestrator.Store
	river *river.Client[pgx.Tx]
}

// setup returns a store on a fresh, migrated schema, enqueuing through a real (not started) River client.
func setup(t *testing.T, mappings ...orchestrator.Mapping) *testBundle {
	t.Helper()
	ctx := context.Background()
	pool, _ := dbtest.NewMigratedPool(t)
	store := orchestrator.NewStore(pool)
	client := jobstest.NewClient(t, pool, store, jobs.ClientConfig{})
	if len(mappings) > 0 {
		_, err := store.MappingSync(ctx, mappings)
		require.NoError(t, err)
	}
	return &testBundle{pool: pool, store: store, river: client}
}

// oneConnection returns a store on the bundle's schema, with its queue, whose pool holds a single connection:
// a transaction left open or aborted on it would fail whatever comes next.
func (b *testBundle) oneConnection(t *testing.T) (*orchestrator.Store, *pgxpool.Pool) {
	t.Helper()
	cfg := b.pool.Config().Copy()
	cfg.MaxConns = 1
	one, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(one.Close)
	store := orchestrator.NewStore(one)
	store.SetQueue(jobs.NewQueue(b.pool, b.river))
	return store, one
}

func mapping(name, dataset string, refs ...string) orchestrator.Mapping {
	return orchestrator.Mapping{
		Name: name, Dataset: dataset, Refs: refs, Command: []string{"true"}, Enabled: true,
	}.WithDefaults()
}

func delivery(t testing.TB, fixture string) *orchestrator.Delivery {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "deliveries", fixture))
	require.NoError(t, err)
	d, err := orchestrator.ParseDelivery(data)
	require.NoError(t, err)
	return d
}

func count(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func TestDeliveryInsert(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("TriggersOneRunPinnedToNewSha", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{
			Delivery: delivery(t, "dataset-multi-ref.json"), RemoteAddr: "203.0.113.9",
		})
		require.NoError(t, err)
		require.Len(t, res.RunIDs, 1)
		require.Len(t, res.Decisions, 4)

		run, err := b.store.RunGetByID(ctx, res.RunIDs[0])
		require.NoError(t, err)
		require.Equal(t, "e1a3c5e7092b4d6f8a0c2e4b6d8f0a2c4e6b8d0f", run.Revision)
		require.Equal(t, "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f", run.OldRevision)
		require.Equal(t, "refs/heads/main", run.Ref)
		require.Equal(t, orchestrator.RunQueued, run.Status)
		require.Equal(t, orchestrator.TriggerWebhook, run.Trigger)
		require.Equal(t, "tickets", run.Mapping)
		require.Equal(t, 2, run.MaxAttempts)
		require.NotNil(t, run.JobID)

		job := jobGet(t, b, *run.JobID)
		require.JSONEq(t, fmt.Sprintf(`{"run_id": %d}`, run.ID), string(job.EncodedArgs))
		require.Equal(t, 2, job.MaxAttempts)

		require.Equal(t, 4, count(t, b.pool, `SELECT count(*) FROM delivery_refs WHERE delivery_id = $1`, res.DeliveryID))
		require.Equal(t, 4, count(t, b.pool, `SELECT count(*) FROM decisions WHERE delivery_id = $1`, res.DeliveryID))
		var remote string
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT remote_addr FROM deliveries WHERE id = $1`, res.DeliveryID).Scan(&remote))
		require.Equal(t, "203.0.113.9", remote)
	})

	t.Run("ReplayIsDuplicate", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		first, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
		require.NoError(t, err)
		second, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
		require.NoError(t, err)

		require.Len(t, first.RunIDs, 1)
		require.Empty(t, second.RunIDs)
		require.NotEqual(t, first.DeliveryID, second.DeliveryID, "every delivery is recorded")
		require.Equal(t, orchestrator.DecisionDuplicate, second.Decisions[0].Decision)
		require.Equal(t, first.RunIDs[0], second.Decisions[0].RunID)
		require.Equal(t, fmt.Sprintf("duplicate of run %d", first.RunIDs[0]), second.Decisions[0].Reason)
		require.Equal(t, 1, count(t, b.pool, `SELECT count(*) FROM runs`))
		require.Len(t, jobList(t, b, river.NewJobListParams()), 1)
	})

	t.Run("ConcurrentSameDeliveryMakesOneRun", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"), mapping("all-acme", "acme/*"))
		const senders = 16
		var wg sync.WaitGroup
		results := make([]*orchestrator.DeliveryInsertResult, senders)
		errs := make([]error, senders)
		for i := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
			}()
		}
		wg.Wait()
		created := 0
		for i := range senders {
			require.NoError(t, errs[i])
			created += len(results[i].RunIDs)
		}
		require.Equal(t, 2, created, "one run per mapping, however many senders")
		require.Equal(t, 2, count(t, b.pool, `SELECT count(*) FROM runs`))
		require.Len(t, jobList(t, b, river.NewJobListParams()), 2)
		require.Equal(t, senders, count(t, b.pool, `SELECT count(*) FROM deliveries`))
		require.Equal(t, 2*senders-2, count(t, b.pool, `SELECT count(*) FROM decisions WHERE decision = 'duplicate'`))
	})

	t.Run("SameRefTwiceInOneDelivery", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		d, err := orchestrator.ParseDelivery([]byte(`{"event":{"scope":"repo.content","action":"update"},
			"repo":{"type":"dataset","name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},
			"updatedRefs":[{"ref":"refs/heads/main","newSha":"3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"},
				{"ref":"refs/heads/main","newSha":"3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"}]}`))
		require.NoError(t, err)
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d})
		require.NoError(t, err)
		require.Len(t, res.RunIDs, 1)
		require.Equal(t, orchestrator.DecisionQueued, res.Decisions[0].Decision)
		require.Equal(t, orchestrator.DecisionDuplicate, res.Decisions[1].Decision)
		require.Equal(t, res.RunIDs[0], res.Decisions[1].RunID)
	})

	t.Run("IgnoredDeliveryIsRecorded", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		for _, fixture := range []string{"model-content-update.json", "discussion-pr-opened.json", "repo-config-dois.json",
			"dataset-pr-ref.json", "dataset-parquet-bot.json"} {
			res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, fixture)})
			require.NoError(t, err, fixture)
			require.Empty(t, res.RunIDs, fixture)
			require.Equal(t, orchestrator.DecisionIgnored, res.Decisions[0].Decision, fixture)
		}
		require.Equal(t, 0, count(t, b.pool, `SELECT count(*) FROM runs`))
		require.Equal(t, 5, count(t, b.pool, `SELECT count(*) FROM deliveries`))

		list, err := b.store.DeliveryList(ctx, orchestrator.DeliveryListParams{})
		require.NoError(t, err)
		require.Len(t, list, 5)
		require.Equal(t, "repo.content.update", list[0].Event)
		require.Equal(t, "bot ref refs/convert/parquet", list[0].Decisions[0].Reason)
		require.Equal(t, "tickets", list[0].Decisions[0].MappingName)
		require.Equal(t, []orchestrator.RefUpdate{{Ref: "refs/convert/parquet",
			OldSha: "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e", NewSha: "e1a3c5e7092b4d6f8a0c2e4b6d8f0a2c4e6b8d0f"}}, list[0].Refs)
		require.Equal(t, "model repo, not a dataset", list[4].Decisions[0].Reason)
		require.Empty(t, list[4].Decisions[0].MappingName)

		older, err := b.store.DeliveryList(ctx, orchestrator.DeliveryListParams{BeforeID: list[1].ID, Limit: 2})
		require.NoError(t, err)
		require.Equal(t, []int64{list[2].ID, list[3].ID}, []int64{older[0].ID, older[1].ID})
	})

	t.Run("FailedDeliveryLeavesNoTransactionBehind", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		store, one := b.oneConnection(t)
		d := delivery(t, "dataset-main-push.json")
		// A NUL is refused by the text column, after the group's BEGIN.
		_, err := store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d, RemoteAddr: "127.0.0.1\x00"})
		require.Error(t, err)
		require.Equal(t, 0, count(t, one, `SELECT count(*) FROM deliveries`), "nothing written")
		res, err := store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d, RemoteAddr: "127.0.0.1"})
		require.NoError(t, err)
		require.Len(t, res.RunIDs, 1)
		require.Equal(t, 1, runsWithTheirJobs(t, b, one))
	})

	t.Run("GroupDecidesAsOneAtATime", func(t *testing.T) {
		t.Parallel()
		const shaA, shaB, shaC = "a000000000000000000000000000000000000001", "b000000000000000000000000000000000000002",
			"c000000000000000000000000000000000000003"
		del := func(dataset string, refs ...string) orchestrator.DeliveryInsertParams {
			d := &orchestrator.Delivery{Scope: "repo.content", Action: "update", RepoType: "dataset",
				RepoName: "acme/" + dataset, RepoID: "id-" + dataset, Raw: []byte(`{}`)}
			for _, r := range refs {
				ref, sha, _ := strings.Cut(r, "@")
				d.Refs = append(d.Refs, orchestrator.RefUpdate{Ref: "refs/heads/" + ref, NewSha: sha})
			}
			return orchestrator.DeliveryInsertParams{Delivery: d}
		}
		// Each decision is written "kind N": N numbers the runs the case creates, in the order they are created.
		tests := []struct {
			name   string
			before []orchestrator.DeliveryInsertParams // an earlier group
			group  []orchestrator.DeliveryInsertParams
			want   [][]string
		}{{
			name:  "the same revision twice",
			group: []orchestrator.DeliveryInsertParams{del("tickets", "main@"+shaA), del("tickets", "main@"+shaA)},
			want:  [][]string{{"queued 0"}, {"duplicate 0"}},
		}, {
			name:  "the same revision of two datasets",
			group: []orchestrator.DeliveryInsertParams{del("tickets", "main@"+shaA), del("emails", "main@"+shaA)},
			want:  [][]string{{"queued 0"}, {"queued 1"}},
		}, {
			name: "refs repeated across deliveries",
			group: []orchestrator.DeliveryInsertParams{
				del("tickets", "main@"+shaA, "dev@"+shaB), del("tickets", "dev@"+shaB, "main@"+shaC)},
			want: [][]string{{"queued 0", "queued 1"}, {"duplicate 1", "queued 2"}},
		}, {
			name:   "a revision an earlier group ran",
			before: []orchestrator.DeliveryInsertParams{del("tickets", "main@"+shaA)},
			group:  []orchestrator.DeliveryInsertParams{del("tickets", "main@"+shaA), del("tickets", "main@"+shaB)},
			want:   [][]string{{"duplicate 0"}, {"queued 1"}},
		}, {
			name:  "a deleted ref beside a new revision",
			group: []orchestrator.DeliveryInsertParams{del("tickets", "old@"), del("tickets", "main@"+shaA)},
			want:  [][]string{{"ignored"}, {"queued 0"}},
		}}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t, mapping("all-acme", "acme/*", "refs/heads/*"))
				var runs []int64 // in the order they were created
				if tt.before != nil {
					res, err := b.store.DeliveryInsertGroup(ctx, tt.before)
					require.NoError(t, err)
					for _, r := range res {
						runs = append(runs, r.RunIDs...)
					}
				}
				res, err := b.store.DeliveryInsertGroup(ctx, tt.group)
				require.NoError(t, err)
				require.Len(t, res, len(tt.group))
				for i, r := range res {
					if i > 0 {
						require.Greater(t, r.DeliveryID, res[i-1].DeliveryID, "deliveries are numbered in order")
					}
					for _, id := range r.RunIDs {
						if len(runs) > 0 {
							require.Greater(t, id, runs[len(runs)-1], "runs are numbered in the order they were asked for")
						}
						runs = append(runs, id)
					}
				}
				for i, r := range res {
					var got []string
					for _, dec := range r.Decisions {
						label := string(dec.Decision)
						if dec.RunID != 0 {
							label += " " + strconv.Itoa(slices.Index(runs, dec.RunID))
						}
						got = append(got, label)
					}
					require.Equal(t, tt.want[i], got, "delivery %d", i)
					require.Equal(t, len(r.Decisions), count(t, b.pool, `SELECT count(*) FROM decisions WHERE delivery_id = $1`, r.DeliveryID))
					require.Equal(t, len(tt.group[i].Delivery.Refs), count(t, b.pool,
						`SELECT count(*) FROM delivery_refs WHERE delivery_id = $1`, r.DeliveryID))
				}
				require.Equal(t, len(runs), runsWithTheirJobs(t, b, b.pool), "each run records the job that executes it")
				require.Equal(t, 0, count(t, b.pool, `SELECT count(*) FROM decisions d JOIN runs r ON r.id = d.run_id
					JOIN deliveries v ON v.id = d.delivery_id
					WHERE r.repo_id <> v.repo_id OR r.ref <> d.ref OR r.revision <> d.new_sha`), "decisions point at their own runs")
			})
		}
	})

	t.Run("ManyConcurrentDeliveriesEachGetTheirRun", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"), mapping("all-acme", "acme/*"))
		const senders = 96
		var wg sync.WaitGroup
		results := make([]*orchestrator.DeliveryInsertResult, senders)
		errs := make([]error, senders)
		for i := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Every revision is sent twice, so that groups hold duplicates of each other's runs.
				d, err := orchestrator.ParseDelivery([]byte(fmt.Sprintf(`{"event":{"scope":"repo.content","action":"update"},
					"repo":{"type":"dataset","name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},
					"updatedRefs":[{"ref":"refs/heads/main","newSha":"%040x"}]}`, i/2+1)))
				if err != nil {
					errs[i] = err
					return
				}
				results[i], errs[i] = b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d})
			}()
		}
		wg.Wait()
		runs := map[int64]bool{}
		for i := range senders {
			require.NoError(t, errs[i])
			require.Len(t, results[i].Decisions, 2)
			for _, dec := range results[i].Decisions {
				require.NotZero(t, dec.RunID, "every queued or duplicate decision names its run")
				require.Contains(t, []orchestrator.DecisionKind{orchestrator.DecisionQueued, orchestrator.DecisionDuplicate}, dec.Decision)
			}
			for _, id := range results[i].RunIDs {
				require.False(t, runs[id], "run %d reported created twice", id)
				runs[id] = true
			}
		}
		require.Len(t, runs, senders, "one run per mapping and revision")
		require.Equal(t, senders, runsWithTheirJobs(t, b, b.pool), "each run records the job that executes it")
		require.Len(t, jobList(t, b, river.NewJobListParams()), senders)
		require.Equal(t, senders, count(t, b.pool, `SELECT count(*) FROM decisions WHERE decision = 'duplicate'`))
		require.Equal(t, 0, count(t, b.pool, `SELECT count(*) FROM decisions d JOIN runs r ON r.id = d.run_id
			WHERE r.mapping_id <> d.mapping_id OR r.revision <> d.new_sha`), "decisions point at their own runs")
	})

	t.Run("MappingsWrittenElsewhereAreSeenAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		// A second store on the same database plays another orchestrator process.
		other := orchestrator.NewStore(b.pool)
		other.SetQueue(jobs.NewQueue(b.pool, b.river))
		send := func(sha string) *orchestrator.DeliveryInsertResult {
			d, err := orchestrator.ParseDelivery([]byte(`{"event":{"scope":"repo.content","action":"update"},
				"repo":{"type":"dataset","name":"acme/other-data","id":"66a1f0c2b9e4d3a1f2c3d4e6"},
				"updatedRefs":[{"ref":"refs/heads/main","newSha":"` + sha + `"}]}`))
			require.NoError(t, err)
			res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d})
			require.NoError(t, err)
			return res
		}
		require.Empty(t, send("1111111111111111111111111111111111111111").RunIDs, "no mapping watches the dataset yet")

		m := mapping("other", "acme/other-data")
		m.Source = orchestrator.SourceAPI
		_, err := other.MappingCreate(ctx, m)
		require.NoError(t, err)
		require.Len(t, send("2222222222222222222222222222222222222222").RunIDs, 1, "a mapping created by another process counts at once")

		_, err = other.MappingDisable(ctx, "other")
		require.NoError(t, err)
		res := send("3333333333333333333333333333333333333333")
		require.Empty(t, res.RunIDs, "a mapping disabled by another process stops counting at once")
	})

	t.Run("DatabaseGoneIsUnavailable", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		b.pool.Close()
		_, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
		require.Error(t, err)
		require.Equal(t, orchestrator.CodeUnavailable, orchestrator.ErrorCode(err))
	})
}

func TestMappingSync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	a, c := mapping("a", "acme/a"), mapping("c", "acme/c")
	a.Timeout = 3 * time.Hour
	a.Env = map[string]string{"K": "v"}
	res, err := b.store.MappingSync(ctx, []orchestrator.Mapping{a, c})
	require.NoError(t, err)
	require.Equal(t, 2, res.Upserted)
	require.Empty(t, res.Disabled)

	// A run for "c", so that disabling it must keep its history.
	_, err = b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: &orchestrator.Delivery{
		Scope: "repo.content", Action: "update", RepoType: "dataset", RepoName: "acme/c", Raw: []byte(`{}`),
		Refs: []orchestrator.RefUpdate{{Ref: "refs/heads/main", NewSha: "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"}},
	}})
	require.NoError(t, err)

	a.Dataset = "acme/a2"
	res, err = b.store.MappingSync(ctx, []orchestrator.Mapping{a})
	require.NoError(t, err)
	require.Equal(t, []string{"c"}, res.Disabled)

	list, err := b.store.MappingList(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "acme/a2", list[0].Dataset)
	require.Equal(t, 3*time.Hour, list[0].Timeout)
	require.Equal(t, map[string]string{"K": "v"}, list[0].Env)
	require.True(t, list[0].Enabled)
	require.False(t, list[1].Enabled)
	require.Equal(t, 1, count(t, b.pool, `SELECT count(*) FROM runs`), "history of a disabled mapping stays")

	enabled, err := b.store.MappingListEnabled(ctx)
	require.NoError(t, err)
	require.Len(t, enabled, 1)

	// Declaring it again enables it again.
	res, err = b.store.MappingSync(ctx, []orchestrator.Mapping{a, c})
	require.NoError(t, err)
	require.Empty(t, res.Disabled)
	enabled, err = b.store.MappingListEnabled(ctx)
	require.NoError(t, err)
	require.Len(t, enabled, 2)
}

func TestRunList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, mapping("tickets", "acme/support-tickets"), mapping("all", "acme/*", "refs/heads/*", "refs/tags/*"))
	for _, fixture := range []string{"dataset-main-push.json", "dataset-multi-ref.json"} {
		_, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, fixture)})
		require.NoError(t, err)
	}
	all, err := b.store.RunList(ctx, orchestrator.RunListParams{})
	require.NoError(t, err)
	require.Len(t, all, 5) // main push: 2 mappings; multi-ref: tickets main, all main and tag
	for i := 1; i < len(all); i++ {
		require.Greater(t, all[i-1].ID, all[i].ID, "newest first")
	}

	byMapping, err := b.store.RunList(ctx, orchestrator.RunListParams{Mapping: "tickets"})
	require.NoError(t, err)
	require.Len(t, byMapping, 2)

	page, err := b.store.RunList(ctx, orchestrator.RunListParams{Limit: 2, BeforeID: all[1].ID})
	require.NoError(t, err)
	require.Equal(t, []int64{all[2].ID, all[3].ID}, []int64{page[0].ID, page[1].ID})

	none, err := b.store.RunList(ctx, orchestrator.RunListParams{Status: orchestrator.RunFailed})
	require.NoError(t, err)
	require.Empty(t, none)

	// Every combination of filters gives the runs that match all of them, newest first, page by page.
	filters := []orchestrator.RunListParams{
		{Mapping: "all"}, {Dataset: "acme/support-tickets"}, {Status: orchestrator.RunQueued}, {Trigger: "webhook"},
		{Mapping: "all", Status: orchestrator.RunQueued}, {Dataset: "acme/support-tickets", Trigger: "webhook"},
		{Mapping: "tickets", Dataset: "acme/support-tickets", Status: orchestrator.RunQueued, Trigger: "webhook"},
		{Mapping: "missing"}, {Mapping: "all", Trigger: "retry"},
	}
	for _, f := range filters {
		var want []int64
		for _, r := range all {
			if (f.Mapping == "" || r.Mapping == f.Mapping) && (f.Dataset == "" || r.Dataset == f.Dataset) &&
				(f.Status == "" || r.Status == f.Status) && (f.Trigger == "" || r.Trigger == f.Trigger) {
				want = append(want, r.ID)
			}
		}
		var got []int64
		for before := int64(0); ; {
			p := f
			p.Limit, p.BeforeID = 2, before
			page, err := b.store.RunList(ctx, p)
			require.NoError(t, err, "%+v", f)
			for _, r := range page {
				got = append(got, r.ID)
			}
			if len(page) < 2 {
				break
			}
			before = page[len(page)-1].ID
		}
		require.Equal(t, want, got, "%+v", f)
	}

	_, err = b.store.RunGetByID(ctx, 999999)
	require.Equal(t, orchestrator.CodeNotFound, orchestrator.ErrorCode(err))
}

func TestRunLogTail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, mapping("tickets", "acme/support-tickets"))
	res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
	require.NoError(t, err)
	runID := res.RunIDs[0]
	require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: runID, Attempt: 1, Argv: []string{"true"}}))
	// Five chunks of 10 bytes ("0000000000", "1111111111", …); the first two fell out of the kept window.
	var written int64
	for seq := range 5 {
		chunk := []byte(strings.Repeat(fmt.Sprint(seq), 10))
		written += int64(len(chunk))
		require.NoError(t, b.store.RunLogAppend(ctx, orchestrator.RunLogAppendParams{
			RunID: runID, Attempt: 1, Seq: seq, Data: chunk, LogBytes: written, DropBelowSeq: max(seq-2, 0), LogDropped: int64(max(seq-2, 0)) * 10,
		}))
	}
	tests := []struct {
		max      int
		want     string
		notShown int64
	}{
		{max: 1 << 20, want: "222222222233333333334444444444", notShown: 20},
		{max: 30, want: "222222222233333333334444444444", notShown: 20},
		{max: 29, want: "33333333334444444444", notShown: 30},
		{max: 20, want: "33333333334444444444", notShown: 30},
		{max: 10, want: "4444444444", notShown: 40},
		{max: 4, want: "4444", notShown: 46},
	}
	for _, tt := range tests {
		data, notShown, err := b.store.RunLogTail(ctx, runID, 1, tt.max)
		require.NoError(t, err)
		require.Equal(t, tt.want, string(data), "max %d", tt.max)
		require.Equal(t, tt.notShown, notShown, "max %d", tt.max)
	}
	data, notShown, err := b.store.RunLogTail(ctx, runID, 2, 100)
	require.NoError(t, err)
	require.Empty(t, data, "an attempt that never ran has no log")
	require.Zero(t, notShown)
}

func TestRunAttemptStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := func(b *testBundle, runID int64, attempt int) error {
		return b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: runID, Attempt: attempt, Argv: []string{"x"}})
	}
	// pushRef records the n-th push of a ref, which replaced the (n-1)-th.
	pushRef := func(t *testing.T, b *testBundle, ref string, n int) int64 {
		t.Helper()
		d, err := orchestrator.ParseDelivery([]byte(fmt.Sprintf(`{"event":{"scope":"repo.content","action":"update"},
			"repo":{"type":"dataset","name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},
			"updatedRefs":[{"ref":%q,"oldSha":%s,"newSha":"%040x"}]}`, ref, oldSha(n), n)))
		require.NoError(t, err)
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d})
		require.NoError(t, err)
		require.Len(t, res.RunIDs, 1)
		return res.RunIDs[0]
	}
	push := func(t *testing.T, b *testBundle, n int) int64 { return pushRef(t, b, "refs/heads/main", n) }
	// oneWaits pushes two runs of a mapping with one slot and starts the first: the second is refused the slot.
	oneWaits := func(t *testing.T, b *testBundle) (first, second int64, wait *orchestrator.WaitError) {
		t.Helper()
		first, second = push(t, b, 1), push(t, b, 2)
		require.NoError(t, start(b, first, 1))
		require.ErrorAs(t, start(b, second, 1), &wait)
		return first, second, wait
	}
	withSettings := func(f func(*orchestrator.Mapping)) orchestrator.Mapping {
		m := mapping("tickets", "acme/support-tickets")
		f(&m)
		return m
	}
	queueEvery := func(m *orchestrator.Mapping) { m.OnNewRevision = orchestrator.OnNewRevisionQueue }

	t.Run("MissingRunIsNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		require.Equal(t, orchestrator.CodeNotFound, orchestrator.ErrorCode(start(b, 424242, 1)))
	})

	t.Run("FinishedRunIsAConflict", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		id := push(t, b, 1)
		require.NoError(t, start(b, id, 1))
		require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id, Attempt: 1,
			Transition: orchestrator.TransitionSucceed, NoTargets: true}))
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(start(b, id, 2)))
	})

	t.Run("ConcurrencyMarksTheRunWaitingUntilItStarts", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withSettings(queueEvery))
		first, second, wait := oneWaits(t, b)
		require.Contains(t, wait.Reason, "1 of 1 runs of the mapping are running")
		require.Equal(t, 1, count(t, b.pool, `SELECT count(*) FROM runs WHERE id = $1 AND waiting_since IS NOT NULL`, second))
		jobs, err := b.store.RunWaitingJobs(ctx, b.mappingID(t, "tickets"))
		require.NoError(t, err)
		require.Empty(t, jobs, "no free slot yet")

		require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: first, Attempt: 1,
			Transition: orchestrator.TransitionSucceed, NoTargets: true}))
		require.NoError(t, start(b, second, 1))
		require.Equal(t, 0, count(t, b.pool, `SELECT count(*) FROM runs WHERE waiting_since IS NOT NULL`))
	})

	t.Run("FinishWakesTheWaitingRun", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name      string
			noTargets bool
		}{
			{"OneRoundTrip", true},
			{"InATransaction", false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t, withSettings(queueEvery))
				first, second, _ := oneWaits(t, b)
				// The worker that took the second run's job was refused the slot and snoozed the job.
				waiting, err := b.store.RunGetByID(ctx, second)
				require.NoError(t, err)
				stop := workJobs(t, b, 2, func(context.Context, *river.Job[jobs.RetrainArgs], <-chan struct{}) error {
					return river.JobSnooze(time.Hour)
				})
				waitJobs(t, b, rivertype.JobStateScheduled, *waiting.JobID)
				stop()

				require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: first, Attempt: 1,
					Transition: orchestrator.TransitionSucceed, NoTargets: tc.noTargets,
					WakeMapping: b.mappingID(t, "tickets")}))
				require.Equal(t, 1, count(t, b.pool, `SELECT count(*) FROM runs WHERE id = $1 AND status = 'succeeded'`, first))
				job := jobGet(t, b, *waiting.JobID)
				require.Equal(t, rivertype.JobStateAvailable, job.State, "woken for the slot the finish freed")
				require.WithinDuration(t, time.Now(), job.ScheduledAt, time.Minute, "woken now, not when the snooze ends")
			})
		}
	})

	t.Run("FailedFinishLeavesNoTransactionBehind", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		id := push(t, b, 1)
		require.NoError(t, start(b, id, 1))
		store, one := b.oneConnection(t)
		finish := orchestrator.RunAttemptFinishParams{RunID: id, Attempt: 1, Transition: orchestrator.TransitionSucceed,
			NoTargets: true, WakeMapping: b.mappingID(t, "tickets"),
			Output: []byte(`{"not json`)}
		require.Error(t, store.RunAttemptFinish(ctx, finish))
		require.Equal(t, 1, count(t, one, `SELECT count(*) FROM runs WHERE id = $1 AND status = 'running'`, id), "nothing written")
		finish.Output = []byte(`{"accuracy": 0.9}`)
		require.NoError(t, store.RunAttemptFinish(ctx, finish))
		require.Equal(t, 1, count(t, one, `SELECT count(*) FROM runs WHERE id = $1 AND status = 'succeeded'`, id))
	})

	t.Run("OlderWaitingRunGoesFirst", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withSettings(func(m *orchestrator.Mapping) {
			queueEvery(m)
			m.Concurrency, m.Refs = 2, []string{"refs/heads/*"}
		}))
		first, second, third := push(t, b, 1), push(t, b, 2), push(t, b, 3)
		require.NoError(t, start(b, first, 1))
		require.NoError(t, start(b, second, 1))
		var wait *orchestrator.WaitError
		require.ErrorAs(t, start(b, third, 1), &wait) // marked waiting
		fourth, other := push(t, b, 4), pushRef(t, b, "refs/heads/dev", 1)
		require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: first, Attempt: 1,
			Transition: orchestrator.TransitionSucceed, NoTargets: true}))
		require.ErrorAs(t, start(b, other, 1), &wait, "the free slot belongs to the older waiting run")
		require.Contains(t, wait.Reason, "1 older runs of the mapping wait")
		require.ErrorAs(t, start(b, fourth, 1), &wait, "the revision before it goes first")
		require.Contains(t, wait.Reason, "run 3, of the revision before this one in the ref's history, has not started")
		require.NoError(t, start(b, third, 1))
	})

	t.Run("QuietPeriodSaysHowLong", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withSettings(func(m *orchestrator.Mapping) { m.QuietPeriod, m.MaxWait = time.Minute, time.Hour }))
		id := push(t, b, 1)
		var wait *orchestrator.WaitError
		require.ErrorAs(t, start(b, id, 1), &wait)
		require.Greater(t, wait.Delay, 50*time.Second)
		require.LessOrEqual(t, wait.Delay, time.Minute)
		require.Equal(t, 0, count(t, b.pool, `SELECT count(*) FROM runs WHERE waiting_since IS NOT NULL`), "a quiet period is no slot wait")
	})

	t.Run("OlderRevisionIsSuperseded", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		older, newer := push(t, b, 1), push(t, b, 2)
		err := start(b, older, 1)
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(err))
		run, err := b.store.RunGetByID(ctx, older)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunSuperseded, run.Status)
		require.Equal(t, newer, *run.SupersededBy)
		require.NotNil(t, run.FinishedAt)
		require.NoError(t, start(b, newer, 1))
	})

	t.Run("RunningRunStartsNoOtherAttempt", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		id := push(t, b, 1)
		require.NoError(t, start(b, id, 1))
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(start(b, id, 1)), "an attempt starts once")
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(start(b, id, 2)),
			"a running run starts no other attempt until its own is ended (by its worker, or the reaper)")
		ok, err := b.store.RunAttemptAbandon(ctx, orchestrator.RunAttemptAbandonParams{RunID: id, Attempt: 1, Reason: "interrupted"})
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, start(b, id, 2))
		attempts, err := b.store.RunAttemptList(ctx, id)
		require.NoError(t, err)
		require.Len(t, attempts, 2)
		require.Equal(t, orchestrator.AttemptInterrupted, attempts[0].Status)
		require.NotNil(t, attempts[0].FinishedAt)
		require.Equal(t, orchestrator.AttemptRunning, attempts[1].Status)
		run, err := b.store.RunGetByID(ctx, id)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunRunning, run.Status)
		require.Equal(t, 2, run.Attempt)
	})
}

// oldSha returns the JSON oldSha of the n-th push of a ref whose revisions are %040x of 1, 2, ...: the one
// before it, or null for the first.
func oldSha(n int) string {
	if n <= 1 {
		return "null"
	}
	return fmt.Sprintf(`"%040x"`, n-1)
}

// mappingID returns the id of the named mapping.
func (b *testBundle) mappingID(t *testing.T, name string) int64 {
	t.Helper()
	m, err := b.store.MappingGetByName(context.Background(), name)
	require.NoError(t, err)
	return m.ID
}

// TestRunAttemptStartReadsLittle checks that deciding a start reads a handful of pages, however long the history
// of the ref and whatever plan the statistics lead to: the decision once sorted the ref's whole history through
// the dedup index, and counted the mapping's backlog, while the statistics said the table was small.
func TestRunAttemptStartReadsLittle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	every := mapping("every", "acme/every") // queues every revision: the lookup of the revision before runs
	every.OnNewRevision, every.Concurrency = orchestrator.OnNewRevisionQueue, 4
	b := setup(t, mapping("tickets", "acme/support-tickets"), every) // tickets supersedes: the newer-revision lookup runs
	mappingID := b.mappingID(t, "tickets")
	// 20,000 finished runs of the ref, then three queued, inserted after the statistics were taken.
	_, err := b.pool.Exec(ctx, `ANALYZE runs`)
	require.NoError(t, err)
	// Each revision replaced the one before it: the history is one chain 20,003 revisions long.
	_, err = b.pool.Exec(ctx, `INSERT INTO runs (mapping_id, dataset, repo_id, ref, revision, old_revision, trigger, status, max_attempts, finished_at)
		SELECT $1, 'acme/support-tickets', 'r', 'refs/heads/main', md5(g::text), CASE WHEN g > 1 THEN md5((g - 1)::text) END, 'webhook',
			CASE WHEN g <= 20000 THEN 'succeeded' ELSE 'queued' END, 1, CASE WHEN g <= 20000 THEN now() END
		FROM generate_series(1, 20003) g`, mappingID)
	require.NoError(t, err)
	var older, newest int64
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT max(id) - 1, max(id) FROM runs`).Scan(&older, &newest))
	// The other mapping as a benchmark leaves it: 20,000 runs withdrawn (cancelled), then a backlog of 5,000
	// revisions, each after the one before, four of them running.
	_, err = b.pool.Exec(ctx, `INSERT INTO runs (mapping_id, dataset, repo_id, ref, revision, old_revision, trigger, status, max_attempts, finished_at, attempt)
		SELECT $1, 'acme/every', 'r', 'refs/heads/main', md5('e' || g), CASE WHEN g > 20000 THEN md5('e' || (g - 1)) END, 'webhook',
			CASE WHEN g <= 20000 THEN 'cancelled' WHEN g <= 20004 THEN 'running' ELSE 'queued' END, 1,
			CASE WHEN g <= 20000 THEN now() END, CASE WHEN g > 20000 AND g <= 20004 THEN 1 ELSE 0 END
		FROM generate_series(1, 25000) g`, b.mappingID(t, "every"))
	require.NoError(t, err)
	var backlog int64
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT min(id) FROM runs WHERE mapping_id = $1 AND status = 'queued'`,
		b.mappingID(t, "every")).Scan(&backlog))

	for _, tc := range []struct {
		name  string
		run   int64
		plans string
	}{
		{"OlderRunGenericPlan", older, "force_generic_plan"},
		{"OlderRunCustomPlan", older, "force_custom_plan"},
		{"NewestRunGenericPlan", newest, "force_generic_plan"},
		{"NewestRunCustomPlan", newest, "force_custom_plan"},
		{"BacklogGenericPlan", backlog, "force_generic_plan"},
		{"BacklogCustomPlan", backlog, "force_custom_plan"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := b.pool.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }() // the decision writes; nothing of it is kept
			_, err = tx.Exec(ctx, `SET LOCAL plan_cache_mode = `+tc.plans)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `SET LOCAL enable_bitmapscan = off`) // as RunAttemptStart does
			require.NoError(t, err)
			var plan []struct {
				Plan struct {
					SharedHit  int `json:"Shared Hit Blocks"`
					SharedRead int `json:"Shared Read Blocks"`
				} `json:"Plan"`
			}
			require.NoError(t, tx.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+orchestrator.RunAttemptStartSQL,
				tc.run, 1, []string{"x"}, "").Scan(&plan))
			require.Len(t, plan, 1)
			pages := plan[0].Plan.SharedHit + plan[0].Plan.SharedRead
			t.Logf("pages %d", pages)
			if pages >= 100 { // the plan says where they went
				rows, _ := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) `+orchestrator.RunAttemptStartSQL, tc.run, 1, []string{"x"}, "")
				for rows.Next() {
					var line string
					_ = rows.Scan(&line)
					t.Log(line)
				}
				rows.Close()
			}
			require.Less(t, pages, 100, "the decision read %d pages", pages)
		})
	}
}
