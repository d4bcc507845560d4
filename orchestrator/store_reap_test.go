package orchestrator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func TestRunReapOrphans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// startRun creates a run whose job a worker "took" (running, attempt 1), with an attempt whose heartbeat
	// is as old as given.
	startRun := func(t *testing.T, b *testBundle, fixture string, heartbeatAge time.Duration) *orchestrator.Run {
		t.Helper()
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, fixture)})
		require.NoError(t, err)
		run, err := b.store.RunGetByID(ctx, res.RunIDs[0])
		require.NoError(t, err)
		_, err = b.pool.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() WHERE id = $1`, *run.JobID)
		require.NoError(t, err)
		require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: run.ID, Attempt: 1, Argv: []string{"x"}}))
		_, err = b.pool.Exec(ctx, `UPDATE run_attempts SET heartbeat_at = now() - $2::interval WHERE run_id = $1`, run.ID, heartbeatAge)
		require.NoError(t, err)
		return run
	}
	jobState := func(t *testing.T, b *testBundle, id int64) string {
		var state string
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT state FROM river_job WHERE id = $1`, id).Scan(&state))
		return state
	}

	t.Run("HandsBackWithAttemptsLeft", func(t *testing.T) {
		t.Parallel()
		m := mapping("tickets", "acme/support-tickets")
		m.Concurrency = 2
		b := setup(t, m)
		orphan := startRun(t, b, "dataset-main-push.json", 10*time.Minute)
		alive := startRun(t, b, "dataset-narrowed-content.json", time.Second)

		reaped, err := b.store.RunReapOrphans(ctx, time.Minute)
		require.NoError(t, err)
		require.Equal(t, []orchestrator.ReapedRun{{RunID: orphan.ID, Attempt: 1, Status: orchestrator.RunRetrying}}, reaped)

		run, err := b.store.RunGetByID(ctx, orphan.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunRetrying, run.Status)
		require.Contains(t, run.Error, "interrupted: the process running it stopped")
		require.Equal(t, "available", jobState(t, b, *orphan.JobID), "another worker picks it up at once")
		attempts, err := b.store.RunAttemptList(ctx, orphan.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.AttemptInterrupted, attempts[0].Status)
		require.NotNil(t, attempts[0].FinishedAt)

		// The worker of the reaped attempt learns it at its next heartbeat; a live one does not.
		ok, err := b.store.RunAttemptHeartbeat(ctx, orphan.ID, 1)
		require.NoError(t, err)
		require.False(t, ok)
		ok, err = b.store.RunAttemptHeartbeat(ctx, alive.ID, 1)
		require.NoError(t, err)
		require.True(t, ok)
		run, err = b.store.RunGetByID(ctx, alive.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunRunning, run.Status)
		require.Equal(t, "running", jobState(t, b, *alive.JobID))

		again, err := b.store.RunReapOrphans(ctx, time.Minute)
		require.NoError(t, err)
		require.Empty(t, again, "each orphan is reaped once")
	})

	t.Run("FailsWithoutAttemptsLeft", func(t *testing.T) {
		t.Parallel()
		m := mapping("tickets", "acme/support-tickets")
		m.MaxAttempts = 1
		b := setup(t, m)
		orphan := startRun(t, b, "dataset-main-push.json", 10*time.Minute)
		reaped, err := b.store.RunReapOrphans(ctx, time.Minute)
		require.NoError(t, err)
		require.Equal(t, []orchestrator.ReapedRun{{RunID: orphan.ID, Attempt: 1, Status: orchestrator.RunFailed}}, reaped)
		run, err := b.store.RunGetByID(ctx, orphan.ID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunFailed, run.Status)
		require.NotNil(t, run.FinishedAt)
		require.Equal(t, "discarded", jobState(t, b, *orphan.JobID))
	})
}
