package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"go.opentelemetry.io/otel/trace"
	"riverqueue.com/riverui"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/migrations"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
	"github.com/retrainhq/orchestrator/orchestrator/pgcluster"
	"github.com/retrainhq/orchestrator/orchestrator/tracing"
	"github.com/retrainhq/orchestrator/web"
)

// Timeouts of the HTTP server: a slow client cannot hold a connection forever.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	shutdownTimeout   = 30 * time.Second
)

// runServe runs the server until ctx is done, then shuts down gracefully.
func runServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig("serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.WebhookSecret == "" {
		return errors.New("HUGGINGFACE_WEBHOOK_SECRET is not set: set it to the secret you entered in the " +
			"webhook's settings on Hugging Face, for example: export HUGGINGFACE_WEBHOOK_SECRET=$(openssl rand -hex 32)")
	}
	if exe, err := os.Executable(); err == nil {
		cfg.Watchdog = []string{exe, jobs.WatchdogCommand}
	}
	m := &Main{Config: *cfg, Logger: newLogger(cfg.LogFormat, stderr), Getenv: getenv}
	if err := m.Run(ctx); err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = m.Close(closeCtx)
		return err
	}
	m.Logger.Info("orchestrator ready", "addr", m.Addr(), "role", m.Config.Role, "queues", m.Config.Queues)
	<-ctx.Done()
	m.Logger.Info("shutting down")
	closeCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout+cfg.KillGrace)
	defer cancel()
	return m.Close(closeCtx)
}

// runMigrate applies the schema and exits.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig("migrate", args, getenv, stderr)
	if err != nil {
		return err
	}
	m := &Main{Config: *cfg, Logger: newLogger(cfg.LogFormat, stderr)}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = m.Close(closeCtx)
	}()
	if err := m.openDatabase(ctx); err != nil {
		return err
	}
	m.Logger.Info("schema is up to date")
	return nil
}

// Main is the whole orchestrator in one process: the database (embedded or not), the store, the River client
// and its workers, and the HTTP server. Tests start it in-process with Run and stop it with Close.
type Main struct {
	Config Config
	Logger *slog.Logger
	// Getenv reads the secrets of notify targets; os.Getenv when nil.
	Getenv func(string) string
	// TracerProvider, when set, receives the spans instead of the exporter Config.Tracing would start (tests
	// record them in memory); nil with tracing off traces nothing.
	TracerProvider trace.TracerProvider

	cluster  *pgcluster.Cluster
	pool     *pgxpool.Pool
	store    *orchestrator.Store
	river    *river.Client[pgx.Tx]
	server   *http.Server
	listener net.Listener
	served   chan error

	stopRiverUI  context.CancelFunc
	stopSweeper  context.CancelFunc
	stopTracing  func(context.Context) error
	riverStarted bool
}

