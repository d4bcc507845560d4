package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/jobs/jobstest"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// reconcileHub plays the Hub's API for catch-up: the refs listing, a dataset's info and revisions, with the
// answers' real shapes. A dataset may be made to fail with a status (and Retry-After), or to drop the
// connection without an answer.
type reconcileHub struct {
	server *httptest.Server

	mu       sync.Mutex
	datasets map[string]*reconcileDataset
	fail     map[string]reconcileFailure // by dataset; "*" for every dataset
	asked    map[string]int              // refs listings asked, by dataset
	idAsked  map[string]int              // infos asked, by dataset
}

type reconcileDataset struct {
	id   string
	refs map[string]string // full ref name → commit
}

type reconcileFailure struct {
	status     int // 0: drop the connection without an answer
	retryAfter string
}

func newReconcileHub(t *testing.T) *reconcileHub {
	t.Helper()
	h := &reconcileHub{datasets: map[string]*reconcileDataset{}, fail: map[string]reconcileFailure{},
		asked: map[string]int{}, idAsked: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/datasets/{owner}/{name}/refs", func(w http.ResponseWriter, r *http.Request) {
		repo := r.PathValue("owner") + "/" + r.PathValue("name")
		h.mu.Lock()
		h.asked[repo]++
		h.mu.Unlock()
		ds, ok := h.lookup(w, repo)
		if !ok {
			return
		}
		listing := map[string][]hub.Ref{"branches": {}, "tags": {}, "converts": {}}
		for ref, sha := range ds.refs {
			kind, name := "branches", strings.TrimPrefix(ref, "refs/heads/")
			switch {
			case strings.HasPrefix(ref, "refs/tags/"):
				kind, name = "tags", strings.TrimPrefix(ref, "refs/tags/")
			case strings.HasPrefix(ref, "refs/convert/"):
				kind, name = "converts", strings.TrimPrefix(ref, "refs/convert/")
			}
			listing[kind] = append(listing[kind], hub.Ref{Name: name, Ref: ref, TargetCommit: sha})
		}
		writeHubJSON(w, http.StatusOK, listing)
	})
	mux.HandleFunc("GET /api/datasets/{owner}/{name}", func(w http.ResponseWriter, r *http.Request) {
		repo := r.PathValue("owner") + "/" + r.PathValue("name")
		h.mu.Lock()
		h.idAsked[repo]++
		h.mu.Unlock()
		ds, ok := h.lookup(w, repo)
		if !ok {
			return
		}
		writeHubJSON(w, http.StatusOK, map[string]any{
			"_id": ds.id, "id": repo, "author": r.PathValue("owner"), "sha": ds.refs["refs/heads/main"],
			"private": false, "gated": false, "disabled": false, "downloads": 0, "likes": 0, "tags": []string{},
			"siblings": []map[string]string{{"rfilename": "README.md"}}, "lastModified": "2025-03-04T10:11:12.000Z",
		})
	})
	h.server = httptest.NewServer(mux)
	t.Cleanup(h.server.Close)
	return h
}

// lookup answers a failure or a 404 and returns false, or returns the dataset.
func (h *reconcileHub) lookup(w http.ResponseWriter, repo string) (reconcileDataset, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f, failing := h.fail[repo]
	if !failing {
		f, failing = h.fail["*"]
	}
	switch {
	case failing && f.status == 0:
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			_ = conn.Close()
		}
		return reconcileDataset{}, false
	case failing:
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		writeHubJSON(w, f.status, map[string]string{"error": http.StatusText(f.status)})
		return reconcileDataset{}, false
	}
	ds, ok := h.datasets[repo]
	if !ok {
		w.Header().Set("X-Error-Code", "RepoNotFound")
		writeHubJSON(w, http.StatusNotFound, map[string]string{"error": "Repository not found"})
		return reconcileDataset{}, false
	}
	return reconcileDataset{id: ds.id, refs: maps.Clone(ds.refs)}, true
}

func writeHubJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// set makes ref of dataset point at sha (creating the dataset with id when needed).
func (h *reconcileHub) set(dataset, id, ref, sha string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ds, ok := h.datasets[dataset]
	if !ok {
		ds = &reconcileDataset{id: id, refs: map[string]string{}}
		h.datasets[dataset] = ds
	}
	ds.refs[ref] = sha
}

func (h *reconcileHub) failWith(dataset string, f *reconcileFailure) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f == nil {
		delete(h.fail, dataset)
		return
	}
	h.fail[dataset] = *f
}

func (h *reconcileHub) counts(dataset string) (refs, ids int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.asked[dataset], h.idAsked[dataset]
}

// reconcileBundle is a store on a fresh schema with a running River client, a fake Hub and a Reconciler on it.
type reconcileBundle struct {
	pool     *pgxpool.Pool
	store    *orchestrator.Store
	client   *river.Client[pgx.Tx]
	hub      *reconcileHub
	rec      *jobs.Reconciler
	registry *prometheus.Registry
}

// reconcileSetup starts it all; with periodic, the client runs catch-up itself every interval.
func reconcileSetup(t *testing.T, interval time.Duration, periodic bool, mappings ...orchestrator.Mapping) *reconcileBundle {
	return reconcileSetupBackoff(t, interval, 300*time.Millisecond, periodic, mappings...)
}

// reconcileSetupBackoff is reconcileSetup with the first wait after a failure.
func reconcileSetupBackoff(t *testing.T, interval, backoff time.Duration, periodic bool, mappings ...orchestrator.Mapping) *reconcileBundle {
	t.Helper()
	ctx := context.Background()
	pool, _ := dbtest.NewMigratedPool(t)
	store := orchestrator.NewStore(pool)
	_, err := store.MappingSync(ctx, mappings)
	require.NoError(t, err)

	fake := newReconcileHub(t)
	registry := prometheus.NewRegistry()
	b := &reconcileBundle{pool: pool, store: store, hub: fake, registry: registry, rec: &jobs.Reconciler{
		Store: store, Hub: hub.New(fake.server.URL, "hf_reconcileTestToken"), Interval: interval,
		BackoffBase: backoff, Metrics: jobs.NewMetrics(registry), Logger: quietLogger,
	}}
	cfg := jobs.ClientConfig{Logger: quietLogger, Worker: jobs.WorkerConfig{
		KillGrace: 300 * time.Millisecond, LogFlushInterval: 20 * time.Millisecond,
		BaseEnv: []string{"PATH=" + os.Getenv("PATH")},
	}}
	if periodic {
		cfg.Reconciler = b.rec
	}
	b.client = jobstest.NewClient(t, pool, store, cfg)
	jobstest.Start(t, b.client)
	return b
}

func (b *reconcileBundle) once(t *testing.T) *jobs.ReconcileResult {
	t.Helper()
	res, err := b.rec.ReconcileOnce(context.Background())
	require.NoError(t, err)
	return res
}

