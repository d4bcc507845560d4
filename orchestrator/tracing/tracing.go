// Package tracing sets up the optional OpenTelemetry tracing of deliveries, from the webhook's request through
// the queue to the training command, and hands a run's trace to its command as TRACEPARENT.
//
// Tracing is off unless configured: no exporter, no goroutine, and the instrumented code is not installed at
// all. It is on with an OTLP endpoint in the standard environment (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), or with ORCHESTRATOR_TRACING=otlp; spans are then sent with OTLP over
// HTTP (protobuf), which the OpenTelemetry Collector and most tracing backends take.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Mode says whether and how spans go out.
type Mode string

// Modes of tracing.
const (
	// ModeOff traces nothing.
	ModeOff Mode = "off"
	// ModeOTLP sends spans with OTLP over HTTP, to where the standard OTEL_EXPORTER_OTLP_* variables say
	// (http://localhost:4318 when none is set).
	ModeOTLP Mode = "otlp"
)

// Modes lists every tracing mode.
var Modes = []Mode{ModeOff, ModeOTLP}

// ServiceNameDefault is the service name spans carry when OTEL_SERVICE_NAME is unset.
const ServiceNameDefault = "orchestrator"

// Propagator reads and writes trace context in the W3C format (traceparent, tracestate): in HTTP headers, in
// job metadata and in a command's environment.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// ModeFromEnv returns the tracing mode the environment asks for: ORCHESTRATOR_TRACING (otlp or off) when set;
// otherwise otlp when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and off when
// neither is. An unknown mode, or an OTLP protocol other than http/protobuf, is an error that says what to set.
func ModeFromEnv(getenv func(string) string) (Mode, error) {
	mode := Mode(strings.ToLower(strings.TrimSpace(getenv("ORCHESTRATOR_TRACING"))))
	switch mode {
	case "":
		mode = ModeOff
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			mode = ModeOTLP
		}
	case ModeOff, ModeOTLP:
	default:
		return "", fmt.Errorf("ORCHESTRATOR_TRACING must be otlp or off, not %q", getenv("ORCHESTRATOR_TRACING"))
	}
	if mode == ModeOff {
		return mode, nil
	}
	for _, key := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := getenv(key); v != "" && v != "http/protobuf" {
			return "", fmt.Errorf("%s is %q: spans are sent with OTLP over HTTP only; set it to http/protobuf "+
				"(the collector's port 4318) or unset it", key, v)
		}
	}
	return mode, nil
}

// Setup starts tracing in mode. It returns the tracer provider to pass to the instrumented parts, nil when
// tracing is off, and a shutdown function that sends the spans still buffered and stops the exporter; call it
// once everything that traces has stopped. Off, it starts nothing and shutdown does nothing.
//
// The exporter and the resource follow the standard environment: OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME (ServiceNameDefault when
// unset), OTEL_RESOURCE_ATTRIBUTES, and OTEL_TRACES_SAMPLER with OTEL_TRACES_SAMPLER_ARG (every trace when
// unset, or as the caller of an incoming traceparent decided).
func Setup(ctx context.Context, mode Mode) (trace.TracerProvider, func(context.Context) error, error) {
	noop := func(context.Context) error { return nil }
	switch mode {
	case "", ModeOff:
		return nil, noop, nil
	case ModeOTLP:
	default:
		return nil, noop, fmt.Errorf("tracing mode must be %s or %s, not %q", ModeOTLP, ModeOff, mode)
	}
	// Neither call connects: the exporter sends its first batch when it has one, and a collector that is
	// down costs dropped spans and a logged error, never a failed start.
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, noop, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(ServiceNameDefault)), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exporter.Shutdown(ctx)
		return nil, noop, fmt.Errorf("tracing resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	shutdown := func(ctx context.Context) error {
		if err := provider.Shutdown(ctx); err != nil {
			return fmt.Errorf("flush traces: %w", err)
		}
		return nil
	}
	return provider, shutdown, nil
}
