package web

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/tracing"
)

// tracerName names the spans this package starts.
const tracerName = "github.com/retrainhq/orchestrator/web"

// traceWebhook wraps the webhook's handler in a server span when tracing is on, continuing the trace of an
// incoming traceparent header; off, it returns h as it is. Only the webhook is traced: pages, the API,
// /metrics and the health checks are not.
func (s *Server) traceWebhook(h http.Handler) http.Handler {
	if s.tracerProvider == nil {
		return h
	}
	return otelhttp.NewHandler(h, "POST /webhooks/huggingface",
		otelhttp.WithTracerProvider(s.tracerProvider),
		otelhttp.WithPropagators(tracing.Propagator),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), // the Prometheus metrics are the metrics
	)
}

// startDeliverySpan starts the span of a delivery's recording, the transaction that also queues its runs;
// off, it returns ctx and no span.
func (s *Server) startDeliverySpan(ctx context.Context, d *orchestrator.Delivery) (context.Context, trace.Span) {
	if s.tracerProvider == nil {
		return ctx, nil
	}
	return s.tracerProvider.Tracer(tracerName).Start(ctx, "record delivery", trace.WithAttributes(
		attribute.String("delivery.event", d.Event()),
		attribute.String("dataset", d.RepoName),
		attribute.Int("delivery.refs", len(d.Refs)),
	))
}

// endDeliverySpan records what the recording decided, or its error, and ends the span.
func endDeliverySpan(span trace.Span, res *orchestrator.DeliveryInsertResult, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "could not record the delivery")
	} else {
		span.SetAttributes(attribute.Int64("delivery.id", res.DeliveryID), attribute.Int64Slice("run.ids", res.RunIDs),
			attribute.Int("delivery.decisions", len(res.Decisions)))
	}
	span.End()
}
