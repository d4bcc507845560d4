package jobs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Metrics are the workers' Prometheus metrics.
type Metrics struct {
	runsFinished  *prometheus.CounterVec
	runDuration   *prometheus.HistogramVec
	notifications *prometheus.CounterVec
}

// NewMetrics creates the workers' metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchestrator_runs_finished_total",
			Help: "Attempts that ended, by mapping and the status the run took: succeeded, failed, retrying, cancelled, superseded, queued (interrupted by a shutdown).",
		}, []string{"mapping", "status"}),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orchestrator_run_duration_seconds",
			Help:    "How long an attempt's command ran, by mapping.",
			Buckets: []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400},
		}, []string{"mapping"}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchestrator_notifications_total",
			Help: "Notification delivery attempts, by event and outcome: delivered, retry (another attempt follows) or failed (given up).",
		}, []string{"event", "outcome"}),
	}
	reg.MustRegister(m.runsFinished, m.runDuration, m.notifications)
	return m
}

// observe records an attempt that ended.
func (m *Metrics) observe(mapping string, status orchestrator.RunStatus, took time.Duration) {
	if m == nil {
		return
	}
	m.runsFinished.WithLabelValues(mapping, string(status)).Inc()
	if took > 0 {
		m.runDuration.WithLabelValues(mapping).Observe(took.Seconds())
	}
}

// observeNotification counts a notification delivery attempt.
func (m *Metrics) observeNotification(event orchestrator.NotifyEvent, outcome string) {
	if m == nil {
		return
	}
	m.notifications.WithLabelValues(string(event), outcome).Inc()
}
