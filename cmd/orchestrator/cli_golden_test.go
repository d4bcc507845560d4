package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// updateGolden rewrites the golden files: go test ./cmd/orchestrator -run TestCLIGolden -update.
var updateGolden = flag.Bool("update", false, "rewrite the golden files")

// Answers of the canned server of TestCLIGolden, as the server writes them.
const (
	goldenRun = `{"id":1,"mapping":"tickets","dataset":"acme/support-tickets","repo_id":"66a1f0c2b9e4d3a1f2c3d4e5",` +
		`"ref":"refs/heads/main","revision":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","old_revision":"","trigger":"webhook",` +
		`"delivery_id":1,"retry_of":null,"status":"failed","attempt":1,"max_attempts":2,"exit_code":2,"signal":"",` +
		`"error":"exit code 2","job_id":1,"created_at":"2025-03-01T10:00:00.123456Z","started_at":"2025-03-01T10:00:01Z",` +
		`"finished_at":"2025-03-01T10:05:00Z","cancel_requested_at":null,"superseded_by":null,"not_before":null,"output":null}`
	goldenRunning = `{"id":2,"mapping":"tickets","dataset":"acme/support-tickets","repo_id":"66a1f0c2b9e4d3a1f2c3d4e5",` +
		`"ref":"refs/heads/dev","revision":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","old_revision":"cccccccccccccccccccccccccccccccccccccccc",` +
		`"trigger":"manual","delivery_id":null,"retry_of":1,"status":"running","attempt":2,"max_attempts":2,"exit_code":null,` +
		`"signal":"SIGKILL","error":"","job_id":2,"created_at":"2025-03-01T11:00:00+01:00","started_at":"2025-03-01T11:00:01+01:00",` +
		`"finished_at":null,"cancel_requested_at":"2025-03-01T11:30:00Z","superseded_by":null,"not_before":null,"output":{"loss":0.1}}`
	goldenMapping = `{"id":1,"name":"tickets","dataset":"acme/support-tickets","refs":["refs/heads/*","refs/tags/v*"],` +
		`"command":["python","train.py","--revision","${DATASET_REVISION}"],"workdir":"/srv/tickets","env":{"WANDB_PROJECT":"tickets","A":"x y"},` +
		`"max_attempts":2,"concurrency":1,"on_new_revision":"supersede","run_on_baseline":false,"verify_revision":false,"queue":"runs",` +
		`"source":"file","enabled":true,"created_at":"2025-03-01T09:00:00Z","updated_at":"2025-03-01T09:30:00Z","timeout":"1h30m0s",` +
		`"quiet_period":"0s","max_wait":"0s","notify":[{"url":"https://hooks.slack.com/…","format":"slack","on":["failed","recovered"]},` +
		`{"url":"https://ops.example.com/…","format":"json","on":["failed"],"secret_env":"NOTIFY_SECRET_OPS"}]}`
	goldenMinimal = `{"id":3,"name":"mini","dataset":"acme/mini","refs":["refs/heads/main"],"command":["true"],"max_attempts":2,` +
		`"concurrency":1,"on_new_revision":"supersede","run_on_baseline":false,"verify_revision":false,"queue":"runs","source":"api",` +
		`"enabled":false,"created_at":"2025-03-01T09:00:00Z","updated_at":"2025-03-01T09:30:00Z","timeout":"6h0m0s","quiet_period":"0s",` +
		`"max_wait":"0s","notify":[]}`
	goldenAttempts = `"attempts":[{"attempt":1,"argv":["train","--name","it's"],"status":"failed","exit_code":2,"signal":"",` +
		`"error":"exit code 2","log_bytes":9,"log_dropped":3,"started_at":"2025-03-01T10:00:01Z","finished_at":"2025-03-01T10:05:00Z"}],` +
		`"log":"loss nan","log_omitted_bytes":120,"notifications":[{"id":1,"run_id":1,"event":"failed","format":"slack","state":"pending",` +
		`"attempts":1,"last_error":"boom","created_at":"2025-03-01T10:05:00Z","delivered_at":null,"history":[],"target":"https://hooks.slack.com/…"}]`
)

// cannedServer answers each "METHOD /path?query" with a status and body, and records the requests it gets.
type cannedServer struct {
	answers map[string]struct {
		status int
		body   string
	}
	mu       sync.Mutex
	requests []string
}

func (s *cannedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	key := r.Method + " " + r.URL.RequestURI()
	s.mu.Lock()
	s.requests = append(s.requests, fmt.Sprintf("%s auth=%q type=%q accept=%q body=%s", key,
		r.Header.Get("Authorization"), r.Header.Get("Content-Type"), r.Header.Get("Accept"), body))
	s.mu.Unlock()
	a, ok := s.answers[key]
	if !ok {
		a.status, a.body = http.StatusNotFound, `{"error":"no canned answer for `+key+`"}`
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body+"\n")
}

