package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"go.opentelemetry.io/otel/trace"
	"riverqueue.com/riverui"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
	"github.com/retrainhq/orchestrator/orchestrator/pgcluster"
	"github.com/retrainhq/orchestrator/orchestrator/tracing"
	"github.com/retrainhq/orchestrator/web"
)

// Timeouts of the HTTP server: a slow client cannot hold a connection forever.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 60 * time.Second
	IdleTimeout       = 120 * time.Second
)

// Service is the whole orchestrator in one process. New checks its Config; Run starts it, Migrate only brings
// the database up to date; Close stops what either started.
type Service struct {
	config Config

	cluster  *pgcluster.Cluster
	pool     *pgxpool.Pool
	store    *orchestrator.Store
	files    *orchestrator.FileFinder
	river    *river.Client[pgx.Tx]
	server   *http.Server
	listener net.Listener
	served   chan error

	stopRiverUI  context.CancelFunc
	stopSweeper  context.CancelFunc
	stopTracing  func(context.Context) error
	riverStarted bool
}

// New returns a Service for cfg, with the zero fields of cfg set to their defaults (see Config.WithDefaults).
// It starts nothing: an error means cfg is not valid.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{config: cfg}, nil
}

// Config returns the configuration the service runs with, its defaults filled in.
func (s *Service) Config() Config { return s.config }

// Run starts everything and returns once the server accepts connections. When it fails, Close releases what it
// had started. The steps, in order: tracing; the database and its schema; the mappings of the config file; the
// background loops (sweeper, reaper, catch-up); the River client and, unless deferred, its workers; the HTTP
// server.
func (s *Service) Run(ctx context.Context) error {
	if s.config.WebhookSecret == "" {
		return errors.New("no webhook secret configured")
	}
	s.config.warnWeakSecrets()
	tracerProvider, err := s.startTracing(ctx)
	if err != nil {
		return err
	}
	if err := s.openDatabase(ctx); err != nil {
		return err
	}
	s.store = orchestrator.NewStore(s.pool)
	if err := s.syncMappings(ctx); err != nil {
		return err
	}
	// The Hub checks revisions for mappings with verify_revision, and, unless the interval is 0, catches up
	// with the commits no webhook brought. One registry for the whole process: /metrics shows the webhook's,
	// the workers' and catch-up's metrics together.
	hubClient := hub.New(s.config.HFEndpoint, s.config.HFToken)
	s.files = orchestrator.NewFileFinder(s.store, hubClient, 0)
	registry := prometheus.NewRegistry()
	workerMetrics := jobs.NewMetrics(registry)
	procs, reconciler, err := s.startMaintenance(ctx, hubClient, workerMetrics)
	if err != nil {
		return err
	}
	if err := s.startQueue(ctx, procs, hubClient, workerMetrics, reconciler, tracerProvider); err != nil {
		return err
	}
	return s.startHTTP(ctx, registry, tracerProvider)
}

// startTracing returns the tracer provider spans go to: Config.TracerProvider when set, else the exporter
// Config.Tracing starts (nil with tracing off).
func (s *Service) startTracing(ctx context.Context) (trace.TracerProvider, error) {
	if s.config.TracerProvider != nil {
		return s.config.TracerProvider, nil
	}
	tracerProvider, stop, err := tracing.Setup(ctx, s.config.Tracing)
	if err != nil {
		return nil, err
	}
	s.stopTracing = stop
	if tracerProvider != nil {
		s.config.Logger.Info("tracing is on: spans of each delivery, its jobs and commands go out with OTLP over " +
			"HTTP; commands get TRACEPARENT")
	}
	return tracerProvider, nil
}

// syncMappings registers the mappings of Config.ConfigPath, when set, and disables the file's mappings it no
// longer lists.
func (s *Service) syncMappings(ctx context.Context) error {
	cfg, logger := &s.config, s.config.Logger
	if cfg.ConfigPath == "" {
		return nil
	}
	mappings, err := orchestrator.LoadConfig(cfg.ConfigPath)
	if err != nil {
		return err
	}
	if cfg.runsCommands() {
		if err := cfg.checkHFJobs(mappings); err != nil {
			return err
		}
	}
	res, err := s.store.MappingSync(ctx, mappings)
	if err != nil {
		return fmt.Errorf("sync mappings: %w", err)
	}
	logger.Info("mappings loaded", "config", cfg.ConfigPath, "mappings", res.Upserted, "disabled", res.Disabled)
	if cfg.runsCommands() {
		for _, warning := range orchestrator.MissingNotifySecrets(mappings, cfg.Getenv) {
			logger.Warn(warning)
		}
	}
	return nil
}

