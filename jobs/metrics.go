package jobs

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// passOutcome is how a catch-up pass went, counted by orchestrator_reconcile_passes_total.
type passOutcome string

// Outcomes of a catch-up pass.
const (
	reconcileOK      passOutcome = "ok"      // the Hub answered for every dataset asked, and none waits out a failure
	reconcilePartial passOutcome = "partial" // the Hub answered for some datasets; others failed or wait out a failure
	reconcileFailed  passOutcome = "failed"  // the Hub answered for none of the datasets, which failed or wait out a failure
	reconcileError   passOutcome = "error"   // the pass stopped early: the database failed, or the pass ran out of time
)

// passOutcomes lists every outcome of a catch-up pass.
var passOutcomes = []passOutcome{reconcileOK, reconcilePartial, reconcileFailed, reconcileError}

// revisionResult is what catch-up found of a watched ref on the Hub, per mapping, counted by
// orchestrator_reconcile_revisions_total.
type revisionResult string

// Results of a watched ref.
const (
	revisionUnchanged revisionResult = "unchanged" // the Hub's commit is the revision recorded
	revisionCaughtUp  revisionResult = "caught_up" // a commit no webhook brought: a run was queued
	revisionBaseline  revisionResult = "baseline"  // the ref seen for the first time: recorded, not run
	revisionDuplicate revisionResult = "duplicate" // a commit not recorded for the ref, but which already has its run
)

// revisionResults lists every result of a watched ref.
var revisionResults = []revisionResult{revisionUnchanged, revisionCaughtUp, revisionBaseline, revisionDuplicate}

// notifyOutcome is what came of a notification delivery attempt, counted by orchestrator_notifications_total.
type notifyOutcome string

// Outcomes of a notification delivery attempt.
const (
	notifyDelivered notifyOutcome = "delivered" // the target answered 2xx
	notifyRetry     notifyOutcome = "retry"     // the attempt failed and another follows
	notifyFailed    notifyOutcome = "failed"    // the attempt failed and the notification is given up
)

// Metrics are the workers' and catch-up's Prometheus metrics.
type Metrics struct {
	runsFinished  *prometheus.CounterVec
	runDuration   *prometheus.HistogramVec
	notifications *prometheus.CounterVec

	reconcilePasses    *prometheus.CounterVec
	reconcileRevisions *prometheus.CounterVec
	reconcileFailures  prometheus.Counter
	reconcileLastOK    prometheus.Gauge

	filesChecks   *prometheus.CounterVec
	filesDuration prometheus.Histogram

	hfJobs    *prometheus.CounterVec
	hfJobCost prometheus.Counter
}

// NewMetrics creates the workers' and catch-up's metrics and registers them with reg.
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
		reconcilePasses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchestrator_reconcile_passes_total",
			Help: "Catch-up passes this process ran, by outcome: ok (the Hub answered for every dataset), partial (for some), failed (for none), error (the pass stopped early).",
		}, []string{"outcome"}),
		reconcileRevisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchestrator_reconcile_revisions_total",
			Help: "Watched refs catch-up found on the Hub, per mapping, by result: unchanged, caught_up (a missed commit was queued), baseline (first seen, not run), duplicate (the commit already had its run).",
		}, []string{"result"}),
		reconcileFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orchestrator_reconcile_dataset_failures_total",
			Help: "Datasets catch-up could not learn the refs of, in a pass: the Hub failed to answer, or was not asked after it stopped answering.",
		}),
		reconcileLastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orchestrator_reconcile_last_success_timestamp_seconds",
			Help: "When this process last ended a catch-up pass in which the Hub answered (outcome ok or partial), in Unix seconds; 0 before the first.",
		}),
		filesChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchestrator_changed_files_checks_total",
			Help: "Looks at a run's changed files, by outcome: watched (the run went ahead), unwatched (skipped), unknown (the Hub could not tell; the run went ahead), listed (a mapping without paths: shown and given to the command).",
		}, []string{"outcome"}),
		filesDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orchestrator_changed_files_check_seconds",
			Help:    "How long a look at a run's changed files took, the Hub's listings (or the kept ones) and the comparison.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		hfJobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orchestrator_hf_jobs_total",
			Help: "Hugging Face Jobs this process followed to their end, by outcome: completed, error, timeout, canceled, deleted.",
		}, []string{"outcome"}),
		hfJobCost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orchestrator_hf_jobs_cost_usd_total",
			Help: "Estimated cost in US dollars of the Hugging Face Jobs this process followed to their end: running minutes, each begun minute counted, times the flavor's price per minute.",
		}),
	}
	for _, outcome := range hfJobOutcomes {
		m.hfJobs.WithLabelValues(outcome)
	}
	for _, outcome := range filesOutcomes {
		m.filesChecks.WithLabelValues(outcome)
	}
	for _, outcome := range passOutcomes {
		m.reconcilePasses.WithLabelValues(string(outcome))
	}
	for _, result := range revisionResults {
		m.reconcileRevisions.WithLabelValues(string(result))
	}
	reg.MustRegister(m.runsFinished, m.runDuration, m.notifications, m.reconcilePasses, m.reconcileRevisions, m.reconcileFailures,
		m.reconcileLastOK, m.filesChecks, m.filesDuration, m.hfJobs, m.hfJobCost)
	return m
}

