package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// Catch-up is on by default in a process configured from its environment, such as the orchestrators other
// tests of this package start as child processes (which inherit this environment). Off, and pointed at a port
// nothing listens on, no test ever asks a real Hub; the tests of catch-up set their own fake Hub in Config.
func init() {
	_ = os.Setenv("ORCHESTRATOR_RECONCILE_INTERVAL", "0")
	_ = os.Setenv("HF_ENDPOINT", "http://127.0.0.1:9")
}

// catchUpHub plays the Hub's API: the refs listing, a dataset's info and its revisions, with the answers'
// real shapes. Unknown datasets and revisions are 404, as on the Hub.
type catchUpHub struct {
	server *httptest.Server

	mu       sync.Mutex
	ids      map[string]string            // dataset → the Hub's _id
	branches map[string]map[string]string // dataset → branch → commit
	commits  map[string]bool              // "dataset@sha" that exist
	auth     []string                     // Authorization headers seen
	down     bool                         // every request answers 503
}

func newCatchUpHub(t *testing.T) *catchUpHub {
	t.Helper()
	h := &catchUpHub{ids: map[string]string{}, branches: map[string]map[string]string{}, commits: map[string]bool{}}
	notFound := func(w http.ResponseWriter, code string) {
		w.Header().Set("X-Error-Code", code)
		catchUpJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/datasets/{owner}/{name}/refs", func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		branches, ok := h.branches[r.PathValue("owner")+"/"+r.PathValue("name")]
		if !ok {
			notFound(w, "RepoNotFound")
			return
		}
		type ref struct {
			Name         string `json:"name"`
			Ref          string `json:"ref"`
			TargetCommit string `json:"targetCommit"`
		}
		out := map[string][]ref{"branches": {}, "tags": {}, "converts": {}}
		for name, sha := range branches {
			out["branches"] = append(out["branches"], ref{name, "refs/heads/" + name, sha})
		}
		catchUpJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /api/datasets/{owner}/{name}", func(w http.ResponseWriter, r *http.Request) {
		repo := r.PathValue("owner") + "/" + r.PathValue("name")
		h.mu.Lock()
		defer h.mu.Unlock()
		id, ok := h.ids[repo]
		if !ok {
			notFound(w, "RepoNotFound")
			return
		}
		catchUpJSON(w, http.StatusOK, map[string]any{"_id": id, "id": repo, "private": false, "tags": []string{},
			"siblings": []map[string]string{{"rfilename": "README.md"}}})
	})
	mux.HandleFunc("GET /api/datasets/{owner}/{name}/revision/{rev}", func(w http.ResponseWriter, r *http.Request) {
		repo := r.PathValue("owner") + "/" + r.PathValue("name")
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.commits[repo+"@"+r.PathValue("rev")] {
			notFound(w, "RevisionNotFound")
			return
		}
		catchUpJSON(w, http.StatusOK, map[string]any{"_id": h.ids[repo], "id": repo, "sha": r.PathValue("rev")})
	})
	h.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.auth = append(h.auth, r.Header.Get("Authorization"))
		down := h.down
		h.mu.Unlock()
		if down {
			catchUpJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Service Unavailable"})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(h.server.Close)
	return h
}

func catchUpJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// push makes a branch of a dataset point at a new commit.
func (h *catchUpHub) push(dataset, id, branch, sha string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ids[dataset] = id
	if h.branches[dataset] == nil {
		h.branches[dataset] = map[string]string{}
	}
	h.branches[dataset][branch] = sha
	h.commits[dataset+"@"+sha] = true
}

// startCatchUp runs the whole orchestrator in-process against the fake Hub.
func startCatchUp(t *testing.T, hubURL string, interval time.Duration, yaml string) string {
	t.Helper()
	url, _ := dbtest.NewSchema(t)
	svc := startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: writeConfig(t, t.TempDir(), yaml), DatabaseURL: url,
		WebhookSecret: e2eSecret, KillGrace: time.Second,
		ReconcileInterval: interval, HFEndpoint: hubURL, HFToken: "hf_catchUpTestToken", Logger: errorLogger()})
	return "http://" + svc.Addr()
}

