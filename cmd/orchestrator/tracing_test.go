package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
	"github.com/retrainhq/orchestrator/orchestrator/tracing"
)

// traceParentRE is the W3C traceparent of a sampled span: version, trace id, span id, flags.
var traceParentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-01$`)

// TestTracing posts a webhook to the whole orchestrator and follows its trace to the command. Tracing on, the
// delivery's request span is the root (or continues the caller's traceparent), and each attempt of the run,
// a first that fails and its retry, both after a quiet period, runs in a command span of that trace, whose
// traceparent the command gets in TRACEPARENT. Tracing off, the command gets no TRACEPARENT.
func TestTracing(t *testing.T) {
	t.Parallel()
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	cases := []struct {
		name        string
		tracing     bool
		traceparent string // sent with the webhook
	}{
		{name: "on", tracing: true},
		{name: "continues the caller's trace", tracing: true, traceparent: "00-" + callerTrace + "-00f067aa0ba902b7-01"},
		{name: "off", tracing: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, _ := dbtest.NewSchema(t)
			dir := t.TempDir()
			// Each attempt writes what it got; the first fails, so that the run is retried. The quiet period
			// is long enough that even a loaded machine picks the job up within it, so that the job is snoozed.
			script := `printf '%s' "${TRACEPARENT-unset}" > "$1/attempt-$RUN_ATTEMPT"; [ "$RUN_ATTEMPT" -gt 1 ]`
			cfg := writeConfig(t, dir, fmt.Sprintf(`
mappings:
  - name: traced
    dataset: acme/traced
    quiet_period: 1500ms
    max_attempts: 2
    command: ["sh", "-c", %q, "sh", %q]
`, script, dir))
			svcCfg := service.Config{Addr: "127.0.0.1:0", ConfigPath: cfg, DatabaseURL: url, WebhookSecret: e2eSecret,
				KillGrace: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			exporter := tracetest.NewInMemoryExporter()
			if tc.tracing {
				provider := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
				t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
				svcCfg.TracerProvider = provider
			}
			svc := startService(t, svcCfg)
			base := "http://" + svc.Addr()

			req, err := http.NewRequest(http.MethodPost, base+"/webhooks/huggingface",
				strings.NewReader(push("acme/traced", strings.Repeat("a", 40))))
			require.NoError(t, err)
			req.Header.Set("X-Webhook-Secret", e2eSecret)
			if tc.traceparent != "" {
				req.Header.Set("traceparent", tc.traceparent)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			var answer map[string]any
			require.NoError(t, decodeJSON(resp, &answer))
			require.Equal(t, http.StatusOK, resp.StatusCode, answer)
			runID := int64(answer["runs"].([]any)[0].(float64))
			run := waitRun(t, base, runID, "succeeded", "failed")
			require.Equal(t, "succeeded", run.Status, run.Error)
			require.Equal(t, 2, run.Attempt)

			got := make([]string, 2)
			for i := range got {
				data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("attempt-%d", i+1)))
				require.NoError(t, err)
				got[i] = string(data)
			}
			if !tc.tracing {
				require.Equal(t, []string{"unset", "unset"}, got, "tracing off: no TRACEPARENT")
				require.Empty(t, exporter.GetSpans())
				return
			}

			// Every span of the run's jobs has ended once River has recorded the second attempt's result.
			var spans tracetest.SpanStubs
			require.Eventually(t, func() bool {
				spans = exporter.GetSpans()
				works := 0
				for _, s := range spans {
					if s.Name == "river.work/retrain" && !hasAttr(s, "snooze") {
						works++
					}
				}
				return works == 2
			}, 10*time.Second, 20*time.Millisecond, "spans: %v", spanNames(exporter.GetSpans()))
			byID := map[trace.SpanID]tracetest.SpanStub{}
			var webhook *tracetest.SpanStub
			for i, s := range spans {
				byID[s.SpanContext.SpanID()] = s
				if s.Name == "POST /webhooks/huggingface" {
					webhook = &spans[i]
				}
			}
			require.NotNil(t, webhook, "no webhook span in %v", spanNames(spans))
			require.Equal(t, trace.SpanKindServer, webhook.SpanKind)
			traceID := webhook.SpanContext.TraceID()
			if tc.traceparent != "" {
				require.Equal(t, callerTrace, traceID.String(), "the caller's trace goes on")
			} else {
				require.False(t, webhook.Parent.IsValid(), "the webhook's request is the root")
			}

			for attempt, tp := range got {
				match := traceParentRE.FindStringSubmatch(tp)
				require.NotNil(t, match, "attempt %d: TRACEPARENT %q", attempt+1, tp)
				require.Equal(t, traceID.String(), match[1], "attempt %d: the command is in the delivery's trace", attempt+1)
				spanID, err := trace.SpanIDFromHex(match[2])
				require.NoError(t, err)
				command, ok := byID[spanID]
				require.True(t, ok, "attempt %d: TRACEPARENT names no recorded span", attempt+1)
				require.Equal(t, "command traced", command.Name)

				// From the command up to the webhook's request, parent by parent.
				var chain []string
				for s := command; ; {
					chain = append(chain, s.Name)
					require.Equal(t, traceID, s.SpanContext.TraceID(), "%s is in the trace", s.Name)
					parent, ok := byID[s.Parent.SpanID()]
					if !ok {
						break
					}
					s = parent
				}
				require.Equal(t, []string{"command traced", "river.work/retrain", "river.insert_many", "record delivery",
					"POST /webhooks/huggingface"}, chain, "attempt %d", attempt+1)
			}
			require.NotEqual(t, got[0], got[1], "each attempt has its own command span")

			// The quiet period snoozed the job first: that work is in the trace too.
			snoozed := 0
			for _, s := range spans {
				if s.Name == "river.work/retrain" && hasAttr(s, "snooze") {
					snoozed++
					require.Equal(t, traceID, s.SpanContext.TraceID())
				}
			}
			require.Positive(t, snoozed, "spans: %v", spanNames(spans))
		})
	}
}

func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func hasAttr(s tracetest.SpanStub, key string) bool {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return true
		}
	}
	return false
}

func spanNames(spans tracetest.SpanStubs) []string {
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = s.Name
	}
	return names
}

func TestTracingConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		env     map[string]string
		want    tracing.Mode
		wantErr string
	}{
		{name: "off by default", want: "off"},
		{name: "on with an OTLP endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, want: "otlp"},
		{name: "explicitly off", env: map[string]string{"ORCHESTRATOR_TRACING": "off", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, want: "off"},
		{name: "unknown", env: map[string]string{"ORCHESTRATOR_TRACING": "yes"}, wantErr: "ORCHESTRATOR_TRACING must be otlp or off"},
		{name: "grpc", env: map[string]string{"ORCHESTRATOR_TRACING": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: "OTLP over HTTP only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseServe(nil, tc.env)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, cfg.Tracing)
		})
	}
}

// otlpCollector plays an OpenTelemetry collector's OTLP/HTTP traces endpoint and keeps what it receives.
type otlpCollector struct {
	server *httptest.Server

	mu     sync.Mutex
	bodies [][]byte
	types  []string
}

func newOTLPCollector(t *testing.T) *otlpCollector {
	t.Helper()
	c := &otlpCollector{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.bodies = append(c.bodies, body)
		c.types = append(c.types, r.Header.Get("Content-Type"))
		c.mu.Unlock()
		// An empty ExportTraceServiceResponse: every span accepted.
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})
	c.server = httptest.NewServer(mux)
	t.Cleanup(c.server.Close)
	return c
}

// received returns the bodies posted so far, all in one, and their content types.
func (c *otlpCollector) received() ([]byte, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Join(c.bodies, nil), slices.Clone(c.types)
}

// TestTracingOTLP runs the real binary configured by the standard OpenTelemetry environment alone, against a
// collector: the spans of a delivery, its job and its command, with the service name, reach it over OTLP/HTTP,
// and those still buffered when SIGTERM comes are sent before the process exits.
func TestTracingOTLP(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "orchestrator-otlp-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := buildBinary(t, dir)
	url, _ := dbtest.NewSchema(t)
	out := filepath.Join(dir, "traceparent")
	cfg := writeConfig(t, dir, `
