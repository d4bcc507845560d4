package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// roundTrips counts the statements the orchestrator's pool sends while it is on, by the first line of their
// SQL: a query, an exec, a begin or a commit is one round trip, and so is a batch, however many statements it
// holds.
type roundTrips struct {
	on     atomic.Bool
	mu     sync.Mutex
	trips  int
	counts map[string]int
}

var (
	_ pgx.QueryTracer = (*roundTrips)(nil)
	_ pgx.BatchTracer = (*roundTrips)(nil)
)

// start resets the counts and starts counting.
func (t *roundTrips) start() {
	t.mu.Lock()
	t.trips, t.counts = 0, map[string]int{}
	t.mu.Unlock()
	t.on.Store(true)
}

// stop stops counting and returns the round trips and statements per operation, for n operations.
func (t *roundTrips) stop(n int) map[string]any {
	t.on.Store(false)
	t.mu.Lock()
	defer t.mu.Unlock()
	per := map[string]float64{}
	for sql, c := range t.counts {
		per[sql] = float64(c) / float64(n)
	}
	return map[string]any{"round_trips": float64(t.trips) / float64(n), "statements": per}
}

func (t *roundTrips) record(sql string, trip bool) {
	if !t.on.Load() {
		return
	}
	line := strings.Join(strings.Fields(sql), " ")
	if len(line) > 90 {
		line = line[:90] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if trip {
		t.trips++
	}
	t.counts[line]++
}

// TraceQueryStart implements pgx.QueryTracer.
func (t *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	t.record(data.SQL, true)
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart implements pgx.BatchTracer.
func (t *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	t.record(fmt.Sprintf("(batch of %d)", data.Batch.Len()), true)
	return ctx
}

// TraceBatchQuery implements pgx.BatchTracer.
func (t *roundTrips) TraceBatchQuery(_ context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	t.record("(in a batch) "+data.SQL, false)
}

// TraceBatchEnd implements pgx.BatchTracer.
func (t *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
