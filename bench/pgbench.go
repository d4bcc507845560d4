package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator/pgcluster"
)

// commitPayload is the 1 KiB JSON document of the commit limit: about the size of a Hub delivery.
var commitPayload = func() string {
	const head = `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/bench"},"pad":"`
	return head + strings.Repeat("x", 1024-len(head)-2) + `"}`
}()

// commitTable is the table the commit limit inserts into, in the orchestrator's database.
const commitTable = `CREATE TABLE IF NOT EXISTS bench_commit (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)`

// pgbench runs PostgreSQL's own benchmark client against the orchestrator's database: the machine's commit
// limit, one INSERT of a 1 KiB JSONB row per autocommit transaction.
type pgbench struct {
	path   string // the pgbench binary
	url    string // the database it connects to
	script string // its script file
	dir    string // where its per-transaction logs go
}

// findPgbench returns the pgbench binary beside the PostgreSQL server binaries, or on PATH.
func findPgbench() (string, error) {
	if dir, err := pgcluster.FindBinDir(); err == nil {
		if p := filepath.Join(dir, "pgbench"); isExecutableFile(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	return "", errors.New("pgbench not found beside the PostgreSQL server binaries or on PATH: " +
		"run `make deps` (it installs postgresql, which ships it), or install postgresql-15")
}

func isExecutableFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// newPgbench finds pgbench and writes its script into dir.
func newPgbench(dir, url string) (*pgbench, error) {
	path, err := findPgbench()
	if err != nil {
		return nil, err
	}
	p := &pgbench{path: path, url: url, script: filepath.Join(dir, "commit.sql"), dir: filepath.Join(dir, "pgbench")}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create pgbench directory: %w", err)
	}
	sql := "INSERT INTO bench_commit (payload) VALUES ('" + commitPayload + "');\n"
	if err := os.WriteFile(p.script, []byte(sql), 0o644); err != nil {
		return nil, fmt.Errorf("write pgbench script: %w", err)
	}
	return p, nil
}

// round runs pgbench with c clients (at most two threads, as the machine has two cores to share with the
// server) for warmup and window together, and returns the transactions started within the window, read from
// its per-transaction log.
func (p *pgbench) round(ctx context.Context, c int, warmup, window time.Duration) (loadResult, error) {
	prefix := filepath.Join(p.dir, fmt.Sprintf("log-%d", time.Now().UnixNano()))
	seconds := int(math.Ceil((warmup + window).Seconds()))
	args := []string{"--no-vacuum", "--protocol=prepared", "--client=" + strconv.Itoa(c), "--jobs=" + strconv.Itoa(min(2, c)),
		"--time=" + strconv.Itoa(seconds), "--file=" + p.script, "--log", "--log-prefix=" + prefix, p.url}
	out, err := exec.CommandContext(ctx, p.path, args...).CombinedOutput()
	if err != nil {
		return loadResult{}, fmt.Errorf("pgbench at c=%d: %w\n%s", c, err, strings.TrimSpace(string(out)))
	}
	logs, err := filepath.Glob(prefix + ".*")
	if err != nil || len(logs) == 0 {
		return loadResult{}, fmt.Errorf("pgbench at c=%d wrote no transaction log\n%s", c, strings.TrimSpace(string(out)))
	}
	var txs []pgbenchTx
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			return loadResult{}, fmt.Errorf("read pgbench log: %w", err)
		}
		t, err := parsePgbenchLog(f)
		f.Close()
		_ = os.Remove(path)
		if err != nil {
			return loadResult{}, fmt.Errorf("read pgbench log %s: %w", path, err)
		}
		txs = append(txs, t...)
	}
	res := pgbenchWindow(txs, warmup, window)
	return res, res.check(fmt.Sprintf("pgbench at c=%d", c))
}

// pgbenchTx is one transaction of pgbench's log.
type pgbenchTx struct {
	start   time.Time
	latency time.Duration
	failed  bool
}

// parsePgbenchLog reads pgbench's per-transaction log (`client_id transaction_no time script_no time_epoch
// time_us`, the latency in µs and the completion time), as pgbench 15 writes it without rate limiting. A
// transaction that failed or was skipped has a word instead of a latency.
func parsePgbenchLog(r io.Reader) ([]pgbenchTx, error) {
	var txs []pgbenchTx
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 6 {
			return nil, fmt.Errorf("line %d: %d fields, want at least 6: %q", line, len(f), sc.Text())
		}
		sec, err1 := strconv.ParseInt(f[4], 10, 64)
		usec, err2 := strconv.ParseInt(f[5], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("line %d: completion time: %w", line, err)
		}
		done := time.Unix(sec, usec*1000)
		lat, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			// "failed" or "skipped": no latency; counted as a failure at its completion time.
			txs = append(txs, pgbenchTx{start: done, failed: true})
			continue
		}
		d := time.Duration(lat) * time.Microsecond
		txs = append(txs, pgbenchTx{start: done.Add(-d), latency: d})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return txs, nil
}

// pgbenchWindow returns the transactions of txs started within window after warmup, counted from the first
// start, as closedLoop counts its own. When pgbench's run ended before the window did (it counts its time from
// before its connections were made), the window is cut to the last start.
func pgbenchWindow(txs []pgbenchTx, warmup, window time.Duration) loadResult {
	if len(txs) == 0 {
		return loadResult{window: window}
	}
	first, last := txs[0].start, txs[0].start
	for _, t := range txs {
		if t.start.Before(first) {
			first = t.start
		}
		if t.start.After(last) {
			last = t.start
		}
	}
	from := first.Add(warmup)
	until := from.Add(window)
	if last.Before(until) {
		until = last
	}
	res := loadResult{window: until.Sub(from)}
	if res.window <= 0 {
		return loadResult{window: window}
	}
	for _, t := range txs {
		if t.start.Before(from) || !t.start.Before(until) {
			continue
		}
		if t.failed {
			res.errs++
			if res.firstErr == nil {
				res.firstErr = errors.New("a pgbench transaction failed")
			}
			continue
		}
		res.ops++
		res.lat = append(res.lat, t.latency)
	}
	slices.Sort(res.lat)
	return res
}
