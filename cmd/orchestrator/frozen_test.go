package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

// TestFrozenWorker stops worker A with SIGSTOP while its command runs, as a paused VM would be, so that its own
// fence cannot fire; worker B takes the run over once A's lease has expired. A's command is watched by a process
// of its own, which stops it before the lease expires: the commands' marks show that A's execution ended before
// B's began. B runs in a PID namespace of its own, so that its sweeper cannot find A's command either. Once A
// runs again it finds its attempt closed and records nothing.
func TestFrozenWorker(t *testing.T) {
	t.Parallel()
	requireNamespaces(t)
	dir, err := os.MkdirTemp("", "orchestrator-frozen-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := buildBinary(t, dir)
	url, _ := dbtest.NewSchema(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	marks := filepath.Join(dir, "marks")
	require.NoError(t, os.Mkdir(marks, 0o755))
	cfg := writeConfig(t, dir, `
mappings:
  - name: frozen
    dataset: acme/frozen
    command: ["sh", "-c", "f=`+marks+`/$WORKER_NAME.$$; echo \"start $(date +%s.%N) $$ $WORKER_NAME $RUN_ATTEMPT\" > $f; trap 'echo \"end $(date +%s.%N) SIGTERM\" >> $f; exit 143' TERM; if [ \"$WORKER_NAME\" = a ]; then sleep 600 & wait $!; fi; sleep 1; echo \"end $(date +%s.%N) exit\" >> $f"]
`)
	common := []string{"DATABASE_URL=" + url, "HUGGINGFACE_WEBHOOK_SECRET=" + e2eSecret, "ORCHESTRATOR_CONFIG=" + cfg,
		"ORCHESTRATOR_HEARTBEAT_INTERVAL=" + partitionHeartbeat.String(),
		"ORCHESTRATOR_ORPHAN_AFTER=" + partitionOrphanAfter.String(),
		"ORCHESTRATOR_FENCE_MARGIN=" + partitionFenceMargin.String(),
		"ORCHESTRATOR_KILL_GRACE=" + partitionKillGrace.String(), "ORCHESTRATOR_MAX_WORKERS=2"}
	web := startServe(t, nil, bin, fmt.Sprintf("127.0.0.1:%d", freePort(t)), append(common, "ORCHESTRATOR_ROLE=web"))
	a := startServe(t, nil, bin, fmt.Sprintf("127.0.0.1:%d", freePort(t)), append(common, "ORCHESTRATOR_ROLE=worker", "WORKER_NAME=a"))
	t.Cleanup(func() { _ = a.cmd.Process.Signal(syscall.SIGCONT) }) // so that the kill in startServe's cleanup ends it

	res := postDelivery(t, web.base, push("acme/frozen", randomRevision()))
	runID := int64(res["runs"].([]any)[0].(float64))
	waitFor(t, 30*time.Second, "A's execution to start", func() bool { return len(readMarks(t, marks)) == 1 })
	require.Equal(t, "a", readMarks(t, marks)[0].worker)
	b := startServe(t, []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}, bin,
		fmt.Sprintf("127.0.0.1:%d", freePort(t)), append(common, "ORCHESTRATOR_ROLE=worker", "WORKER_NAME=b"))
	// The command is watched from the lease's first renewal on.
	waitFor(t, 30*time.Second, "A's command to have a watchdog", func() bool {
		return len(watchdogs(t, bin)) == 1
	})

	frozenAt := time.Now()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	var status string
	waitFor(t, 2*time.Minute, "the run to finish on B", func() bool {
		require.NoError(t, pool.QueryRow(ctx, `SELECT status FROM runs WHERE id = $1`, runID).Scan(&status))
		return status == "succeeded" || status == "failed" || status == "cancelled"
	}, "A:\n%s\nB:\n%s", a.logs, b.logs)
	require.Equal(t, "succeeded", status)
	resumedAt := time.Now()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGCONT))

	var execs []execution
	waitFor(t, time.Minute, "every execution to end", func() bool {
		execs = readMarks(t, marks)
		return !slices.ContainsFunc(execs, func(e execution) bool { return e.end.IsZero() })
	}, "marks: %+v\nA:\n%s", execs, a.logs)
	require.Len(t, execs, 2, "A's execution and B's: %+v", execs)
	slices.SortFunc(execs, func(x, y execution) int { return x.start.Compare(y.start) })
	ea, eb := execs[0], execs[1]
	require.Equal(t, []string{"a", "b"}, []string{ea.worker, eb.worker})

	var heartbeat time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT heartbeat_at FROM run_attempts WHERE run_id = $1 AND attempt = $2`,
		runID, ea.attempt).Scan(&heartbeat))
	expiry := heartbeat.Add(partitionOrphanAfter)
	since := func(at time.Time) string { return at.Sub(frozenAt).Round(time.Millisecond).String() }
	overlap := max(ea.end.Sub(eb.start), 0)
	t.Logf("worker frozen for %s; from the freeze: A's last heartbeat %s, A's command stopped (%s) at %s, lease expiry %s, "+
		"B's command started at %s and ended (%s) at %s; overlap %s",
		resumedAt.Sub(frozenAt).Round(time.Millisecond), since(heartbeat), ea.how, since(ea.end), since(expiry),
		since(eb.start), eb.how, since(eb.end), overlap)
	require.Zero(t, overlap, "two executions of one run overlapped: A's ended at %s, B's started at %s", ea.end, eb.start)
	require.True(t, ea.end.Before(expiry), "A's command outlived its lease: it ended at %s, the lease expired at %s", ea.end, expiry)
	require.Equal(t, "SIGTERM", ea.how)
	require.True(t, ea.end.Before(resumedAt), "A's command was stopped while A was frozen")

	waitFor(t, time.Minute, "A to deal with its fenced attempt", func() bool {
		return strings.Contains(a.logs.String(), "fenced attempt")
	}, "A:\n%s", a.logs)
	require.Contains(t, a.logs.String(), "watchdog: the lease was not renewed in time")
	require.Empty(t, watchdogs(t, bin), "the watchdog is gone with its command")

	time.Sleep(partitionOrphanAfter / 2)
	require.Len(t, readMarks(t, marks), 2, "no third execution")
	rows, err := pool.Query(ctx, `SELECT status FROM run_attempts WHERE run_id = $1 ORDER BY attempt`, runID)
	require.NoError(t, err)
	var attempts []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		attempts = append(attempts, s)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"interrupted", "succeeded"}, attempts)
}

// watchdogs returns the pids of the running watchdog processes of bin.
func watchdogs(t *testing.T, bin string) []int {
	t.Helper()
	var pids []int
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err == nil && len(args) > 1 && args[0] == bin &&
			args[1] == "__watchdog" && !processGone(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
