package jobs_test

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/logtest"
)

// link relays TCP connections to a server, and can be cut: while cut it holds every byte in both directions,
// neither relaying nor refusing it, as a pulled cable does (the other side's writes succeed and nothing comes
// back), and new connections get no answer; once restored, what was held goes through.
type link struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	restored chan struct{} // closed while the link is up
	conns    []net.Conn
}

// newLink relays connections to target (host:port) until the test ends.
func newLink(t *testing.T, target string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := &link{ln: ln, target: target, restored: make(chan struct{})}
	close(l.restored)
	go l.accept()
	t.Cleanup(l.close)
	return l
}

// addr returns the address to connect to instead of the target.
func (l *link) addr() string { return l.ln.Addr().String() }

func (l *link) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.restored:
		l.restored = make(chan struct{})
	default:
	}
}

func (l *link) restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.restored:
	default:
		close(l.restored)
	}
}

// up returns a channel closed while the link is up.
func (l *link) up() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.restored
}

func (l *link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
		go func() {
			<-l.up() // no answer while cut
			s, err := net.Dial("tcp", l.target)
			if err != nil {
				_ = c.Close()
				return
			}
			l.mu.Lock()
			l.conns = append(l.conns, s)
			l.mu.Unlock()
			go l.relay(s, c)
			l.relay(c, s)
		}()
	}
}

