package service

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/tracing"
	"github.com/retrainhq/orchestrator/web"
)

// Role says what a process does.
type Role string

// Roles of a process.
const (
	// RoleAll takes webhooks, serves the pages and the API, and runs commands.
	RoleAll Role = "all"
	// RoleWeb takes webhooks and serves the pages and the API; it runs no command.
	RoleWeb Role = "web"
	// RoleWorker runs commands and serves only health checks and metrics.
	RoleWorker Role = "worker"
)

// Roles lists every role.
var Roles = []Role{RoleAll, RoleWeb, RoleWorker}

// ChangedFiles says which runs list the files their revision changed.
type ChangedFiles string

// Which runs list their changed files.
const (
	// ChangedFilesAll: every run, so that its page shows them and its command gets them.
	ChangedFilesAll ChangedFiles = "all"
	// ChangedFilesFiltered: only the runs of mappings with paths or ignore_paths, which need them to decide.
	ChangedFilesFiltered ChangedFiles = "filtered"
)

// ChangedFilesModes lists every choice of which runs list their changed files.
var ChangedFilesModes = []ChangedFiles{ChangedFilesAll, ChangedFilesFiltered}

// RoleDefault is the role of a Config that names none.
const RoleDefault = RoleAll

// Config is everything a Service is configured with. The serve command fills it from flags and environment
// variables, named beside each field; a Config built in code gets the defaults WithDefaults names for the fields
// it leaves zero.
type Config struct {
	// Addr (--addr, ORCHESTRATOR_ADDR) is the address the HTTP server listens on, such as ":8080" or
	// "127.0.0.1:0"; empty listens on every interface, on a port the system picks (Addr tells which).
	Addr string
	// ConfigPath (--config, ORCHESTRATOR_CONFIG), when set, is the YAML file of mappings synced at start.
	ConfigPath string
	// DataDir (--data-dir, ORCHESTRATOR_DATA_DIR) holds the embedded PostgreSQL when DatabaseURL is empty.
	DataDir string
	// DatabaseURL (DATABASE_URL) is the PostgreSQL to use; empty starts the embedded one under DataDir.
	DatabaseURL string
	// WebhookSecret (HUGGINGFACE_WEBHOOK_SECRET) is the secret Hugging Face sends with every delivery; Run
	// refuses to start without it.
	WebhookSecret string
	// WebhookSecretPrevious (HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS) is accepted too while the secret is rotated.
	WebhookSecretPrevious string
	// AdminToken (ORCHESTRATOR_ADMIN_TOKEN) guards retry, cancel, mapping writes and River's UI.
	AdminToken string
	// AdminTokenPrevious (ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS) is accepted too while the admin token is rotated;
	// sessions made with it end when it is removed.
	AdminTokenPrevious string
	// ProtectReads (ORCHESTRATOR_PROTECT_READS) puts the pages and the read API behind the token too.
	ProtectReads bool
	// MaxBodyBytes (--max-body-bytes, ORCHESTRATOR_MAX_BODY_BYTES) is the largest webhook body accepted.
	// Defaults to web.MaxBodyBytesDefault.
	MaxBodyBytes int64
	// MaxWorkers (--max-workers, ORCHESTRATOR_MAX_WORKERS) is how many commands this process runs at once; the
	// pool is sized from it. Defaults to jobs.MaxWorkersDefault.
	MaxWorkers int
	// KillGrace (--kill-grace, ORCHESTRATOR_KILL_GRACE) is the time between SIGTERM and SIGKILL when a command
	// is stopped. Defaults to jobs.KillGraceDefault.
	KillGrace time.Duration
	// HeartbeatInterval (ORCHESTRATOR_HEARTBEAT_INTERVAL) is how often a running attempt records that its
	// process is alive; OrphanAfter (ORCHESTRATOR_ORPHAN_AFTER) is how long without one before the run is
	// handed to another worker. They default to jobs.HeartbeatIntervalDefault and jobs.OrphanAfterDefault.
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
	// every dataset a mapping names and runs the commits no webhook brought; 0 turns catch-up off. The serve
	// command defaults it to jobs.ReconcileIntervalDefault; a Config built in code has it off unless it sets it.
	ReconcileInterval time.Duration
	// AuditRetention (ORCHESTRATOR_AUDIT_RETENTION) is how long audit entries are kept: older ones are deleted
	// every AuditPruneInterval; 0 keeps them forever. The serve command defaults it to
	// orchestrator.AuditRetentionDefault; a Config built in code keeps them forever unless it sets it.
	AuditRetention time.Duration
	// HFEndpoint (HF_ENDPOINT) is the Hub's address, https://huggingface.co when empty; HFToken (HF_TOKEN), when
	// set, is sent to it for private datasets, and runs the Hugging Face Jobs of hf-jobs mappings (without it,
	// their runs fail saying so). Both follow the huggingface_hub conventions.
	HFEndpoint string
	HFToken    string
	// HFJobsPoll is how often the stage of a followed Hugging Face Job is asked of the Hub. Defaults to
	// jobs.HFJobsPollDefault.
	HFJobsPoll time.Duration
	// ChangedFiles (ORCHESTRATOR_CHANGED_FILES) says which runs ask the Hub for the files their revision
	// changed. The serve command defaults it to ChangedFilesAll; a Config built in code lists them only for
	// the mappings that need them (ChangedFilesFiltered) unless it says otherwise.
	ChangedFiles ChangedFiles
	// FilesTimeout (ORCHESTRATOR_FILES_TIMEOUT) bounds a run's look at its changed files, retries of the Hub
	// included; past it the run goes ahead unchecked. Defaults to orchestrator.FilesTimeoutDefault.
	FilesTimeout time.Duration
	// Role (--role, ORCHESTRATOR_ROLE) is RoleAll, RoleWeb or RoleWorker. Defaults to RoleDefault.
	Role Role
	// Queues (--queues, ORCHESTRATOR_QUEUES) are the worker pools this process serves; orchestrator.QueueDefault when empty.
	Queues []string
	// PublicURL (--public-url, ORCHESTRATOR_PUBLIC_URL) is the address the console is reached at; run
	// notifications link to run pages under it.
	PublicURL string
	// TrustedProxies (ORCHESTRATOR_TRUSTED_PROXIES) are the proxies whose X-Forwarded-For, Forwarded and
	// X-Forwarded-Proto headers are believed; empty, none are and the peer is the client.
	TrustedProxies []netip.Prefix
	// Dev (ORCHESTRATOR_DEV, set by `make run`) says the development secrets are meant: Run does not warn about
	// them.
	Dev bool
	// Tracing (ORCHESTRATOR_TRACING) is tracing.ModeOTLP or tracing.ModeOff: whether deliveries are traced with
	// OpenTelemetry, their spans sent with OTLP over HTTP where the standard OTEL_EXPORTER_OTLP_* variables say.
	// The serve command turns it on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
	// set; empty is off.
	Tracing tracing.Mode

	// Logger receives every log line of the service. Defaults to slog.Default().
	Logger *slog.Logger
	// Getenv reads the secrets of notify targets. Defaults to os.Getenv.
	Getenv func(string) string
	// TracerProvider, when set, receives the spans instead of the exporter Tracing would start (tests record
	// them in memory); nil with Tracing off traces nothing.
	TracerProvider trace.TracerProvider
	// PoolTracer, when set, is the pgx tracer of the service's pool: it sees every statement the service sends
	// (the benchmark counts round trips with it). Nil: none.
	PoolTracer pgx.QueryTracer
	// DeferWorkers, when true, has Run build the workers without starting them, so that a caller can fill the
	// queue first (the benchmark drains a backlog from a standing start); StartWorkers starts them. It changes
	// nothing for RoleWeb, which runs no workers.
	DeferWorkers bool
}

