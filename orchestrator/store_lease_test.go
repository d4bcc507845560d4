package orchestrator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// TestRunAttemptStartRenewsHeartbeat starts an attempt again (its job put back after a shutdown): its heartbeat is
// that of the new start, which a worker counts its lease from, not the one the earlier execution left.
func TestRunAttemptStartRenewsHeartbeat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, mapping("tickets", "acme/support-tickets"))
	res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
	require.NoError(t, err)
	id := res.RunIDs[0]
	start := orchestrator.RunAttemptStartParams{RunID: id, Attempt: 1, Argv: []string{"x"}}
	require.NoError(t, b.store.RunAttemptStart(ctx, start))
	require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id, Attempt: 1,
		AttemptStatus: orchestrator.AttemptInterrupted, RunStatus: orchestrator.RunQueued}))
	_, err = b.pool.Exec(ctx, `UPDATE run_attempts SET heartbeat_at = now() - interval '1 hour' WHERE run_id = $1`, id)
	require.NoError(t, err)

	require.NoError(t, b.store.RunAttemptStart(ctx, start))
	var age time.Duration
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT now() - heartbeat_at FROM run_attempts WHERE run_id = $1 AND attempt = 1`, id).Scan(&age))
	require.Less(t, age, time.Minute)
}
