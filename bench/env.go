package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/pgcluster"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// webhookSecret is the secret the benchmark's server is configured with and its deliveries carry.
const webhookSecret = "bench-webhook-secret"

// Names of the mappings the benchmark registers, and the datasets they watch. Each dataset has exactly one
// mapping, so that every delivery triggers exactly one run.
const (
	mappingIngest  = "bench-ingest"
	datasetIngest  = "acme/bench"
	mappingBacklog = "bench-backlog"
	datasetBacklog = "acme/backlog"
	mappingTrigger = "bench-trigger"
	datasetTrigger = "acme/trigger"
	mappingLog     = "bench-log"
	datasetLog     = "acme/log"
	// statusMappings mappings, bench-status-00 and on, own the rows loaded for the status pages.
	statusMappings = 10
)

func statusMapping(i int) string { return fmt.Sprintf("bench-status-%02d", i) }
func statusDataset(i int) string { return fmt.Sprintf("acme/status-%02d", i) }

// env is what a benchmark run starts: a private PostgreSQL, the orchestrator's service (store, River client,
// workers, background loops and HTTP server) in this process, and the binaries the mappings and the footprint
// figures run.
type env struct {
	sizes   Sizes
	workers int
	logf    func(format string, args ...any)

	dir      string // private temporary directory, removed by close
	cluster  *pgcluster.Cluster
	svc      *service.Service      // the orchestrator, as the serve command builds it
	store    *orchestrator.Store   // the service's
	observer *pgxpool.Pool         // the benchmark's own: setup, progress and figures read from the database
	view     *river.Client[pgx.Tx] // insert-only, on observer: River's jobs as the benchmark reads and withdraws them
	baseURL  string
	client   *http.Client
	shas     *shaGen
	helper   string // the benchproc binary
	binary   string // the orchestrator binary
	stampDir string // where benchproc stamp writes
	mappings map[string]int64
	logger   *slog.Logger
	trips    *roundTrips // counts the statements of the orchestrator's pool when on
}

// newEnv creates the temporary directory, starts PostgreSQL and builds the binaries.
func newEnv(ctx context.Context, sizes Sizes, workers int, logf func(string, ...any)) (_ *env, err error) {
	e := &env{sizes: sizes, workers: workers, logf: logf, shas: newShaGen(), trips: &roundTrips{},
		// The server logs every request and delivery, as in production; the lines are formatted, then dropped.
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute, DisableCompression: true,
		}},
	}
	defer func() {
		if err != nil {
			e.close(context.WithoutCancel(ctx))
		}
	}()
	if e.dir, err = os.MkdirTemp("", "orchestrator-bench-*"); err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	// As root, PostgreSQL runs as the postgres user, which must be able to enter the directory.
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return nil, fmt.Errorf("open up temporary directory: %w", err)
	}
	e.stampDir = filepath.Join(e.dir, "stamps")
	if err := os.Mkdir(e.stampDir, 0o755); err != nil {
		return nil, fmt.Errorf("create stamp directory: %w", err)
	}

	logf("building the benchmark command and the orchestrator binary")
	e.helper = filepath.Join(e.dir, "benchproc")
	if err := goBuild(ctx, e.helper, "github.com/retrainhq/orchestrator/bench/internal/benchproc"); err != nil {
		return nil, err
	}
	e.binary = filepath.Join(e.dir, "orchestrator")
	if err := goBuild(ctx, e.binary, "github.com/retrainhq/orchestrator/cmd/orchestrator"); err != nil {
		return nil, err
	}

	logf("starting PostgreSQL (fsync and synchronous commit on)")
	e.cluster, err = pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(e.dir, "postgres"), NoSync: false})
	if err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	return e, nil
}

// goBuild builds the package pkg into out with the go command that runs this benchmark. A race-enabled
// benchmark builds with the race detector too, which reuses what the test build compiled.
func goBuild(ctx context.Context, out, pkg string) error {
	// go test puts its own go command first in PATH.
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("find the go command to build %s: %w", pkg, err)
	}
	args := []string{"build", "-o", out}
	if RaceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, goCmd, append(args, pkg)...)
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, output)
	}
	return nil
}

// benchMappings returns the mappings the benchmark registers.
func (e *env) benchMappings() []orchestrator.Mapping {
	mappings := []orchestrator.Mapping{
		{Name: mappingIngest, Dataset: datasetIngest, Command: []string{"true"}},
		{Name: mappingBacklog, Dataset: datasetBacklog, Command: []string{"true"}},
		{Name: mappingTrigger, Dataset: datasetTrigger, Command: []string{e.helper, "stamp", e.stampDir}},
		{Name: mappingLog, Dataset: datasetLog, Command: []string{e.helper, "spew", strconv.FormatInt(e.sizes.LogBytes, 10)}},
	}
	for i := range statusMappings {
		mappings = append(mappings, orchestrator.Mapping{Name: statusMapping(i), Dataset: statusDataset(i), Command: []string{"true"}})
	}
	for i := range mappings {
		mappings[i] = e.benchMapping(mappings[i])
	}
	return mappings
}

// benchMapping returns m as the benchmark registers it: every revision gets its run, and the mapping's own
// concurrency never holds the workers back, so that the figures are those of the machinery, not of a mapping's
// trigger policy.
func (e *env) benchMapping(m orchestrator.Mapping) orchestrator.Mapping {
	m.OnNewRevision = orchestrator.OnNewRevisionQueue
	m.Concurrency = e.workers
	m.MaxAttempts = 1
	m.Source = orchestrator.SourceFile
	m.Enabled = true
	return m.WithDefaults()
}

