package service

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

// TestPruneAudit: the maintenance loop deletes the entries older than the retention at start and again on
// every tick, and keeps the younger ones.
func TestPruneAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := dbtest.NewMigratedPool(t)
	store := orchestrator.NewStore(pool)
	insert := func(age string) {
		_, err := pool.Exec(ctx, `INSERT INTO audit_log (at, action, outcome, auth) VALUES (now() - $1::interval, 'login', 'ok', 'none')`, age)
		require.NoError(t, err)
	}
	count := func() int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM audit_log`).Scan(&n))
		return n
	}
	insert("100 days")
	insert("1 day")
	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pruneAudit(loopCtx, store, 90*24*time.Hour, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	require.Eventually(t, func() bool { return count() == 1 }, 5*time.Second, 10*time.Millisecond, "pruned at start")
	insert("91 days") // an entry that ages past the retention while the loop runs
	require.Eventually(t, func() bool { return count() == 1 }, 5*time.Second, 10*time.Millisecond, "pruned on a tick")
	cancel()
	<-done
	require.Equal(t, 1, count(), "the young entry stays")
}