// TestCLIGolden pins what each runs and mappings command sends and prints, for answers as the server writes
// them: testdata/cli.golden holds the exit code, stdout, stderr and requests of each command line.
func TestCLIGolden(t *testing.T) {
	t.Parallel()
	canned := &cannedServer{answers: map[string]struct {
		status int
		body   string
	}{
		"GET /api/v1/runs":                     {200, `{"runs":[` + goldenRunning + `,` + goldenRun + `]}`},
		"GET /api/v1/runs?limit=1&mapping=a+b": {200, `{"next_before":2,"runs":[` + goldenRunning + `]}`},
		"GET /api/v1/runs?status=failed":       {200, `{"runs":[]}`},
		"GET /api/v1/runs/1":                   {200, strings.TrimSuffix(goldenRun, "}") + `,` + goldenAttempts + `}`},
		"GET /api/v1/runs/2":                   {200, strings.TrimSuffix(goldenRunning, "}") + `,"attempts":[],"log":"","log_omitted_bytes":0,"notifications":[]}`},
		"GET /api/v1/runs/3":                   {404, `{"error":"run 3 not found"}`},
		"POST /api/v1/runs/1/retry":            {201, `{"run":` + strings.Replace(goldenRun, `"id":1`, `"id":5`, 1) + `}`},
		"POST /api/v1/runs/2/cancel":           {202, `{"run":` + goldenRunning + `}`},
		"POST /api/v1/runs/1/cancel":           {200, `{"run":` + goldenRun + `}`},
		"POST /api/v1/runs/4/cancel":           {409, `{"error":"run 4 is already succeeded"}`},
		"GET /api/v1/mappings":                 {200, `{"mappings":[` + goldenMapping + `,` + goldenMinimal + `]}`},
		"GET /api/v1/mappings/tickets":         {200, `{"mapping":` + goldenMapping + `}`},
		"GET /api/v1/mappings/a%2Fb":           {200, `{"mapping":` + goldenMinimal + `}`},
		"POST /api/v1/mappings":                {201, `{"mapping":` + goldenMinimal + `}`},
		"DELETE /api/v1/mappings/mini":         {200, `{"mapping":` + goldenMinimal + `}`},
		"DELETE /api/v1/mappings/tickets":      {409, `{"error":"mapping \"tickets\" is declared in the configuration file"}`},
		"GET /api/v1/mappings/proxy":           {502, `<html>bad gateway</html>`},
	}}
	ts := httptest.NewServer(canned)
	t.Cleanup(ts.Close)
	env := cliGetenv(ts.URL, "golden-token")

	commands := [][]string{
		{"runs"}, {"runs", "-h"}, {"runs", "list", "-h"}, {"runs", "show", "-h"}, {"runs", "retry", "-h"}, {"runs", "cancel", "-h"},
		{"mappings"}, {"mappings", "-h"}, {"mappings", "list", "-h"}, {"mappings", "show", "-h"}, {"mappings", "add", "-h"},
		{"mappings", "disable", "-h"},
		{"runs", "list"}, {"runs", "list", "--json"}, {"runs", "list", "--mapping", "a b", "--limit", "1"},
		{"runs", "list", "--mapping", "a b", "--limit", "1", "--server", ts.URL + "/"}, {"runs", "list", "--status", "failed"},
		{"runs", "show", "1"}, {"runs", "show", "2"}, {"runs", "show", "1", "--json"}, {"runs", "show", "3"},
		{"runs", "retry", "1"}, {"runs", "retry", "1", "--json"}, {"runs", "cancel", "2"}, {"runs", "cancel", "1"},
		{"runs", "cancel", "4"}, {"runs", "show", "x"}, {"runs", "list", "extra"},
		{"mappings", "list"}, {"mappings", "list", "--json"}, {"mappings", "show", "tickets"}, {"mappings", "show", "a/b"},
		{"mappings", "show", "proxy"}, {"mappings", "show", "tickets", "--token", "flag-token"},
		{"mappings", "add", "mini", "--dataset", "acme/mini", "--", "true"},
		{"mappings", "add", "mini", "--dataset", "acme/mini", "--ref", "refs/heads/main", "--ref", "refs/tags/*", "--workdir", "/srv",
			"--env", "B=2", "--env", "A=1", "--timeout", "2h", "--max-attempts", "3", "--json", "--", "sh", "-c", "echo $A"},
		{"mappings", "add", "mini", "--", "true"}, {"mappings", "disable", "mini"}, {"mappings", "disable", "tickets"},
	}
	var got strings.Builder
	for _, args := range commands {
		canned.mu.Lock()
		canned.requests = nil
		canned.mu.Unlock()
		code, stdout, stderr := cliRun(env, args...)
		canned.mu.Lock()
		requests := strings.Join(canned.requests, "\n")
		canned.mu.Unlock()
		fmt.Fprintf(&got, "### %s -> %d\n--- stdout\n%s--- stderr\n%s--- requests\n%s\n",
			strings.Join(args, " "), code, stdout, stderr, strings.ReplaceAll(requests, ts.URL, "SERVER"))
	}
	out := strings.ReplaceAll(got.String(), ts.URL, "SERVER")
	golden := filepath.Join("testdata", "cli.golden")
	if *updateGolden {
		require.NoError(t, os.MkdirAll(filepath.Dir(golden), 0o755))
		require.NoError(t, os.WriteFile(golden, []byte(out), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), out)
}