// serviceConfig returns the configuration the benchmark runs the orchestrator with, on the database at dbURL in
// the given role: the serve command's defaults, built by the same package, with what the benchmark sets
// deliberately: its database, its worker count, a logger that formats the lines and drops them, the binary's
// own watchdog and the audit retention (as serve sets them), and workers that wait for StartWorkers. Catch-up,
// tracing and the changed-file look for runs of mappings without paths are off, as in a Config that does not turn
// them on: there is no Hub to ask.
func (e *env) serviceConfig(dbURL string, role service.Role) service.Config {
	return service.Config{
		Addr:           "127.0.0.1:0",
		DatabaseURL:    dbURL,
		WebhookSecret:  webhookSecret,
		MaxWorkers:     e.workers,
		Role:           role,
		Watchdog:       []string{e.binary, jobs.WatchdogCommand},
		AuditRetention: orchestrator.AuditRetentionDefault,
		Logger:         e.logger,
		DeferWorkers:   true,
	}
}

// createDatabase creates the database name in the cluster and returns its URL.
func (e *env) createDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, e.cluster.AdminURL())
	if err != nil {
		return "", fmt.Errorf("connect to create database %s: %w", name, err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return databaseURL(e.cluster.URL(), name)
}

// startStack starts the orchestrator in this process through the package the serve command runs it with, in
// the serve command's default role (all: webhooks, pages and workers), so that the figures are those of the
// production wiring: pool, schema, store, sweeper, reaper, River client and workers, River's UI, metrics and the
// HTTP server with its timeouts. Besides serviceConfig's settings, a tracer on the orchestrator's pool counts
// round trips. The mappings are registered through the service's store; the benchmark's own pool, for setup and
// figures, is opened beside it.
func (e *env) startStack(ctx context.Context) error {
	cfg := e.serviceConfig(e.cluster.URL(), service.RoleAll)
	cfg.PoolTracer = e.trips
	svc, err := service.New(cfg)
	if err != nil {
		return fmt.Errorf("configure the orchestrator: %w", err)
	}
	e.svc = svc
	if err := svc.Run(ctx); err != nil {
		return fmt.Errorf("start the orchestrator: %w", err)
	}
	e.store = svc.Store()
	e.baseURL = "http://" + svc.Addr()
	if e.observer, err = pgxpool.New(ctx, e.cluster.URL()); err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	if e.view, err = queueView(e.observer); err != nil {
		return err
	}
	if _, err := e.store.MappingSync(ctx, e.benchMappings()); err != nil {
		return fmt.Errorf("register mappings: %w", err)
	}
	list, err := e.store.MappingList(ctx)
	if err != nil {
		return fmt.Errorf("list mappings: %w", err)
	}
	e.mappings = map[string]int64{}
	for _, m := range list {
		e.mappings[m.Name] = m.ID
	}
	return nil
}

// startWorkers starts the orchestrator's workers: from then on queued runs execute.
func (e *env) startWorkers(ctx context.Context) error { return e.svc.StartWorkers(ctx) }

// stopStack stops the orchestrator, in the serve command's order, and closes the benchmark's pool.
func (e *env) stopStack(ctx context.Context) error {
	var errs []error
	if e.svc != nil {
		if err := e.svc.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop the orchestrator: %w", err))
		}
		e.svc = nil
	}
	if e.observer != nil {
		e.observer.Close()
		e.observer = nil
	}
	return errors.Join(errs...)
}

// close stops everything and removes the temporary directory.
func (e *env) close(ctx context.Context) error {
	errs := []error{e.stopStack(ctx)}
	if e.cluster != nil {
		if err := e.cluster.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop PostgreSQL: %w", err))
		}
	}
	if e.dir != "" {
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove temporary directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// cpu reads the CPU time used so far by this process, its commands and PostgreSQL.
func (e *env) cpu() cpuUse { return cpuNow(filepath.Join(e.dir, "postgres", "data")) }

// exec runs one statement on the benchmark's pool.
func (e *env) exec(ctx context.Context, sql string, args ...any) error {
	if _, err := e.observer.Exec(ctx, sql, args...); err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(sql), "\n")
		return fmt.Errorf("%s: %w", first, err)
	}
	return nil
}

// runStatuses counts the runs selected by where (a condition on runs, with args) by whether their status is
// final, as the orchestrator defines it.
func (e *env) runStatuses(ctx context.Context, where string, args ...any) (finished, open int, err error) {
	rows, err := e.observer.Query(ctx, `SELECT status, count(*) FROM runs WHERE `+where+` GROUP BY status`, args...)
	if err != nil {
		return 0, 0, fmt.Errorf("count runs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var status string
		var n int
		if err := rows.Scan(&status, &n); err != nil {
			return 0, 0, fmt.Errorf("count runs: %w", err)
		}
		if orchestrator.RunStatus(status).Finished() {
			finished += n
		} else {
			open += n
		}
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("count runs: %w", err)
	}
	return finished, open, nil
}

// waitRunsFinished polls until every run in ids is finished, or timeout passes.
func (e *env) waitRunsFinished(ctx context.Context, ids []int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, open, err := e.runStatuses(ctx, `id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d runs still unfinished after %s", open, len(ids), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