// Run starts everything and returns once the server accepts connections.
func (m *Main) Run(ctx context.Context) error {
	if m.Logger == nil {
		m.Logger = slog.Default()
	}
	if m.Config.WebhookSecret == "" {
		return errors.New("no webhook secret configured")
	}
	m.Config.applyDefaults()
	tracerProvider := m.TracerProvider
	if tracerProvider == nil {
		var err error
		if tracerProvider, m.stopTracing, err = tracing.Setup(ctx, m.Config.Tracing); err != nil {
			return err
		}
		if tracerProvider != nil {
			m.Logger.Info("tracing is on: spans of each delivery, its jobs and commands go out with OTLP over HTTP; " +
				"commands get TRACEPARENT")
		}
	}
	if err := m.openDatabase(ctx); err != nil {
		return err
	}
	m.store = orchestrator.NewStore(m.pool)

	if m.Config.ConfigPath != "" {
		mappings, err := orchestrator.LoadConfig(m.Config.ConfigPath)
		if err != nil {
			return err
		}
		res, err := m.store.MappingSync(ctx, mappings)
		if err != nil {
			return fmt.Errorf("sync mappings: %w", err)
		}
		m.Logger.Info("mappings loaded", "config", m.Config.ConfigPath, "mappings", res.Upserted, "disabled", res.Disabled)
		if m.Config.Role != RoleWeb {
			for _, warning := range orchestrator.MissingNotifySecrets(mappings, m.getenv()) {
				m.Logger.Warn(warning)
			}
		}
	}
	// Leftover processes of a crashed predecessor on this machine die before any run can be handed out again.
	instance, err := m.store.InstanceID(ctx)
	if err != nil {
		return err
	}
	runsCommands := m.Config.Role != RoleWeb
	procs := jobs.NewProcesses(instance)
	maintCtx, stopMaint := context.WithCancel(context.WithoutCancel(ctx))
	m.stopSweeper = stopMaint
	if runsCommands {
		sweeper := &jobs.Sweeper{Store: m.store, Processes: procs, Silence: m.Config.OrphanAfter / 2, Logger: m.Logger}
		if _, err := sweeper.SweepOnce(ctx); err != nil {
			return fmt.Errorf("sweep leftover processes: %w", err)
		}
		go sweeper.Run(maintCtx, m.Config.HeartbeatInterval)
	}

	// The Hub checks revisions for mappings with verify_revision, and, unless the interval is 0, catches up
	// with the commits no webhook brought.
	hubClient := hub.New(m.Config.HFEndpoint, m.Config.HFToken)
	// One registry for the whole process: /metrics shows the webhook's, the workers' and catch-up's metrics
	// together.
	registry := prometheus.NewRegistry()
	workerMetrics := jobs.NewMetrics(registry)
	var reconciler *jobs.Reconciler
	if m.Config.ReconcileInterval > 0 {
		reconciler = &jobs.Reconciler{Store: m.store, Hub: hubClient, Interval: m.Config.ReconcileInterval,
			Metrics: workerMetrics, Logger: m.Logger}
		m.Logger.Info("catch-up with the Hub is on", "hub", hubClient, "interval", m.Config.ReconcileInterval)
	} else {
		m.Logger.Info("catch-up with the Hub is off (ORCHESTRATOR_RECONCILE_INTERVAL=0): runs start from webhooks alone")
	}
	reaper := &jobs.Reaper{Store: m.store, OrphanAfter: m.Config.OrphanAfter, Reconciler: reconciler, Logger: m.Logger}
	go reaper.Run(maintCtx, m.Config.OrphanAfter/4)
	m.river, err = jobs.NewClient(m.pool, m.store, jobs.ClientConfig{
		MaxWorkers: m.Config.MaxWorkers,
		Queues:     m.Config.Queues,
		Worker: jobs.WorkerConfig{KillGrace: m.Config.KillGrace, HeartbeatInterval: m.Config.HeartbeatInterval,
			OrphanAfter: m.Config.OrphanAfter, FenceMargin: m.Config.FenceMargin, Watchdog: m.Config.Watchdog,
			Processes: procs, Revisions: hubClient, Heads: hubClient, Metrics: workerMetrics, Logger: m.Logger},
		Notify:         jobs.NotifyConfig{PublicURL: m.Config.PublicURL, Getenv: m.getenv(), Metrics: workerMetrics, Logger: m.Logger},
		Reconciler:     reconciler,
		TracerProvider: tracerProvider,
		Logger:         m.Logger,
	})
	if err != nil {
		return err
	}
	m.store.SetQueue(jobs.NewQueue(m.pool, m.river))
	// A web process only inserts and cancels jobs; its client is never started. The client gets its own
	// context: shutdown is ordered by Close, not by the signal.
	if runsCommands {
		if err := m.river.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("start workers: %w", err)
		}
		m.riverStarted = true
	}

	riverUI, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(m.river, nil),
		Logger:    m.Logger,
		Prefix:    "/riverui",
	})
	if err != nil {
		return fmt.Errorf("river UI: %w", err)
	}
	uiCtx, uiCancel := context.WithCancel(context.WithoutCancel(ctx))
	m.stopRiverUI = uiCancel
	if err := riverUI.Start(uiCtx); err != nil {
		return fmt.Errorf("start river UI: %w", err)
	}
	srv, err := web.New(web.Config{
		Store:                 m.store,
		WebhookSecret:         m.Config.WebhookSecret,
		WebhookSecretPrevious: m.Config.WebhookSecretPrevious,
		MaxBodyBytes:          m.Config.MaxBodyBytes,
		AdminToken:            m.Config.AdminToken,
		ProtectReads:          m.Config.ProtectReads,
		ReconcileInterval:     m.Config.ReconcileInterval,
		RiverUI:               riverUI,
		Registry:              registry,
		TracerProvider:        tracerProvider,
		Ready:                 m.ready,
		Logger:                m.Logger,
	})
	if err != nil {
		return err
	}
	m.listener, err = net.Listen("tcp", m.Config.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", m.Config.Addr, err)
	}
	handler := srv.Handler()
	if m.Config.Role == RoleWorker {
		handler = srv.HealthHandler()
	}
	m.server = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	m.served = make(chan error, 1)
	go func() { m.served <- m.server.Serve(m.listener) }()
	return nil
}