// filesOutcomes lists the outcomes of a look at a run's changed files.
var filesOutcomes = []string{string(orchestrator.FilesWatched), string(orchestrator.FilesUnwatched), string(orchestrator.FilesUnknown), "listed"}

// hfJobOutcomes lists the outcomes of a Hugging Face Job followed to its end.
var hfJobOutcomes = []string{"completed", "error", "timeout", "canceled", "deleted"}

// observeHFJob counts a Hugging Face Job that ended, and its estimated cost in micro-USD.
func (m *Metrics) observeHFJob(outcome string, costMicroUSD int64) {
	if m == nil {
		return
	}
	m.hfJobs.WithLabelValues(outcome).Inc()
	m.hfJobCost.Add(float64(costMicroUSD) / 1e6)
}

// observeFiles records a look at a run's changed files: its check (empty for a mapping without paths, whose
// files were listed to be shown, or FilesUnknown) and how long it took.
func (m *Metrics) observeFiles(check orchestrator.FilesCheck, took time.Duration) {
	if m == nil {
		return
	}
	outcome := string(check)
	if check == "" {
		outcome = "listed"
	}
	m.filesChecks.WithLabelValues(outcome).Inc()
	m.filesDuration.Observe(took.Seconds())
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
func (m *Metrics) observeNotification(event orchestrator.NotifyEvent, outcome notifyOutcome) {
	if m == nil {
		return
	}
	m.notifications.WithLabelValues(string(event), string(outcome)).Inc()
}

// observePass records a catch-up pass that ended at now, with its result and error.
func (m *Metrics) observePass(res *ReconcileResult, err error, now time.Time) {
	if m == nil {
		return
	}
	if res != nil {
		m.reconcileFailures.Add(float64(len(res.Failed)))
	}
	if err != nil || res == nil {
		m.reconcilePasses.WithLabelValues(string(reconcileError)).Inc()
		return
	}
	answered := 0
	for _, ds := range res.Asked {
		if !slices.Contains(res.Failed, ds) {
			answered++
		}
	}
	outcome := reconcileOK
	switch {
	case len(res.Failed) == 0 && len(res.Held) == 0:
	case answered > 0:
		outcome = reconcilePartial
	default:
		outcome = reconcileFailed
	}
	m.reconcilePasses.WithLabelValues(string(outcome)).Inc()
	if outcome != reconcileFailed {
		m.reconcileLastOK.Set(float64(now.UnixNano()) / 1e9)
	}
}

// observeRevisions records what catch-up found for one dataset: how many watched refs are unchanged, and the
// decisions of the delivery it recorded for the others.
func (m *Metrics) observeRevisions(unchanged int, decisions []orchestrator.Decision) {
	if m == nil {
		return
	}
	m.reconcileRevisions.WithLabelValues(string(revisionUnchanged)).Add(float64(unchanged))
	for _, d := range decisions {
		switch d.Decision {
		case orchestrator.DecisionQueued:
			m.reconcileRevisions.WithLabelValues(string(revisionCaughtUp)).Inc()
		case orchestrator.DecisionBaseline:
			m.reconcileRevisions.WithLabelValues(string(revisionBaseline)).Inc()
		case orchestrator.DecisionDuplicate:
			m.reconcileRevisions.WithLabelValues(string(revisionDuplicate)).Inc()
		}
	}
}
