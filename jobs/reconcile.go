package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// Defaults of catch-up with the Hub.
const (
	// ReconcileIntervalDefault is how often catch-up asks the Hub for the refs of every watched dataset.
	ReconcileIntervalDefault = 10 * time.Minute
	// ReconcileBackoffBaseDefault is how long a dataset the Hub failed to answer for waits before it is asked
	// again; each further failure in a row doubles the wait, up to the interval.
	ReconcileBackoffBaseDefault = 30 * time.Second
	// reconcileUnreachableAfter is how many datasets in a row the Hub may leave without any answer (no
	// connection, a timeout) before a pass stops asking and records the rest as failed too.
	reconcileUnreachableAfter = 3
	// reconcileTimeoutMin is the least time a pass may take before River cancels it.
	reconcileTimeoutMin = 5 * time.Minute
)

// PatternNote is the catch-up status of a mapping's dataset pattern.
const PatternNote = "a pattern, not one dataset: catch-up asks the Hub about exact dataset names only, so runs for it start from webhooks alone"

// Hub is what catch-up asks the Hugging Face Hub. *hub.Client implements it.
type Hub interface {
	// DatasetRefs returns a dataset's branches, tags and conversions with the commit each points at.
	DatasetRefs(ctx context.Context, repo string) (hub.Refs, error)
	// DatasetID returns the Hub's id of a dataset, which webhooks send as repo.id.
	DatasetID(ctx context.Context, repo string) (string, error)
}

// ReconcileArgs is the River job of one catch-up pass. At most one exists at a time, whichever process
// inserted it: River's periodic jobs are inserted by the elected leader only, and the job is unique while it
// waits or runs.
type ReconcileArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return "reconcile" }

// InsertOpts puts the job on the default queue, once: a failed pass is not retried, the next one comes anyway.
func (ReconcileArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       river.QueueDefault,
		MaxAttempts: 1,
		UniqueOpts: river.UniqueOpts{ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning, rivertype.JobStateScheduled,
		}},
	}
}

// Reconciler catches up with the Hub: webhooks get lost (the orchestrator was down, the Hub suspended the
// webhook after failures, a daily cap was reached), so every Interval, and once when the queue's leader starts,
// it asks the Hub for the current commit of every ref each enabled mapping watches, compares it with the newest
// revision recorded for that mapping and ref, and records what differs as a delivery with source "reconcile".
// That delivery goes through the same decisions and deduplication as a webhook: a late webhook for the same
// revision is a duplicate, and a ref seen for the first time is recorded as a baseline without a run unless the
// mapping sets run_on_baseline.
//
// Only mappings whose dataset is an exact name are caught up; a dataset pattern (acme/*) cannot be asked
// about, and its status says so. When the Hub cannot be reached the orchestrator goes on with webhooks alone:
// each dataset's status records since when it fails and why, a dataset is not asked again before the Hub's
// Retry-After, and repeated failures back off exponentially from BackoffBase up to Interval.
type Reconciler struct {
	// Store is where revisions, deliveries and the status are recorded. Required.
	Store *orchestrator.Store
	// Hub answers the questions. Required.
	Hub Hub
	// Interval is the time between two passes. Required, positive.
	Interval time.Duration
	// BackoffBase is the first wait after a failure. Defaults to ReconcileBackoffBaseDefault, at most Interval.
	BackoffBase time.Duration
	// Metrics, when set, counts the passes and what they found.
	Metrics *Metrics
	// Logger receives catch-up's log lines. Defaults to slog.Default().
	Logger *slog.Logger

	mu       sync.Mutex
	lastFull time.Time
}

// ReconcileResult is what a pass did.
type ReconcileResult struct {
	// Asked lists the datasets the Hub was asked about, Failed those it did not answer for (or that were not
	// asked because it answered for none), Held those not asked because they wait out a failure.
	Asked, Failed, Held []string
	// Patterns lists the mappings' dataset patterns, which cannot be caught up.
	Patterns []string
	// Deliveries and Runs are the catch-up deliveries recorded and the runs they created.
	Deliveries, Runs []int64
	// Decisions are the decisions of those deliveries.
	Decisions []orchestrator.Decision
	// RetryIn is when the earliest failing dataset may be asked again; zero when none fails.
	RetryIn time.Duration
}

func (r *Reconciler) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.Default()
	}
	return r.Logger
}

