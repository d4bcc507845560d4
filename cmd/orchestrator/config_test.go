package main

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// TestConfigLease checks the timings of heartbeats, leases and fences: the defaults hold together, a margin that
// is not given follows the orphan timeout and the kill grace, and each setting that would let a fenced command
// outlive its lease, or fence a healthy one, is refused at start with a message naming it.
func TestConfigLease(t *testing.T) {
	t.Parallel()
	type timings struct{ heartbeat, orphanAfter, margin, grace time.Duration }
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		want    timings
		wantErr string
	}{
		{name: "defaults", want: timings{10 * time.Second, time.Minute, 15 * time.Second, 10 * time.Second}},
		{name: "margin given", env: map[string]string{"ORCHESTRATOR_FENCE_MARGIN": "20s"},
			want: timings{10 * time.Second, time.Minute, 20 * time.Second, 10 * time.Second}},
		{name: "default margin follows a long grace", args: []string{"--kill-grace", "30s"},
			want: timings{10 * time.Second, time.Minute, 31 * time.Second, 30 * time.Second}},
		{name: "default margin follows the orphan timeout", env: map[string]string{"ORCHESTRATOR_ORPHAN_AFTER": "10m"},
			want: timings{10 * time.Second, 10 * time.Minute, 150 * time.Second, 10 * time.Second}},
		{name: "short timings", env: map[string]string{"ORCHESTRATOR_HEARTBEAT_INTERVAL": "300ms", "ORCHESTRATOR_ORPHAN_AFTER": "8s",
			"ORCHESTRATOR_FENCE_MARGIN": "3s", "ORCHESTRATOR_KILL_GRACE": "1s"},
			want: timings{300 * time.Millisecond, 8 * time.Second, 3 * time.Second, time.Second}},
		{name: "margin zero takes the default", env: map[string]string{"ORCHESTRATOR_FENCE_MARGIN": "0"},
			want: timings{10 * time.Second, time.Minute, 15 * time.Second, 10 * time.Second}},
		{name: "margin not a duration", env: map[string]string{"ORCHESTRATOR_FENCE_MARGIN": "soon"}, wantErr: "ORCHESTRATOR_FENCE_MARGIN"},
		{name: "margin within the grace", env: map[string]string{"ORCHESTRATOR_FENCE_MARGIN": "10s"},
			wantErr: "ORCHESTRATOR_FENCE_MARGIN (10s) must be at least --kill-grace (10s) plus 1s"},
		{name: "margin negative", env: map[string]string{"ORCHESTRATOR_FENCE_MARGIN": "-15s"},
			wantErr: "ORCHESTRATOR_FENCE_MARGIN (-15s) must be at least --kill-grace"},
		{name: "grace raised past a given margin", env: map[string]string{"ORCHESTRATOR_FENCE_MARGIN": "15s"}, args: []string{"--kill-grace", "14500ms"},
			wantErr: "ORCHESTRATOR_FENCE_MARGIN (15s) must be at least --kill-grace (14.5s) plus 1s"},
		{name: "margin eats the lease", env: map[string]string{"ORCHESTRATOR_FENCE_MARGIN": "45s"},
			wantErr: "ORCHESTRATOR_ORPHAN_AFTER (1m0s) minus ORCHESTRATOR_FENCE_MARGIN (45s) must be at least two ORCHESTRATOR_HEARTBEAT_INTERVALs (10s)"},
		{name: "margin longer than the lease", env: map[string]string{"ORCHESTRATOR_ORPHAN_AFTER": "2s", "ORCHESTRATOR_HEARTBEAT_INTERVAL": "200ms"},
			wantErr: "ORCHESTRATOR_ORPHAN_AFTER (2s) minus ORCHESTRATOR_FENCE_MARGIN (11s)"},
		{name: "orphan timeout within three heartbeats", env: map[string]string{"ORCHESTRATOR_ORPHAN_AFTER": "25s"},
			wantErr: "ORCHESTRATOR_ORPHAN_AFTER (25s) must be at least three ORCHESTRATOR_HEARTBEAT_INTERVALs"},
		{name: "a web process runs no command to fence", env: map[string]string{"ORCHESTRATOR_ROLE": "web", "ORCHESTRATOR_FENCE_MARGIN": "1s"},
			want: timings{10 * time.Second, time.Minute, time.Second, 10 * time.Second}},
		{name: "a worker does", env: map[string]string{"ORCHESTRATOR_ROLE": "worker", "ORCHESTRATOR_FENCE_MARGIN": "1s"},
			wantErr: "ORCHESTRATOR_FENCE_MARGIN (1s) must be at least --kill-grace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseServe(tc.args, tc.env)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, timings{cfg.HeartbeatInterval, cfg.OrphanAfter, cfg.FenceMargin, cfg.KillGrace})
		})
	}
}

