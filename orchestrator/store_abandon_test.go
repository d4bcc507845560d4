package orchestrator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func TestRunAttemptAbandon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const reason = "interrupted: the worker lost the database"

	// startRun creates a run whose job a worker took (running, attempt 1) and whose first attempt runs.
	startRun := func(t *testing.T, b *testBundle) *orchestrator.Run {
		t.Helper()
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
		require.NoError(t, err)
		run, err := b.store.RunGetByID(ctx, res.RunIDs[0])
		require.NoError(t, err)
		_, err = b.pool.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() WHERE id = $1`, *run.JobID)
		require.NoError(t, err)
		require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: run.ID, Attempt: 1, Argv: []string{"x"}}))
		return run
	}
	type jobRow struct {
		State       string
		MaxAttempts int
	}
	job := func(t *testing.T, b *testBundle, id int64) jobRow {
		t.Helper()
		var j jobRow
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT state, max_attempts FROM river_job WHERE id = $1`, id).Scan(&j.State, &j.MaxAttempts))
		return j
	}

	tests := []struct {
		name string
		// before does what happens to the attempt before the worker abandons it; attempt is the attempt abandoned.
		before  func(t *testing.T, b *testBundle, run *orchestrator.Run)
		attempt int
		want    bool
	}{
		{name: "OpenAttemptIsClosed", attempt: 1, want: true},
		{name: "ReapedFirst", attempt: 1, before: func(t *testing.T, b *testBundle, run *orchestrator.Run) {
			_, err := b.pool.Exec(ctx, `UPDATE run_attempts SET heartbeat_at = now() - interval '1 hour' WHERE run_id = $1`, run.ID)
			require.NoError(t, err)
			reaped, err := b.store.RunReapOrphans(ctx, time.Minute)
			require.NoError(t, err)
			require.Len(t, reaped, 1)
		}},
		{name: "FinishedFirst", attempt: 1, before: func(t *testing.T, b *testBundle, run *orchestrator.Run) {
			require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: run.ID, Attempt: 1,
				AttemptStatus: orchestrator.RunSucceeded, RunStatus: orchestrator.RunSucceeded}))
		}},
		{name: "NotTheRunsAttempt", attempt: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, mapping("tickets", "acme/support-tickets"))
			run := startRun(t, b)
			if tt.before != nil {
				tt.before(t, b, run)
			}
			beforeRun, err := b.store.RunGetByID(ctx, run.ID)
			require.NoError(t, err)
			beforeAttempts, err := b.store.RunAttemptList(ctx, run.ID)
			require.NoError(t, err)
			beforeJob := job(t, b, *run.JobID)

			abandoned, err := b.store.RunAttemptAbandon(ctx, orchestrator.RunAttemptAbandonParams{RunID: run.ID, Attempt: tt.attempt, Reason: reason})
			require.NoError(t, err)
			require.Equal(t, tt.want, abandoned)
			afterRun, err := b.store.RunGetByID(ctx, run.ID)
			require.NoError(t, err)
			afterAttempts, err := b.store.RunAttemptList(ctx, run.ID)
			require.NoError(t, err)
			if !tt.want {
				require.Equal(t, beforeRun, afterRun, "nothing changes")
				require.Equal(t, beforeAttempts, afterAttempts)
				require.Equal(t, beforeJob, job(t, b, *run.JobID))
				return
			}
			require.Equal(t, orchestrator.RunQueued, afterRun.Status)
			require.Equal(t, reason, afterRun.Error)
			require.Len(t, afterAttempts, 1)
			require.Equal(t, orchestrator.AttemptInterrupted, afterAttempts[0].Status)
			require.Equal(t, reason, afterAttempts[0].Error)
			require.NotNil(t, afterAttempts[0].FinishedAt)
			require.Equal(t, jobRow{State: "available", MaxAttempts: beforeJob.MaxAttempts + 1}, job(t, b, *run.JobID),
				"handed back, and the attempt it cost given back")

			again, err := b.store.RunAttemptAbandon(ctx, orchestrator.RunAttemptAbandonParams{RunID: run.ID, Attempt: tt.attempt, Reason: reason})
			require.NoError(t, err)
			require.False(t, again, "an attempt is abandoned once")
		})
	}
}
