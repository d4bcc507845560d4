package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	dir, bin := namespacedTest(t, "orchestrator-frozen-*")
	url, _ := dbtest.NewSchema(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	cfg, marks := writeFencedConfig(t, dir, "frozen")
	common := fencedEnv(cfg, "DATABASE_URL="+url)
	web := startServe(t, nil, bin, fmt.Sprintf("127.0.0.1:%d", freePort(t)), append(common, "ORCHESTRATOR_ROLE=web"))
	a := startServe(t, nil, bin, fmt.Sprintf("127.0.0.1:%d", freePort(t)), append(common, "ORCHESTRATOR_ROLE=worker", "WORKER_NAME=a"))
	t.Cleanup(func() { _ = a.cmd.Process.Signal(syscall.SIGCONT) }) // so that the kill in startServe's cleanup ends it

	runID := startOnA(t, web, "acme/frozen", marks)
	b := startServe(t, []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}, bin,
		fmt.Sprintf("127.0.0.1:%d", freePort(t)), append(common, "ORCHESTRATOR_ROLE=worker", "WORKER_NAME=b"))
	// The command is watched from the lease's first renewal on.
	waitFor(t, 30*time.Second, "A's command to have a watchdog", func() bool {
		return len(watchdogs(t, bin)) == 1
	})

	frozenAt := time.Now()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	waitSucceeded(t, pool, runID, a, b)
	resumedAt := time.Now()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGCONT))

	o := awaitExecutions(t, pool, marks, runID, a)
	t.Logf("worker frozen for %s; from the freeze: %s", resumedAt.Sub(frozenAt).Round(time.Millisecond), o.timeline(frozenAt))
	o.requireFenced(t)
	require.True(t, o.a.end.Before(resumedAt), "A's command was stopped while A was frozen")

	waitFencedAttempt(t, a)
	require.Contains(t, a.logs.String(), "watchdog: the lease was not renewed in time")
	require.Empty(t, watchdogs(t, bin), "the watchdog is gone with its command")
	requireRetriedOnce(t, pool, marks, runID)
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
