package main

import (
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// TestMetricsMove scrapes /metrics before and after deliveries and runs, and checks that the counters moved.
func TestMetricsMove(t *testing.T) {
	t.Parallel()
	url, _ := dbtest.NewSchema(t)
	cfg := writeConfig(t, t.TempDir(), `
mappings:
  - name: ok
    dataset: acme/ok
    command: ["true"]
  - name: bad
    dataset: acme/bad
    command: ["false"]
    max_attempts: 1
`)
	svc := startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: cfg, DatabaseURL: url, WebhookSecret: e2eSecret,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	base := "http://" + svc.Addr()
	scrape := func() string { return scrapeMetrics(t, base) }
	value := func(body, series string) float64 { return metricValue(t, body, series) }
	before := scrape()
	require.Equal(t, 0.0, value(before, `orchestrator_webhook_deliveries_total{outcome="accepted"}`))
	require.Equal(t, 0.0, value(before, "orchestrator_runs_waiting"))

	okRun := postDelivery(t, base, push("acme/ok", randomRevision()))
	badRun := postDelivery(t, base, push("acme/bad", randomRevision()))
	postDelivery(t, base, push("acme/ok", randomRevision()))
	postDelivery(t, base, push("acme/unmapped", randomRevision()))
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/huggingface", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	waitRun(t, base, int64(okRun["runs"].([]any)[0].(float64)), "succeeded", "superseded")
	waitRun(t, base, int64(badRun["runs"].([]any)[0].(float64)), "failed")

	require.Eventually(t, func() bool {
		after := scrape()
		return value(after, `orchestrator_webhook_deliveries_total{outcome="accepted"}`) == 3 &&
			value(after, `orchestrator_webhook_deliveries_total{outcome="unauthorized"}`) == 1 &&
			value(after, `orchestrator_webhook_deliveries_total{outcome="ignored"}`) == 1 &&
			value(after, `orchestrator_webhook_ignored_total{reason="no_mapping"}`) == 1 &&
			value(after, `orchestrator_webhook_ignored_total{reason="pull_request_ref"}`) == 0 &&
			value(after, "orchestrator_webhook_secret_failures_total") == 1 &&
			value(after, `orchestrator_runs_finished_total{mapping="bad",status="failed"}`) == 1 &&
			value(after, `orchestrator_runs_finished_total{mapping="ok",status="succeeded"}`) >= 1 &&
			value(after, `orchestrator_run_duration_seconds_count{mapping="bad"}`) == 1 &&
			value(after, `orchestrator_webhook_duration_seconds_count`) == 5 &&
			value(after, "orchestrator_runs_waiting") == 0
	}, 10*time.Second, 50*time.Millisecond, "metrics after:\n%s", scrape())
}

// scrapeMetrics returns the page /metrics serves.
func scrapeMetrics(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// metricValue returns the value of one series, such as `orchestrator_runs_waiting`, in a scraped page; 0 when
// the page does not have it.
func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	match := re.FindStringSubmatch(body)
	if match == nil {
		return 0
	}
	v, err := strconv.ParseFloat(match[1], 64)
	require.NoError(t, err)
	return v
}
