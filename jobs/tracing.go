package jobs

import (
	"context"
	"encoding/json"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/tracing"
)

// tracerName names the spans this package starts.
const tracerName = "github.com/retrainhq/orchestrator/jobs"

// tracingMiddleware returns River's middleware for tracing with tp, none when tp is nil. Inserting a job
// records the inserting span's context in the job's metadata; working it starts the job's span as a child of
// that span, so that a run's every attempt, however much later it runs (a quiet period, a wait for a slot, a
// retry), stays in the trace of the delivery that created it.
func tracingMiddleware(tp trace.TracerProvider) []rivertype.Middleware {
	if tp == nil {
		return nil
	}
	return []rivertype.Middleware{
		// First, so that it runs outside River's span and gives it its parent.
		river.WorkerMiddlewareFunc(workInInsertTrace),
		otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
			EnableTracePropagation:      true,
			EnableWorkSpanJobKindSuffix: true,
			TracerProvider:              tp,
			MeterProvider:               metricnoop.NewMeterProvider(), // the Prometheus metrics are the metrics
		}),
	}
}

// workInInsertTrace makes the span context recorded in a job's metadata at insertion the parent of the
// job's work. River's own middleware only links to it, which would start a new trace for every attempt.
func workInInsertTrace(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	if len(job.Metadata) == 0 || trace.SpanContextFromContext(ctx).IsValid() {
		return doInner(ctx)
	}
	var meta map[string]any
	if err := json.Unmarshal(job.Metadata, &meta); err != nil {
		return doInner(ctx)
	}
	carrier := propagation.MapCarrier{}
	for _, key := range tracing.Propagator.Fields() {
		if v, ok := meta[key].(string); ok {
			carrier[key] = v
		}
	}
	return doInner(tracing.Propagator.Extract(ctx, carrier))
}

// startCommandSpan starts the span of one attempt's command, a child of the job's span in ctx; nil tracer:
// no span, and ctx as it is.
func startCommandSpan(ctx context.Context, tracer trace.Tracer, m *orchestrator.Mapping, run *orchestrator.Run, attempt int, argv []string) (context.Context, trace.Span) {
	if tracer == nil {
		return ctx, nil
	}
	return tracer.Start(ctx, "command "+m.Name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(
		attribute.Int64("run.id", run.ID),
		attribute.Int("run.attempt", attempt),
		attribute.String("mapping", m.Name),
		attribute.String("dataset", run.Dataset),
		attribute.String("dataset.ref", run.Ref),
		attribute.String("dataset.revision", run.Revision),
		attribute.String("process.executable.name", argv[0]),
	))
}

// endCommandSpan records what became of the command and ends its span.
func endCommandSpan(span trace.Span, res Result, status string) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.String("run.status", status))
	if res.ExitCode >= 0 {
		span.SetAttributes(attribute.Int("process.exit.code", res.ExitCode))
	}
	if res.Signal != "" {
		span.SetAttributes(attribute.String("process.signal", res.Signal))
	}
	if res.Succeeded() {
		span.SetStatus(codes.Ok, "")
	} else {
		span.SetStatus(codes.Error, res.Describe())
	}
	span.End()
}