func (r *Reconciler) backoffBase() time.Duration {
	base := r.BackoffBase
	if base <= 0 {
		base = ReconcileBackoffBaseDefault
	}
	return min(base, r.Interval)
}

// register adds the catch-up worker, the default queue it runs on (one worker, unless the queue is served
// already) and its periodic job to a River configuration. A nil Reconciler adds nothing: catch-up is off.
func (r *Reconciler) register(workers *river.Workers, cfg *river.Config) error {
	if r == nil {
		return nil
	}
	if r.Store == nil || r.Hub == nil || r.Interval <= 0 {
		return errors.New("reconciler: Store, Hub and a positive Interval are required")
	}
	if err := river.AddWorkerSafely(workers, &ReconcileWorker{r: r}); err != nil {
		return fmt.Errorf("add reconcile worker: %w", err)
	}
	if cfg.Queues == nil {
		cfg.Queues = map[string]river.QueueConfig{}
	}
	if _, served := cfg.Queues[river.QueueDefault]; !served {
		cfg.Queues[river.QueueDefault] = river.QueueConfig{MaxWorkers: 1}
	}
	cfg.PeriodicJobs = append(cfg.PeriodicJobs, river.NewPeriodicJob(
		river.PeriodicInterval(r.Interval),
		func() (river.JobArgs, *river.InsertOpts) { return ReconcileArgs{}, nil },
		&river.PeriodicJobOpts{ID: "reconcile", RunOnStart: true},
	))
	return nil
}

// ReconcileWorker runs catch-up passes.
type ReconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	r *Reconciler
}

// Timeout bounds a pass: the interval, and at least five minutes.
func (w *ReconcileWorker) Timeout(*river.Job[ReconcileArgs]) time.Duration { return w.r.timeout() }

// timeout bounds a pass: the interval, and at least five minutes.
func (r *Reconciler) timeout() time.Duration { return max(r.Interval, reconcileTimeoutMin) }

// Work runs a pass: a full one when the last full pass of this process is an interval ago (or there was none),
// otherwise one over the failing datasets whose wait is over. When a failing dataset may be asked again before
// the next interval, the job comes back then.
func (w *ReconcileWorker) Work(ctx context.Context, job *river.Job[ReconcileArgs]) error {
	w.r.mu.Lock()
	full := w.r.lastFull.IsZero() || time.Since(w.r.lastFull) >= w.r.Interval*9/10
	w.r.mu.Unlock()
	res, err := w.r.pass(ctx, full)
	if err != nil {
		if ctx.Err() == nil {
			w.r.logger().WarnContext(ctx, "catch-up with the Hub stopped early; the next pass tries again", "error", err)
		}
		return err
	}
	if res.RetryIn > 0 && res.RetryIn < w.r.Interval {
		return river.JobSnooze(max(res.RetryIn, time.Second))
	}
	return nil
}

// ReconcileOnce runs a full pass now: every dataset an enabled mapping names, except those waiting out a
// failure.
func (r *Reconciler) ReconcileOnce(ctx context.Context) (*ReconcileResult, error) {
	return r.pass(ctx, true)
}

// pass asks the Hub about every dataset (full) or the failing ones only, records what it finds, and counts
// the pass in the metrics.
func (r *Reconciler) pass(ctx context.Context, full bool) (*ReconcileResult, error) {
	res, err := r.reconcile(ctx, full)
	r.Metrics.observePass(res, err, time.Now())
	return res, err
}

