package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"go.opentelemetry.io/otel/trace"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Defaults of the queue client.
const (
	// MaxWorkersDefault is how many commands one orchestrator process runs at once.
	MaxWorkersDefault = 4
	// FetchCooldownDefault is the least time between two fetches of new jobs, and between two notifications of
	// inserted jobs. River's default (100 ms) would make the last run of a burst wait. A delivery whose
	// notification arrives within the cooldown of the previous fetch (a poll's, one in every
	// FetchPollIntervalDefault) waits for the rest of it: at 10 ms that was the 99th percentile of the trigger
	// latency on its own. 4 ms keeps that wait short, for more fetches and notifications under load.
	FetchCooldownDefault = 4 * time.Millisecond
	// FetchPollIntervalDefault is how often the queue is polled when no insert notification arrives: a run
	// woken from waiting for a slot, or whose quiet period ended, is picked up within this.
	FetchPollIntervalDefault = 100 * time.Millisecond
	// rescueMargin is added to the longest timeout a mapping may set, plus the kill grace, to get the stuck-job
	// rescue delay.
	rescueMargin = 10 * time.Minute
)

// ClientConfig configures the River client.
type ClientConfig struct {
	// MaxWorkers is how many commands run at once in this process, per queue. Defaults to MaxWorkersDefault.
	MaxWorkers int
	// Queues are the worker pools this process serves; orchestrator.QueueDefault when empty. The mappings' queue settings
	// send runs to them.
	Queues []string
	// Worker configures the retrain worker.
	Worker WorkerConfig
	// Notify configures the sender of run notifications, which serves orchestrator.QueueNotify alongside Queues.
	Notify NotifyConfig
	// TracerProvider, when set, traces jobs: inserting one records the inserting span's context in the job's
	// metadata, and its work and command are spans of that trace. It is the workers' too unless
	// Worker.TracerProvider is set. Nil: tracing is off.
	TracerProvider trace.TracerProvider
	// Reconciler, when set, catches up with the Hub: its worker runs on River's default queue, one pass at a
	// time per process, from a periodic job on the elected leader. Nil turns catch-up off.
	Reconciler *Reconciler

	// Logger receives River's log lines.
	Logger *slog.Logger
}

// RescueAfter returns the stuck-job rescue delay River is given: the longest timeout any mapping may set
// (orchestrator.TimeoutMax), plus the kill grace, plus ten minutes. It depends on no mapping, so a mapping created
// or given a longer timeout after start, through the API or the form, is never rescued and started a second time
// while its command may still run. River's rescue is only the last resort: the Reaper hands back the job of an
// attempt whose heartbeat stopped, within its OrphanAfter.
func (c ClientConfig) RescueAfter() time.Duration {
	return orchestrator.TimeoutMax + c.Worker.WithDefaults().KillGrace + rescueMargin
}

