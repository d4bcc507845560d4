package service

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWarnWeakSecrets(t *testing.T) {
	t.Parallel()
	const strong = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name          string
		secret, token string
		dev           bool
		role          Role
		want          []string
	}{
		{name: "strong", secret: strong, token: strong},
		{name: "no admin token", secret: strong},
		{name: "short secret", secret: "tiny-s3cret", token: strong, want: []string{"HUGGINGFACE_WEBHOOK_SECRET is shorter"}},
		{name: "short token", secret: strong, token: strong[:31], want: []string{"ORCHESTRATOR_ADMIN_TOKEN is shorter"}},
		{name: "dev defaults", secret: "dev-secret-change-me", token: "dev-admin-token",
			want: []string{"HUGGINGFACE_WEBHOOK_SECRET is the development default", "ORCHESTRATOR_ADMIN_TOKEN is the development default"}},
		{name: "dev defaults under make run", secret: "dev-secret-change-me", token: "dev-admin-token", dev: true},
		{name: "short under make run", secret: "tiny-s3cret", token: "dev-admin-token", dev: true,
			want: []string{"HUGGINGFACE_WEBHOOK_SECRET is shorter"}},
		{name: "worker serves no secret", secret: "short", token: "short", role: RoleWorker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs strings.Builder
			c := Config{WebhookSecret: tt.secret, AdminToken: tt.token, Dev: tt.dev, Role: tt.role,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}.WithDefaults()
			c.warnWeakSecrets()
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(tt.want) == 0 {
				require.Empty(t, logs.String())
				return
			}
			require.Len(t, lines, len(tt.want))
			for i, want := range tt.want {
				require.Contains(t, lines[i], "level=WARN")
				require.Contains(t, lines[i], want)
			}
			require.NotContains(t, logs.String(), tt.secret, "a secret never appears in the log")
		})
	}
}