// reconcile does the work of pass.
func (r *Reconciler) reconcile(ctx context.Context, full bool) (*ReconcileResult, error) {
	if full {
		r.mu.Lock()
		r.lastFull = time.Now()
		r.mu.Unlock()
	}
	mappings, err := r.Store.MappingListEnabled(ctx)
	if err != nil {
		return nil, fmt.Errorf("list mappings: %w", err)
	}
	byDataset := map[string][]orchestrator.Mapping{}
	var patterns []string
	for _, m := range mappings {
		if orchestrator.IsDatasetPattern(m.Dataset) {
			if !slices.Contains(patterns, m.Dataset) {
				patterns = append(patterns, m.Dataset)
			}
			continue
		}
		byDataset[m.Dataset] = append(byDataset[m.Dataset], m)
	}
	list, err := r.Store.ReconcileStatusList(ctx)
	if err != nil {
		return nil, fmt.Errorf("read catch-up status: %w", err)
	}
	statuses := make(map[string]orchestrator.ReconcileStatus, len(list))
	for _, st := range list {
		statuses[st.Dataset] = st
	}

	res := &ReconcileResult{Patterns: patterns}
	var nextAttempt time.Time
	noteNext := func(t *time.Time) {
		if t != nil && (nextAttempt.IsZero() || t.Before(nextAttempt)) {
			nextAttempt = *t
		}
	}
	datasets := make([]string, 0, len(byDataset))
	for ds := range byDataset {
		datasets = append(datasets, ds)
	}
	slices.Sort(datasets)

	unanswered := 0 // datasets in a row the Hub gave no answer for
	var unansweredErr error
	for _, ds := range datasets {
		st, known := statuses[ds]
		switch {
		case known && st.Held:
			res.Held = append(res.Held, ds)
			noteNext(st.NextAttemptAt)
			continue
		case !full && known && !st.Failing():
			continue
		}
		var hubErr error
		asked := unanswered < reconcileUnreachableAfter
		if asked {
			res.Asked = append(res.Asked, ds)
			var err error
			if hubErr, err = r.reconcileDataset(ctx, ds, byDataset[ds], res); err != nil {
				return res, err
			}
		} else {
			hubErr = fmt.Errorf("not asked: the Hub gave no answer for %d datasets in a row: %w", unanswered, unansweredErr)
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if hubErr == nil {
			unanswered = 0
			failingSince, err := r.Store.ReconcileStatusOK(ctx, ds)
			if err != nil {
				return res, fmt.Errorf("record catch-up of %s: %w", ds, err)
			}
			if failingSince != nil {
				r.logger().InfoContext(ctx, "the Hub answers again; catch-up resumes", "dataset", ds, "failing_since", *failingSince)
			}
			continue
		}

		var statusErr *hub.StatusError
		var retryAfter time.Duration
		switch {
		case !asked:
		case errors.As(hubErr, &statusErr):
			unanswered = 0
			retryAfter = statusErr.RetryAfter
		default:
			unanswered++
			unansweredErr = hubErr
		}
		msg := hubErr.Error()
		if statusErr != nil {
			switch statusErr.Status {
			case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
				msg += " (check the dataset's name; set HF_TOKEN for a private dataset)"
			}
		}
		res.Failed = append(res.Failed, ds)
		st2, err := r.Store.ReconcileStatusFailed(ctx, orchestrator.ReconcileFailure{
			Dataset: ds, Error: msg, RetryAfter: retryAfter, BackoffBase: r.backoffBase(), BackoffMax: r.Interval,
		})
		if err != nil {
			return res, fmt.Errorf("record catch-up failure of %s: %w", ds, err)
		}
		noteNext(st2.NextAttemptAt)
		if st2.Failures == 1 {
			r.logger().WarnContext(ctx, "cannot catch up with the Hub; runs for this dataset start from webhooks alone until it answers",
				"dataset", ds, "error", hubErr, "next_attempt_at", st2.NextAttemptAt)
		} else {
			r.logger().DebugContext(ctx, "catch-up with the Hub still fails", "dataset", ds, "error", hubErr,
				"failures", st2.Failures, "next_attempt_at", st2.NextAttemptAt)
		}
	}

	// Patterns get their note; datasets no enabled mapping names anymore lose their status.
	for _, p := range patterns {
		if err := r.Store.ReconcileStatusNote(ctx, p, PatternNote); err != nil {
			return res, fmt.Errorf("record catch-up note: %w", err)
		}
	}
	if err := r.Store.ReconcileStatusPrune(ctx, append(slices.Clone(datasets), patterns...)); err != nil {
		return res, fmt.Errorf("prune catch-up status: %w", err)
	}
	if !nextAttempt.IsZero() {
		res.RetryIn = max(time.Until(nextAttempt), time.Millisecond)
	}
	return res, nil
}

// reconcileDataset asks the Hub for the refs of one dataset and records a catch-up delivery of every watched
// ref whose commit differs from the revision recorded for one of the mappings. hubErr is the Hub's failure to
// answer; err is a failure to record, which ends the pass.
func (r *Reconciler) reconcileDataset(ctx context.Context, dataset string, mappings []orchestrator.Mapping, res *ReconcileResult) (hubErr, err error) {
	refs, hubErr := r.Hub.DatasetRefs(ctx, dataset)
	if hubErr != nil {
		return hubErr, nil
	}
	var updates []orchestrator.RefUpdate
	seen := map[string]bool{}
	type mappingRef struct {
		mapping int64
		ref     string
	}
	unchanged := map[mappingRef]bool{}
	for _, m := range mappings {
		recorded, err := r.Store.RefRecordedRevisions(ctx, m.ID)
		if err != nil {
			return nil, fmt.Errorf("read the revisions recorded for mapping %s: %w", m.Name, err)
		}
		for _, ref := range refs.All() {
			if !m.WatchesRef(ref.Ref) || !orchestrator.ValidSha(ref.TargetCommit) {
				continue
			}
			if recorded[ref.Ref] == ref.TargetCommit {
				unchanged[mappingRef{m.ID, ref.Ref}] = true
				continue
			}
			if seen[ref.Ref] {
				continue
			}
			seen[ref.Ref] = true
			updates = append(updates, orchestrator.RefUpdate{Ref: ref.Ref, OldSha: recorded[ref.Ref], NewSha: ref.TargetCommit})
		}
	}
	if len(updates) == 0 {
		r.Metrics.observeRevisions(len(unchanged), nil)
		return nil, nil
	}

	// The Hub's id of the dataset makes the deduplication of (mapping, repo id, ref, revision) match the runs
	// of webhooks, which carry it as repo.id.
	repoID, hubErr := r.Hub.DatasetID(ctx, dataset)
	if hubErr != nil {
		return hubErr, nil
	}
	raw, err := r.payload(dataset, repoID, updates)
	if err != nil {
		return nil, err
	}
	d := &orchestrator.Delivery{
		Scope: hub.ScopeRepoContent, Action: hub.ActionUpdate, RepoType: hub.RepoTypeDataset, RepoName: dataset, RepoID: repoID,
		Refs: updates, Raw: raw,
	}
	ins, err := r.Store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{
		Delivery: d, Source: orchestrator.DeliverySourceReconcile, RemoteAddr: "",
	})
	if err != nil {
		return nil, fmt.Errorf("record catch-up delivery for %s: %w", dataset, err)
	}
	// A mapping whose ref is unchanged gets a decision too when another mapping's record of the same ref
	// differs: it counts once, as unchanged.
	var found []orchestrator.Decision
	for _, dec := range ins.Decisions {
		if !unchanged[mappingRef{dec.MappingID, dec.Ref}] {
			found = append(found, dec)
		}
	}
	r.Metrics.observeRevisions(len(unchanged), found)
	res.Deliveries = append(res.Deliveries, ins.DeliveryID)
	res.Runs = append(res.Runs, ins.RunIDs...)
	res.Decisions = append(res.Decisions, ins.Decisions...)
	refNames := make([]string, len(updates))
	for i, u := range updates {
		refNames[i] = u.Ref
	}
	r.logger().InfoContext(ctx, "caught up with the Hub", "dataset", dataset, "refs", refNames,
		"delivery_id", ins.DeliveryID, "runs", ins.RunIDs)
	return nil, nil
}

// catchUpPayload is the body recorded with a catch-up delivery: a webhook's, plus what was asked.
type catchUpPayload struct {
	hub.Payload
	Reconcile struct {
		Endpoint string    `json:"endpoint,omitempty"`
		SeenAt   time.Time `json:"seenAt"`
		Note     string    `json:"note"`
	} `json:"reconcile"`
}

// payload describes what catch-up saw, as JSON.
func (r *Reconciler) payload(dataset, repoID string, updates []orchestrator.RefUpdate) ([]byte, error) {
	refs := make([]*hub.UpdatedRef, len(updates))
	for i, u := range updates {
		refs[i] = hub.NewUpdatedRef(u.Ref, u.OldSha, u.NewSha)
	}
	p := catchUpPayload{Payload: hub.DatasetUpdate(dataset, repoID, refs...)}
	if e, ok := r.Hub.(interface{ Endpoint() string }); ok {
		p.Reconcile.Endpoint = e.Endpoint()
	}
	p.Reconcile.SeenAt = time.Now().UTC()
	p.Reconcile.Note = "the Hub's refs differ from the newest revisions recorded (oldSha): no webhook brought these commits"
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode catch-up payload: %w", err)
	}
	return raw, nil
}
