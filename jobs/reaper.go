package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Defaults of the reaper.
const (
	// OrphanAfterDefault is how long a running attempt may go without a heartbeat before its process is taken
	// for dead.
	OrphanAfterDefault = time.Minute
	// ReapIntervalDefault is how often the reaper looks for such attempts (and once when the client starts).
	ReapIntervalDefault = 30 * time.Second
)

// ReapArgs is the periodic job that hands runs of dead processes back to the queue.
type ReapArgs struct{}

// Kind implements river.JobArgs.
func (ReapArgs) Kind() string { return "reap_orphans" }

// InsertOpts makes the reaper a unique, single-attempt job on the default queue.
func (ReapArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 1, UniqueOpts: river.UniqueOpts{ByArgs: true, ByPeriod: time.Second}}
}

// ReapWorker closes attempts whose worker stopped sending heartbeats and hands their jobs back to the queue (see
// Store.RunReapOrphans). Without it a run interrupted by SIGKILL would wait for River's stuck-job rescue, which
// must stay above the longest timeout.
type ReapWorker struct {
	river.WorkerDefaults[ReapArgs]
	store       *orchestrator.Store
	orphanAfter time.Duration
	logger      *slog.Logger
}

// Work reaps once.
func (w *ReapWorker) Work(ctx context.Context, _ *river.Job[ReapArgs]) error {
	reaped, err := w.store.RunReapOrphans(ctx, w.orphanAfter)
	for _, r := range reaped {
		w.logger.WarnContext(ctx, "run's process stopped sending heartbeats; attempt closed as interrupted",
			"run_id", r.RunID, "attempt", r.Attempt, "status", r.Status)
	}
	return err
}