// checkHFJobs refuses to start a process that runs commands when an hf-jobs mapping of the config file lacks
// what its Jobs need: the variables it sends as secrets, which a Job gets from this process's environment, and
// HF_TOKEN, which creates the Jobs. Without them its runs could only fail.
func (c *Config) checkHFJobs(mappings []orchestrator.Mapping) error {
	lookup := func(k string) (string, bool) { v := c.Getenv(k); return v, v != "" }
	for _, m := range mappings {
		if missing := m.MissingSecrets(lookup); len(missing) > 0 {
			return fmt.Errorf("%s: mapping %q: hf_jobs.secrets %s not set in the environment",
				c.ConfigPath, m.Name, strings.Join(missing, ", "))
		}
		if m.Executor == orchestrator.ExecutorHFJobs && m.Enabled && c.HFToken == "" {
			return fmt.Errorf("%s: mapping %q runs on Hugging Face Jobs, but HF_TOKEN is not set", c.ConfigPath, m.Name)
		}
	}
	return nil
}

// startMaintenance starts the background loops: the sweeper of leftover processes (in a process that runs
// commands), the reaper of orphaned runs and, when Config.ReconcileInterval is set, the catch-up reconciler
// the reaper and the River client share. Close stops them.
func (s *Service) startMaintenance(ctx context.Context, hubClient *hub.Client, metrics *jobs.Metrics) (*jobs.Processes, *jobs.Reconciler, error) {
	cfg, logger := &s.config, s.config.Logger
	// Leftover processes of a crashed predecessor on this machine die before any run can be handed out again.
	instance, err := s.store.InstanceID(ctx)
	if err != nil {
		return nil, nil, err
	}
	procs := jobs.NewProcesses(instance)
	maintCtx, stopMaint := context.WithCancel(context.WithoutCancel(ctx))
	s.stopSweeper = stopMaint
	if cfg.runsCommands() {
		sweeper := &jobs.Sweeper{Store: s.store, Processes: procs, Silence: cfg.OrphanAfter / 2, Logger: logger}
		if _, err := sweeper.SweepOnce(ctx); err != nil {
			return nil, nil, fmt.Errorf("sweep leftover processes: %w", err)
		}
		go sweeper.Run(maintCtx, cfg.HeartbeatInterval)
	}
	var reconciler *jobs.Reconciler
	if cfg.ReconcileInterval > 0 {
		reconciler = &jobs.Reconciler{Store: s.store, Hub: hubClient, Interval: cfg.ReconcileInterval,
			Metrics: metrics, Logger: logger}
		logger.Info("catch-up with the Hub is on", "hub", hubClient, "interval", cfg.ReconcileInterval)
	} else {
		logger.Info("catch-up with the Hub is off (ORCHESTRATOR_RECONCILE_INTERVAL=0): runs start from webhooks alone")
	}
	reaper := &jobs.Reaper{Store: s.store, OrphanAfter: cfg.OrphanAfter, Reconciler: reconciler, Logger: logger}
	go reaper.Run(maintCtx, cfg.OrphanAfter/4)
	if cfg.AuditRetention > 0 {
		go pruneAudit(maintCtx, s.store, cfg.AuditRetention, AuditPruneInterval, logger)
	}
	return procs, reconciler, nil
}

// AuditPruneInterval is how often the audit entries older than Config.AuditRetention are deleted.
const AuditPruneInterval = time.Hour

