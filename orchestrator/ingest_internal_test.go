package orchestrator

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestIngesterPanic checks that a write that panics fails its group's deliveries, hands the writer's place on
// and lets the panic go on up its caller's stack, so that later deliveries are still written.
func TestIngesterPanic(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	g := &ingester{write: func(_ context.Context, items []*ingestItem) error {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		switch {
		case n <= 2: // the first two groups hold both writers' places
			<-gate
		case n == 3:
			panic("boom")
		}
		for _, it := range items {
			it.res = &DeliveryInsertResult{}
		}
		return nil
	}}
	state := func() (int, int, int) {
		mu.Lock()
		n := calls
		mu.Unlock()
		g.mu.Lock()
		defer g.mu.Unlock()
		return n, g.writers, len(g.pending)
	}
	waitFor := func(calls, writers, pending int) {
		t.Helper()
		require.Eventually(t, func() bool {
			c, w, p := state()
			return c == calls && w == writers && p == pending
		}, 10*time.Second, time.Millisecond)
	}

	type outcome struct {
		err      error
		panicked any
	}
	submit := func() <-chan outcome {
		out := make(chan outcome, 1)
		go func() {
			defer func() {
				if r := recover(); r != nil {
					out <- outcome{panicked: r}
				}
			}()
			_, err := g.submit(context.Background(), DeliveryInsertParams{})
			out <- outcome{err: err}
		}()
		return out
	}

	held := []<-chan outcome{submit()}
	waitFor(1, 1, 0)
	held = append(held, submit())
	waitFor(2, 2, 0)
	group := []<-chan outcome{submit(), submit()}
	waitFor(2, 2, 2)
	close(gate)
	for _, out := range held {
		require.Equal(t, outcome{}, <-out)
	}
	panicked, failed := 0, 0
	for _, out := range group {
		o := <-out
		switch {
		case o.panicked != nil:
			require.Equal(t, "boom", o.panicked)
			panicked++
		default:
			require.ErrorContains(t, o.err, "panic: boom")
			failed++
		}
	}
	require.Equal(t, 1, panicked, "the writer's caller panics")
	require.Equal(t, 1, failed, "the other caller of the group gets an error")
	_, writers, _ := state()
	require.Zero(t, writers, "the writer's place is given back")
	require.Equal(t, outcome{}, <-submit(), "a later delivery is written")
}