// NewClient returns a River client that runs the retrain worker on the configured queues and the notification
// sender on orchestrator.QueueNotify.
func NewClient(pool *pgxpool.Pool, store *orchestrator.Store, cfg ClientConfig) (*river.Client[pgx.Tx], error) {
	if cfg.MaxWorkers <= 0 {
		cfg.MaxWorkers = MaxWorkersDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Worker.Logger == nil {
		cfg.Worker.Logger = cfg.Logger
	}
	if cfg.Worker.TracerProvider == nil {
		cfg.Worker.TracerProvider = cfg.TracerProvider
	}
	queues := map[string]river.QueueConfig{}
	serve := cfg.Queues
	if len(serve) == 0 {
		serve = []string{orchestrator.QueueDefault}
	}
	for _, q := range serve {
		queues[q] = river.QueueConfig{MaxWorkers: cfg.MaxWorkers}
	}
	if cfg.Notify.Logger == nil {
		cfg.Notify.Logger = cfg.Logger
	}
	if cfg.Notify.Metrics == nil {
		cfg.Notify.Metrics = cfg.Worker.Metrics
	}
	cfg.Notify = cfg.Notify.WithDefaults()
	queues[orchestrator.QueueNotify] = river.QueueConfig{MaxWorkers: cfg.Notify.MaxWorkers}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, NewRetrainWorker(store, cfg.Worker)); err != nil {
		return nil, fmt.Errorf("add retrain worker: %w", err)
	}
	if err := river.AddWorkerSafely(workers, NewNotifyWorker(store, cfg.Notify)); err != nil {
		return nil, fmt.Errorf("add notify worker: %w", err)
	}

	riverCfg := &river.Config{
		Queues:               queues,
		Workers:              workers,
		JobTimeout:           -1,
		RescueStuckJobsAfter: cfg.RescueAfter(),
		FetchCooldown:        FetchCooldownDefault,
		FetchPollInterval:    FetchPollIntervalDefault,
		Middleware:           append([]rivertype.Middleware{reservedIDs}, tracingMiddleware(cfg.TracerProvider)...),
		Logger:               cfg.Logger,
	}
	if err := cfg.Reconciler.register(workers, riverCfg); err != nil {
		return nil, err
	}
	client, err := river.NewClient(riverpgxv5.New(pool), riverCfg)
	if err != nil {
		return nil, fmt.Errorf("create river client: %w", err)
	}
	return client, nil
}

// jobIDBlock is how many job ids the queue takes from River's sequence at a time: the ingest asks for ids in
// its hot path, and gets them from memory but once every jobIDBlock runs.
const jobIDBlock = 256

// Queue is the River-backed work queue of the store.
type Queue struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]

	mu       sync.Mutex
	reserved []int64 // job ids taken from River's sequence and not handed out yet
}

// NewQueue returns the store's queue on client, which must be built on pool.
func NewQueue(pool *pgxpool.Pool, client *river.Client[pgx.Tx]) *Queue {
	return &Queue{pool: pool, client: client}
}

// ReserveJobIDs returns n ids for the jobs of new runs (RunJob.JobID), which River gives to no other job. They
// come from River's own sequence (see jobIDReserveSQL), taken jobIDBlock at a time and kept in memory, so that
// most calls cost no round trip; an id reserved and never used is only a gap in the sequence.
func (q *Queue) ReserveJobIDs(ctx context.Context, n int) ([]int64, error) {
	if n <= 0 {
		return nil, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.reserved) < n {
		more, err := jobIDReserve(ctx, q.pool, max(jobIDBlock, n-len(q.reserved)))
		if err != nil {
			return nil, err
		}
		q.reserved = append(q.reserved, more...)
	}
	ids := slices.Clone(q.reserved[:n])
	q.reserved = q.reserved[n:]
	return ids, nil
}

// EnqueueTx inserts one retrain job per run within tx.
func (q *Queue) EnqueueTx(ctx context.Context, tx pgx.Tx, runs []orchestrator.RunJob) ([]int64, error) {
	params := make([]river.InsertManyParams, len(runs))
	ids, reserved := make([]int64, len(runs)), false
	for i, r := range runs {
		params[i] = river.InsertManyParams{
			Args:       RetrainArgs{RunID: r.RunID},
			InsertOpts: &river.InsertOpts{Queue: cmp.Or(r.Queue, orchestrator.QueueDefault), MaxAttempts: r.MaxAttempts},
		}
		ids[i] = r.JobID
		reserved = reserved || r.JobID != 0
	}
	if reserved {
		ctx = context.WithValue(ctx, reservedIDsKey{}, ids)
	}
	return q.insertMany(ctx, tx, params, "insert jobs")
}

// reservedIDsKey carries through River's insert the ids its jobs must have, in order, 0 for none.
type reservedIDsKey struct{}