// pruneAudit deletes the audit entries older than retention at once and then every interval, until ctx ends.
func pruneAudit(ctx context.Context, store *orchestrator.Store, retention, interval time.Duration, logger *slog.Logger) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		n, err := store.AuditPrune(ctx, retention)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Error("prune audit entries", "error", err)
		case n > 0:
			logger.Info("audit entries pruned", "deleted", n, "retention", retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// startQueue creates the River client, gives the store its queue and, unless Config.DeferWorkers is set,
// starts the workers.
func (s *Service) startQueue(ctx context.Context, procs *jobs.Processes, hubClient *hub.Client, metrics *jobs.Metrics,
	reconciler *jobs.Reconciler, tracerProvider trace.TracerProvider) error {
	cfg, logger := &s.config, s.config.Logger
	var err error
	s.river, err = jobs.NewClient(s.pool, s.store, jobs.ClientConfig{
		MaxWorkers: cfg.MaxWorkers,
		Queues:     cfg.Queues,
		Worker: jobs.WorkerConfig{KillGrace: cfg.KillGrace, HeartbeatInterval: cfg.HeartbeatInterval,
			OrphanAfter: cfg.OrphanAfter, FenceMargin: cfg.FenceMargin, Watchdog: cfg.Watchdog,
			Processes: procs, Revisions: hubClient, Heads: hubClient, Metrics: metrics, Logger: logger,
			Files: s.files, FilesForEveryRun: cfg.ChangedFiles == ChangedFilesAll, FilesTimeout: cfg.FilesTimeout,
			HFJobs: s.jobsClient(hubClient), HFJobsPoll: cfg.HFJobsPoll, Getenv: cfg.Getenv},
		Notify:         jobs.NotifyConfig{PublicURL: cfg.PublicURL, Getenv: cfg.Getenv, Metrics: metrics, Logger: logger},
		Reconciler:     reconciler,
		TracerProvider: tracerProvider,
		Logger:         logger,
	})
	if err != nil {
		return err
	}
	s.store.SetQueue(jobs.NewQueue(s.pool, s.river))
	if cfg.DeferWorkers {
		return nil
	}
	return s.StartWorkers(ctx)
}

// jobsClient returns the Hub client that runs the attempts of hf-jobs mappings as Hugging Face Jobs: nil
// without HF_TOKEN, and then such attempts fail saying so.
func (s *Service) jobsClient(hubClient *hub.Client) *hub.Client {
	if s.config.HFToken == "" {
		return nil
	}
	return hubClient
}

// startHTTP starts River's UI and the HTTP server: the whole web interface, or only the health endpoints in a
// RoleWorker process.
func (s *Service) startHTTP(ctx context.Context, registry *prometheus.Registry, tracerProvider trace.TracerProvider) error {
	cfg, logger := &s.config, s.config.Logger
	riverUI, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(s.river, nil),
		Logger:    logger,
		Prefix:    "/riverui",
	})
	if err != nil {
		return fmt.Errorf("river UI: %w", err)
	}
	uiCtx, uiCancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopRiverUI = uiCancel
	if err := riverUI.Start(uiCtx); err != nil {
		return fmt.Errorf("start river UI: %w", err)
	}
	if cfg.AdminTokenPrevious != "" {
		logger.Info("a previous admin token (ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS) is accepted beside ORCHESTRATOR_ADMIN_TOKEN, " +
			"and so are its sessions: remove it once every client uses the new token")
	}
	srv, err := web.New(web.Config{
		Store:                 s.store,
		WebhookSecret:         cfg.WebhookSecret,
		WebhookSecretPrevious: cfg.WebhookSecretPrevious,
		MaxBodyBytes:          cfg.MaxBodyBytes,
		AdminToken:            cfg.AdminToken,
		AdminTokenPrevious:    cfg.AdminTokenPrevious,
		ProtectReads:          cfg.ProtectReads,
		ReconcileInterval:     cfg.ReconcileInterval,
		Files:                 s.files,
		FilesTimeout:          cfg.FilesTimeout,
		RiverUI:               riverUI,
		Registry:              registry,
		TracerProvider:        tracerProvider,
		Ready:                 s.ready,
		TrustedProxies:        cfg.TrustedProxies,
		PublicURL:             cfg.PublicURL,
		Logger:                logger,
	})
	if err != nil {
		return err
	}
	s.listener, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	handler := srv.Handler()
	if cfg.Role == RoleWorker {
		handler = srv.HealthHandler()
	}
	s.server = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	s.served = make(chan error, 1)
	go func() { s.served <- s.server.Serve(s.listener) }()
	return nil
}

// StartWorkers starts the River client, whose workers run the queued jobs from then on. Run calls it unless
// Config.DeferWorkers is set; a RoleWeb process only inserts and cancels jobs and never starts its client, and
// a second call does nothing.
func (s *Service) StartWorkers(ctx context.Context) error {
	if s.river == nil {
		return errors.New("start workers: the service is not running")
	}
	if !s.config.runsCommands() || s.riverStarted {
		return nil
	}
	// The client gets its own context: shutdown is ordered by Close, not by the caller's context.
	if err := s.river.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("start workers: %w", err)
	}
	s.riverStarted = true
	return nil
}

// Addr returns the address the server listens on, e.g. "127.0.0.1:43123" when started on ":0".
func (s *Service) Addr() string {
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// Store returns the store the service runs on, nil before Run: for callers that read or write beside the HTTP
// API (the benchmark loads rows through it).
func (s *Service) Store() *orchestrator.Store { return s.store }

// Pool returns the service's database pool, nil before Run or Migrate: tests read what the service wrote
// through it.
func (s *Service) Pool() *pgxpool.Pool { return s.pool }

// Close shuts down in order: stop taking requests and let in-flight deliveries commit; stop the background
// loops and River's UI; stop the workers, whose running commands get SIGTERM and the kill grace (their runs go
// back to the queue); flush the spans; close the pool; stop the embedded database.
func (s *Service) Close(ctx context.Context) error {
	var errs []error
	if s.server != nil {
		if err := s.server.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("http server: %w", err))
		}
		s.server = nil
	}
	if s.stopSweeper != nil {
		s.stopSweeper()
		s.stopSweeper = nil
	}
	if s.stopRiverUI != nil {
		s.stopRiverUI()
		s.stopRiverUI = nil
	}
	if s.river != nil {
		if s.riverStarted {
			if err := s.river.StopAndCancel(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop workers: %w", err))
			}
			s.riverStarted = false
		}
		s.river = nil
	}
	// The commands' and jobs' spans have ended: what is still buffered goes out.
	if s.stopTracing != nil {
		if err := s.stopTracing(ctx); err != nil {
			errs = append(errs, err)
		}
		s.stopTracing = nil
	}
	if s.pool != nil {
		s.pool.Close()
		s.pool = nil
	}
	if s.cluster != nil {
		if err := s.cluster.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop embedded PostgreSQL: %w", err))
		}
		s.cluster = nil
	}
	return errors.Join(errs...)
}
