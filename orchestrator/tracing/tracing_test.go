package tracing_test

import (
	"context"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/retrainhq/orchestrator/orchestrator/tracing"
)

func TestModeFromEnv(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		env     map[string]string
		want    tracing.Mode
		wantErr string
	}{
		{name: "off by default", want: tracing.ModeOff},
		{name: "an endpoint turns it on", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, want: tracing.ModeOTLP},
		{name: "a traces endpoint too", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, want: tracing.ModeOTLP},
		{name: "on without an endpoint", env: map[string]string{"ORCHESTRATOR_TRACING": "otlp"}, want: tracing.ModeOTLP},
		{name: "any case", env: map[string]string{"ORCHESTRATOR_TRACING": " OTLP "}, want: tracing.ModeOTLP},
		{name: "off wins over an endpoint", env: map[string]string{"ORCHESTRATOR_TRACING": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, want: tracing.ModeOff},
		{name: "http/protobuf", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, want: tracing.ModeOTLP},
		{name: "grpc is refused", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: "OTEL_EXPORTER_OTLP_PROTOCOL is \"grpc\""},
		{name: "grpc for traces is refused", env: map[string]string{"ORCHESTRATOR_TRACING": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, wantErr: "set it to http/protobuf"},
		{name: "grpc does not matter when off", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, want: tracing.ModeOff},
		{name: "unknown mode", env: map[string]string{"ORCHESTRATOR_TRACING": "jaeger"}, wantErr: `ORCHESTRATOR_TRACING must be otlp or off, not "jaeger"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tracing.ModeFromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestSetup(t *testing.T) {
	t.Parallel()
	for _, mode := range []tracing.Mode{"", tracing.ModeOff} {
		provider, shutdown, err := tracing.Setup(context.Background(), mode)
		require.NoError(t, err)
		require.Nil(t, provider, "off: nothing to trace with")
		require.NoError(t, shutdown(context.Background()))
	}
	_, _, err := tracing.Setup(context.Background(), "zipkin")
	require.ErrorContains(t, err, `not "zipkin"`)
}

func TestCommandEnv(t *testing.T) {
	t.Parallel()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewInMemoryExporter()))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	spanCtx, span := provider.Tracer("test").Start(context.Background(), "command")
	defer span.End()
	state, err := trace.ParseTraceState("vendor=abc")
	require.NoError(t, err)
	withState := trace.ContextWithSpanContext(spanCtx, span.SpanContext().WithTraceState(state))
	inherited := []string{"PATH=/bin", "TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "TRACESTATE=old=1"}
	sc := span.SpanContext()
	want := "TRACEPARENT=00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"

	cases := []struct {
		name string
		ctx  context.Context
		env  []string
		want []string
	}{
		{name: "no span: neither variable", ctx: context.Background(), env: inherited, want: []string{"PATH=/bin"}},
		{name: "a span", ctx: spanCtx, env: inherited, want: []string{"PATH=/bin", want}},
		{name: "a span with a trace state", ctx: withState, env: []string{"PATH=/bin"}, want: []string{"PATH=/bin", want, "TRACESTATE=vendor=abc"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := append([]string(nil), tc.env...)
			require.Equal(t, tc.want, tracing.CommandEnv(tc.ctx, tc.env))
			require.Equal(t, before, tc.env, "the caller's slice is left as it was")
		})
	}
	require.Regexp(t, regexp.MustCompile(`^TRACEPARENT=00-[0-9a-f]{32}-[0-9a-f]{16}-01$`), want)
}
