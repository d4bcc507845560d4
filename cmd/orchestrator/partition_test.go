package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/logtest"
	"github.com/retrainhq/orchestrator/orchestrator/pgcluster"
)

// Timings of the partition test: short, but with room for a loaded machine. A worker cut off from the database
// stops its command partitionOrphanAfter - partitionFenceMargin after its last heartbeat that got through, and
// the command has partitionKillGrace to go after SIGTERM.
const (
	partitionHeartbeat   = 300 * time.Millisecond
	partitionOrphanAfter = 8 * time.Second
	partitionFenceMargin = 3 * time.Second
	partitionKillGrace   = time.Second
)

// TestPartition cuts a worker off from the database while its command runs and checks that the run's command
// never runs twice at once: worker A runs in a network namespace of its own, reaching PostgreSQL over a veth
// pair, and worker B on the host takes the run over once A's lease has expired. Each worker also has a PID
// namespace of its own, as if they ran on two machines: otherwise B's sweeper would find A's command in /proc and
// kill it, which would hide a worker that does not stop its own command. Every execution of the command writes
// a file of marks (its start, its end, its pid), from which the test reads that A's execution ended before B's
// began, and that the run ran once more after A's, no more.
func TestPartition(t *testing.T) {
	t.Parallel()
	dir, bin := namespacedTest(t, "orchestrator-partition-*")
	tn := newTestNet(t)

	// PostgreSQL listens on loopback for the host's processes and on the host end of the veth pair for A.
	ctx := context.Background()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	clusterDir, err := os.MkdirTemp("", "orchestrator-partition-pg-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(clusterDir) })
	cluster, err := pgcluster.Start(startCtx, pgcluster.Config{Dir: clusterDir, NoSync: true,
		Listen: []netip.Prefix{netip.PrefixFrom(tn.hostAddr, 30)}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop(context.Background()) })
	hostURL := cluster.URL()
	u, err := url.Parse(hostURL)
	require.NoError(t, err)
	u.Host = net.JoinHostPort(tn.hostAddr.String(), strconv.Itoa(cluster.Port()))
	nsURL := u.String()
	pool, err := pgxpool.New(ctx, hostURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	cfg, marks := writeFencedConfig(t, dir, "fenced")
	common := fencedEnv(cfg)
	pidns := []string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}

	webPort := freePort(t)
	web := startServe(t, nil, bin, fmt.Sprintf("127.0.0.1:%d", webPort),
		append(common, "DATABASE_URL="+hostURL, "ORCHESTRATOR_ROLE=web"))
	aAddr := net.JoinHostPort(tn.nsAddr.String(), "8080")
	a := startServe(t, append([]string{tn.ip, "netns", "exec", tn.name}, pidns...), bin, aAddr,
		append(common, "DATABASE_URL="+nsURL, "ORCHESTRATOR_ROLE=worker", "WORKER_NAME=a"))

	runID := startOnA(t, web, "acme/fenced", marks)
	b := startServe(t, pidns, bin, fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		append(common, "DATABASE_URL="+hostURL, "ORCHESTRATOR_ROLE=worker", "WORKER_NAME=b"))

	cutAt := time.Now()
	tn.setLink(t, "down")
	restored := false
	t.Cleanup(func() {
		if !restored {
			tn.setLink(t, "up")
		}
	})
	waitSucceeded(t, pool, runID, a, b)
	restoreAt := time.Now()
	tn.setLink(t, "up")
	restored = true

	// A's execution ends at the latest once A hears from the database again.
	o := awaitExecutions(t, pool, marks, runID, a)
	t.Logf("link cut for %s; from the cut: %s (A stopped %s before the lease expired, B started %s after A stopped)",
		restoreAt.Sub(cutAt).Round(time.Millisecond), o.timeline(cutAt), o.expiry.Sub(o.a.end).Round(time.Millisecond),
		o.b.start.Sub(o.a.end).Round(time.Millisecond))
	o.requireFenced(t)
	require.Equal(t, "exit", o.b.how)

	// A records nothing twice: the attempt was closed already, or A closes it as interrupted itself.
	waitFencedAttempt(t, a)
	requireRetriedOnce(t, pool, marks, runID)
	var status string
	require.NoError(t, pool.QueryRow(ctx, `SELECT status FROM runs WHERE id = $1`, runID).Scan(&status))
	require.Equal(t, "succeeded", status)
}

// namespacedTest fails the test unless it can make namespaces, and returns a directory of its own, named after
// pattern and removed when the test ends, with the orchestrator binary built in it.
func namespacedTest(t *testing.T, pattern string) (dir, bin string) {
	t.Helper()
	requireNamespaces(t)
	dir, err := os.MkdirTemp("", pattern)
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir, buildBinary(t, dir)
}

// writeFencedConfig writes the configuration of a test in which worker A loses a run to worker B: its one
// mapping, name on the dataset acme/name, runs a command whose every execution writes a file of marks (its
// start, its end, its pid) in the directory marks, which it makes. A's execution lasts until it is stopped; B's
// takes a second. The end mark is written on SIGTERM too.
func writeFencedConfig(t *testing.T, dir, name string) (cfg, marks string) {
	t.Helper()
	marks = filepath.Join(dir, "marks")
	require.NoError(t, os.Mkdir(marks, 0o755))
	cfg = writeConfig(t, dir, `
mappings:
  - name: `+name+`
    dataset: acme/`+name+`
    command: ["sh", "-c", "f=`+marks+`/$WORKER_NAME.$$; echo \"start $(date +%s.%N) $$ $WORKER_NAME $RUN_ATTEMPT\" > $f; trap 'echo \"end $(date +%s.%N) SIGTERM\" >> $f; exit 143' TERM; if [ \"$WORKER_NAME\" = a ]; then sleep 600 & wait $!; fi; sleep 1; echo \"end $(date +%s.%N) exit\" >> $f"]
`)
	return cfg, marks
}

// fencedEnv is the environment of every process of such a test, with the configuration cfg, the partition
// timings and the more given; each process adds its own.
func fencedEnv(cfg string, more ...string) []string {
	return slices.Clip(append([]string{"HUGGINGFACE_WEBHOOK_SECRET=" + e2eSecret, "ORCHESTRATOR_CONFIG=" + cfg,
		"ORCHESTRATOR_HEARTBEAT_INTERVAL=" + partitionHeartbeat.String(),
		"ORCHESTRATOR_ORPHAN_AFTER=" + partitionOrphanAfter.String(),
		"ORCHESTRATOR_FENCE_MARGIN=" + partitionFenceMargin.String(),
		"ORCHESTRATOR_KILL_GRACE=" + partitionKillGrace.String(), "ORCHESTRATOR_MAX_WORKERS=2"}, more...))
}

// startOnA posts a push to dataset while A is the only worker, so that the run starts there, waits for A's
// execution to start, and returns the run's id.
func startOnA(t *testing.T, web *served, dataset, marks string) int64 {
	t.Helper()
	res := postDelivery(t, web.base, push(dataset, randomRevision()))
	runID := int64(res["runs"].([]any)[0].(float64))
	waitFor(t, 30*time.Second, "A's execution to start", func() bool { return len(readMarks(t, marks)) == 1 })
	require.Equal(t, "a", readMarks(t, marks)[0].worker)
	return runID
}

// waitSucceeded waits for the run to finish on B, and requires that it succeeded.
func waitSucceeded(t *testing.T, pool *pgxpool.Pool, runID int64, a, b *served) {
	t.Helper()
	var status string
	waitFor(t, 2*time.Minute, "the run to finish on B", func() bool {
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT status FROM runs WHERE id = $1`, runID).Scan(&status))
		return status == "succeeded" || status == "failed" || status == "cancelled"
	}, "A:\n%s\nB:\n%s", a.logs, b.logs)
	require.Equal(t, "succeeded", status)
}

// fencedOutcome is what a fenced test reads once both executions have ended: A's and B's, A's last heartbeat,
// the expiry of A's lease, and how long the executions overlapped.
type fencedOutcome struct {
	a, b              execution
	heartbeat, expiry time.Time
	overlap           time.Duration
}

// awaitExecutions waits for every execution of the run to end, requires that there are two, A's then B's, and
// reads A's last heartbeat.
func awaitExecutions(t *testing.T, pool *pgxpool.Pool, marks string, runID int64, a *served) fencedOutcome {
	t.Helper()
	var execs []execution
	waitFor(t, time.Minute, "every execution to end", func() bool {
		execs = readMarks(t, marks)
		return !slices.ContainsFunc(execs, func(e execution) bool { return e.end.IsZero() })
	}, "marks: %+v\nA:\n%s", execs, a.logs)
	require.Len(t, execs, 2, "A's execution and B's: %+v", execs)
	slices.SortFunc(execs, func(x, y execution) int { return x.start.Compare(y.start) })
	o := fencedOutcome{a: execs[0], b: execs[1]}
	require.Equal(t, []string{"a", "b"}, []string{o.a.worker, o.b.worker})
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT heartbeat_at FROM run_attempts WHERE run_id = $1 AND attempt = $2`, runID, o.a.attempt).Scan(&o.heartbeat))
	o.expiry = o.heartbeat.Add(partitionOrphanAfter)
	o.overlap = max(o.a.end.Sub(o.b.start), 0)
	return o
}

// timeline says when, from the time from, A's last heartbeat was, A's command stopped, A's lease expired, and
// B's command started and ended, and how long the executions overlapped.
func (o fencedOutcome) timeline(from time.Time) string {
	since := func(at time.Time) string { return at.Sub(from).Round(time.Millisecond).String() }
	return fmt.Sprintf("A's last heartbeat %s, A's command stopped (%s) at %s, lease expiry %s, "+
		"B's command started at %s and ended (%s) at %s; overlap %s",
		since(o.heartbeat), o.a.how, since(o.a.end), since(o.expiry), since(o.b.start), o.b.how, since(o.b.end), o.overlap)
}

// requireFenced requires that A's command was stopped by SIGTERM before its lease expired, and that the two
// executions did not overlap.
func (o fencedOutcome) requireFenced(t *testing.T) {
	t.Helper()
	require.Zero(t, o.overlap, "two executions of one run overlapped: A's ended at %s, B's started at %s", o.a.end, o.b.start)
	require.True(t, o.a.end.Before(o.expiry), "A's command outlived its lease: it ended at %s, the lease expired at %s",
		o.a.end, o.expiry)
	require.Equal(t, "SIGTERM", o.a.how)
}

// waitFencedAttempt waits for A to deal with the attempt it lost.
func waitFencedAttempt(t *testing.T, a *served) {
	t.Helper()
	waitFor(t, time.Minute, "A to deal with its fenced attempt", func() bool {
		return strings.Contains(a.logs.String(), "fenced attempt")
	}, "A:\n%s", a.logs)
}

// requireRetriedOnce requires that the run succeeded once, after one interrupted attempt, and that nothing runs
// it again.
func requireRetriedOnce(t *testing.T, pool *pgxpool.Pool, marks string, runID int64) {
	t.Helper()
	time.Sleep(partitionOrphanAfter / 2)
	require.Len(t, readMarks(t, marks), 2, "no third execution")
	rows, err := pool.Query(context.Background(), `SELECT status FROM run_attempts WHERE run_id = $1 ORDER BY attempt`, runID)
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

// requireNamespaces fails the test unless it can make network and PID namespaces: as root, with ip and unshare.
func requireNamespaces(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("TestPartition makes network and PID namespaces and needs root: run the tests as root (CI does)")
	}
	for _, tool := range []string{"unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("TestPartition needs %s (Debian: apt-get install -y util-linux; .ci/deps installs it): %v", tool, err)
		}
	}
	if ipPath() == "" {
		t.Fatal("TestPartition needs ip (Debian: apt-get install -y iproute2; .ci/deps installs it)")
	}
}

