package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// childDatabase is the database the orchestrator binary runs on, beside the in-process one.
const childDatabase = "bench_child"

// child is the orchestrator binary running `serve` as a child process.
type child struct {
	cmd     *exec.Cmd
	baseURL string
	exited  chan struct{}
	waitErr error
	logPath string
}

// footprint runs the orchestrator binary, built at the start, as a child process on a database of its own, and
// measures its size, the time from start to /readyz 200 on an empty and on an existing database, its idle RSS,
// its RSS under c=32 ingest, and its peak RSS while capturing the log-capture command's output.
func (b *bench) footprint(ctx context.Context) error {
	fi, err := os.Stat(b.env.binary)
	if err != nil {
		return fmt.Errorf("stat orchestrator binary: %w", err)
	}
	if err := b.createChildDatabase(ctx); err != nil {
		return err
	}
	dbURL, err := databaseURL(b.env.cluster.URL(), childDatabase)
	if err != nil {
		return err
	}
	config := filepath.Join(b.env.dir, "child.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`mappings:
  - name: %s
    dataset: %s
    command: ["true"]
    max_attempts: 1
    on_new_revision: queue
    concurrency: %d
  - name: %s
    dataset: %s
    command: [%q, "spew", "%d"]
    max_attempts: 1
`, mappingIngest, datasetIngest, b.env.workers, mappingLog, datasetLog, b.env.helper, b.sizes.LogBytes)), 0o644); err != nil {
		return fmt.Errorf("write child config: %w", err)
	}
	starts := 0
	start := func() (*child, time.Duration, error) {
		starts++
		return b.startChild(ctx, dbURL, config, filepath.Join(b.env.dir, fmt.Sprintf("child-%d.log", starts)))
	}

	b.logf("footprint: first start, on an empty database")
	c, fresh, err := start()
	if err != nil {
		return err
	}
	if err := c.stop(); err != nil {
		return err
	}
	var readies Latencies
	for range b.sizes.ReadyStarts {
		b.logf("footprint: start on the existing database")
		c, ready, err := start()
		if err != nil {
			return err
		}
		readies = append(readies, ready)
		if err := c.stop(); err != nil {
			return err
		}
	}

	b.logf("footprint: idle RSS, then RSS under c=32 ingest")
	c, _, err = start()
	if err != nil {
		return err
	}
	defer c.kill()
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	idle, _, err := procMemory(c.cmd.Process.Pid)
	if err != nil {
		return err
	}
	sampler := startRSSSampler(c.cmd.Process.Pid)
	load := closedLoop(ctx, 32, 0, b.sizes.FootprintIngest, func(ctx context.Context) error {
		_, _, err := deliver(ctx, b.env.client, c.baseURL, datasetIngest, b.env.shas.next())
		return err
	})
	underLoad := sampler.stop()
	if err := load.check("ingest against the orchestrator binary"); err != nil {
		return err
	}
	if err := c.stop(); err != nil {
		return err
	}

	// Withdraw the runs the ingest queued, so that the next start does nothing but the log capture.
	if err := withdrawQueued(ctx, dbURL); err != nil {
		return err
	}
	b.logf("footprint: peak RSS while capturing %d MiB of output", b.sizes.LogBytes/mib)
	c, _, err = start()
	if err != nil {
		return err
	}
	defer c.kill()
	runID, _, err := deliver(ctx, b.env.client, c.baseURL, datasetLog, b.env.shas.next())
	if err != nil {
		return fmt.Errorf("log capture in the orchestrator binary: %w", err)
	}
	logCapture, err := waitChildCapture(ctx, dbURL, runID)
	if err != nil {
		return err
	}
	_, peak, err := procMemory(c.cmd.Process.Pid)
	if err != nil {
		return err
	}
	if err := c.stop(); err != nil {
		return err
	}

	b.report.add(Row{Name: "log capture peak RSS (orchestrator binary)", Ours: Figure{Value: float64(peak) / mib, Unit: "MiB"},
		Target: "< 100 MiB", Met: ptr(peak < 100*mib),
		Note: fmt.Sprintf("captured at %.0f MiB/s in the binary", float64(b.sizes.LogBytes)/mib/logCapture.seconds)})
	b.report.add(Row{Name: "idle RSS after start", Ours: Figure{Value: float64(idle) / mib, Unit: "MiB"},
		Target: "< 40 MiB", Met: ptr(idle < 40*mib)})
	b.report.add(Row{Name: "RSS under c=32 ingest", Ours: Figure{Value: float64(underLoad) / mib, Unit: "MiB"},
		Note: fmt.Sprintf("%.0f deliveries/s against the binary, its workers running", float64(load.ops)/load.window.Seconds())})
	b.report.add(Row{Name: "binary size", Ours: Figure{Value: float64(fi.Size()) / mib, Unit: "MiB"}})
	ready := readies.figure()
	b.report.add(Row{Name: "start to /readyz 200, existing database", Ours: ready, Target: "< 1 s",
		Met: ptr(*ready.P99Ms < 1000), Note: fmt.Sprintf("worst of %d starts", len(readies))})
	b.report.add(Row{Name: "start to /readyz 200, empty database", Ours: Figure{Value: ms(fresh), Unit: "ms"},
		Note: "applies the schema"})
	return nil
}

// createChildDatabase creates the child's database, empty.
func (b *bench) createChildDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, b.env.cluster.AdminURL())
	if err != nil {
		return fmt.Errorf("connect as admin: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, sql := range []string{`DROP DATABASE IF EXISTS ` + childDatabase, `CREATE DATABASE ` + childDatabase} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// databaseURL returns base with its database replaced by name.
func databaseURL(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// startChild starts `orchestrator serve` and waits until /readyz answers 200, returning how long that took.
func (b *bench) startChild(ctx context.Context, dbURL, config, logPath string) (*child, time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, 0, fmt.Errorf("pick a port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, 0, fmt.Errorf("create child log: %w", err)
	}
	defer logFile.Close()

	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "HUGGINGFACE_WEBHOOK_SECRET") ||
			strings.HasPrefix(kv, "ORCHESTRATOR_")
	})
	// Catch-up is off: the benchmark never reaches the Hub.
	env = append(env, "DATABASE_URL="+dbURL, "HUGGINGFACE_WEBHOOK_SECRET="+webhookSecret, "ORCHESTRATOR_RECONCILE_INTERVAL=0")
	cmd := exec.Command(b.env.binary, "serve", "--addr", addr, "--config", config,
		"--max-workers", strconv.Itoa(b.env.workers))
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	c := &child{cmd: cmd, baseURL: "http://" + addr, exited: make(chan struct{}), logPath: logPath}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start orchestrator binary: %w", err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := t0.Add(30 * time.Second)
	for {
		resp, err := client.Get(c.baseURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, time.Since(t0), nil
			}
		}
		select {
		case <-c.exited:
			return nil, 0, fmt.Errorf("orchestrator binary exited during start (%v): %s", c.waitErr, tail(logPath))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.kill()
			return nil, 0, fmt.Errorf("orchestrator binary not ready within 30 s: %s", tail(logPath))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the child to exit.
func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(time.Minute):
		c.kill()
		return fmt.Errorf("orchestrator binary did not stop within a minute: %s", tail(c.logPath))
	}
	if c.waitErr != nil {
		return fmt.Errorf("orchestrator binary exited with %w: %s", c.waitErr, tail(c.logPath))
	}
	return nil
}

// kill ends the child at once, unless it has exited.
func (c *child) kill() {
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// procMemory returns the resident set size and its peak (VmRSS, VmHWM) of process pid, in bytes.
func procMemory(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	return rss, hwm, nil
}

// rssSampler records the largest resident set size of a process, sampled every 20 ms.
type rssSampler struct {
	done chan struct{}
	wg   sync.WaitGroup
	max  int64
}

func startRSSSampler(pid int) *rssSampler {
	s := &rssSampler{done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _, err := procMemory(pid); err == nil {
				s.max = max(s.max, rss)
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the largest RSS seen.
func (s *rssSampler) stop() int64 {
	close(s.done)
	s.wg.Wait()
	return s.max
}

// withdrawQueued removes the waiting jobs of the child's database and marks their runs cancelled.
func withdrawQueued(ctx context.Context, dbURL string) error {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to the child's database: %w", err)
	}
	defer pool.Close()
	view, err := queueView(pool)
	if err != nil {
		return err
	}
	if _, err := jobsDelete(ctx, view, river.NewJobDeleteManyParams().Queues(orchestrator.QueueDefault).
		States(rivertype.JobStateAvailable, rivertype.JobStateScheduled, rivertype.JobStateRetryable)); err != nil {
		return fmt.Errorf("withdraw queued runs: %w", err)
	}
	if _, err := pool.Exec(ctx, `UPDATE runs SET status = 'cancelled', error = 'withdrawn by the benchmark',
		finished_at = now(), updated_at = now() WHERE status IN ('queued', 'retrying', 'running')`); err != nil {
		return fmt.Errorf("withdraw queued runs: %w", err)
	}
	return nil
}

// waitChildCapture waits for the log-capture run in the child's database to finish and reads its attempt.
func waitChildCapture(ctx context.Context, dbURL string, runID int64) (capture, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return capture{}, fmt.Errorf("connect to the child's database: %w", err)
	}
	defer pool.Close()
	deadline := time.Now().Add(30 * time.Minute)
	for {
		var status string
		if err := pool.QueryRow(ctx, `SELECT status FROM runs WHERE id = $1`, runID).Scan(&status); err != nil {
			return capture{}, fmt.Errorf("read run %d: %w", runID, err)
		}
		if orchestrator.RunStatus(status).Finished() {
			return readCapture(ctx, pool, runID)
		}
		if time.Now().After(deadline) {
			return capture{}, fmt.Errorf("log-capture run %d still %s after 30 minutes", runID, status)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return capture{}, err
		}
	}
}