// getenv returns the environment the secrets of notify targets are read from.
func (m *Main) getenv() func(string) string {
	if m.Getenv != nil {
		return m.Getenv
	}
	return os.Getenv
}

// openDatabase connects to DATABASE_URL, or starts the embedded PostgreSQL, and applies the schema.
func (m *Main) openDatabase(ctx context.Context) error {
	url := m.Config.DatabaseURL
	if url == "" {
		dir, err := filepath.Abs(filepath.Join(m.Config.DataDir, "postgres"))
		if err != nil {
			return fmt.Errorf("resolve data dir: %w", err)
		}
		// The data dir itself stays traversable, so that the server's own user (when we run as root) reaches
		// the cluster directory inside it; the cluster directory is private to that user.
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		m.Logger.Info("DATABASE_URL is unset: starting the embedded PostgreSQL", "dir", dir)
		m.cluster, err = pgcluster.Start(ctx, pgcluster.Config{Dir: dir, Logger: m.Logger})
		if err != nil {
			return fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		url = m.cluster.URL()
	}
	poolCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	// Enough connections for concurrent webhooks plus one per worker and River's own.
	poolCfg.MaxConns = int32(max(16, 2*m.Config.MaxWorkers+8))
	if poolCfg.ConnConfig.ConnectTimeout == 0 {
		poolCfg.ConnConfig.ConnectTimeout = 3 * time.Second
	}
	m.pool, err = pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	if err := migrations.Apply(ctx, m.pool, m.Logger); err != nil {
		return err
	}
	return nil
}

// ready reports whether the database answers and the schema is complete.
func (m *Main) ready(ctx context.Context) error {
	if err := m.pool.Ping(ctx); err != nil {
		return fmt.Errorf("database unreachable: %w", err)
	}
	return migrations.Check(ctx, m.pool)
}

// Addr returns the address the server listens on, e.g. "127.0.0.1:43123" when started on ":0".
func (m *Main) Addr() string {
	if m.listener == nil {
		return ""
	}
	return m.listener.Addr().String()
}

// Close shuts down in order: stop taking requests and let in-flight deliveries commit; stop the workers, whose
// running commands get SIGTERM and the kill grace (their runs go back to the queue); close the pool; stop the
// embedded database.
func (m *Main) Close(ctx context.Context) error {
	var errs []error
	if m.server != nil {
		if err := m.server.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		if err := <-m.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("http server: %w", err))
		}
		m.server = nil
	}
	if m.stopSweeper != nil {
		m.stopSweeper()
		m.stopSweeper = nil
	}
	if m.stopRiverUI != nil {
		m.stopRiverUI()
		m.stopRiverUI = nil
	}
	if m.river != nil && m.riverStarted {
		if err := m.river.StopAndCancel(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop workers: %w", err))
		}
		m.river = nil
	}
	// The commands' and jobs' spans have ended: what is still buffered goes out.
	if m.stopTracing != nil {
		if err := m.stopTracing(ctx); err != nil {
			errs = append(errs, err)
		}
		m.stopTracing = nil
	}
	if m.pool != nil {
		m.pool.Close()
		m.pool = nil
	}
	if m.cluster != nil {
		if err := m.cluster.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop embedded PostgreSQL: %w", err))
		}
		m.cluster = nil
	}
	return errors.Join(errs...)
}