// relay copies from src to dst, holding each chunk while the link is cut.
func (l *link) relay(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-l.up()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (l *link) close() {
	l.restore()
	_ = l.ln.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
}

// Timings of the lease tests: a fenced command gets SIGTERM leaseTerm after its last renewal that got through,
// and the lease expires at the database leaseOrphanAfter after it.
const (
	leaseHeartbeat   = 200 * time.Millisecond
	leaseOrphanAfter = 6 * time.Second
	leaseFenceMargin = 2 * time.Second
	leaseTerm        = leaseOrphanAfter - leaseFenceMargin
	leaseKillGrace   = 300 * time.Millisecond
)

// setupThrough is setupWith with the River client and the store reaching PostgreSQL through a link the test can
// cut, and the lease tests' timings.
func setupThrough(t *testing.T, configure func(*jobs.ClientConfig), mappings ...orchestrator.Mapping) (*testBundle, *link) {
	t.Helper()
	connString, _ := dbtest.NewSchema(t)
	u, err := url.Parse(connString)
	require.NoError(t, err)
	l := newLink(t, u.Host)
	u.Host = l.addr()
	b := setupOn(t, u.String(), func(cfg *jobs.ClientConfig) {
		cfg.Worker.KillGrace = leaseKillGrace
		cfg.Worker.HeartbeatInterval = leaseHeartbeat
		cfg.Worker.OrphanAfter = leaseOrphanAfter
		cfg.Worker.FenceMargin = leaseFenceMargin
		configure(cfg)
	}, mappings...)
	t.Cleanup(l.restore) // before the client stops
	return b, l
}

// TestLease cuts a worker off from the database while its command runs. Cut for longer than the lease's term,
// the worker stops its command (SIGTERM, then SIGKILL after the grace) before the lease can expire at the
// database, and once the link is back records the attempt as interrupted, so that the run runs once more. Cut
// for less, its renewals are retried and the command runs to its end.
func TestLease(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// cutFor is how long the link stays cut; zero: until the command has been stopped.
		cutFor time.Duration
		// ignoreTerm makes the first execution ignore SIGTERM, so that only SIGKILL stops it.
		ignoreTerm bool
		fenced     bool
	}{
		{name: "CutUntilFenced", fenced: true},
		{name: "CommandIgnoringSIGTERMIsKilled", ignoreTerm: true, fenced: true},
		{name: "ShortCutIsRidden", cutFor: leaseTerm / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			marks := filepath.Join(dir, "marks")
			// The first execution runs until it is stopped or the test lets it end (the file "end"); later ones
			// end at once. Each writes its start, and its end unless SIGKILL stops it.
			trap := `trap 'echo "end $(date +%s.%N) SIGTERM" >> $f; exit 143' TERM`
			if tt.ignoreTerm {
				trap = `trap '' TERM`
			}
			script := `f=` + marks + `.$$; echo "start $(date +%s.%N)" > $f; ` +
				`if [ ! -e ` + dir + `/first ]; then touch ` + dir + `/first; ` + trap + `; ` +
				`while [ ! -e ` + dir + `/end ]; do sleep 0.05; done; fi; echo "end $(date +%s.%N) exit" >> $f`
			logs := &logtest.Buffer{}
			b, l := setupThrough(t, func(cfg *jobs.ClientConfig) {
				cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			}, shMapping("leased", script))
			runID := b.push(t, "acme/leased", "refs/heads/main", shaB)
			require.Eventually(t, func() bool { return len(leaseMarks(t, dir)) == 1 }, 20*time.Second, 10*time.Millisecond)

			cutAt := time.Now()
			l.cut()
			if tt.cutFor > 0 {
				time.Sleep(tt.cutFor)
				l.restore()
				require.NoError(t, os.WriteFile(filepath.Join(dir, "end"), nil, 0o644))
				run := b.waitStatus(t, runID, 30*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
				require.Equal(t, orchestrator.RunSucceeded, run.Status, "%s\n%s", run.Error, logs)
				require.Len(t, leaseMarks(t, dir), 1, "one execution")
				require.Equal(t, 1, run.Attempt)
				require.Contains(t, logs.String(), "could not renew the attempt's lease", "the cut was felt")
				require.NotContains(t, logs.String(), "stopping the command")
				return
			}

			// The first execution ends within the term of its last renewal plus the grace.
			var pid int
			require.Eventually(t, func() bool {
				pid = commandPid(t, dir)
				return pid == 0
			}, leaseOrphanAfter+10*time.Second, 10*time.Millisecond, "the command still runs")
			stoppedAt := time.Now()
			l.restore() // the lease is no longer renewed: its last heartbeat stays
			var heartbeat time.Time
			require.NoError(t, b.pool.QueryRow(context.Background(),
				`SELECT heartbeat_at FROM run_attempts WHERE run_id = $1 AND attempt = 1`, runID).Scan(&heartbeat))
			expiry := heartbeat.Add(leaseOrphanAfter)
			t.Logf("from the cut: last heartbeat %s, command gone by %s, lease expiry %s",
				heartbeat.Sub(cutAt).Round(time.Millisecond), stoppedAt.Sub(cutAt).Round(time.Millisecond),
				expiry.Sub(cutAt).Round(time.Millisecond))
			require.True(t, stoppedAt.Before(expiry), "the command outlived its lease: gone at %s, lease expired at %s", stoppedAt, expiry)
			require.True(t, stoppedAt.After(heartbeat.Add(leaseTerm-time.Second)), "fenced before its term: at %s, last heartbeat %s",
				stoppedAt, heartbeat)

			// The link is back: the attempt is recorded interrupted, and the run runs once more.
			run := b.waitStatus(t, runID, 30*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
			require.Equal(t, orchestrator.RunSucceeded, run.Status, "%s\n%s", run.Error, logs)
			attempts, err := b.store.RunAttemptList(context.Background(), runID)
			require.NoError(t, err)
			var statuses []orchestrator.AttemptStatus
			for _, a := range attempts {
				statuses = append(statuses, a.Status)
			}
			require.Equal(t, []orchestrator.AttemptStatus{orchestrator.AttemptInterrupted, orchestrator.AttemptSucceeded}, statuses)
			require.Contains(t, attempts[0].Error, "stopped the command before its lease ran out")
			require.Contains(t, logs.String(), "fenced attempt recorded as interrupted")
			execs := leaseMarks(t, dir)
			require.Len(t, execs, 2)
			first, second := execs[0], execs[1]
			if tt.ignoreTerm {
				require.True(t, first.end.IsZero(), "SIGKILL leaves no end mark: %+v", first)
			} else {
				require.Equal(t, "SIGTERM", first.how)
				require.True(t, first.end.Before(second.start), "executions overlap: %+v %+v", first, second)
			}
			require.True(t, stoppedAt.Before(second.start))
			require.Equal(t, "exit", second.how)
		})
	}
}

// leaseExecution is one execution of the lease test's command.
type leaseExecution struct {
	start, end time.Time
	how        string
}

// leaseMarks reads the executions' marks, oldest first.
func leaseMarks(t *testing.T, dir string) []leaseExecution {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "marks.*"))
	require.NoError(t, err)
	var out []leaseExecution
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		var e leaseExecution
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			fields := strings.Fields(line)
			switch {
			case len(fields) == 2 && fields[0] == "start":
				e.start = dateTime(t, fields[1])
			case len(fields) == 3 && fields[0] == "end":
				e.end, e.how = dateTime(t, fields[1]), fields[2]
			}
		}
		if !e.start.IsZero() {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b leaseExecution) int { return a.start.Compare(b.start) })
	return out
}

// commandPid returns the pid of the first execution's shell while it lives, else 0.
func commandPid(t *testing.T, dir string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "marks.*"))
	require.NoError(t, err)
	for _, f := range files {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Ext(f), "."))
		require.NoError(t, err)
		if !processGone(pid) {
			return pid
		}
	}
	return 0
}

// dateTime parses date's "%s.%N".
func dateTime(t *testing.T, s string) time.Time {
	t.Helper()
	sec, nsec, ok := strings.Cut(s, ".")
	require.True(t, ok, "mark time %q", s)
	secs, err := strconv.ParseInt(sec, 10, 64)
	require.NoError(t, err)
	nsecs, err := strconv.ParseInt(nsec, 10, 64)
	require.NoError(t, err)
	return time.Unix(secs, nsecs)
}
