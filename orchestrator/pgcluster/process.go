package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// fastShutdownWait is how long a postmaster gets to finish a fast
	// shutdown (SIGINT) before it is sent SIGQUIT.
	fastShutdownWait = 30 * time.Second
	// escalationWait is how long a postmaster gets after SIGQUIT and after
	// SIGKILL.
	escalationWait = 5 * time.Second
	// pollInterval is how often process liveness is checked while waiting.
	pollInterval = 25 * time.Millisecond
)

// StopStale stops a PostgreSQL server still running on the cluster directory
// dir (as laid out by Start) although no Cluster manages it any more, for
// example after the process that started it crashed. It does nothing when no
// such server runs. Start calls it itself; it is exported for cleaning up
// abandoned clusters without starting them.
func StopStale(ctx context.Context, dir string) error {
	return stopStale(ctx, filepath.Join(dir, "data"), slog.New(slog.DiscardHandler))
}

// stopStale stops the postmaster recorded in dataDir/postmaster.pid when it is
// alive and serves dataDir.
func stopStale(ctx context.Context, dataDir string, log *slog.Logger) error {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		// A half-written file: postgres itself decides what to do with it.
		return nil
	}
	if !processAlive(pid) {
		return nil
	}
	if !servesDataDir(pid, dataDir) {
		log.Warn("postmaster.pid names a live process that is not this cluster's server; leaving it alone",
			"pid", pid, "data_dir", dataDir)
		return nil
	}
	log.Warn("stopping a PostgreSQL server left running by an earlier run", "pid", pid, "data_dir", dataDir)
	if err := shutdown(ctx, log, pid, func() bool { return !processAlive(pid) }); err != nil {
		return fmt.Errorf("stop stale server: %w", err)
	}
	return nil
}

// processAlive reports whether pid names a live, non-zombie process.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		// Without /proc the signal probe is all there is.
		return !errors.Is(err, os.ErrNotExist) || !procAvailable()
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain parentheses.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}

// procAvailable reports whether a /proc file system is mounted.
func procAvailable() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// servesDataDir reports whether pid is a postgres process working in dataDir.
// The postmaster changes into its data directory at startup; when the working
// directory cannot be read (no /proc, or no permission) the process name
// alone decides.
func servesDataDir(pid int, dataDir string) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return !procAvailable()
	}
	if strings.TrimSpace(string(comm)) != "postgres" {
		return false
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return true
	}
	want, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		want = dataDir
	}
	return cwd == want
}

// shutdown stops the postmaster pid: a fast shutdown (SIGINT) first, given
// until ctx ends or fastShutdownWait passes, then an immediate shutdown
// (SIGQUIT), then SIGKILL to its process group. gone reports whether the
// process has exited. The result is nil when the server stopped after SIGINT
// or SIGQUIT.
func shutdown(ctx context.Context, log *slog.Logger, pid int, gone func() bool) error {
	steps := []struct {
		sig     syscall.Signal
		wait    time.Duration
		withCtx bool
	}{
		{syscall.SIGINT, fastShutdownWait, true},
		{syscall.SIGQUIT, escalationWait, false},
		{syscall.SIGKILL, escalationWait, false},
	}
	for i, step := range steps {
		if gone() {
			return nil
		}
		if i > 0 {
			log.Warn("PostgreSQL did not stop in time; escalating", "pid", pid, "signal", step.sig.String())
		}
		if err := signalPostmaster(pid, step.sig); err != nil {
			if errors.Is(err, syscall.ESRCH) || gone() {
				return nil
			}
			return fmt.Errorf("send %s to postgres (pid %d): %w", step.sig, pid, err)
		}
		var waitCtx context.Context = context.Background()
		if step.withCtx {
			waitCtx = ctx
		}
		if waitGone(waitCtx, step.wait, gone) {
			if step.sig == syscall.SIGKILL {
				return fmt.Errorf("postgres (pid %d) did not shut down in time and was killed", pid)
			}
			return nil
		}
	}
	return fmt.Errorf("postgres (pid %d) is still running after SIGKILL", pid)
}

// signalPostmaster sends sig to the postmaster pid; SIGKILL goes to its whole
// process group when it leads one, so that no backend outlives it.
func signalPostmaster(pid int, sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
			return syscall.Kill(-pid, sig)
		}
	}
	return syscall.Kill(pid, sig)
}

// waitGone polls gone until it reports true, d passes or ctx ends.
func waitGone(ctx context.Context, d time.Duration, gone func() bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		if gone() {
			return true
		}
		select {
		case <-ctx.Done():
			return gone()
		case <-timer.C:
			return gone()
		case <-ticker.C:
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// logSince returns what was appended to the file at path after offset.
func logSince(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	// Startup output is short; cap what is read in case it is not.
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(b)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