// reservedIDs is River insert middleware that gives each job the id reserved for it, if any: the run that
// the job executes recorded that id when it was created, taken from River's own sequence.
var reservedIDs = river.JobInsertMiddlewareFunc(func(ctx context.Context, params []*rivertype.JobInsertParams,
	doInner func(context.Context) ([]*rivertype.JobInsertResult, error),
) ([]*rivertype.JobInsertResult, error) {
	if ids, ok := ctx.Value(reservedIDsKey{}).([]int64); ok && len(ids) == len(params) {
		for i, p := range params {
			if ids[i] != 0 {
				p.ID = &ids[i]
			}
		}
		// Spent: an insert further down must not take the same ids.
		ctx = context.WithValue(ctx, reservedIDsKey{}, nil)
	}
	return doInner(ctx)
})

// insertMany inserts the jobs within tx and returns their ids in order.
func (q *Queue) insertMany(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams, what string) ([]int64, error) {
	results, err := q.client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	ids := make([]int64, len(results))
	for i, res := range results {
		ids[i] = res.Job.ID
	}
	return ids, nil
}

// Wake makes the jobs available now, as River's retry does for a job that waits.
func (q *Queue) Wake(ctx context.Context, jobIDs []int64) error {
	var errs []error
	for _, id := range jobIDs {
		if _, err := q.client.JobRetry(ctx, id); err != nil && !errors.Is(err, river.ErrNotFound) {
			errs = append(errs, fmt.Errorf("wake job %d: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// EnqueueNotificationsTx inserts one notify job per notification within tx.
func (q *Queue) EnqueueNotificationsTx(ctx context.Context, tx pgx.Tx, notificationIDs []int64) ([]int64, error) {
	params := make([]river.InsertManyParams, len(notificationIDs))
	for i, id := range notificationIDs {
		params[i] = river.InsertManyParams{Args: NotifyArgs{NotificationID: id}}
	}
	return q.insertMany(ctx, tx, params, "insert notify jobs")
}

// CancelTx cancels a job as part of tx: see Cancel. A job that is gone is no error.
func (q *Queue) CancelTx(ctx context.Context, tx pgx.Tx, jobID int64) error {
	if _, err := q.client.JobCancelTx(ctx, tx, jobID); err != nil && !errors.Is(err, river.ErrNotFound) {
		return fmt.Errorf("cancel job %d: %w", jobID, err)
	}
	return nil
}

// stalledPage is how many running jobs StalledJobs reads at a time.
const stalledPage = 500

// StalledJobs returns the retrain jobs that a worker took longer than after ago and still holds, whatever
// became of their runs: the caller checks that a job is still its run's.
func (q *Queue) StalledJobs(ctx context.Context, after time.Duration) ([]orchestrator.StalledJob, error) {
	params := river.NewJobListParams().States(rivertype.JobStateRunning).Kinds(RetrainArgs{}.Kind()).First(stalledPage)
	cutoff := time.Now().Add(-after)
	var stalled []orchestrator.StalledJob
	for {
		res, err := q.client.JobList(ctx, params)
		if err != nil {
			return nil, fmt.Errorf("list running jobs: %w", err)
		}
		for _, job := range res.Jobs {
			if job.AttemptedAt == nil || job.AttemptedAt.After(cutoff) {
				continue
			}
			var args RetrainArgs
			if err := json.Unmarshal(job.EncodedArgs, &args); err != nil {
				return nil, fmt.Errorf("job %d: decode args: %w", job.ID, err)
			}
			stalled = append(stalled, orchestrator.StalledJob{JobID: job.ID, RunID: args.RunID})
		}
		if len(res.Jobs) < stalledPage || res.LastCursor == nil {
			return stalled, nil
		}
		params = params.After(res.LastCursor)
	}
}

// Cancel cancels a job. A waiting job is cancelled at once; a running one has its context cancelled in
// whichever process runs it (River tells it through LISTEN/NOTIFY), and the worker stops the command.
func (q *Queue) Cancel(ctx context.Context, jobID int64) error {
	if _, err := q.client.JobCancel(ctx, jobID); err != nil && !errors.Is(err, river.ErrNotFound) {
		return fmt.Errorf("cancel job %d: %w", jobID, err)
	}
	return nil
}
