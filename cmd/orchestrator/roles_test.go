package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

// TestWebAndWorkers runs one web process and two worker processes on one database: deliveries posted to the
// web process run on the workers, each exactly once, and a run whose worker is killed is retried on the other.
func TestWebAndWorkers(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "orchestrator-roles-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := buildBinary(t, dir)
	url, _ := dbtest.NewSchema(t)
	events := filepath.Join(dir, "events")
	cfg := writeConfig(t, dir, `
mappings:
  - name: quick
    dataset: acme/quick
    command: ["sh", "-c", "echo \"$WORKER_NAME $1\" >> `+events+`; sleep 0.2", "sh", "${DATASET_REVISION}"]
    on_new_revision: queue
    concurrency: 8
  - name: long
    dataset: acme/long
    queue: gpu
    command: ["sh", "-c", "echo \"$WORKER_NAME long $RUN_ATTEMPT\" >> `+events+`; if [ $RUN_ATTEMPT = 1 ]; then exec sleep 600; fi"]
`)
	common := []string{"DATABASE_URL=" + url, "HUGGINGFACE_WEBHOOK_SECRET=" + e2eSecret, "ORCHESTRATOR_CONFIG=" + cfg,
		"ORCHESTRATOR_HEARTBEAT_INTERVAL=200ms", "ORCHESTRATOR_ORPHAN_AFTER=4s", "ORCHESTRATOR_KILL_GRACE=1s",
		"ORCHESTRATOR_MAX_WORKERS=2"}
	web := startProcess(t, bin, freePort(t), append(common, "ORCHESTRATOR_ROLE=web"))
	workers := map[string]*process{}
	for _, name := range []string{"w1", "w2"} {
		workers[name] = startProcess(t, bin, freePort(t), append(common, "ORCHESTRATOR_ROLE=worker",
			"ORCHESTRATOR_QUEUES=runs,gpu", "WORKER_NAME="+name))
	}

	// A worker serves health checks and metrics, not pages.
	resp, err := http.Get(workers["w1"].base + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	var ids []int64
	for range 12 {
		res := postDelivery(t, web.base, push("acme/quick", randomRevision()))
		ids = append(ids, int64(res["runs"].([]any)[0].(float64)))
	}
	for _, id := range ids {
		r := waitRun(t, web.base, id, "succeeded", "failed")
		require.Equal(t, "succeeded", r.Status, r.Error)
		require.Equal(t, 1, r.Attempt)
	}
	data, err := os.ReadFile(events)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 12, "each run executed exactly once")
	ran := map[string]bool{}
	for _, line := range lines {
		ran[strings.Fields(line)[0]] = true
	}
	require.Equal(t, map[string]bool{"w1": true, "w2": true}, ran, "the web process runs nothing; both workers do")

	// Kill the worker running the long run: the other one takes it over.
	long := postDelivery(t, web.base, push("acme/long", randomRevision()))
	longID := int64(long["runs"].([]any)[0].(float64))
	waitRun(t, web.base, longID, "running")
	var victim string
	require.Eventually(t, func() bool {
		data, _ := os.ReadFile(events)
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[1] == "long" && f[2] == "1" {
				victim = f[0]
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, workers[victim].cmd.Process.Signal(syscall.SIGKILL))
	_ = workers[victim].cmd.Wait()

	r := waitRun(t, web.base, longID, "succeeded", "failed")
	require.Equal(t, "succeeded", r.Status, r.Error)
	require.Equal(t, 2, r.Attempt)
	data, err = os.ReadFile(events)
	require.NoError(t, err)
	survivor := map[string]string{"w1": "w2", "w2": "w1"}[victim]
	require.Contains(t, string(data), survivor+" long 2\n", "retried on the other worker")

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	var jobID int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT job_id FROM runs WHERE id = $1`, longID).Scan(&jobID))
	job := jobList(t, pool, river.NewJobListParams().IDs(jobID))
	require.Len(t, job, 1)
	require.Equal(t, "gpu", job[0].Queue)
}
