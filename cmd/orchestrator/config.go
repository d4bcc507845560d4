package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator/tracing"
	"github.com/retrainhq/orchestrator/web"
)

// errUsage is returned when the flags were wrong; the flag package has already said why.
var errUsage = errors.New("usage")

// Defaults of the command line.
const (
	AddrDefault    = ":8080"
	DataDirDefault = "./.orchestrator"
)

// Config is everything serve and migrate are configured with, from flags and environment variables.
type Config struct {
	Addr          string // --addr, ORCHESTRATOR_ADDR
	ConfigPath    string // --config, ORCHESTRATOR_CONFIG
	DataDir       string // --data-dir, ORCHESTRATOR_DATA_DIR
	DatabaseURL   string // DATABASE_URL; empty starts the embedded PostgreSQL
	WebhookSecret string // HUGGINGFACE_WEBHOOK_SECRET
	// WebhookSecretPrevious (HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS) is accepted too while the secret is rotated.
	WebhookSecretPrevious string
	AdminToken            string        // ORCHESTRATOR_ADMIN_TOKEN: guards retry, cancel, mapping writes and River's UI
	ProtectReads          bool          // ORCHESTRATOR_PROTECT_READS: put pages and the read API behind the token too
	MaxBodyBytes          int64         // --max-body-bytes, ORCHESTRATOR_MAX_BODY_BYTES
	MaxWorkers            int           // --max-workers, ORCHESTRATOR_MAX_WORKERS
	KillGrace             time.Duration // --kill-grace, ORCHESTRATOR_KILL_GRACE
	LogFormat             string        // --log-format, ORCHESTRATOR_LOG_FORMAT: text or json
	// HeartbeatInterval (ORCHESTRATOR_HEARTBEAT_INTERVAL) is how often a running attempt records that its
	// process is alive; OrphanAfter (ORCHESTRATOR_ORPHAN_AFTER) is how long without one before the run is
	// handed to another worker.
	HeartbeatInterval time.Duration
	OrphanAfter       time.Duration
	// FenceMargin (ORCHESTRATOR_FENCE_MARGIN) is how long before ORCHESTRATOR_ORPHAN_AFTER runs out, from its last
	// heartbeat that reached the database, a worker that cannot reach it stops its command, so that the command is
	// dead before the run may be handed to another worker. It must exceed KillGrace by jobs.FenceAllowance;
	// zero takes jobs.FenceMarginFor(OrphanAfter, KillGrace).
	FenceMargin time.Duration
	// Watchdog is the program and arguments that watch a command on behalf of its worker (the binary's hidden
	// watchdog subcommand, see jobs.RunWatchdog); serve sets it, and without it the worker alone fences its
	// commands.
	Watchdog []string
	// ReconcileInterval (ORCHESTRATOR_RECONCILE_INTERVAL) is how often catch-up asks the Hub for the refs of
	// every dataset a mapping names and runs the commits no webhook brought; 0 turns catch-up off. parseConfig
	// defaults it to jobs.ReconcileIntervalDefault; a Config built in code has it off unless it sets it.
	ReconcileInterval time.Duration
	// HFEndpoint (HF_ENDPOINT) is the Hub's address, https://huggingface.co when empty; HFToken (HF_TOKEN), when
	// set, is sent to it for private datasets. Both follow the huggingface_hub conventions.
	HFEndpoint string
	HFToken    string
	// Role (--role, ORCHESTRATOR_ROLE) is all (default), web (webhooks, pages and API; runs no command) or
	// worker (runs commands; serves only health checks and metrics).
	Role string
	// Queues (--queues, ORCHESTRATOR_QUEUES) are the worker pools this process serves, comma-separated.
	Queues []string
	// PublicURL (--public-url, ORCHESTRATOR_PUBLIC_URL) is the address the console is reached at; run
	// notifications link to run pages under it.
	PublicURL string
	// Tracing (ORCHESTRATOR_TRACING) is otlp or off: whether deliveries are traced with OpenTelemetry, their
	// spans sent with OTLP over HTTP where the standard OTEL_EXPORTER_OTLP_* variables say. parseConfig turns it
	// on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; empty is off.
	Tracing string
}

// Roles of a process.
const (
	RoleAll    = "all"
	RoleWeb    = "web"
	RoleWorker = "worker"
)

