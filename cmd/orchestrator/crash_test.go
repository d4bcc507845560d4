package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

// buildBinary builds the orchestrator into dir.
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "orchestrator")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	return bin
}

// process is the orchestrator binary running as a child process against a test database.
type process struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
	base string
}

func startProcess(t *testing.T, bin string, port int, env []string) *process {
	t.Helper()
	p := &process{logs: &bytes.Buffer{}, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	p.cmd = exec.Command(bin, "serve", "--addr", fmt.Sprintf("127.0.0.1:%d", port))
	p.cmd.Env = append(append(os.Environ(), serveTestEnv...), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	require.Eventually(t, func() bool {
		resp, err := http.Get(p.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "never ready: %s", p.logs)
	return p
}

// serveTestEnv is the environment of the serve processes of the tests about faults, whose mappings watch every
// file: their runs do not ask the Hub, which the tests do not serve, for their changed files (files_test.go
// covers that).
var serveTestEnv = []string{"ORCHESTRATOR_CHANGED_FILES=filtered"}

func randomRevision() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// markedProcesses returns the pids of processes whose environment carries value for MarkerEnv's prefix.
func markedProcesses(t *testing.T, contains string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(environ), "\x00") {
			if strings.HasPrefix(kv, jobs.MarkerEnv+"=") && strings.Contains(kv, contains) && !processGone(pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// processGone reports whether pid no longer runs (reaped, or a zombie).
func processGone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

// TestCrashRecovery kills the orchestrator with SIGKILL while a command runs (with a child of its own) and
// deliveries arrive, then starts it again: every delivery answered 200 has its run, the interrupted run is
// closed as interrupted and retried, its leftover child is killed before the retry starts (the command holds a
// lock that a concurrent execution would find taken), and every run ends succeeded.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "orchestrator-crash-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := buildBinary(t, dir)
	url, _ := dbtest.NewSchema(t)
	events, lock := filepath.Join(dir, "events"), filepath.Join(dir, "lock")
	cfg := writeConfig(t, dir, `
mappings:
  - name: long
    dataset: acme/long
    command: ["sh", "-c", "exec 9>>`+lock+`; if ! flock -n 9; then echo CONCURRENT >> `+events+`; exit 3; fi; echo start $RUN_ATTEMPT >> `+events+`; if [ $RUN_ATTEMPT = 1 ]; then sleep 600 & wait $!; fi; echo end $RUN_ATTEMPT >> `+events+`"]
    max_attempts: 2
  - name: quick
    dataset: acme/quick
    command: ["true"]
    on_new_revision: queue
    concurrency: 8
`)
	env := []string{"DATABASE_URL=" + url, "HUGGINGFACE_WEBHOOK_SECRET=" + e2eSecret, "ORCHESTRATOR_CONFIG=" + cfg,
		"ORCHESTRATOR_HEARTBEAT_INTERVAL=200ms", "ORCHESTRATOR_ORPHAN_AFTER=6s", "ORCHESTRATOR_KILL_GRACE=1s"}
	port := freePort(t)
	first := startProcess(t, bin, port, env)

	long := postDelivery(t, first.base, push("acme/long", randomRevision()))
	longID := int64(long["runs"].([]any)[0].(float64))
	waitRun(t, first.base, longID, "running")
	require.Eventually(t, func() bool {
		data, _ := os.ReadFile(events)
		return string(data) == "start 1\n"
	}, 10*time.Second, 20*time.Millisecond)

	// Deliveries keep arriving while the process is killed.
	var mu sync.Mutex
	acknowledged := map[string]bool{}
	stop := make(chan struct{})
	var senders sync.WaitGroup
	for range 4 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				sha := randomRevision()
				req, _ := http.NewRequest(http.MethodPost, first.base+"/webhooks/huggingface", strings.NewReader(push("acme/quick", sha)))
				req.Header.Set("X-Webhook-Secret", e2eSecret)
				resp, err := client.Do(req)
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					mu.Lock()
					acknowledged[sha] = true
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	leftovers := markedProcesses(t, fmt.Sprintf(":%d:1", longID))
	require.NotEmpty(t, leftovers, "the command's processes carry the attempt marker")
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGKILL))
	// Not Wait: the command's watchdog holds the process's stderr open until it has stopped the command.
	require.Eventually(t, func() bool { return processGone(first.cmd.Process.Pid) }, 10*time.Second, 10*time.Millisecond)

	// The command's own child outlives the orchestrator for now (the kernel only kills the direct child).
	time.Sleep(200 * time.Millisecond)
	survivors := markedProcesses(t, fmt.Sprintf(":%d:1", longID))
	require.NotEmpty(t, survivors, "the test needs a leftover to be meaningful")

	second := startProcess(t, bin, port, env)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	senders.Wait()

	run := waitRun(t, second.base, longID, "succeeded", "failed")
	require.Equal(t, "succeeded", run.Status, "%+v\n%s", run, second.logs)
	require.Equal(t, 2, run.Attempt)
	data, err := os.ReadFile(events)
	require.NoError(t, err)
	require.Equal(t, "start 1\nstart 2\nend 2\n", string(data), "never two executions at once, and the first never finished")
	for _, pid := range survivors {
		require.True(t, processGone(pid), "leftover %d was killed", pid)
	}

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	var attemptStatus, attemptError string
	require.NoError(t, pool.QueryRow(ctx, `SELECT status, error FROM run_attempts WHERE run_id = $1 AND attempt = 1`, longID).
		Scan(&attemptStatus, &attemptError))
	require.Equal(t, "interrupted", attemptStatus)
	require.Contains(t, attemptError, "no heartbeat since")

	// No acknowledged delivery is lost, none has two runs, and every run finishes.
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, acknowledged)
	require.Eventually(t, func() bool {
		var pending int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM runs r JOIN mappings m ON m.id = r.mapping_id
			WHERE m.name = 'quick' AND r.status <> 'succeeded'`).Scan(&pending))
		return pending == 0
	}, 30*time.Second, 50*time.Millisecond)
	rows, err := pool.Query(ctx, `SELECT r.revision, count(*) FROM runs r JOIN mappings m ON m.id = r.mapping_id
		WHERE m.name = 'quick' GROUP BY r.revision`)
	require.NoError(t, err)
	stored := map[string]bool{}
	for rows.Next() {
		var sha string
		var n int
		require.NoError(t, rows.Scan(&sha, &n))
		require.Equal(t, 1, n, "revision %s has %d runs", sha, n)
		stored[sha] = true
	}
	require.NoError(t, rows.Err())
	for sha := range acknowledged {
		require.True(t, stored[sha], "delivery of %s was answered 200 but has no run", sha)
	}
	t.Logf("%d deliveries acknowledged around the crash, all with their run", len(acknowledged))
}

// TestGracefulShutdown sends SIGTERM while a command runs: the command gets SIGTERM and its grace, the process
// exits 0, the run goes back to queued without spending its attempt, and the next start runs it again.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "orchestrator-term-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := buildBinary(t, dir)
	url, _ := dbtest.NewSchema(t)
	events := filepath.Join(dir, "events")
	cfg := writeConfig(t, dir, `
mappings:
  - name: graceful
    dataset: acme/graceful
    command: ["sh", "-c", "echo start >> `+events+`; if [ -e `+events+`.again ]; then echo end >> `+events+`; exit 0; fi; trap 'echo got TERM >> `+events+`; touch `+events+`.again; exit 143' TERM; sleep 600 & wait $!"]
    max_attempts: 1
`)
	env := []string{"DATABASE_URL=" + url, "HUGGINGFACE_WEBHOOK_SECRET=" + e2eSecret, "ORCHESTRATOR_CONFIG=" + cfg,
		"ORCHESTRATOR_KILL_GRACE=5s"}
	port := freePort(t)
	p := startProcess(t, bin, port, env)
	res := postDelivery(t, p.base, push("acme/graceful", randomRevision()))
	id := int64(res["runs"].([]any)[0].(float64))
	waitRun(t, p.base, id, "running")
	require.Eventually(t, func() bool { data, _ := os.ReadFile(events); return string(data) == "start\n" }, 10*time.Second, 20*time.Millisecond)

	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.cmd.Wait(), "exit status after SIGTERM: %s", p.logs)
	require.Less(t, time.Since(start), 10*time.Second)
	data, err := os.ReadFile(events)
	require.NoError(t, err)
	require.Equal(t, "start\ngot TERM\n", string(data), "the command got SIGTERM and could clean up")
	require.Contains(t, p.logs.String(), "River client stopped")

	p = startProcess(t, bin, port, env)
	run := waitRun(t, p.base, id, "succeeded", "failed")
	require.Equal(t, "succeeded", run.Status, "%+v", run)
	require.Equal(t, 2, run.Attempt, "a second execution, although the mapping allows one attempt: the interrupted one is not spent")
	data, err = os.ReadFile(events)
	require.NoError(t, err)
	require.Equal(t, "start\ngot TERM\nstart\nend\n", string(data))
}
