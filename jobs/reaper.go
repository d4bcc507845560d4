package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Defaults of the reaper.
const (
	// OrphanAfterDefault is how long a running attempt may go without a heartbeat before its process is taken
	// for dead.
	OrphanAfterDefault = time.Minute
	// notifyOrphanAfter is how long a notification may be in the hands of a worker before its process is taken
	// for dead: well above the longest send (the job's timeout). A receiver may then get the same notification
	// twice, with the same X-Orchestrator-Delivery.
	notifyOrphanAfter = 5 * time.Minute
	// reconcileOrphanMargin is how long a catch-up pass may go on past its timeout, at which River cancels it,
	// before its process is taken for dead.
	reconcileOrphanMargin = 5 * time.Minute
)

// Reaper closes attempts whose worker stopped sending heartbeats and hands their runs to the queue again (see
// Store.RunReapOrphans), and hands back the notifications and catch-up passes a dead process was working (see
// jobOrphanReapSQL). Without it they would wait for River's stuck-job rescue, which must stay above the longest
// timeout a mapping may set (see ClientConfig.RescueAfter): a week, during which a catch-up pass, unique while it
// runs, would also hold off every later one. It runs in every orchestrator process: row locks make concurrent
// reapers safe, and recovery does not wait for a new queue leader to be elected.
type Reaper struct {
	Store       *orchestrator.Store
	OrphanAfter time.Duration
	// Reconciler, when set, is the process's catch-up, whose passes are handed back once they have been
	// running for longer than their timeout plus reconcileOrphanMargin.
	Reconciler *Reconciler
	Logger     *slog.Logger
}

// ReapOnce reaps once.
func (r *Reaper) ReapOnce(ctx context.Context) error {
	reaped, err := r.Store.RunReapOrphans(ctx, r.OrphanAfter)
	for _, run := range reaped {
		r.Logger.WarnContext(ctx, "run's process stopped; handed back to the queue",
			"run_id", run.RunID, "attempt", run.Attempt)
	}
	if err != nil {
		return err
	}
	handed, err := jobOrphanReap(ctx, r.Store.Pool(), r.orphanAfter())
	for kind, n := range handed {
		r.Logger.WarnContext(ctx, "jobs whose process stopped while working them; handed back to the queue",
			"kind", kind, "jobs", n)
	}
	return err
}

// orphanAfter returns, for each kind of job handed back by the age of its attempt, how long an attempt may last
// before the process working it is taken for dead.
func (r *Reaper) orphanAfter() map[string]time.Duration {
	after := map[string]time.Duration{NotifyArgs{}.Kind(): notifyOrphanAfter}
	if r.Reconciler != nil {
		after[ReconcileArgs{}.Kind()] = r.Reconciler.timeout() + reconcileOrphanMargin
	}
	return after
}

// Run reaps every interval until ctx is done.
func (r *Reaper) Run(ctx context.Context, interval time.Duration) {
	every(ctx, interval, r.Logger, "could not reap orphaned runs", r.ReapOnce)
}

// every calls do every interval until ctx is done, and logs its errors with msg.
func every(ctx context.Context, interval time.Duration, logger *slog.Logger, msg string, do func(context.Context) error) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := do(ctx); err != nil && ctx.Err() == nil {
				logger.WarnContext(ctx, msg, "error", err)
			}
		}
	}
}
