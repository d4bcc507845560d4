package tracing

import (
	"context"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Environment variables that carry a trace to a command, as OpenTelemetry's SDKs read them.
const (
	EnvTraceParent = "TRACEPARENT"
	EnvTraceState  = "TRACESTATE"
)

// CommandEnv returns env without TRACEPARENT and TRACESTATE, then, when ctx holds a valid span, with them set
// to that span in the W3C format (TRACEPARENT=00-<trace id>-<span id>-<flags>; TRACESTATE only when not
// empty), so that a command's own tracing joins the trace. Without a span (tracing is off) the command gets
// neither, whatever the orchestrator's own environment had.
func CommandEnv(ctx context.Context, env []string) []string {
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return name == EnvTraceParent || name == EnvTraceState
	})
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return env
	}
	carrier := propagation.MapCarrier{}
	Propagator.Inject(ctx, carrier)
	if v := carrier.Get("traceparent"); v != "" {
		env = append(env, EnvTraceParent+"="+v)
	}
	if v := carrier.Get("tracestate"); v != "" {
		env = append(env, EnvTraceState+"="+v)
	}
	return env
}