// metrics returns the catch-up metrics, by series, such as `orchestrator_reconcile_passes_total{outcome="ok"}`.
func (b *reconcileBundle) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	families, err := b.registry.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "orchestrator_reconcile_") {
			continue
		}
		for _, m := range f.GetMetric() {
			series := f.GetName()
			for _, l := range m.GetLabel() {
				series += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			out[series] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

// reconcileCounts are the counters of catch-up, by outcome or result.
type reconcileCounts struct {
	ok, partial, failed, errored             float64 // passes
	unchanged, caughtUp, baseline, duplicate float64 // revisions
	datasetFailures                          float64
}

// requireCounts checks the counters, and returns when the last pass in which the Hub answered ended.
func (b *reconcileBundle) requireCounts(t *testing.T, want reconcileCounts) time.Time {
	t.Helper()
	m := b.metrics(t)
	require.Equal(t, want, reconcileCounts{
		ok:              m[`orchestrator_reconcile_passes_total{outcome="ok"}`],
		partial:         m[`orchestrator_reconcile_passes_total{outcome="partial"}`],
		failed:          m[`orchestrator_reconcile_passes_total{outcome="failed"}`],
		errored:         m[`orchestrator_reconcile_passes_total{outcome="error"}`],
		unchanged:       m[`orchestrator_reconcile_revisions_total{result="unchanged"}`],
		caughtUp:        m[`orchestrator_reconcile_revisions_total{result="caught_up"}`],
		baseline:        m[`orchestrator_reconcile_revisions_total{result="baseline"}`],
		duplicate:       m[`orchestrator_reconcile_revisions_total{result="duplicate"}`],
		datasetFailures: m["orchestrator_reconcile_dataset_failures_total"],
	})
	last := m["orchestrator_reconcile_last_success_timestamp_seconds"]
	return time.Unix(0, int64(last*1e9))
}

func (b *reconcileBundle) status(t *testing.T, dataset string) *orchestrator.ReconcileStatus {
	t.Helper()
	st, err := b.store.ReconcileStatusGet(context.Background(), dataset)
	require.NoError(t, err)
	return st
}

// waitHeld waits until none of the datasets waits out a failure anymore.
func (b *reconcileBundle) waitHeld(t *testing.T, datasets ...string) {
	t.Helper()
	for _, ds := range datasets {
		if st := b.status(t, ds); st.NextAttemptAt != nil {
			time.Sleep(time.Until(*st.NextAttemptAt))
		}
	}
	require.Eventually(t, func() bool {
		for _, ds := range datasets {
			if b.status(t, ds).Held {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond)
}

func (b *reconcileBundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func (b *reconcileBundle) waitRun(t *testing.T, runID int64) *orchestrator.Run {
	t.Helper()
	var run *orchestrator.Run
	require.Eventually(t, func() bool {
		var err error
		run, err = b.store.RunGetByID(context.Background(), runID)
		require.NoError(t, err)
		return run.Status.Finished()
	}, 15*time.Second, 10*time.Millisecond, "run %d never finished", runID)
	return run
}

func (b *reconcileBundle) runLog(t *testing.T, runID int64) string {
	t.Helper()
	data, _, err := b.store.RunLogTail(context.Background(), runID, 1, 1<<20)
	require.NoError(t, err)
	return string(data)
}

func reconcileMapping(name, dataset string, mods ...func(*orchestrator.Mapping)) orchestrator.Mapping {
	m := orchestrator.Mapping{
		Name: name, Dataset: dataset, Enabled: true,
		Command: []string{"sh", "-c", `echo "trained $1 old=$2"`, "sh", "${DATASET_REVISION}", "${DATASET_OLD_REVISION}"},
	}.WithDefaults()
	for _, mod := range mods {
		mod(&m)
	}
	return m
}

func reconcileRev(c string) string { return strings.Repeat(c, 40) }

const (
	reconcileTicketsID = "66a1f0c2b9e4d3a1f2c3d4e5"
	reconcileEagerID   = "77b2e1d3c0f5e4b2a3d4e5f6"
)

func reconcileDecisions(decisions []orchestrator.Decision) map[string]orchestrator.DecisionKind {
	out := map[string]orchestrator.DecisionKind{}
	for _, d := range decisions {
		out[d.MappingName+" "+d.Ref] = d.Decision
	}
	return out
}

func TestReconcile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("CatchesUpMissedCommits", func(t *testing.T) {
		t.Parallel()
		b := reconcileSetup(t, time.Minute, false,
			reconcileMapping("tickets", "acme/tickets"),
			reconcileMapping("tagged", "acme/tickets", func(m *orchestrator.Mapping) { m.Refs = []string{"refs/tags/*"} }),
			reconcileMapping("eager", "acme/eager", func(m *orchestrator.Mapping) { m.RunOnBaseline = true }),
			reconcileMapping("everything", "other/*"))
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/heads/main", reconcileRev("a"))
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/heads/dev", reconcileRev("d"))
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/tags/v1", reconcileRev("1"))
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/convert/parquet", reconcileRev("9"))
		b.hub.set("acme/eager", reconcileEagerID, "refs/heads/main", reconcileRev("e"))

		// First pass: every watched ref is recorded as a baseline and runs nothing, except for the mapping
		// that asks for a run on its baseline.
		res := b.once(t)
		require.Equal(t, []string{"acme/eager", "acme/tickets"}, res.Asked)
		require.Empty(t, res.Failed)
		require.Equal(t, []string{"other/*"}, res.Patterns)
		require.Len(t, res.Deliveries, 2)
		require.Len(t, res.Runs, 1)
		require.Equal(t, map[string]orchestrator.DecisionKind{
			"eager refs/heads/main":   orchestrator.DecisionQueued,
			"tagged refs/tags/v1":     orchestrator.DecisionBaseline,
			"tagged refs/heads/main":  orchestrator.DecisionIgnored,
			"tickets refs/tags/v1":    orchestrator.DecisionIgnored,
			"tickets refs/heads/main": orchestrator.DecisionBaseline,
		}, reconcileDecisions(res.Decisions))
		require.Zero(t, b.count(t, `SELECT count(*) FROM runs WHERE dataset = 'acme/tickets'`), "a baseline runs nothing")
		lastOK := b.requireCounts(t, reconcileCounts{ok: 1, baseline: 2, caughtUp: 1})
		require.WithinDuration(t, time.Now(), lastOK, 5*time.Second)

		eager := b.waitRun(t, res.Runs[0])
		require.Equal(t, orchestrator.RunSucceeded, eager.Status, eager.Error)
		require.Equal(t, reconcileRev("e"), eager.Revision)
		require.Equal(t, reconcileEagerID, eager.RepoID)
		require.Equal(t, "trained "+reconcileRev("e")+" old=\n", b.runLog(t, eager.ID))

		list, err := b.store.DeliveryList(ctx, orchestrator.DeliveryListParams{})
		require.NoError(t, err)
		require.Len(t, list, 2)
		for _, d := range list {
			require.Equal(t, orchestrator.DeliverySourceReconcile, d.Source)
			require.Equal(t, "repo.content.update", d.Event)
			require.Empty(t, d.RemoteAddr)
		}
		full, err := b.store.DeliveryGetByID(ctx, list[0].ID)
		require.NoError(t, err)
		require.Equal(t, "acme/tickets", full.RepoName)
		require.Equal(t, reconcileTicketsID, full.RepoID, "the Hub's id, as webhooks send it")
		parsed, err := orchestrator.ParseDelivery(full.Payload)
		require.NoError(t, err, "the recorded payload reads like a webhook's")
		require.Equal(t, reconcileTicketsID, parsed.RepoID)
		require.ElementsMatch(t, []orchestrator.RefUpdate{
			{Ref: "refs/tags/v1", NewSha: reconcileRev("1")}, {Ref: "refs/heads/main", NewSha: reconcileRev("a")},
		}, parsed.Refs, "only the watched refs")
		require.Contains(t, string(full.Payload), `"endpoint":"`+b.hub.server.URL+`"`)
		require.NotContains(t, string(full.Payload), "hf_reconcileTestToken")

		statuses, err := b.store.ReconcileStatusList(ctx)
		require.NoError(t, err)
		require.Len(t, statuses, 3)
		for _, st := range statuses[:2] {
			require.NotNil(t, st.LastOKAt, st.Dataset)
			require.False(t, st.Failing())
		}
		require.Equal(t, "other/*", statuses[2].Dataset)
		require.Equal(t, jobs.PatternNote, statuses[2].Note)
		require.Nil(t, statuses[2].LastOKAt)
		_, ids := b.hub.counts("acme/tickets")
		require.Equal(t, 1, ids)

		// Nothing new: nothing recorded, and the dataset's id is not asked for.
		res = b.once(t)
		require.Equal(t, []string{"acme/eager", "acme/tickets"}, res.Asked)
		require.Empty(t, res.Deliveries)
		require.Equal(t, 2, b.count(t, `SELECT count(*) FROM deliveries`))
		refs, ids := b.hub.counts("acme/tickets")
		require.Equal(t, 2, refs)
		require.Equal(t, 1, ids)
		require.True(t, b.requireCounts(t, reconcileCounts{ok: 2, baseline: 2, caughtUp: 1, unchanged: 3}).After(lastOK))

		// A commit whose webhook got lost: one run, pinned to it, as a webhook would have made.
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/heads/main", reconcileRev("b"))
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/heads/dev", reconcileRev("c")) // not watched
		res = b.once(t)
		require.Len(t, res.Deliveries, 1)
		require.Len(t, res.Runs, 1)
		run := b.waitRun(t, res.Runs[0])
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		require.Equal(t, "tickets", run.Mapping)
		require.Equal(t, reconcileRev("b"), run.Revision)
		require.Equal(t, reconcileRev("a"), run.OldRevision, "the old revision is the one recorded")
		require.Equal(t, orchestrator.TriggerWebhook, run.Trigger)
		require.Equal(t, res.Deliveries[0], *run.DeliveryID)
		require.Equal(t, "trained "+reconcileRev("b")+" old="+reconcileRev("a")+"\n", b.runLog(t, run.ID))
		b.requireCounts(t, reconcileCounts{ok: 3, baseline: 2, caughtUp: 2, unchanged: 5})

		// The late webhook of the same commit is a duplicate of that run.
		late, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: &orchestrator.Delivery{
			Scope: "repo.content", Action: "update", RepoType: "dataset", RepoName: "acme/tickets", RepoID: reconcileTicketsID,
			Raw: []byte(`{}`), Refs: []orchestrator.RefUpdate{{Ref: "refs/heads/main", OldSha: reconcileRev("a"), NewSha: reconcileRev("b")}},
		}, RemoteAddr: "203.0.113.7"})
		require.NoError(t, err)
		require.Empty(t, late.RunIDs)
		for _, dec := range late.Decisions {
			if dec.MappingName == "tickets" {
				require.Equal(t, orchestrator.DecisionDuplicate, dec.Decision)
				require.Equal(t, run.ID, dec.RunID)
			}
		}

		// A commit whose webhook did arrive leaves catch-up nothing to do.
		_, err = b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: &orchestrator.Delivery{
			Scope: "repo.content", Action: "update", RepoType: "dataset", RepoName: "acme/tickets", RepoID: reconcileTicketsID,
			Raw: []byte(`{}`), Refs: []orchestrator.RefUpdate{{Ref: "refs/heads/main", OldSha: reconcileRev("b"), NewSha: reconcileRev("f")}},
		}})
		require.NoError(t, err)
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/heads/main", reconcileRev("f"))
		before := b.count(t, `SELECT count(*) FROM deliveries`)
		res = b.once(t)
		require.Empty(t, res.Deliveries)
		require.Equal(t, before, b.count(t, `SELECT count(*) FROM deliveries`))
		require.Equal(t, 3, b.count(t, `SELECT count(*) FROM runs`), "eager, the caught-up commit and the webhook's")
		b.requireCounts(t, reconcileCounts{ok: 4, baseline: 2, caughtUp: 2, unchanged: 8})

		// A dataset no enabled mapping names anymore loses its status.
		_, err = b.store.MappingSync(ctx, []orchestrator.Mapping{reconcileMapping("tickets", "acme/tickets")})
		require.NoError(t, err)
		res = b.once(t)
		require.Equal(t, []string{"acme/tickets"}, res.Asked)
		statuses, err = b.store.ReconcileStatusList(ctx)
		require.NoError(t, err)
		require.Len(t, statuses, 1)
		require.Equal(t, "acme/tickets", statuses[0].Dataset)

		// A pass that cannot reach the database stops early, and counts as an error.
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		_, err = b.rec.ReconcileOnce(cancelled)
		require.Error(t, err)
		b.requireCounts(t, reconcileCounts{ok: 5, errored: 1, baseline: 2, caughtUp: 2, unchanged: 9})
	})

	t.Run("HubOutage", func(t *testing.T) {
		t.Parallel()
		datasets := []string{"acme/a", "acme/b", "acme/c", "acme/d", "acme/e"}
		var mappings []orchestrator.Mapping
		for _, ds := range datasets {
			mappings = append(mappings, reconcileMapping(strings.TrimPrefix(ds, "acme/"), ds))
		}
		// Waits long enough for the checks between passes to run well within them, also on a busy machine.
		const backoff = 2 * time.Second
		b := reconcileSetupBackoff(t, time.Minute, backoff, false, mappings...)
		for i, ds := range datasets {
			b.hub.set(ds, fmt.Sprintf("id-%d", i), "refs/heads/main", reconcileRev("a"))
		}
		res := b.once(t)
		require.Equal(t, datasets, res.Asked)
		require.Empty(t, res.Failed)
		require.Zero(t, res.RetryIn)
		lastOK := b.requireCounts(t, reconcileCounts{ok: 1, baseline: 5})

		// The Hub answers 503 for everything: every dataset is failing, and waits before it is asked again.
		b.hub.failWith("*", &reconcileFailure{status: http.StatusServiceUnavailable})
		start := time.Now()
		res = b.once(t)
		require.Equal(t, datasets, res.Asked)
		require.Equal(t, datasets, res.Failed)
		require.Greater(t, res.RetryIn, time.Duration(0))
		require.LessOrEqual(t, res.RetryIn, backoff)
		require.Equal(t, lastOK, b.requireCounts(t, reconcileCounts{ok: 1, failed: 1, baseline: 5, datasetFailures: 5}),
			"a pass the Hub answered nothing in is no success")
		first := b.status(t, "acme/a")
		require.True(t, first.Failing())
		require.True(t, first.Held)
		require.Equal(t, 1, first.Failures)
		require.Contains(t, first.LastError, "503 Service Unavailable")
		require.Contains(t, first.LastError, "/api/datasets/acme/a/refs")
		require.NotNil(t, first.LastOKAt, "the last success stays")
		require.WithinDuration(t, first.FailingSince.Add(backoff), *first.NextAttemptAt, 50*time.Millisecond)
		require.WithinDuration(t, start.Add(backoff), *first.NextAttemptAt, time.Second)

		failingSince := map[string]time.Time{}
		for _, ds := range datasets {
			failingSince[ds] = *b.status(t, ds).FailingSince
		}

		// Asked again at once: nobody is asked, all wait.
		refsBefore, _ := b.hub.counts("acme/a")
		res = b.once(t)
		require.Empty(t, res.Asked)
		require.Equal(t, datasets, res.Held)
		refsAfter, _ := b.hub.counts("acme/a")
		require.Equal(t, refsBefore, refsAfter)
		b.requireCounts(t, reconcileCounts{ok: 1, failed: 2, baseline: 5, datasetFailures: 5})

		// No answer at all: after three datasets in a row, the others are not asked; the wait doubles.
		b.hub.failWith("*", &reconcileFailure{})
		b.hub.set("acme/a", "id-0", "refs/heads/main", reconcileRev("b")) // a commit during the outage
		b.waitHeld(t, datasets...)
		start = time.Now()
		res = b.once(t)
		require.Equal(t, datasets[:3], res.Asked)
		require.Equal(t, datasets, res.Failed)
		require.Empty(t, res.Deliveries)
		b.requireCounts(t, reconcileCounts{ok: 1, failed: 3, baseline: 5, datasetFailures: 10})
		for i, ds := range datasets {
			st := b.status(t, ds)
			require.Equal(t, 2, st.Failures, ds)
			require.Equal(t, failingSince[ds], *st.FailingSince, "%s: failing since the first failure", ds)
			if i >= 3 {
				require.True(t, strings.HasPrefix(st.LastError, "not asked: the Hub gave no answer for 3 datasets in a row"), st.LastError)
			}
			require.WithinDuration(t, start.Add(2*backoff), *st.NextAttemptAt, time.Second, "%s: the wait doubles", ds)
		}

		// The Hub is back: the commit it made during the outage runs, and the failures end.
		b.hub.failWith("*", nil)
		require.Eventually(t, func() bool {
			res = b.once(t)
			return len(res.Asked) == len(datasets)
		}, 4*backoff, 50*time.Millisecond)
		require.Empty(t, res.Failed)
		require.Zero(t, res.RetryIn)
		m := b.metrics(t)
		require.Equal(t, 2.0, m[`orchestrator_reconcile_passes_total{outcome="ok"}`])
		require.Equal(t, 1.0, m[`orchestrator_reconcile_revisions_total{result="caught_up"}`], "the commit made during the outage")
		require.Greater(t, m["orchestrator_reconcile_last_success_timestamp_seconds"], float64(lastOK.UnixNano())/1e9)
		var runID int64
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT id FROM runs WHERE revision = $1`, reconcileRev("b")).Scan(&runID))
		require.Equal(t, 1, b.count(t, `SELECT count(*) FROM runs`))
		run := b.waitRun(t, runID)
		require.Equal(t, reconcileRev("b"), run.Revision)
		require.Equal(t, "a", run.Mapping)
		for _, ds := range datasets {
			st := b.status(t, ds)
			require.False(t, st.Failing(), ds)
			require.Zero(t, st.Failures)
			require.Empty(t, st.LastError)
			require.Nil(t, st.NextAttemptAt)
			require.True(t, st.LastOKAt.After(*first.LastOKAt))
		}
	})

	t.Run("RateLimit", func(t *testing.T) {
		t.Parallel()
		b := reconcileSetup(t, time.Minute, false,
			reconcileMapping("seconds", "acme/seconds"), reconcileMapping("date", "acme/date"),
			reconcileMapping("fine", "acme/fine"), reconcileMapping("gone", "acme/gone"))
		for _, ds := range []string{"acme/seconds", "acme/date", "acme/fine"} {
			b.hub.set(ds, ds+"-id", "refs/heads/main", reconcileRev("a"))
		}
		b.hub.failWith("acme/seconds", &reconcileFailure{status: http.StatusTooManyRequests, retryAfter: "120"})
		until := time.Now().Add(5 * time.Minute).UTC()
		b.hub.failWith("acme/date", &reconcileFailure{status: http.StatusTooManyRequests, retryAfter: until.Format(http.TimeFormat)})

		start := time.Now()
		res := b.once(t)
		require.Equal(t, []string{"acme/date", "acme/fine", "acme/gone", "acme/seconds"}, res.Asked)
		require.Equal(t, []string{"acme/date", "acme/gone", "acme/seconds"}, res.Failed)
		seconds := b.status(t, "acme/seconds")
		require.Contains(t, seconds.LastError, "429 Too Many Requests (retry after 2m0s)")
		require.WithinDuration(t, start.Add(2*time.Minute), *seconds.NextAttemptAt, 2*time.Second, "Retry-After in seconds")
		date := b.status(t, "acme/date")
		require.WithinDuration(t, until, *date.NextAttemptAt, 2*time.Second, "Retry-After as an HTTP date")
		gone := b.status(t, "acme/gone")
		require.Contains(t, gone.LastError, "404 Not Found")
		require.Less(t, time.Until(*gone.NextAttemptAt), time.Second, "no Retry-After: the backoff")
		require.False(t, b.status(t, "acme/fine").Failing(), "one dataset's limit does not stop the others")
		b.requireCounts(t, reconcileCounts{partial: 1, baseline: 1, datasetFailures: 3})

		// Until Retry-After, a rate-limited dataset is not asked, across passes.
		b.waitHeld(t, "acme/gone")
		res = b.once(t)
		require.Equal(t, []string{"acme/fine", "acme/gone"}, res.Asked)
		require.Equal(t, []string{"acme/date", "acme/seconds"}, res.Held)
		for _, ds := range []string{"acme/seconds", "acme/date"} {
			refs, _ := b.hub.counts(ds)
			require.Equal(t, 1, refs, ds)
		}
		require.Positive(t, res.RetryIn)
		require.LessOrEqual(t, res.RetryIn, 600*time.Millisecond, "the earliest wait is the 404's doubled backoff")
		require.Equal(t, 2, b.status(t, "acme/gone").Failures)
	})

	t.Run("PeriodicJob", func(t *testing.T) {
		t.Parallel()
		b := reconcileSetup(t, time.Second, true, reconcileMapping("tickets", "acme/tickets"),
			reconcileMapping("flaky", "acme/flaky"))
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/heads/main", reconcileRev("a"))
		b.hub.failWith("acme/flaky", &reconcileFailure{status: http.StatusInternalServerError})

		// On start: the baseline is recorded.
		var mappingID int64
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT id FROM mappings WHERE name = 'tickets'`).Scan(&mappingID))
		require.Eventually(t, func() bool {
			recorded, err := b.store.RefRecordedRevisions(ctx, mappingID)
			require.NoError(t, err)
			return recorded["refs/heads/main"] == reconcileRev("a")
		}, 10*time.Second, 20*time.Millisecond, "the pass on start records the baseline")
		require.Zero(t, b.count(t, `SELECT count(*) FROM runs`))

		// A missed commit is caught up within an interval and runs.
		b.hub.set("acme/tickets", reconcileTicketsID, "refs/heads/main", reconcileRev("b"))
		var runID int64
		require.Eventually(t, func() bool {
			return b.pool.QueryRow(ctx, `SELECT id FROM runs WHERE revision = $1`, reconcileRev("b")).Scan(&runID) == nil
		}, 10*time.Second, 20*time.Millisecond)
		run := b.waitRun(t, runID)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		require.Equal(t, reconcileRev("a"), run.OldRevision)

		// The failing dataset is retried with backoff, and the others go on.
		require.Eventually(t, func() bool { return b.status(t, "acme/flaky").Failures >= 2 },
			10*time.Second, 20*time.Millisecond)
		require.True(t, b.status(t, "acme/flaky").Failing())
		require.False(t, b.status(t, "acme/tickets").Failing())
		kind := jobs.ReconcileArgs{}.Kind()
		require.NotEmpty(t, jobstest.List(t, b.client, river.NewJobListParams().Kinds(kind).Queues(river.QueueDefault)))
		require.LessOrEqual(t, len(jobstest.List(t, b.client, river.NewJobListParams().Kinds(kind).States(rivertype.JobStateAvailable,
			rivertype.JobStatePending, rivertype.JobStateRunning, rivertype.JobStateScheduled))), 1, "one pass at a time")
		require.Equal(t, 1, b.count(t, `SELECT count(*) FROM runs`), "one run for one commit")
	})
}

func TestReconcilerNeedsSettings(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		rec  *jobs.Reconciler
	}{
		{"no store", &jobs.Reconciler{Hub: hub.New("", ""), Interval: time.Minute}},
		{"no hub", &jobs.Reconciler{Store: &orchestrator.Store{}, Interval: time.Minute}},
		{"no interval", &jobs.Reconciler{Store: &orchestrator.Store{}, Hub: hub.New("", "")}},
	}
	for _, tc := range cases {
		_, err := jobs.NewClient(nil, nil, jobs.ClientConfig{Reconciler: tc.rec, Logger: quietLogger})
		require.ErrorContains(t, err, "reconciler", tc.name)
	}
	opts := jobs.ReconcileArgs{}.InsertOpts()
	require.Equal(t, "reconcile", jobs.ReconcileArgs{}.Kind())
	require.Equal(t, "default", opts.Queue)
	require.Equal(t, 1, opts.MaxAttempts, "a failed pass is not retried: the next one comes anyway")
	require.NotEmpty(t, opts.UniqueOpts.ByState, "one pass at a time")
}
