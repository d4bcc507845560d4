package web

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestAuthThrottleOverTime follows one client through free failures, growing waits, the cap, a quiet period
// and a success, with another client beside it that is never held back.
func TestAuthThrottleOverTime(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	th := newAuthThrottle(clock.Now, 100)
	const attacker, other = "198.51.100.1", "198.51.100.2"

	for i := range throttleFreeFailures - 1 {
		th.fail(attacker)
		require.Zero(t, th.wait(attacker), "failure %d is free", i+1)
	}
	// The fifth failure starts the waits: 1s, then doubling with each failure at the end of a wait.
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		th.fail(attacker)
		require.Equal(t, want, th.wait(attacker), "wait after failure %d", throttleFreeFailures+i)
		require.Zero(t, th.wait(other), "another client is never held back")
		clock.advance(want / 2)
		require.Equal(t, want/2, th.wait(attacker))
		clock.advance(want / 2)
		require.Zero(t, th.wait(attacker), "the wait is over")
	}
	for range 20 {
		th.fail(attacker)
	}
	require.Equal(t, throttleMaxDelay, th.wait(attacker), "the wait is capped")

	// A quiet period forgets the count: five free failures again.
	clock.advance(throttleQuiet)
	require.Zero(t, th.wait(attacker))
	for range throttleFreeFailures - 1 {
		th.fail(attacker)
	}
	require.Zero(t, th.wait(attacker), "after a quiet period failures are free again")

	// A success forgets it too.
	th.fail(attacker)
	require.Equal(t, time.Second, th.wait(attacker))
	th.succeed(attacker)
	require.Zero(t, th.wait(attacker))
	require.Zero(t, th.len())
}

// TestAuthThrottleBounded keeps the memory bounded: past the cap the client that failed least recently is
// forgotten, and the others keep their counts.
func TestAuthThrottleBounded(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	th := newAuthThrottle(clock.Now, 3)
	for range throttleFreeFailures {
		th.fail("a")
	}
	clock.advance(time.Millisecond)
	for i := range 5 {
		addr := strconv.Itoa(i)
		for range throttleFreeFailures {
			th.fail(addr)
		}
		require.LessOrEqual(t, th.len(), 3)
	}
	require.Zero(t, th.wait("a"), "the oldest client was forgotten")
	require.Positive(t, th.wait("4"), "the latest client is still held back")
	require.Equal(t, 3, th.len())
}
