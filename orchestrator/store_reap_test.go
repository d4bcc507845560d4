package orchestrator_test

import (
	"context"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func TestRunReapOrphans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// startRun creates a run whose job a worker took (running, attempt 1) and hangs on, with an attempt whose
	// heartbeat is as old as given. Its one slot taken, that worker fetches nothing more: a job handed back
	// stays available.
	startRun := func(t *testing.T, b *testBundle, fixture string, heartbeatAge time.Duration) *orchestrator.Run {
		t.Helper()
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, fixture)})
		require.NoError(t, err)
		run, err := b.store.RunGetByID(ctx, res.RunIDs[0])
		require.NoError(t, err)
		workJobs(t, b, 1, hold)
		waitJobs(t, b, rivertype.JobStateRunning, *run.JobID)
		require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: run.ID, Attempt: 1, Argv: []string{"x"}}))
		_, err = b.pool.Exec(ctx, `UPDATE run_attempts SET heartbeat_at = now() - $2::interval WHERE run_id = $1`, run.ID, heartbeatAge)
		require.NoError(t, err)
		return run
	}
	job := func(t *testing.T, b *testBundle, id int64) *rivertype.JobRow {
		t.Helper()
		row, err := b.river.JobGet(ctx, id)
		require.NoError(t, err)
		return row
	}

	t.Run("HandsBackUnderANewJobWithoutSpendingAnAttempt", func(t *testing.T) {
		t.Parallel()
		m := mapping("tickets", "acme/support-tickets")
		m.Concurrency = 2
		m.MaxAttempts = 1
		m.OnNewRevision = orchestrator.OnNewRevisionQueue // two revisions of one ref run side by side
		b := setup(t, m)
		orphan := startRun(t, b, "dataset-main-push.json", 10*time.Minute)
		alive := startRun(t, b, "dataset-narrowed-content.json", time.Second)

		reaped, err := b.store.RunReapOrphans(ctx, time.Minute)
		require.NoError(t, err)
		require.Equal(t, []orchestrator.ReapedRun{{RunID: orphan.ID, Attempt: 1}}, reaped)

		run, err := b.store.RunGetByID(ctx, orphan.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunQueued, run.Status, "its only attempt is not spent")
		require.Nil(t, run.FinishedAt)
		require.Contains(t, run.Error, "interrupted: the process running it stopped")
		require.NotEqual(t, *orphan.JobID, *run.JobID, "the run has a job of its own again")
		newJob := job(t, b, *run.JobID)
		require.Equal(t, rivertype.JobStateAvailable, newJob.State, "another worker picks it up at once")
		require.Equal(t, 1, newJob.MaxAttempts)
		require.Contains(t, string(job(t, b, *orphan.JobID).Metadata), "cancel_attempted_at", "the old job is cancelled")
		attempts, err := b.store.RunAttemptList(ctx, orphan.ID)
		require.NoError(t, err)
		require.Len(t, attempts, 1)
		require.Equal(t, orchestrator.AttemptInterrupted, attempts[0].Status)
		require.NotNil(t, attempts[0].FinishedAt)

		// The worker of the reaped attempt learns it at its next heartbeat, and its finish changes nothing;
		// a live one goes on.
		ok, err := b.store.RunAttemptHeartbeat(ctx, orphan.ID, 1)
		require.NoError(t, err)
		require.False(t, ok)
		require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{
			RunID: orphan.ID, Attempt: 1, Transition: orchestrator.TransitionFail, NoTargets: true}))
		run, err = b.store.RunGetByID(ctx, orphan.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunQueued, run.Status, "a finish of a closed attempt is ignored")
		ok, err = b.store.RunAttemptHeartbeat(ctx, alive.ID, 1)
		require.NoError(t, err)
		require.True(t, ok)
		run, err = b.store.RunGetByID(ctx, alive.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunRunning, run.Status)

		again, err := b.store.RunReapOrphans(ctx, time.Minute)
		require.NoError(t, err)
		require.Empty(t, again, "each orphan is reaped once")

		// The next execution is attempt 2, and only attempt 2.
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(b.store.RunAttemptStart(ctx,
			orchestrator.RunAttemptStartParams{RunID: orphan.ID, Attempt: 1, Argv: []string{"x"}})))
		require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: orphan.ID, Attempt: 2, Argv: []string{"x"}}))
	})

	t.Run("CancelRequestedEndsCancelled", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		orphan := startRun(t, b, "dataset-main-push.json", 10*time.Minute)
		_, err := b.store.RunCancel(ctx, orphan.ID)
		require.NoError(t, err)
		reaped, err := b.store.RunReapOrphans(ctx, time.Minute)
		require.NoError(t, err)
		require.Len(t, reaped, 1)
		run, err := b.store.RunGetByID(ctx, orphan.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunCancelled, run.Status)
		require.Equal(t, *orphan.JobID, *run.JobID, "no new job for a cancelled run")
	})

	t.Run("FencedWorkerAbandonsItsOwnAttempt", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		run := startRun(t, b, "dataset-main-push.json", 0)
		p := orchestrator.RunAttemptAbandonParams{RunID: run.ID, Attempt: 1, Reason: "interrupted: fenced"}
		ok, err := b.store.RunAttemptAbandon(ctx, p)
		require.NoError(t, err)
		require.True(t, ok)
		ok, err = b.store.RunAttemptAbandon(ctx, p)
		require.NoError(t, err)
		require.False(t, ok, "an attempt is abandoned once")
		got, err := b.store.RunGetByID(ctx, run.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunQueued, got.Status)
		require.Equal(t, "interrupted: fenced", got.Error)
	})
}