func catchUpGet(t *testing.T, url string, v any) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	if v != nil {
		require.NoError(t, json.Unmarshal(body, v))
	}
	return string(body)
}

type catchUpDeliveries struct {
	Deliveries []struct {
		ID        int64  `json:"id"`
		Source    string `json:"source"`
		RepoID    string `json:"repo_id"`
		Decisions []struct {
			Mapping  string `json:"mapping"`
			Revision string `json:"revision"`
			Decision string `json:"decision"`
			RunID    int64  `json:"run_id"`
		} `json:"decisions"`
	} `json:"deliveries"`
}

// TestCatchUpWithTheHub runs the orchestrator with catch-up every second against a fake Hub: the first pass
// records a baseline, a commit whose webhook never came runs, its late webhook is a duplicate, and the
// dashboard shows each dataset's catch-up, including one the Hub does not know.
func TestCatchUpWithTheHub(t *testing.T) {
	t.Parallel()
	const repoID = "66a1f0c2b9e4d3a1f2c3d4e5" // as in push()
	shaA, shaB := strings.Repeat("a", 40), strings.Repeat("b", 40)
	fake := newCatchUpHub(t)
	fake.push("acme/tickets", repoID, "main", shaA)
	out := filepath.Join(t.TempDir(), "trained")
	base := startCatchUp(t, fake.server.URL, time.Second, `
mappings:
  - name: tickets
    dataset: acme/tickets
    command: ["sh", "-c", "echo \"trained $1\" >> `+out+`; echo \"trained $1\"", "sh", "${DATASET_REVISION}"]
  - name: ghost
    dataset: acme/ghost
    command: ["true"]
  - name: others
    dataset: other/*
    command: ["true"]
`)

	// On start: the current revision is the baseline, and nothing runs.
	var baseline catchUpDeliveries
	require.Eventually(t, func() bool {
		catchUpGet(t, base+"/api/v1/deliveries", &baseline)
		return len(baseline.Deliveries) > 0
	}, 20*time.Second, 50*time.Millisecond, "no catch-up on start")
	require.Equal(t, "reconcile", baseline.Deliveries[0].Source)
	require.Equal(t, repoID, baseline.Deliveries[0].RepoID)
	require.Equal(t, "baseline", baseline.Deliveries[0].Decisions[0].Decision)
	require.Equal(t, shaA, baseline.Deliveries[0].Decisions[0].Revision)
	var runs struct {
		Runs []runJSON `json:"runs"`
	}
	catchUpGet(t, base+"/api/v1/runs", &runs)
	require.Empty(t, runs.Runs)

	// A commit whose webhook got lost runs within an interval, pinned to it.
	fake.push("acme/tickets", repoID, "main", shaB)
	require.Eventually(t, func() bool {
		catchUpGet(t, base+"/api/v1/runs?mapping=tickets", &runs)
		return len(runs.Runs) > 0
	}, 20*time.Second, 50*time.Millisecond, "the missed commit was not caught up")
	run := waitRun(t, base, runs.Runs[0].ID, "succeeded", "failed")
	require.Equal(t, "succeeded", run.Status, run.Error)
	require.Equal(t, shaB, run.Revision)
	require.Equal(t, "trained "+shaB+"\n", run.Log)

	// Its webhook, arriving late, starts nothing.
	late := postDelivery(t, base, push("acme/tickets", shaB))
	require.Empty(t, late["runs"])
	dec := late["decisions"].([]any)[0].(map[string]any)
	require.Equal(t, "duplicate", dec["decision"])
	require.Equal(t, float64(run.ID), dec["run_id"])

	// Later passes find nothing new: the commit trained exactly once.
	time.Sleep(1500 * time.Millisecond)
	catchUpGet(t, base+"/api/v1/runs", &runs)
	require.Len(t, runs.Runs, 1)
	trained, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "trained "+shaB+"\n", string(trained))

	// /metrics counts what catch-up found: the baseline, the missed commit, and the dataset the Hub does not
	// know, in passes that are partial successes.
	metrics := scrapeMetrics(t, base)
	require.Equal(t, 1.0, metricValue(t, metrics, `orchestrator_reconcile_revisions_total{result="baseline"}`), metrics)
	require.Equal(t, 1.0, metricValue(t, metrics, `orchestrator_reconcile_revisions_total{result="caught_up"}`), metrics)
	require.Positive(t, metricValue(t, metrics, `orchestrator_reconcile_revisions_total{result="unchanged"}`), metrics)
	require.Positive(t, metricValue(t, metrics, `orchestrator_reconcile_passes_total{outcome="partial"}`), metrics)
	require.Zero(t, metricValue(t, metrics, `orchestrator_reconcile_passes_total{outcome="ok"}`), "acme/ghost always fails")
	require.Zero(t, metricValue(t, metrics, `orchestrator_reconcile_passes_total{outcome="error"}`), metrics)
	require.Positive(t, metricValue(t, metrics, "orchestrator_reconcile_dataset_failures_total"), metrics)
	lastOK := metricValue(t, metrics, "orchestrator_reconcile_last_success_timestamp_seconds")
	require.InDelta(t, float64(time.Now().Unix()), lastOK, 10)

	// The dashboard tells how catch-up fares, per dataset.
	page := catchUpGet(t, base+"/", nil)
	require.Contains(t, page, "Catch-up with the Hub")
	require.Regexp(t, `Last reconciled <span title="[^"]+">just now</span>`, page)
	section := page[strings.Index(page, `id="reconcile-status"`):]
	section = section[:strings.Index(section, "</table>")]
	require.Contains(t, section, `<tr data-dataset="acme/tickets">`)
	require.Contains(t, section, "up to date")
	require.Contains(t, section, `<tr data-dataset="acme/ghost" class="reconcile-failing">`)
	require.Contains(t, section, "failing since")
	require.Contains(t, section, "404 Not Found")
	require.Contains(t, section, "set HF_TOKEN for a private dataset")
	require.Contains(t, section, "other/*")
	require.Contains(t, section, "a pattern, not one dataset")
	require.NotContains(t, page, "Hub unreachable since", "one unknown dataset is not an outage")
	require.NotContains(t, page, "hf_catchUpTestToken")

	// The Hub goes down: the orchestrator says so, and webhooks still run.
	fake.mu.Lock()
	fake.down = true
	fake.mu.Unlock()
	require.Eventually(t, func() bool {
		return strings.Contains(catchUpGet(t, base+"/", nil), "Hub unreachable since")
	}, 20*time.Second, 50*time.Millisecond, "the dashboard never said the Hub is unreachable")
	page = catchUpGet(t, base+"/", nil)
	require.Contains(t, page, `<tr data-dataset="acme/tickets" class="reconcile-failing">`)
	require.Contains(t, page, "503 Service Unavailable")
	failedPasses := metricValue(t, scrapeMetrics(t, base), `orchestrator_reconcile_passes_total{outcome="failed"}`)
	require.Eventually(t, func() bool {
		metrics := scrapeMetrics(t, base)
		return metricValue(t, metrics, `orchestrator_reconcile_passes_total{outcome="failed"}`) > failedPasses
	}, 20*time.Second, 50*time.Millisecond, "a pass the Hub answers nothing in is not counted as failed")
	shaC := strings.Repeat("c", 40)
	res := postDelivery(t, base, push("acme/tickets", shaC))
	run = waitRun(t, base, int64(res["runs"].([]any)[0].(float64)), "succeeded", "failed")
	require.Equal(t, "succeeded", run.Status, run.Error)
	require.Equal(t, shaC, run.Revision)

	fake.mu.Lock()
	defer fake.mu.Unlock()
	require.NotEmpty(t, fake.auth)
	for _, a := range fake.auth {
		require.Equal(t, "Bearer hf_catchUpTestToken", a, "HF_TOKEN goes with every request")
	}
}

