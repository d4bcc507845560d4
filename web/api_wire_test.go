package web_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// updateGolden rewrites the golden files of the tests that have them: go test ./web -run TestAPIWire -update.
var updateGolden = flag.Bool("update", false, "rewrite the golden files")

// wireTimeRE matches the timestamps of an answer, which differ from one test run to the next, and wireJobRE
// the IDs of River's jobs, which depend on what else River inserted.
var (
	wireTimeRE = regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"`)
	wireJobRE  = regexp.MustCompile(`"job_id":\d+`)
)

// wireStep is one request of TestAPIWire, the status its answer must have, and the type of package api that the
// command line decodes the answer into.
type wireStep struct {
	name         string
	method, path string
	body         string
	status       int
	into         func() any
}

// The types of package api that TestAPIWire decodes answers into.
func intoRunList() any       { return &api.RunList{} }
func intoRunDetail() any     { return &api.RunDetail{} }
func intoRunResult() any     { return &api.RunResult{} }
func intoMappingList() any   { return &api.MappingList{} }
func intoMappingResult() any { return &api.MappingResult{} }
func intoDeliveryList() any  { return &api.DeliveryList{} }
func intoError() any         { return &api.Error{} }

// wireScenario records runs, attempts, a notification and deliveries for the tickets mapping, then returns the
// requests to send, in order: every JSON API endpoint, its error answers and each action.
func wireScenario(t *testing.T, b *testBundle) []wireStep {
	t.Helper()
	ctx := context.Background()
	failed := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
	b.finish(t, failed, "loss nan\n", orchestrator.RunFailed, 2)
	list, err := b.store.NotificationList(ctx, failed)
	require.NoError(t, err)
	require.NotEmpty(t, list)
	code := 500
	require.NoError(t, b.store.NotificationAttemptRecord(ctx, orchestrator.NotificationAttemptParams{
		NotificationID: list[0].ID, Attempt: 1, StartedAt: time.Now(), Duration: 42 * time.Millisecond,
		StatusCode: &code, Error: "https://hooks.slack.com/… answered 500 Internal Server Error", State: orchestrator.NotificationPending,
	}))
	running := b.pushRun(t, "refs/heads/dev", strings.Repeat("b", 40))
	require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: running, Attempt: 1, Argv: []string{"train", "--fast"}}))

	faces := `{"name":"faces","dataset":"acme/faces","refs":["refs/heads/main","refs/tags/v*"],"command":["python","train.py"],
		"workdir":"/srv/faces","env":{"WANDB_MODE":"offline"},"timeout":"90m","max_attempts":3,"quiet_period":"2m","max_wait":"10m",
		"concurrency":2,"on_new_revision":"queue","run_on_baseline":true,"verify_revision":true,"queue":"gpu",
		"paths":["data/**","**/*.parquet"],"ignore_paths":["README.md","**/*.md"],
		"notify":[{"url":"` + slackHook + `","format":"slack","on":["failed","succeeded"]}]}`
	return []wireStep{
		{"RunList", http.MethodGet, "/api/v1/runs", "", http.StatusOK, intoRunList},
		{"RunListPage", http.MethodGet, "/api/v1/runs?limit=1", "", http.StatusOK, intoRunList},
		{"RunListEmpty", http.MethodGet, "/api/v1/runs?mapping=nope", "", http.StatusOK, intoRunList},
		{"RunListBadStatus", http.MethodGet, "/api/v1/runs?status=nope", "", http.StatusBadRequest, intoError},
		{"RunShowFinished", http.MethodGet, fmt.Sprintf("/api/v1/runs/%d", failed), "", http.StatusOK, intoRunDetail},
		{"RunShowRunning", http.MethodGet, fmt.Sprintf("/api/v1/runs/%d", running), "", http.StatusOK, intoRunDetail},
		{"RunShowMissing", http.MethodGet, "/api/v1/runs/999", "", http.StatusNotFound, intoError},
		{"RunRetry", http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/retry", failed), "", http.StatusCreated, intoRunResult},
		{"RunRetryNotFinished", http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/retry", running), "", http.StatusConflict, intoError},
		{"RunCancelRunning", http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/cancel", running), "", http.StatusAccepted, intoRunResult},
		{"MappingRunOnLatest", http.MethodPost, "/api/v1/mappings/tickets/run", "", http.StatusCreated, intoRunResult},
		{"RunCancelQueued", http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/cancel", running+2), "", http.StatusOK, intoRunResult},
		{"DeliveryList", http.MethodGet, "/api/v1/deliveries", "", http.StatusOK, intoDeliveryList},
		{"MappingCreate", http.MethodPost, "/api/v1/mappings", faces, http.StatusCreated, intoMappingResult},
		{"MappingCreateMinimal", http.MethodPost, "/api/v1/mappings", `{"name":"mini","dataset":"acme/mini","command":["true"]}`, http.StatusCreated, intoMappingResult},
		{"MappingCreateBadDuration", http.MethodPost, "/api/v1/mappings", `{"name":"x","dataset":"a/b","command":["t"],"timeout":"soon"}`, http.StatusBadRequest, intoError},
		{"MappingCreateWrongType", http.MethodPost, "/api/v1/mappings", `{"name":"x","dataset":"a/b","command":"t"}`, http.StatusBadRequest, intoError},
		{"MappingUpdate", http.MethodPut, "/api/v1/mappings/faces", `{"dataset":"acme/faces-v2","command":["python","train.py"],
			"notify":[{"url":"https://hooks.slack.com/…","format":"slack","on":["failed"]}]}`, http.StatusOK, intoMappingResult},
		{"MappingDisable", http.MethodDelete, "/api/v1/mappings/faces", "", http.StatusOK, intoMappingResult},
		{"MappingShow", http.MethodGet, "/api/v1/mappings/tickets", "", http.StatusOK, intoMappingResult},
		{"MappingShowMissing", http.MethodGet, "/api/v1/mappings/nope", "", http.StatusNotFound, intoError},
		{"MappingList", http.MethodGet, "/api/v1/mappings", "", http.StatusOK, intoMappingList},
	}
}

// wireMapping is the tickets mapping of TestAPIWire, with every setting that shows.
func wireMapping() orchestrator.Mapping {
	m := notifyingMapping()
	m.Workdir, m.Env = "/srv/tickets", map[string]string{"WANDB_PROJECT": "tickets"}
	return m
}

// TestAPIWire pins the JSON API's answers byte for byte, timestamps aside (testdata/api_wire.golden holds each
// step's status and body), and checks that each answer decodes into its type of package api with nothing lost.
func TestAPIWire(t *testing.T) {
	t.Parallel()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{wireMapping()}})
	auth := map[string]string{"Authorization": "Bearer " + adminToken}
	var got strings.Builder
	for _, step := range wireScenario(t, b) {
		status, _, body := b.rawRequest(t, step.method, step.path, step.body, auth)
		require.Equal(t, step.status, status, "%s: %s", step.name, body)
		// The command line decodes the answer into the type the server encoded it from: nothing is lost, the
		// value encodes to the same bytes again.
		v := step.into()
		require.NoError(t, json.Unmarshal(body, v), step.name)
		again, err := json.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(body), string(again)+"\n", step.name)
		fmt.Fprintf(&got, "### %s: %s %s -> %d\n%s", step.name, step.method, step.path, status,
			wireJobRE.ReplaceAllString(wireTimeRE.ReplaceAllString(string(body), `"<time>"`), `"job_id":0`))
	}
	golden := filepath.Join("testdata", "api_wire.golden")
	if *updateGolden {
		require.NoError(t, os.MkdirAll(filepath.Dir(golden), 0o755))
		require.NoError(t, os.WriteFile(golden, []byte(got.String()), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), got.String())
}