// WithDefaults returns a copy of c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, web.MaxBodyBytesDefault)
	c.MaxWorkers = cmp.Or(c.MaxWorkers, jobs.MaxWorkersDefault)
	c.KillGrace = cmp.Or(c.KillGrace, jobs.KillGraceDefault)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, jobs.HeartbeatIntervalDefault)
	c.OrphanAfter = cmp.Or(c.OrphanAfter, jobs.OrphanAfterDefault)
	c.FenceMargin = cmp.Or(c.FenceMargin, jobs.FenceMarginFor(c.OrphanAfter, c.KillGrace))
	c.Role = cmp.Or(c.Role, RoleDefault)
	c.ChangedFiles = cmp.Or(c.ChangedFiles, ChangedFilesFiltered)
	c.FilesTimeout = cmp.Or(c.FilesTimeout, orchestrator.FilesTimeoutDefault)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	return c
}

// validate checks a Config with its defaults filled in. Its messages name the flags and environment variables
// of the serve command, which is where a Config usually comes from.
func (c *Config) validate() error {
	switch {
	case c.MaxBodyBytes <= 0:
		return errors.New("--max-body-bytes must be positive")
	case c.MaxWorkers <= 0:
		return errors.New("--max-workers must be positive")
	case c.KillGrace <= 0:
		return errors.New("--kill-grace must be positive")
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
	case !slices.Contains(Roles, c.Role):
		return fmt.Errorf("--role must be %s, not %q", orchestrator.OneOf(Roles), c.Role)
	case !slices.Contains(ChangedFilesModes, c.ChangedFiles):
		return fmt.Errorf("ORCHESTRATOR_CHANGED_FILES must be %s, not %q", orchestrator.OneOf(ChangedFilesModes), c.ChangedFiles)
	case c.FilesTimeout < time.Second:
		return fmt.Errorf("ORCHESTRATOR_FILES_TIMEOUT (%s) must be at least 1s", c.FilesTimeout)
	case c.AdminTokenPrevious != "" && c.AdminToken == "":
		return errors.New("ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS needs ORCHESTRATOR_ADMIN_TOKEN: set the new token as " +
			"ORCHESTRATOR_ADMIN_TOKEN and keep the old one as ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS")
	case c.AdminTokenPrevious != "" && c.AdminTokenPrevious == c.AdminToken:
		return errors.New("ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS must differ from ORCHESTRATOR_ADMIN_TOKEN: " +
			"set the new token as ORCHESTRATOR_ADMIN_TOKEN and the old one as ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS")
	case c.ProtectReads && c.AdminToken == "":
		return errors.New("ORCHESTRATOR_PROTECT_READS needs ORCHESTRATOR_ADMIN_TOKEN: set a token, or nobody could read the pages")
	case c.DatabaseURL == "" && c.DataDir == "":
		return errors.New("--data-dir must not be empty when DATABASE_URL is unset")
	case c.AuditRetention < 0:
		return fmt.Errorf("ORCHESTRATOR_AUDIT_RETENTION (%s) must be 0 (keep forever) or positive", c.AuditRetention)
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

// runsCommands reports whether a process of the Config's role runs commands.
func (c *Config) runsCommands() bool { return c.Role != RoleWeb }