// TestVerifyRevision runs a mapping with verify_revision: a webhook for a commit the Hub does not know fails
// without running the command; a known one runs. Catch-up is off, and the dashboard says so.
func TestVerifyRevision(t *testing.T) {
	t.Parallel()
	known, unknown := strings.Repeat("c", 40), strings.Repeat("d", 40)
	fake := newCatchUpHub(t)
	fake.push("acme/verified", "66a1f0c2b9e4d3a1f2c3d4e5", "main", known)
	marker := filepath.Join(t.TempDir(), "ran")
	base := startCatchUp(t, fake.server.URL, 0, `
mappings:
  - name: verified
    dataset: acme/verified
    verify_revision: true
    command: ["sh", "-c", "echo \"$1\" >> `+marker+`; echo \"trained $1\"", "sh", "${DATASET_REVISION}"]
`)

	res := postDelivery(t, base, push("acme/verified", unknown))
	run := waitRun(t, base, int64(res["runs"].([]any)[0].(float64)), "succeeded", "failed")
	require.Equal(t, "failed", run.Status)
	require.Contains(t, run.Error, "does not exist")
	require.Contains(t, run.Error, unknown)
	require.NoFileExists(t, marker, "the command never ran")

	res = postDelivery(t, base, push("acme/verified", known))
	run = waitRun(t, base, int64(res["runs"].([]any)[0].(float64)), "succeeded", "failed")
	require.Equal(t, "succeeded", run.Status, run.Error)
	require.Equal(t, "trained "+known+"\n", run.Log)

	page := catchUpGet(t, base+"/", nil)
	require.Contains(t, page, "Catch-up is off")
	var deliveries catchUpDeliveries
	catchUpGet(t, base+"/api/v1/deliveries", &deliveries)
	for _, d := range deliveries.Deliveries {
		require.Equal(t, "webhook", d.Source, "no catch-up when it is off")
	}
}

func TestCatchUpConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		env          map[string]string
		wantInterval time.Duration
		wantEndpoint string
		wantToken    string
		wantErr      string
	}{
		{name: "defaults", wantInterval: 10 * time.Minute},
		{name: "off", env: map[string]string{"ORCHESTRATOR_RECONCILE_INTERVAL": "0"}},
		{name: "off in seconds", env: map[string]string{"ORCHESTRATOR_RECONCILE_INTERVAL": "0s"}},
		{name: "interval", env: map[string]string{"ORCHESTRATOR_RECONCILE_INTERVAL": "90s"}, wantInterval: 90 * time.Second},
		{name: "hub", env: map[string]string{"HF_ENDPOINT": "https://hub.internal/", "HF_TOKEN": "hf_x"},
			wantInterval: 10 * time.Minute, wantEndpoint: "https://hub.internal/", wantToken: "hf_x"},
		{name: "not a duration", env: map[string]string{"ORCHESTRATOR_RECONCILE_INTERVAL": "often"}, wantErr: "ORCHESTRATOR_RECONCILE_INTERVAL"},
		{name: "negative", env: map[string]string{"ORCHESTRATOR_RECONCILE_INTERVAL": "-1m"}, wantErr: "must be 0 (catch-up off) or at least 1s"},
		{name: "too short", env: map[string]string{"ORCHESTRATOR_RECONCILE_INTERVAL": "500ms"}, wantErr: "at least 1s"},
		{name: "bad endpoint", env: map[string]string{"HF_ENDPOINT": "huggingface.co"}, wantErr: "HF_ENDPOINT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseServe(nil, tc.env)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantInterval, cfg.ReconcileInterval)
			require.Equal(t, tc.wantEndpoint, cfg.HFEndpoint)
			require.Equal(t, tc.wantToken, cfg.HFToken)
		})
	}
}