mappings:
  - name: traced
    dataset: acme/traced
    command: ["sh", "-c", "printf '%s' \"$TRACEPARENT\" > `+out+`"]
`)
	collector := newOTLPCollector(t)
	p := startProcess(t, bin, freePort(t), []string{"DATABASE_URL=" + url, "HUGGINGFACE_WEBHOOK_SECRET=" + e2eSecret,
		"ORCHESTRATOR_CONFIG=" + cfg, "OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.server.URL,
		"OTEL_SERVICE_NAME=orchestrator-otlp-test",
		// Nothing goes out before shutdown, which must then send it all.
		"OTEL_BSP_SCHEDULE_DELAY=600000"})

	res := postDelivery(t, p.base, push("acme/traced", randomRevision()))
	run := waitRun(t, p.base, int64(res["runs"].([]any)[0].(float64)), "succeeded", "failed")
	require.Equal(t, "succeeded", run.Status, run.Error)
	traceparent, err := os.ReadFile(out)
	require.NoError(t, err)
	match := traceParentRE.FindStringSubmatch(string(traceparent))
	require.NotNil(t, match, "TRACEPARENT %q", traceparent)
	traceID, err := trace.TraceIDFromHex(match[1])
	require.NoError(t, err)
	spanID, err := trace.SpanIDFromHex(match[2])
	require.NoError(t, err)
	body, _ := collector.received()
	require.Empty(t, body, "the batch waits for its delay or the shutdown")

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "exit after SIGTERM: %s", p.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit 30 s after SIGTERM: %s", p.logs)
	}

	require.Contains(t, p.logs.String(), "tracing is on")
	body, types := collector.received()
	require.NotEmpty(t, types, "no spans reached the collector: %s", p.logs)
	for _, ct := range types {
		require.Equal(t, "application/x-protobuf", ct)
	}
	// The protobuf holds names as they are and ids as their bytes.
	for _, want := range []string{"POST /webhooks/huggingface", "record delivery", "river.insert_many",
		"river.work/retrain", "command traced", "orchestrator-otlp-test"} {
		require.True(t, bytes.Contains(body, []byte(want)), "%q was not exported", want)
	}
	require.True(t, bytes.Contains(body, traceID[:]), "the command's trace was not exported")
	require.True(t, bytes.Contains(body, spanID[:]), "the command's span was not exported")
}
