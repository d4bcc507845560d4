package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

const e2eSecret = "e2e-secret"

// runJSON is the part of a run the end-to-end tests look at.
type runJSON struct {
	ID       int64  `json:"id"`
	Status   string `json:"status"`
	Revision string `json:"revision"`
	Attempt  int    `json:"attempt"`
	Error    string `json:"error"`
	Log      string `json:"log"`
}

func postDelivery(t *testing.T, base, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/webhooks/huggingface", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("X-Webhook-Secret", e2eSecret)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.Equal(t, http.StatusOK, resp.StatusCode, "answer: %v", out)
	return out
}

func getRun(t *testing.T, base string, id int64) runJSON {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s/api/v1/runs/%d", base, id))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var r runJSON
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return r
}

func waitRun(t *testing.T, base string, id int64, statuses ...string) runJSON {
	t.Helper()
	var r runJSON
	require.Eventually(t, func() bool {
		r = getRun(t, base, id)
		for _, s := range statuses {
			if r.Status == s {
				return true
			}
		}
		return false
	}, 20*time.Second, 20*time.Millisecond, "run %d never reached %v", id, statuses)
	return r
}

func push(dataset, sha string) string {
	return `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"` + dataset +
		`","id":"66a1f0c2b9e4d3a1f2c3d4e5","headSha":"` + strings.Repeat("f", 40) + `"},
		"updatedRefs":[{"ref":"refs/heads/main","oldSha":null,"newSha":"` + sha + `"},
			{"ref":"refs/pr/3","oldSha":null,"newSha":"` + strings.Repeat("e", 40) + `"}],
		"someNewField":true}`
}

// startService builds the service from cfg and runs it in-process, as serve does, until the test ends.
func startService(t *testing.T, cfg service.Config) *service.Service {
	t.Helper()
	svc, err := service.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, svc.Close(ctx))
	})
	require.NoError(t, svc.Run(context.Background()))
	return svc
}

// errorLogger returns a logger that shows the service's errors among the test's output, and nothing else.
func errorLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func writeConfig(t *testing.T, dir, yaml string) string {
	t.Helper()
	path := filepath.Join(dir, "orchestrator.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o644))
	return path
}

// TestEndToEnd starts the whole orchestrator in-process on a random port with a temporary database, posts
// deliveries, and waits for real child processes to finish with the pinned revision.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	url, _ := dbtest.NewSchema(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "trained")
	cfgPath := writeConfig(t, dir, `
mappings:
  - name: tickets
    dataset: acme/support-tickets
    command: ["sh", "-c", "echo \"training $1\" >> `+out+`; echo \"pinned to $1\"", "sh", "${DATASET_REVISION}"]
    timeout: 30s
    on_new_revision: queue
  - name: flaky
    dataset: acme/flaky
    command: ["sh", "-c", "echo attempt $RUN_ATTEMPT; exit 1"]
    max_attempts: 2
`)
	svc := startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: cfgPath, DatabaseURL: url, WebhookSecret: e2eSecret,
		MaxBodyBytes: 1 << 20, MaxWorkers: 4, KillGrace: time.Second, Logger: errorLogger()})
	ctx := context.Background()
	base := "http://" + svc.Addr()

	resp, err := http.Get(base + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var hcErr bytes.Buffer
	require.Equal(t, 0, run(ctx, []string{"healthcheck", "--url", base + "/readyz"}, func(string) string { return "" }, io.Discard, &hcErr), hcErr.String())
	require.Equal(t, 1, run(ctx, []string{"healthcheck", "--url", base + "/nope"}, func(string) string { return "" }, io.Discard, &hcErr))
	require.Contains(t, hcErr.String(), "answered 404")

	shaA, shaB := strings.Repeat("a", 40), strings.Repeat("b", 40)
	first := postDelivery(t, base, push("acme/support-tickets", shaA))
	require.Len(t, first["runs"], 1)
	require.Len(t, first["decisions"], 2)
	again := postDelivery(t, base, push("acme/support-tickets", shaA))
	require.Empty(t, again["runs"], "a replay starts nothing")
	second := postDelivery(t, base, push("acme/support-tickets", shaB))
	flaky := postDelivery(t, base, push("acme/flaky", shaA))

	runA := waitRun(t, base, int64(first["runs"].([]any)[0].(float64)), "succeeded", "failed")
	runB := waitRun(t, base, int64(second["runs"].([]any)[0].(float64)), "succeeded", "failed")
	require.Equal(t, "succeeded", runA.Status, runA.Error)
	require.Equal(t, shaA, runA.Revision)
	require.Equal(t, "pinned to "+shaA+"\n", runA.Log)
	require.Equal(t, "succeeded", runB.Status, runB.Error)
	require.Equal(t, "pinned to "+shaB+"\n", runB.Log)

	trained, err := os.ReadFile(out)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(trained)), "\n")
	require.ElementsMatch(t, []string{"training " + shaA, "training " + shaB}, lines, "each revision trained exactly once")

	runF := waitRun(t, base, int64(flaky["runs"].([]any)[0].(float64)), "failed")
	require.Equal(t, 2, runF.Attempt)
	require.Equal(t, "attempt 2\n", runF.Log)

	// The lists agree.
	resp, err = http.Get(base + "/api/v1/runs?dataset=acme/support-tickets&status=succeeded")
	require.NoError(t, err)
	var list struct {
		Runs []runJSON `json:"runs"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	resp.Body.Close()
	require.Len(t, list.Runs, 2)
	require.Equal(t, runB.ID, list.Runs[0].ID, "newest first")

	resp, err = http.Get(base + "/api/v1/deliveries?limit=10")
	require.NoError(t, err)
	var deliveries struct {
		Deliveries []struct {
			ID        int64 `json:"id"`
			Decisions []struct {
				Decision string `json:"decision"`
				Reason   string `json:"reason"`
			} `json:"decisions"`
		} `json:"deliveries"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&deliveries))
	resp.Body.Close()
	require.Len(t, deliveries.Deliveries, 4)
	require.Equal(t, "duplicate", deliveries.Deliveries[2].Decisions[0].Decision)
	require.Equal(t, "pull-request ref refs/pr/3", deliveries.Deliveries[2].Decisions[1].Reason)

	resp, err = http.Get(base + "/")
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), "tickets")
	require.NotEmpty(t, resp.Header.Get("Content-Security-Policy"))
}

