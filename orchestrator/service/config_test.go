package service

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/web"
)

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		in    Config
		check func(t *testing.T, got Config)
	}{
		{name: "zero", in: Config{}, check: func(t *testing.T, got Config) {
			require.Equal(t, int64(web.MaxBodyBytesDefault), got.MaxBodyBytes)
			require.Equal(t, jobs.MaxWorkersDefault, got.MaxWorkers)
			require.Equal(t, jobs.KillGraceDefault, got.KillGrace)
			require.Equal(t, jobs.HeartbeatIntervalDefault, got.HeartbeatInterval)
			require.Equal(t, jobs.OrphanAfterDefault, got.OrphanAfter)
			require.Equal(t, 15*time.Second, got.FenceMargin)
			require.Equal(t, RoleAll, got.Role)
			require.NotNil(t, got.Logger)
			require.NotNil(t, got.Getenv)
			require.Zero(t, got.ReconcileInterval, "a Config built in code has catch-up off")
			require.Empty(t, got.Tracing, "a Config built in code traces nothing unless it says so")
			require.Empty(t, got.Queues, "the client serves orchestrator.QueueDefault")
			require.Empty(t, got.Addr)
		}},
		{name: "set fields are kept", in: Config{MaxBodyBytes: 1 << 10, MaxWorkers: 2, KillGrace: time.Second,
			HeartbeatInterval: time.Second, OrphanAfter: 8 * time.Second, FenceMargin: 3 * time.Second, Role: RoleWorker},
			check: func(t *testing.T, got Config) {
				require.Equal(t, int64(1<<10), got.MaxBodyBytes)
				require.Equal(t, 2, got.MaxWorkers)
				require.Equal(t, time.Second, got.KillGrace)
				require.Equal(t, time.Second, got.HeartbeatInterval)
				require.Equal(t, 8*time.Second, got.OrphanAfter)
				require.Equal(t, 3*time.Second, got.FenceMargin)
				require.Equal(t, RoleWorker, got.Role)
			}},
		{name: "margin follows a long grace", in: Config{KillGrace: 30 * time.Second}, check: func(t *testing.T, got Config) {
			require.Equal(t, 31*time.Second, got.FenceMargin)
		}},
		{name: "margin follows the orphan timeout", in: Config{OrphanAfter: 10 * time.Minute}, check: func(t *testing.T, got Config) {
			require.Equal(t, 150*time.Second, got.FenceMargin)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := tc.in.WithDefaults()
			tc.check(t, got)
			got.DatabaseURL = "postgres://localhost/x"
			require.NoError(t, got.validate(), "the defaults hold together")
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := Config{DatabaseURL: "postgres://localhost/x"}
	cases := []struct {
		name    string
		modify  func(*Config)
		wantErr string
	}{
		{name: "defaults", modify: func(*Config) {}},
		{name: "negative body", modify: func(c *Config) { c.MaxBodyBytes = -1 }, wantErr: "--max-body-bytes must be positive"},
		{name: "negative workers", modify: func(c *Config) { c.MaxWorkers = -1 }, wantErr: "--max-workers must be positive"},
		{name: "negative grace", modify: func(c *Config) { c.KillGrace = -time.Second }, wantErr: "--kill-grace must be positive"},
		{name: "orphan within three heartbeats", modify: func(c *Config) { c.OrphanAfter = 25 * time.Second },
			wantErr: "ORCHESTRATOR_ORPHAN_AFTER (25s) must be at least three ORCHESTRATOR_HEARTBEAT_INTERVALs (10s)"},
		{name: "margin within the grace", modify: func(c *Config) { c.FenceMargin = 10 * time.Second },
			wantErr: "ORCHESTRATOR_FENCE_MARGIN (10s) must be at least --kill-grace (10s) plus 1s"},
		{name: "a web process runs no command to fence", modify: func(c *Config) { c.Role, c.FenceMargin = RoleWeb, time.Second }},
		{name: "margin eats the lease", modify: func(c *Config) { c.FenceMargin = 45 * time.Second },
			wantErr: "ORCHESTRATOR_ORPHAN_AFTER (1m0s) minus ORCHESTRATOR_FENCE_MARGIN (45s) must be at least two"},
		{name: "unknown role", modify: func(c *Config) { c.Role = "leader" }, wantErr: `--role must be all, web or worker, not "leader"`},
		{name: "reads protected without a token", modify: func(c *Config) { c.ProtectReads = true },
			wantErr: "ORCHESTRATOR_PROTECT_READS needs ORCHESTRATOR_ADMIN_TOKEN"},
		{name: "previous admin token without a current one", modify: func(c *Config) { c.AdminTokenPrevious = "old" },
			wantErr: "ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS needs ORCHESTRATOR_ADMIN_TOKEN"},
		{name: "previous admin token equal to the current one", modify: func(c *Config) { c.AdminToken, c.AdminTokenPrevious = "same", "same" },
			wantErr: "ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS must differ from ORCHESTRATOR_ADMIN_TOKEN"},
		{name: "admin token rotated", modify: func(c *Config) { c.AdminToken, c.AdminTokenPrevious = "new", "old" }},
		{name: "reads protected with a token", modify: func(c *Config) { c.ProtectReads, c.AdminToken = true, "t" }},
		{name: "embedded without a data dir", modify: func(c *Config) { c.DatabaseURL = "" },
			wantErr: "--data-dir must not be empty when DATABASE_URL is unset"},
		{name: "embedded", modify: func(c *Config) { c.DatabaseURL, c.DataDir = "", "./data" }},
		{name: "negative audit retention", modify: func(c *Config) { c.AuditRetention = -time.Hour },
			wantErr: "ORCHESTRATOR_AUDIT_RETENTION (-1h0m0s) must be 0 (keep forever) or positive"},
		{name: "catch-up too often", modify: func(c *Config) { c.ReconcileInterval = 500 * time.Millisecond },
			wantErr: "ORCHESTRATOR_RECONCILE_INTERVAL (500ms) must be 0 (catch-up off) or at least 1s"},
		{name: "public URL without scheme", modify: func(c *Config) { c.PublicURL = "orchestrator.example.com" },
			wantErr: "ORCHESTRATOR_PUBLIC_URL"},
		{name: "hub without scheme", modify: func(c *Config) { c.HFEndpoint = "huggingface.co" }, wantErr: "HF_ENDPOINT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tc.modify(&cfg)
			cfg = cfg.WithDefaults()
			err := cfg.validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}