// parseConfig reads flags, with environment variables as their defaults.
func parseConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	c := &Config{DatabaseURL: getenv("DATABASE_URL"), WebhookSecret: getenv("HUGGINGFACE_WEBHOOK_SECRET"),
		AdminToken: getenv("ORCHESTRATOR_ADMIN_TOKEN"), WebhookSecretPrevious: getenv("HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS"),
		HFEndpoint: getenv("HF_ENDPOINT"), HFToken: getenv("HF_TOKEN")}
	if v := getenv("ORCHESTRATOR_PROTECT_READS"); v != "" {
		protect, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("ORCHESTRATOR_PROTECT_READS must be true or false, not %q", v)
		}
		c.ProtectReads = protect
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Addr, "addr", env("ORCHESTRATOR_ADDR", AddrDefault), "address to listen on (ORCHESTRATOR_ADDR)")
	fs.StringVar(&c.ConfigPath, "config", env("ORCHESTRATOR_CONFIG", ""), "YAML file of mappings (ORCHESTRATOR_CONFIG)")
	fs.StringVar(&c.DataDir, "data-dir", env("ORCHESTRATOR_DATA_DIR", DataDirDefault),
		"directory for the embedded PostgreSQL when DATABASE_URL is unset (ORCHESTRATOR_DATA_DIR)")
	fs.StringVar(&c.Role, "role", env("ORCHESTRATOR_ROLE", RoleAll), "all, web (no commands) or worker (only commands) (ORCHESTRATOR_ROLE)")
	queues := fs.String("queues", env("ORCHESTRATOR_QUEUES", jobs.QueueRuns), "worker pools this process serves, comma-separated (ORCHESTRATOR_QUEUES)")
	fs.StringVar(&c.PublicURL, "public-url", env("ORCHESTRATOR_PUBLIC_URL", ""),
		"address the console is reached at, for links in run notifications (ORCHESTRATOR_PUBLIC_URL)")
	fs.StringVar(&c.LogFormat, "log-format", env("ORCHESTRATOR_LOG_FORMAT", "text"), "log format: text or json (ORCHESTRATOR_LOG_FORMAT)")

	var maxBody, maxWorkers int64
	var killGrace time.Duration
	var err error
	if maxBody, err = strconv.ParseInt(env("ORCHESTRATOR_MAX_BODY_BYTES", strconv.Itoa(web.MaxBodyBytesDefault)), 10, 64); err != nil {
		return nil, fmt.Errorf("ORCHESTRATOR_MAX_BODY_BYTES: %w", err)
	}
	if maxWorkers, err = strconv.ParseInt(env("ORCHESTRATOR_MAX_WORKERS", strconv.Itoa(jobs.MaxWorkersDefault)), 10, 32); err != nil {
		return nil, fmt.Errorf("ORCHESTRATOR_MAX_WORKERS: %w", err)
	}
	if killGrace, err = time.ParseDuration(env("ORCHESTRATOR_KILL_GRACE", jobs.KillGraceDefault.String())); err != nil {
		return nil, fmt.Errorf("ORCHESTRATOR_KILL_GRACE: %w", err)
	}
	if c.HeartbeatInterval, err = time.ParseDuration(env("ORCHESTRATOR_HEARTBEAT_INTERVAL", jobs.HeartbeatIntervalDefault.String())); err != nil {
		return nil, fmt.Errorf("ORCHESTRATOR_HEARTBEAT_INTERVAL: %w", err)
	}
	if c.OrphanAfter, err = time.ParseDuration(env("ORCHESTRATOR_ORPHAN_AFTER", jobs.OrphanAfterDefault.String())); err != nil {
		return nil, fmt.Errorf("ORCHESTRATOR_ORPHAN_AFTER: %w", err)
	}
	if v := getenv("ORCHESTRATOR_FENCE_MARGIN"); v != "" {
		if c.FenceMargin, err = time.ParseDuration(v); err != nil {
			return nil, fmt.Errorf("ORCHESTRATOR_FENCE_MARGIN: %w", err)
		}
	}
	if c.ReconcileInterval, err = time.ParseDuration(env("ORCHESTRATOR_RECONCILE_INTERVAL", jobs.ReconcileIntervalDefault.String())); err != nil {
		return nil, fmt.Errorf("ORCHESTRATOR_RECONCILE_INTERVAL: %w", err)
	}
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", maxBody, "largest webhook body accepted (ORCHESTRATOR_MAX_BODY_BYTES)")
	workers := fs.Int("max-workers", int(maxWorkers), "commands run at once by this process (ORCHESTRATOR_MAX_WORKERS)")
	fs.DurationVar(&c.KillGrace, "kill-grace", killGrace, "time between SIGTERM and SIGKILL when a command is stopped (ORCHESTRATOR_KILL_GRACE)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errUsage
		}
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	c.MaxWorkers = *workers
	if c.FenceMargin == 0 {
		c.FenceMargin = jobs.FenceMarginFor(c.OrphanAfter, c.KillGrace)
	}
	if c.Tracing, err = tracing.ModeFromEnv(getenv); err != nil {
		return nil, err
	}
	for _, q := range strings.Split(*queues, ",") {
		if q = strings.TrimSpace(q); q != "" {
			c.Queues = append(c.Queues, q)
		}
	}
	return c, c.validate()
}

