package orchestrator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// startedRun records a delivery for the mapping "tickets" and starts the first attempt of its run.
func startedRun(t *testing.T, b *testBundle) int64 {
	t.Helper()
	ctx := context.Background()
	res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
	require.NoError(t, err)
	require.Len(t, res.RunIDs, 1)
	require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: res.RunIDs[0], Attempt: 1, Argv: []string{"x"}}))
	return res.RunIDs[0]
}

func TestAttemptExecution(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	running, ended := created.Add(90*time.Second), created.Add(11*time.Minute+30*time.Second)
	job := func(runID int64) orchestrator.AttemptExecution {
		return orchestrator.AttemptExecution{RunID: runID, Attempt: 1, Executor: orchestrator.ExecutorHFJobs,
			ExternalID: "687fb701029421ae5549d998", Namespace: "acme", URL: "https://huggingface.co/jobs/acme/687fb701029421ae5549d998",
			Flavor: "a10g-small", Stage: "SCHEDULING", CreatedAt: created, UnitCostMicroUSD: 16667}
	}

	t.Run("RecordedAndUpdated", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		id := startedRun(t, b)
		list, err := b.store.RunExecutions(ctx, id)
		require.NoError(t, err)
		require.Empty(t, list)
		require.NotNil(t, list)

		e := job(id)
		require.NoError(t, b.store.AttemptExecutionRecord(ctx, e))
		list, err = b.store.RunExecutions(ctx, id)
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.True(t, list[0].WaitingForHardware())
		require.Equal(t, e.ExternalID, list[0].ExternalID)
		require.True(t, created.Equal(list[0].CreatedAt))

		e.Stage, e.RunningAt = "RUNNING", &running
		require.NoError(t, b.store.AttemptExecutionRecord(ctx, e))
		// A later record that does not carry the times keeps them.
		e.Stage, e.Message, e.RunningAt, e.EndedAt, e.CostMicroUSD = "COMPLETED", "done", nil, &ended, 166670
		require.NoError(t, b.store.AttemptExecutionRecord(ctx, e))
		list, err = b.store.RunExecutions(ctx, id)
		require.NoError(t, err)
		got := list[0]
		require.Equal(t, "COMPLETED", got.Stage)
		require.Equal(t, "done", got.Message)
		require.NotNil(t, got.RunningAt)
		require.True(t, running.Equal(*got.RunningAt))
		require.True(t, ended.Equal(*got.EndedAt))
		require.False(t, got.WaitingForHardware())
		require.Equal(t, 90*time.Second, got.WaitingTime(time.Now()))
		require.Equal(t, 10*time.Minute, got.RunningTime(time.Now()))

		// The run and its attempt are left as they were.
		run, err := b.store.RunGetByID(ctx, id)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunRunning, run.Status)

		mid := b.mappingID(t, "tickets")
		cost, err := b.store.MappingCost(ctx, mid)
		require.NoError(t, err)
		require.Equal(t, int64(166670), cost)
	})

	t.Run("CostSumsRunsOfTheMapping", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"), mapping("other", "acme/other"))
		id := startedRun(t, b)
		require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id, Attempt: 1,
			Transition: orchestrator.TransitionRetry, NoTargets: true}))
		require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: id, Attempt: 2, Argv: []string{"x"}}))
		first, second := job(id), job(id)
		first.CostMicroUSD, second.Attempt, second.CostMicroUSD = 1000, 2, 2500
		second.ExternalID = "687fb701029421ae5549d999"
		require.NoError(t, b.store.AttemptExecutionRecord(ctx, second))
		require.NoError(t, b.store.AttemptExecutionRecord(ctx, first))
		list, err := b.store.RunExecutions(ctx, id)
		require.NoError(t, err)
		require.Len(t, list, 2)
		require.Equal(t, []int{1, 2}, []int{list[0].Attempt, list[1].Attempt}, "by attempt")
		cost, err := b.store.MappingCost(ctx, b.mappingID(t, "tickets"))
		require.NoError(t, err)
		require.Equal(t, int64(3500), cost)
		cost, err = b.store.MappingCost(ctx, b.mappingID(t, "other"))
		require.NoError(t, err)
		require.Zero(t, cost)

		// A third attempt that adopted the second's Job records it too: the Job counts once, at its most.
		require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id, Attempt: 2,
			Transition: orchestrator.TransitionInterrupt, NoTargets: true}))
		require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: id, Attempt: 3, Argv: []string{"x"}}))
		adopted := second
		adopted.Attempt, adopted.CostMicroUSD = 3, 4000
		require.NoError(t, b.store.AttemptExecutionRecord(ctx, adopted))
		cost, err = b.store.MappingCost(ctx, b.mappingID(t, "tickets"))
		require.NoError(t, err)
		require.Equal(t, int64(5000), cost)
	})

	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		id := startedRun(t, b)
		cases := []struct {
			name string
			edit func(e *orchestrator.AttemptExecution)
			code orchestrator.Code
		}{
			{"UnknownAttempt", func(e *orchestrator.AttemptExecution) { e.Attempt = 7 }, orchestrator.CodeNotFound},
			{"UnknownRun", func(e *orchestrator.AttemptExecution) { e.RunID = 424242 }, orchestrator.CodeNotFound},
			{"UnknownExecutor", func(e *orchestrator.AttemptExecution) { e.Executor = "k8s" }, orchestrator.CodeInvalid},
			{"NegativeCost", func(e *orchestrator.AttemptExecution) { e.CostMicroUSD = -1 }, orchestrator.CodeInvalid},
		}
		for _, tc := range cases {
			e := job(id)
			tc.edit(&e)
			err := b.store.AttemptExecutionRecord(ctx, e)
			require.Equal(t, tc.code, orchestrator.ErrorCode(err), "%s: %v", tc.name, err)
		}
		require.Zero(t, count(t, b.pool, `SELECT count(*) FROM attempt_executions`))
	})
}