// TestConfigZeroRefused checks that a setting given as zero on the command line is refused, where a Config built
// in code takes zero for the default; and that the command's own settings are checked.
func TestConfigZeroRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{name: "body", args: []string{"--max-body-bytes", "0"}, wantErr: "--max-body-bytes must be positive"},
		{name: "workers", env: map[string]string{"ORCHESTRATOR_MAX_WORKERS": "0"}, wantErr: "--max-workers must be positive"},
		{name: "grace", args: []string{"--kill-grace", "0s"}, wantErr: "--kill-grace must be positive"},
		{name: "heartbeat", env: map[string]string{"ORCHESTRATOR_HEARTBEAT_INTERVAL": "0s"},
			wantErr: "ORCHESTRATOR_ORPHAN_AFTER (1m0s) must be at least three ORCHESTRATOR_HEARTBEAT_INTERVALs (0s)"},
		{name: "orphan timeout", env: map[string]string{"ORCHESTRATOR_ORPHAN_AFTER": "0s"},
			wantErr: "ORCHESTRATOR_ORPHAN_AFTER (0s) must be at least three ORCHESTRATOR_HEARTBEAT_INTERVALs (10s)"},
		{name: "role", args: []string{"--role", ""}, wantErr: `--role must be all, web or worker, not ""`},
		{name: "queues", args: []string{"--queues", " , "}, wantErr: "--queues must name at least one queue"},
		{name: "a web process serves no queue", args: []string{"--role", "web", "--queues", ""}},
		{name: "log format", args: []string{"--log-format", "xml"}, wantErr: `--log-format must be text or json, not "xml"`},
		{name: "negative workers, from the service", args: []string{"--max-workers", "-1"}, wantErr: "--max-workers must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseServe(tc.args, tc.env)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tc.wantErr)
		})
	}
}

// parseServe does what serve does with its flags and environment before it starts anything: it parses them and
// builds the service, and returns the Config the service would run with.
func parseServe(args []string, env map[string]string) (service.Config, error) {
	getenv := func(k string) string { return env[k] }
	opts, err := parseConfig("serve", args, getenv, io.Discard)
	if err != nil {
		return service.Config{}, err
	}
	svc, err := opts.newService(getenv, io.Discard)
	if err != nil {
		return service.Config{}, err
	}
	return svc.Config(), nil
}

func TestConfigTrustedProxies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value   string
		want    []string
		wantErr string
	}{
		{value: "", want: nil},
		{value: "10.0.0.0/8, 192.168.1.7 ,fd00::/8", want: []string{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8"}},
		{value: "10.1.2.3/8", want: []string{"10.0.0.0/8"}},
		{value: "::ffff:10.0.0.0/104", want: []string{"10.0.0.0/8"}},
		{value: "10.0.0.0/8,nginx", wantErr: `"nginx" is not a CIDR`},
		{value: "10.0.0.0/33", wantErr: `"10.0.0.0/33" is not a CIDR`},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			t.Parallel()
			getenv := func(k string) string {
				if k == "ORCHESTRATOR_TRUSTED_PROXIES" {
					return tt.value
				}
				return ""
			}
			c, err := parseConfig("serve", nil, getenv, io.Discard)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, "ORCHESTRATOR_TRUSTED_PROXIES")
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, p := range c.TrustedProxies {
				got = append(got, p.String())
			}
			require.Equal(t, tt.want, got)
		})
	}
}