// applyDefaults fills the zero fields of a Config built in code rather than by parseConfig.
func (c *Config) applyDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = web.MaxBodyBytesDefault
	}
	if c.MaxWorkers == 0 {
		c.MaxWorkers = jobs.MaxWorkersDefault
	}
	if c.KillGrace == 0 {
		c.KillGrace = jobs.KillGraceDefault
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = jobs.HeartbeatIntervalDefault
	}
	if c.OrphanAfter == 0 {
		c.OrphanAfter = jobs.OrphanAfterDefault
	}
	if c.FenceMargin == 0 {
		c.FenceMargin = jobs.FenceMarginFor(c.OrphanAfter, c.KillGrace)
	}
	if c.Role == "" {
		c.Role = RoleAll
	}
}

func (c *Config) validate() error {
	switch {
	case c.MaxBodyBytes <= 0:
		return errors.New("--max-body-bytes must be positive")
	case c.MaxWorkers <= 0:
		return errors.New("--max-workers must be positive")
	case c.KillGrace <= 0:
		return errors.New("--kill-grace must be positive")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	case c.HeartbeatInterval <= 0 || c.OrphanAfter < 3*c.HeartbeatInterval:
		return fmt.Errorf("ORCHESTRATOR_ORPHAN_AFTER (%s) must be at least three ORCHESTRATOR_HEARTBEAT_INTERVALs (%s)", c.OrphanAfter, c.HeartbeatInterval)
	// A worker cut off from the database stops its command at ORPHAN_AFTER - FENCE_MARGIN after its last
	// heartbeat; the command must be dead, after its kill grace, before the lease expires at the database.
	case c.Role != RoleWeb && c.FenceMargin < c.KillGrace+jobs.FenceAllowance:
		return fmt.Errorf("ORCHESTRATOR_FENCE_MARGIN (%s) must be at least --kill-grace (%s) plus %s: a worker that cannot reach "+
			"the database stops its command that long before another worker may start the run, and the command must be dead by then",
			c.FenceMargin, c.KillGrace, jobs.FenceAllowance)
	case c.Role != RoleWeb && c.OrphanAfter-c.FenceMargin < 2*c.HeartbeatInterval:
		return fmt.Errorf("ORCHESTRATOR_ORPHAN_AFTER (%s) minus ORCHESTRATOR_FENCE_MARGIN (%s) must be at least two "+
			"ORCHESTRATOR_HEARTBEAT_INTERVALs (%s), or a single late heartbeat would stop a healthy command",
			c.OrphanAfter, c.FenceMargin, c.HeartbeatInterval)
	case c.Role != RoleAll && c.Role != RoleWeb && c.Role != RoleWorker:
		return fmt.Errorf("--role must be all, web or worker, not %q", c.Role)
	case c.Role != RoleWeb && len(c.Queues) == 0:
		return errors.New("--queues must name at least one queue")
	case c.ProtectReads && c.AdminToken == "":
		return errors.New("ORCHESTRATOR_PROTECT_READS needs ORCHESTRATOR_ADMIN_TOKEN: set a token, or nobody could read the pages")
	case c.DatabaseURL == "" && c.DataDir == "":
		return errors.New("--data-dir must not be empty when DATABASE_URL is unset")
	case c.ReconcileInterval < 0 || (c.ReconcileInterval > 0 && c.ReconcileInterval < time.Second):
		return fmt.Errorf("ORCHESTRATOR_RECONCILE_INTERVAL (%s) must be 0 (catch-up off) or at least 1s", c.ReconcileInterval)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("ORCHESTRATOR_PUBLIC_URL %q must be an http or https URL without query, such as https://orchestrator.example.com", c.PublicURL)
		}
	}
	if c.HFEndpoint != "" {
		u, err := url.Parse(c.HFEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("HF_ENDPOINT %q must be an http or https URL, such as https://huggingface.co", c.HFEndpoint)
		}
	}
	return nil
}

// newLogger returns the process logger in the configured format.
func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
