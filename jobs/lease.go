package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// A running attempt holds a lease on its run: each heartbeat that reaches the database renews it for
// OrphanAfter, after which the reaper of any orchestrator process may close the attempt and hand the run to
// another worker. A worker that cannot renew the lease stops its own command before that can happen: at
// OrphanAfter - FenceMargin after the last renewal that succeeded, counted on its own monotonic clock from when
// that renewal was sent (the database stamps it at that moment or later), the command gets SIGTERM, and SIGKILL
// after the kill grace. The margin is longer than the grace, so the command is dead before the lease expires at
// the database.

// FenceAllowance is how much longer than the kill grace the fence margin must be at least: time for the timer
// of a loaded machine to fire late, for the signals to arrive, and for the kernel to tear down a large process
// after SIGKILL.
const FenceAllowance = time.Second

// FenceMarginFor returns the default fence margin for the given orphan timeout and kill grace: a quarter of the
// orphan timeout, and at least the kill grace plus FenceAllowance (15s with the defaults).
func FenceMarginFor(orphanAfter, killGrace time.Duration) time.Duration {
	return max(orphanAfter/4, killGrace+FenceAllowance)
}

// renewTimeoutMin is the least time one renewal may take before it counts as failed and another is tried.
const renewTimeoutMin = time.Second

// Causes of a command stopped by its lease.
var (
	// errLeaseLost stops a command whose worker could not renew its lease in time.
	errLeaseLost = errors.New("the attempt's lease ran out: no heartbeat reached the database in time")
	// errAttemptTakenOver stops a command whose attempt the reaper closed.
	errAttemptTakenOver = errors.New("the attempt was closed while its command ran")
)

// lease renews a running attempt's lease and fences its command when it cannot.
type lease struct {
	store   *orchestrator.Store
	logger  *slog.Logger
	runID   int64
	attempt int
	// interval is the time between renewals; term is how long after a renewal was sent its command may run
	// without another one (OrphanAfter - FenceMargin).
	interval, term time.Duration
	// watch, when set, is told the fence's new deadline after each renewal that succeeded.
	watch *watchdog
}

// renewal is the outcome of one renewal.
type renewal struct {
	sent  time.Time
	alive bool
	err   error
}

// hold renews the lease every interval until ctx is done, from a lease taken at from (when the write that
// started the attempt was sent). It stops the command through stop, and returns, when term has passed since the
// last renewal that succeeded was sent (errLeaseLost), or when a renewal finds the attempt closed
// (errAttemptTakenOver). A failed renewal is tried again soon, not an interval later; each has a timeout, and the
// fence does not wait for one that hangs.
func (l *lease) hold(ctx context.Context, from time.Time, stop context.CancelCauseFunc) {
	held := from
	fence := time.NewTimer(time.Until(held.Add(l.term)))
	defer fence.Stop()
	renew := time.NewTimer(time.Until(held.Add(l.interval)))
	defer renew.Stop()
	retry := l.retryFirst()
	// One renewal at a time; the buffer lets the last one finish after hold has returned.
	results := make(chan renewal, 1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-fence.C:
			l.logger.WarnContext(ctx, "could not renew the attempt's lease: stopping the command before the run may be "+
				"handed to another worker", "since_last_renewal", time.Since(held).Round(time.Millisecond))
			stop(errLeaseLost)
			return
		case <-renew.C:
			go func(sent time.Time) {
				alive, err := l.renewOnce(ctx)
				results <- renewal{sent: sent, alive: alive, err: err}
			}(time.Now())
		case r := <-results:
			switch {
			case r.err != nil:
				if ctx.Err() != nil {
					return
				}
				l.logger.WarnContext(ctx, "could not renew the attempt's lease", "error", r.err,
					"fence_in", time.Until(held.Add(l.term)).Round(time.Millisecond))
				renew.Reset(retry)
				retry = min(2*retry, l.interval)
			case !r.alive:
				stop(errAttemptTakenOver)
				return
			default:
				held = r.sent
				l.watch.renewed(held.Add(l.term))
				fence.Reset(time.Until(held.Add(l.term)))
				renew.Reset(time.Until(held.Add(l.interval)))
				retry = l.retryFirst()
			}
		}
	}
}

// retryFirst is the wait before the first retry of a failed renewal.
func (l *lease) retryFirst() time.Duration { return l.interval / 4 }

// renewOnce records one heartbeat, within its timeout.
func (l *lease) renewOnce(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, max(l.interval, renewTimeoutMin))
	defer cancel()
	return l.store.RunAttemptHeartbeat(ctx, l.runID, l.attempt)
}

// holdLease renews the lease of a running attempt taken at from, until ctx is done, and keeps the command's
// watchdog, if any, up to date; see lease.hold. The returned channel is closed once it has stopped.
func (w *RetrainWorker) holdLease(ctx context.Context, logger *slog.Logger, runID int64, attempt int, from time.Time, stop context.CancelCauseFunc, watch *watchdog) <-chan struct{} {
	l := &lease{store: w.store, logger: logger, runID: runID, attempt: attempt,
		interval: w.cfg.HeartbeatInterval, term: w.cfg.OrphanAfter - w.cfg.FenceMargin, watch: watch}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.hold(ctx, from, stop)
	}()
	return done
}

// abandonFenced records an attempt whose command the fence stopped as interrupted, once the database answers
// again: the run goes back to the queue without spending an attempt. It tries with backoff for up to
// OrphanAfter, on a context that River's cancel does not end (when the link comes back, another process may
// cancel the job); by then the lease has expired at the database, and the reaper of whichever process reaches
// it first closes the attempt the same way. A reaper that got there first leaves nothing to record.
func (w *RetrainWorker) abandonFenced(ctx context.Context, logger *slog.Logger, runID int64, attempt int, mappingID int64) {
	bounded, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.OrphanAfter)
	defer cancel()
	p := orchestrator.RunAttemptAbandonParams{RunID: runID, Attempt: attempt,
		Reason: "interrupted: its worker could not reach the database and stopped the command before its lease ran out"}
	wait := w.cfg.HeartbeatInterval / 4
	for {
		call, cancelCall := context.WithTimeout(bounded, max(w.cfg.HeartbeatInterval, renewTimeoutMin))
		abandoned, err := w.store.RunAttemptAbandon(call, p)
		cancelCall()
		switch {
		case err == nil && abandoned:
			logger.InfoContext(ctx, "fenced attempt recorded as interrupted; the run is queued again")
			w.wakeNext(ctx, logger, mappingID)
			return
		case err == nil:
			logger.InfoContext(ctx, "fenced attempt was closed already by a reaper; nothing to record")
			return
		}
		select {
		case <-bounded.Done():
			logger.WarnContext(ctx, "could not record the fenced attempt; a reaper will close it", "error", err)
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, w.cfg.HeartbeatInterval)
	}
}
