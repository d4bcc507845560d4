package web_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/jobs/jobstest"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/logtest"
	"github.com/retrainhq/orchestrator/web"
)

// TestSecretRotationAndSecrecy covers rotation (both secrets accepted, the delivery says which matched),
// failed secrets being counted and logged, and neither the secrets nor the admin token ever appearing in logs
// or answers.
func TestSecretRotationAndSecrecy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const current, previous, token = "new-secret-0123456789", "old-secret-9876543210", "admin-token-secret-42"

	pool, _ := dbtest.NewMigratedPool(t)
	store := orchestrator.NewStore(pool)
	jobstest.NewClient(t, pool, store, jobs.ClientConfig{Logger: quietLogger})
	_, err := store.MappingSync(ctx, []orchestrator.Mapping{ticketsMapping()})
	require.NoError(t, err)

	var logs logtest.Buffer
	srv, err := web.New(web.Config{Store: store, WebhookSecret: current, WebhookSecretPrevious: previous,
		AdminToken: token, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	require.NoError(t, err)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	var answers strings.Builder
	raw := func(method, path, body string, header map[string]string) int {
		req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		answers.Write(data)
		for k, v := range resp.Header {
			answers.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
		return resp.StatusCode
	}
	post := func(header map[string]string, path, body string) int {
		return raw(http.MethodPost, "/webhooks/huggingface"+path, body, header)
	}
	push := fixture(t, "dataset-main-push.json")
	require.Equal(t, 200, post(map[string]string{"X-Webhook-Secret": current}, "", push))
	require.Equal(t, 200, post(map[string]string{"X-Webhook-Secret": previous}, "", fixture(t, "dataset-multi-ref.json")))
	require.Equal(t, 200, post(nil, "?secret="+previous, fixture(t, "model-content-update.json")))
	for _, wrong := range []string{"nope", current[:10], previous + "x"} {
		require.Equal(t, 401, post(map[string]string{"X-Webhook-Secret": wrong}, "", push))
	}
	require.Equal(t, 401, post(nil, "?secret="+url.QueryEscape(current+"\n"), push), "a trailing newline is a different secret")
	// An admin call with the token, and a failed one, for the logs.
	require.Equal(t, 200, raw(http.MethodPost, "/api/v1/runs/2/cancel", "", map[string]string{"Authorization": "Bearer " + token}))
	require.Equal(t, 401, raw(http.MethodPost, "/api/v1/runs/2/cancel", "", map[string]string{"Authorization": "Bearer x" + token}))

	rows, err := pool.Query(ctx, `SELECT secret FROM deliveries ORDER BY id`)
	require.NoError(t, err)
	var matched []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		matched = append(matched, s)
	}
	require.Equal(t, []string{"current", "previous", "previous"}, matched)

	// The metrics count failures and the use of the old secret.
	metricsResp, err := http.Get(ts.URL + "/metrics")
	require.NoError(t, err)
	metricsBody, err := io.ReadAll(metricsResp.Body)
	metricsResp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(metricsBody), "orchestrator_webhook_secret_failures_total 4")
	require.Contains(t, string(metricsBody), "orchestrator_webhook_previous_secret_total 2")
	require.Contains(t, string(metricsBody), `orchestrator_webhook_deliveries_total{outcome="unauthorized"} 4`)
	require.Contains(t, string(metricsBody), `orchestrator_webhook_deliveries_total{outcome="accepted"} 2`)
	require.Contains(t, string(metricsBody), `orchestrator_webhook_deliveries_total{outcome="ignored"} 1`)

	// One warning line for the burst of failures (rate limited), naming neither secret.
	require.Equal(t, 1, strings.Count(logs.String(), "missing or wrong secret"), logs.String())
	for _, secret := range []string{current, previous, token, current[:10]} {
		require.NotContains(t, logs.String(), secret, "a secret in the logs")
		require.NotContains(t, answers.String(), secret, "a secret in an answer")
		require.NotContains(t, string(metricsBody), secret)
	}
}