func TestServeRefusesWithoutSecret(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve"}, func(string) string { return "" }, io.Discard, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "HUGGINGFACE_WEBHOOK_SECRET is not set")
	require.Contains(t, stderr.String(), "export HUGGINGFACE_WEBHOOK_SECRET=")
}

func TestServeRejectsBadConfig(t *testing.T) {
	t.Parallel()
	url, _ := dbtest.NewSchema(t)
	cfgPath := writeConfig(t, t.TempDir(), "mappings:\n  - name: x\n    dataset: a/b\n    command: []\n")
	env := map[string]string{"DATABASE_URL": url, "HUGGINGFACE_WEBHOOK_SECRET": "s"}
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--config", cfgPath},
		func(k string) string { return env[k] }, io.Discard, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), `mapping "x" (line 2): command must be a non-empty list`)
}

func TestUsage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{nil, 2, "Usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"serve", "--no-such-flag"}, 2, "flag provided but not defined"},
		{[]string{"serve", "--log-format", "xml"}, 1, "--log-format must be text or json"},
		{[]string{"help"}, 0, ""},
	}
	for _, tc := range cases {
		var stderr bytes.Buffer
		code := run(context.Background(), tc.args, func(string) string { return "" }, io.Discard, &stderr)
		require.Equal(t, tc.wantCode, code, "%v: %s", tc.args, stderr.String())
		require.Contains(t, stderr.String(), tc.wantErr)
	}
}

// TestBinaryEmbeddedDatabase builds the real binary and runs `serve` without DATABASE_URL: it starts its own
// PostgreSQL under the data dir, takes a delivery, runs the command, and on SIGTERM stops everything and exits 0.
// A second start on the same data dir finds the earlier run.
func TestBinaryEmbeddedDatabase(t *testing.T) {
	t.Parallel()
	// When the tests run as root the embedded server runs as the postgres user, which must reach the data dir.
	dir, err := os.MkdirTemp("", "orchestrator-e2e-*")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	bin := filepath.Join(dir, "orchestrator")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	cfgPath := writeConfig(t, dir, `
mappings:
  - name: tickets
    dataset: acme/support-tickets
    command: ["echo", "trained on ${DATASET_REVISION}"]
`)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	start := func() (*exec.Cmd, *bytes.Buffer) {
		var logs bytes.Buffer
		cmd := exec.Command(bin, "serve", "--config", cfgPath, "--data-dir", filepath.Join(dir, "data"),
			"--addr", fmt.Sprintf("127.0.0.1:%d", port))
		cmd.Env = append(os.Environ(), "HUGGINGFACE_WEBHOOK_SECRET="+e2eSecret, "DATABASE_URL=")
		cmd.Stdout, cmd.Stderr = &logs, &logs
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		require.Eventually(t, func() bool {
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, 60*time.Second, 50*time.Millisecond, "server never became ready: %s", &logs)
		return cmd, &logs
	}
	stop := func(cmd *exec.Cmd, logs *bytes.Buffer) {
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			require.NoError(t, err, "exit after SIGTERM: %s", logs)
		case <-time.After(30 * time.Second):
			t.Fatalf("no exit 30 s after SIGTERM: %s", logs)
		}
		require.Contains(t, logs.String(), "stopping PostgreSQL")
	}

	cmd, logs := start()
	sha := strings.Repeat("c", 40)
	res := postDelivery(t, base, push("acme/support-tickets", sha))
	id := int64(res["runs"].([]any)[0].(float64))
	r := waitRun(t, base, id, "succeeded", "failed")
	require.Equal(t, "trained on "+sha+"\n", r.Log)
	stop(cmd, logs)

	cmd, logs = start()
	require.Equal(t, "succeeded", getRun(t, base, id).Status, "the embedded database kept the run")
	again := postDelivery(t, base, push("acme/support-tickets", sha))
	require.Empty(t, again["runs"], "and still knows the revision was trained")
	stop(cmd, logs)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestReadyURL(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		":8080":          "http://127.0.0.1:8080/readyz",
		"0.0.0.0:9000":   "http://127.0.0.1:9000/readyz",
		"10.1.2.3:80":    "http://10.1.2.3:80/readyz",
		"[::]:8080":      "http://127.0.0.1:8080/readyz",
		"not an address": "http://127.0.0.1:8080/readyz",
	} {
		require.Equal(t, want, readyURL(addr), addr)
	}
}