// ipPath returns the path of ip, which is often in /usr/sbin, off a user's PATH.
func ipPath() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// testNet is a network namespace of the test's own, joined to the host by a veth pair with a /30 of the
// benchmarking range 198.18.0.0/15: the host end has the first address, the namespace's end the second.
type testNet struct {
	ip               string // the ip tool
	name             string // the namespace
	hostLink, nsLink string
	hostAddr, nsAddr netip.Addr
}

// newTestNet makes a namespace and its veth pair, and removes them when the test ends, passed or not.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	var id [4]byte
	_, _ = rand.Read(id[:])
	suffix := hex.EncodeToString(id[:3])
	tn := &testNet{ip: ipPath(), name: "orch-part-" + suffix, hostLink: "oph" + suffix, nsLink: "opn" + suffix}
	// A /30 of 198.18.0.0/15 that no interface of the host uses yet.
	used := tn.run(t, "-o", "-4", "addr", "show")
	for {
		block := binary.BigEndian.Uint32([]byte{198, 18, 0, 0}) + (binary.BigEndian.Uint32(id[:])%(1<<15))*4
		var host [4]byte
		binary.BigEndian.PutUint32(host[:], block+1)
		tn.hostAddr = netip.AddrFrom4(host)
		tn.nsAddr = tn.hostAddr.Next()
		if !strings.Contains(used, " "+tn.hostAddr.String()+"/") && !strings.Contains(used, " "+tn.nsAddr.String()+"/") {
			break
		}
		_, _ = rand.Read(id[:])
	}
	tn.run(t, "netns", "add", tn.name)
	t.Cleanup(func() {
		// Deleting the namespace deletes its end of the pair, and with it the host's end.
		_ = exec.Command(tn.ip, "netns", "del", tn.name).Run()
		_ = exec.Command(tn.ip, "link", "del", tn.hostLink).Run()
	})
	tn.run(t, "link", "add", tn.hostLink, "type", "veth", "peer", "name", tn.nsLink)
	tn.run(t, "link", "set", tn.nsLink, "netns", tn.name)
	tn.run(t, "addr", "add", tn.hostAddr.String()+"/30", "dev", tn.hostLink)
	tn.run(t, "link", "set", tn.hostLink, "up")
	tn.run(t, "-n", tn.name, "addr", "add", tn.nsAddr.String()+"/30", "dev", tn.nsLink)
	tn.run(t, "-n", tn.name, "link", "set", tn.nsLink, "up")
	tn.run(t, "-n", tn.name, "link", "set", "lo", "up")
	return tn
}

