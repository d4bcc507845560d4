package web

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// deliveryOutcome is what came of a webhook request, counted by orchestrator_webhook_deliveries_total.
type deliveryOutcome string

// Delivery outcomes.
const (
	outcomeAccepted     deliveryOutcome = "accepted"     // at least one run was queued
	outcomeDuplicate    deliveryOutcome = "duplicate"    // every triggering ref already had its run
	outcomeIgnored      deliveryOutcome = "ignored"      // nothing to run
	outcomeUnauthorized deliveryOutcome = "unauthorized" // missing or wrong secret
	outcomeInvalid      deliveryOutcome = "invalid"      // not a delivery we can read
	outcomeTooLarge     deliveryOutcome = "too_large"    // body over the limit
	outcomeUnavailable  deliveryOutcome = "unavailable"  // the database could not take it
)

// deliveryOutcomes lists every delivery outcome.
var deliveryOutcomes = []deliveryOutcome{outcomeAccepted, outcomeDuplicate, outcomeIgnored, outcomeUnauthorized,
	outcomeInvalid, outcomeTooLarge, outcomeUnavailable}

// metrics are the server's Prometheus metrics, on a registry of its own.
type metrics struct {
	registry        *prometheus.Registry
	deliveries      *prometheus.CounterVec
	ignored         *prometheus.CounterVec
	webhookDuration prometheus.Histogram
	secretFailures  prometheus.Counter
	previousSecret  prometheus.Counter
	authFailures    prometheus.Counter
	authThrottled   prometheus.Counter
}

func newMetrics(registry *prometheus.Registry, store *orchestrator.Store) *metrics {
	if registry == nil {
		registry = prometheus.NewRegistry()
	}
	m := &metrics{
		registry: registry,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchestrator_webhook_deliveries_total",
			Help: "Webhook deliveries by outcome: accepted, duplicate, ignored, unauthorized, invalid, too_large, unavailable.",
		}, []string{"outcome"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchestrator_webhook_ignored_total",
			Help: "Ignored webhook deliveries by reason: not_content_update, not_dataset, no_refs, no_mapping, pull_request_ref, bot_ref, ref_not_watched, ref_deleted, malformed_sha (a delivery ignored for several counts once, by its first decision).",
		}, []string{"reason"}),
		webhookDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orchestrator_webhook_duration_seconds",
			Help:    "Time to answer a webhook delivery.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		secretFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orchestrator_webhook_secret_failures_total",
			Help: "Webhook requests with a missing or wrong secret. The Hub retries them and may suspend the webhook.",
		}),
		previousSecret: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orchestrator_webhook_previous_secret_total",
			Help: "Deliveries authenticated with HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS: the rotation is not finished while this grows.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orchestrator_admin_auth_failures_total",
			Help: "Wrong admin tokens on the login form, as Bearer or as Basic password: a steady rise is someone guessing.",
		}),
		authThrottled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orchestrator_admin_auth_throttled_total",
			Help: "Admin authentications refused with 429 because their client had failed too often.",
		}),
	}
	for _, outcome := range deliveryOutcomes {
		m.deliveries.WithLabelValues(string(outcome))
	}
	for _, cause := range orchestrator.IgnoreCauses {
		m.ignored.WithLabelValues(string(cause))
	}
	m.registry.MustRegister(m.deliveries, m.ignored, m.webhookDuration, m.secretFailures, m.previousSecret, m.authFailures, m.authThrottled,
		queueCollector{store},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// queueCollector reports the queue's depth when scraped, from the database, so that every process reports the
// same, cluster-wide figures.
type queueCollector struct {
	store *orchestrator.Store
}

var (
	queueWaitingDesc = prometheus.NewDesc("orchestrator_runs_waiting",
		"Runs queued or waiting to be retried, in the whole cluster.", nil, nil)
	queueRunningDesc = prometheus.NewDesc("orchestrator_runs_running",
		"Runs whose command is executing, in the whole cluster.", nil, nil)
	queueOldestDesc = prometheus.NewDesc("orchestrator_oldest_waiting_run_age_seconds",
		"How long the oldest waiting run has waited; 0 when none waits.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueWaitingDesc
	ch <- queueRunningDesc
	ch <- queueOldestDesc
}

// Collect implements prometheus.Collector. A database that does not answer leaves the figures out.
func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	if c.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	q, err := c.store.RunQueueStats(ctx)
	if err != nil {
		return
	}
	age := 0.0
	if q.OldestWaitAt != nil {
		age = time.Since(*q.OldestWaitAt).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(queueWaitingDesc, prometheus.GaugeValue, float64(q.Waiting))
	ch <- prometheus.MustNewConstMetric(queueRunningDesc, prometheus.GaugeValue, float64(q.Running))
	ch <- prometheus.MustNewConstMetric(queueOldestDesc, prometheus.GaugeValue, age)
}

// handler serves the metrics in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// failureLog logs failed webhook secrets at most once per interval, with how many there were and from where,
// so that an operator notices a misconfigured webhook before the Hub suspends it, without a flood of lines.
type failureLog struct {
	interval time.Duration
	log      func(count int, remotes []string)

	mu      sync.Mutex
	last    time.Time
	count   int
	remotes map[string]bool
}

// add counts one failure and logs the batch when the interval has passed.
func (f *failureLog) add(now time.Time, remote string) {
	f.mu.Lock()
	f.count++
	if f.remotes == nil {
		f.remotes = map[string]bool{}
	}
	if len(f.remotes) < 10 {
		f.remotes[remote] = true
	}
	if now.Sub(f.last) < f.interval {
		f.mu.Unlock()
		return
	}
	count, remotes := f.count, make([]string, 0, len(f.remotes))
	for r := range f.remotes {
		remotes = append(remotes, r)
	}
	f.last, f.count, f.remotes = now, 0, nil
	f.mu.Unlock()
	f.log(count, remotes)
}
