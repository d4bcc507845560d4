package web

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// MaxBodyBytesDefault is the largest webhook body accepted: 16 MiB. A storage bucket's delivery lists up to
// 10,000 changed files (about 1.4 MB), and a webhook watching an organisation receives those beside its
// dataset pushes: refusing one would count as a failed delivery, and enough of them suspend the webhook.
const MaxBodyBytesDefault = 16 << 20

// Config configures a Server.
type Config struct {
	// Store keeps deliveries and runs. Required.
	Store *orchestrator.Store
	// WebhookSecret is the secret Hugging Face sends with every delivery. Required.
	WebhookSecret string
	// WebhookSecretPrevious, when set, is accepted too, so that the secret can be rotated without losing
	// deliveries: set the new secret here and on the Hub, keep the old one here until no delivery uses it.
	WebhookSecretPrevious string
	// MaxBodyBytes is the largest webhook body accepted; larger ones get 413. Defaults to MaxBodyBytesDefault.
	MaxBodyBytes int64
	// Ready reports whether the service can take deliveries (database reachable, schema applied). Optional.
	Ready func(ctx context.Context) error
	// AdminToken guards every state-changing endpoint and River's UI. Without it those answer 403.
	AdminToken string
	// AdminTokenPrevious, when set, is accepted beside AdminToken while the token is rotated; sessions made
	// with it end when it is removed. It needs AdminToken and must differ from it.
	AdminTokenPrevious string
	// ProtectReads puts the pages and the read-only API behind the admin token too.
	ProtectReads bool
	// RiverUI, when set, is mounted under /riverui/ behind the admin token.
	RiverUI http.Handler
	// ReconcileInterval is how often catch-up with the Hub runs, for the dashboard; 0 means it is off.
	ReconcileInterval time.Duration
	// Files, when set, answers the checks of commits against mappings (POST /api/v1/mappings/{name}/check),
	// each bounded by FilesTimeout (orchestrator.FilesTimeoutDefault when 0). Nil: those answer 503.
	Files        *orchestrator.FileFinder
	FilesTimeout time.Duration
	// Registry, when set, is where the server registers its metrics and what /metrics serves, so that other
	// parts of the process (the workers) can add theirs. A registry of its own when nil.
	Registry *prometheus.Registry
	// TracerProvider, when set, traces each webhook delivery: the request, its recording, and the jobs it
	// queues, whose trace goes on in the workers. Nil: tracing is off, and nothing of it is installed.
	TracerProvider trace.TracerProvider
	// TrustedProxies are the proxies whose X-Forwarded-For, Forwarded and X-Forwarded-Proto headers are believed
	// (ORCHESTRATOR_TRUSTED_PROXIES). Empty: none are, and the peer is the client.
	TrustedProxies []netip.Prefix
	// PublicURL is the address the console is reached at; when it is https the session cookie is always Secure.
	PublicURL string
	// LookupEnv finds the environment variables that hf-jobs mappings name as secrets, which creating or
	// replacing a mapping checks are set. Defaults to os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Logger receives request and error log lines. Defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Store == nil {
		return errors.New("web: a store is required")
	}
	if c.WebhookSecret == "" {
		return errors.New("web: a webhook secret is required")
	}
	if c.AdminTokenPrevious != "" && c.AdminToken == "" {
		return errors.New("web: AdminTokenPrevious needs AdminToken: the previous token is accepted only beside a current one")
	}
	if c.AdminTokenPrevious != "" && c.AdminTokenPrevious == c.AdminToken {
		return errors.New("web: AdminTokenPrevious must differ from AdminToken")
	}
	if c.MaxBodyBytes < 0 {
		return errors.New("web: MaxBodyBytes must not be negative")
	}
	return nil
}

// Server serves the orchestrator's HTTP endpoints.
type Server struct {
	store          *orchestrator.Store
	secret         []byte
	previousSecret []byte
	metrics        *metrics
	secretFailures *failureLog
	maxBody        int64
	ready          func(ctx context.Context) error
	logger         *slog.Logger
	templates      map[string]*template.Template
	auth           *auth
	riverUI        http.Handler
	reconcileEvery time.Duration
	files          *orchestrator.FileFinder
	filesTimeout   time.Duration
	tracerProvider trace.TracerProvider // nil when tracing is off
	trustedProxies []netip.Prefix
	publicHTTPS    bool
	throttle       *authThrottle
	lookupEnv      func(string) (string, bool)
}

// New returns a Server, parsing its templates; a template error fails here, at start-up.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = MaxBodyBytesDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Ready == nil {
		cfg.Ready = cfg.Store.Ping
	}
	if cfg.LookupEnv == nil {
		cfg.LookupEnv = os.LookupEnv
	}
	templates, err := parseTemplates()
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	s := &Server{
		store:          cfg.Store,
		lookupEnv:      cfg.LookupEnv,
		secret:         []byte(cfg.WebhookSecret),
		previousSecret: []byte(cfg.WebhookSecretPrevious),
		metrics:        newMetrics(cfg.Registry, cfg.Store),
		maxBody:        cfg.MaxBodyBytes,
		ready:          cfg.Ready,
		logger:         cfg.Logger,
		templates:      templates,
		auth:           newAuth(cfg.AdminToken, cfg.AdminTokenPrevious, cfg.ProtectReads),
		riverUI:        cfg.RiverUI,
		reconcileEvery: cfg.ReconcileInterval,
		files:          cfg.Files,
		filesTimeout:   cmp.Or(cfg.FilesTimeout, orchestrator.FilesTimeoutDefault),
		tracerProvider: cfg.TracerProvider,
		trustedProxies: cfg.TrustedProxies,
		publicHTTPS:    strings.HasPrefix(strings.ToLower(cfg.PublicURL), "https://"),
		throttle:       newAuthThrottle(time.Now, throttleMaxClients),
	}
	s.secretFailures = &failureLog{interval: time.Minute, log: func(count int, remotes []string) {
		s.logger.Warn("webhook requests with a missing or wrong secret: the Hub retries them and may suspend the webhook; "+
			"check HUGGINGFACE_WEBHOOK_SECRET against the webhook's settings", "count", count, "from", remotes)
	}}
	return s, nil
}

// handlerFunc is an HTTP handler that returns its error instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts h to http.HandlerFunc, sending any error it returns through writeError.
func (s *Server) handle(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}