// setLink sets the host end of the pair up or down: down cuts the namespace off.
func (tn *testNet) setLink(t *testing.T, state string) {
	t.Helper()
	tn.run(t, "link", "set", tn.hostLink, state)
}

func (tn *testNet) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(tn.ip, args...).CombinedOutput()
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// served is an orchestrator process started by startServe.
type served struct {
	cmd  *exec.Cmd
	logs *logtest.Buffer
	base string
}

// startServe starts `bin serve --addr addr`, after the wrapper's argv when there is one, and waits until it
// answers /readyz on addr.
func startServe(t *testing.T, wrapper []string, bin, addr string, env []string) *served {
	t.Helper()
	argv := append(slices.Clone(wrapper), bin, "serve", "--addr", addr)
	p := &served{logs: &logtest.Buffer{}, base: "http://" + addr}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(append(os.Environ(), serveTestEnv...), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	client := &http.Client{Timeout: 2 * time.Second}
	waitFor(t, time.Minute, addr+" to be ready", func() bool {
		resp, err := client.Get(p.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "logs:\n%s", p.logs)
	return p
}

// waitFor polls cond until it holds, and fails the test with the message and args when timeout passes first.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if len(msgAndArgs) > 0 {
				msg = fmt.Sprintf(msgAndArgs[0].(string), msgAndArgs[1:]...)
			}
			t.Fatalf("waited %s for %s\n%s", timeout, what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// execution is one execution of the partition test's command, read from its marks.
type execution struct {
	worker     string
	pid        int
	attempt    int
	start, end time.Time // end is zero while it runs
	how        string    // how it ended: exit or SIGTERM
}

// readMarks reads the marks of every execution so far.
func readMarks(t *testing.T, dir string) []execution {
	t.Helper()
	files, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []execution
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name()))
		require.NoError(t, err)
		var e execution
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			fields := strings.Fields(line)
			switch {
			case len(fields) == 5 && fields[0] == "start":
				e.start = markTime(t, fields[1])
				e.pid, _ = strconv.Atoi(fields[2])
				e.worker = fields[3]
				e.attempt, _ = strconv.Atoi(fields[4])
			case len(fields) == 3 && fields[0] == "end":
				e.end, e.how = markTime(t, fields[1]), fields[2]
			}
		}
		if !e.start.IsZero() { // a file being written has no start line yet
			out = append(out, e)
		}
	}
	return out
}

// markTime parses date's "%s.%N".
func markTime(t *testing.T, s string) time.Time {
	t.Helper()
	sec, nsec, ok := strings.Cut(s, ".")
	require.True(t, ok, "mark time %q", s)
	secs, err := strconv.ParseInt(sec, 10, 64)
	require.NoError(t, err)
	nsecs, err := strconv.ParseInt(nsec, 10, 64)
	require.NoError(t, err)
	return time.Unix(secs, nsecs)
}
