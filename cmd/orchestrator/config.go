package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/service"
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

// options are what the serve and migrate commands read from their flags and environment variables: the
// service's Config, and the format of the process's log.
type options struct {
	service.Config
	LogFormat string // --log-format, ORCHESTRATOR_LOG_FORMAT: text or json
}

// parseConfig reads flags, with environment variables as their defaults.
func parseConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (*options, error) {
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	c := &options{Config: service.Config{DatabaseURL: getenv("DATABASE_URL"), WebhookSecret: getenv("HUGGINGFACE_WEBHOOK_SECRET"),
		AdminToken: getenv("ORCHESTRATOR_ADMIN_TOKEN"), WebhookSecretPrevious: getenv("HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS"),
		AdminTokenPrevious: getenv("ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS"), HFEndpoint: getenv("HF_ENDPOINT"), HFToken: getenv("HF_TOKEN")}}
	if v := getenv("ORCHESTRATOR_PROTECT_READS"); v != "" {
		protect, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("ORCHESTRATOR_PROTECT_READS must be true or false, not %q", v)
		}
		c.ProtectReads = protect
	}
	if v := getenv("ORCHESTRATOR_DEV"); v != "" {
		dev, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("ORCHESTRATOR_DEV must be true or false, not %q", v)
		}
		c.Dev = dev
	}
	proxies, err := parseTrustedProxies(getenv("ORCHESTRATOR_TRUSTED_PROXIES"))
	if err != nil {
		return nil, err
	}
	c.TrustedProxies = proxies
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Addr, "addr", env("ORCHESTRATOR_ADDR", AddrDefault), "address to listen on (ORCHESTRATOR_ADDR)")
	fs.StringVar(&c.ConfigPath, "config", env("ORCHESTRATOR_CONFIG", ""), "YAML file of mappings (ORCHESTRATOR_CONFIG)")
	fs.StringVar(&c.DataDir, "data-dir", env("ORCHESTRATOR_DATA_DIR", DataDirDefault),
		"directory for the embedded PostgreSQL when DATABASE_URL is unset (ORCHESTRATOR_DATA_DIR)")
	fs.StringVar((*string)(&c.Role), "role", env("ORCHESTRATOR_ROLE", string(service.RoleDefault)), "all, web (no commands) or worker (only commands) (ORCHESTRATOR_ROLE)")
	queues := fs.String("queues", env("ORCHESTRATOR_QUEUES", orchestrator.QueueDefault), "worker pools this process serves, comma-separated (ORCHESTRATOR_QUEUES)")
	fs.StringVar(&c.PublicURL, "public-url", env("ORCHESTRATOR_PUBLIC_URL", ""),
		"address the console is reached at, for links in run notifications (ORCHESTRATOR_PUBLIC_URL)")
	fs.StringVar(&c.LogFormat, "log-format", env("ORCHESTRATOR_LOG_FORMAT", "text"), "log format: text or json (ORCHESTRATOR_LOG_FORMAT)")

	var maxBody, maxWorkers int64
	var killGrace time.Duration
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
	if c.AuditRetention, err = time.ParseDuration(env("ORCHESTRATOR_AUDIT_RETENTION", orchestrator.AuditRetentionDefault.String())); err != nil {
		return nil, fmt.Errorf("ORCHESTRATOR_AUDIT_RETENTION: %w", err)
	}
	c.ChangedFiles = service.ChangedFiles(env("ORCHESTRATOR_CHANGED_FILES", string(service.ChangedFilesAll)))
	if c.FilesTimeout, err = time.ParseDuration(env("ORCHESTRATOR_FILES_TIMEOUT", orchestrator.FilesTimeoutDefault.String())); err != nil {
		return nil, fmt.Errorf("ORCHESTRATOR_FILES_TIMEOUT: %w", err)
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
	if c.Tracing, err = tracing.ModeFromEnv(getenv); err != nil {
		return nil, err
	}
	for _, q := range strings.Split(*queues, ",") {
		if q = strings.TrimSpace(q); q != "" {
			c.Queues = append(c.Queues, q)
		}
	}
	return c, c.check()
}

// check refuses what the service's Config cannot tell from a setting left out. The service takes a zero for
// "unset" and fills in its default, but on the command line the default is what leaving a setting out gives,
// so a zero given there is refused, with the message the service has for a value out of range. The log format
// and the list of queues are the command's own.
func (c *options) check() error {
	switch {
	case c.MaxBodyBytes == 0:
		return errors.New("--max-body-bytes must be positive")
	case c.MaxWorkers == 0:
		return errors.New("--max-workers must be positive")
	case c.KillGrace == 0:
		return errors.New("--kill-grace must be positive")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	case c.HeartbeatInterval == 0 || c.OrphanAfter == 0:
		return fmt.Errorf("ORCHESTRATOR_ORPHAN_AFTER (%s) must be at least three ORCHESTRATOR_HEARTBEAT_INTERVALs (%s)", c.OrphanAfter, c.HeartbeatInterval)
	case c.Role == "":
		return fmt.Errorf("--role must be %s, not %q", orchestrator.OneOf(service.Roles), c.Role)
	case c.Role != service.RoleWeb && len(c.Queues) == 0:
		return errors.New("--queues must name at least one queue")
	}
	return nil
}

// newService builds the service the options configure, logging to stderr in their format and reading the
// secrets of notify targets with getenv. It starts nothing; an error means the options are not valid.
func (c *options) newService(getenv func(string) string, stderr io.Writer) (*service.Service, error) {
	cfg := c.Config
	cfg.Logger = newLogger(c.LogFormat, stderr)
	cfg.Getenv = getenv
	return service.New(cfg)
}

// parseTrustedProxies reads ORCHESTRATOR_TRUSTED_PROXIES: CIDRs separated by commas, such as
// "10.0.0.0/8, 192.168.1.7/32"; a bare address stands for itself alone.
func parseTrustedProxies(v string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for _, entry := range strings.Split(v, ",") {
		if entry = strings.TrimSpace(entry); entry == "" {
			continue
		}
		if addr, err := netip.ParseAddr(entry); err == nil {
			prefixes = append(prefixes, netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(entry)
		if err != nil {
			return nil, fmt.Errorf("ORCHESTRATOR_TRUSTED_PROXIES: %q is not a CIDR such as 10.0.0.0/8 or fd00::/8", entry)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
		}
		prefixes = append(prefixes, p.Masked())
	}
	return prefixes, nil
}

// newLogger returns the process logger in the configured format.
func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
