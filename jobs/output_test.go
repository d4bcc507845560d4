package jobs_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
)

// heapSampler records the largest HeapInuse of the test process, sampled every 50 ms until stopped.
type heapSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
	n    int
}

func sampleHeap() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			h.peak = max(h.peak, ms.HeapInuse)
			h.n++
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	})
	return h
}

// Stop ends the sampling and returns the peak.
func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak
}

const mib = 1 << 20

// TestCommandExtremes runs commands at the edges through a real River client and worker: one that writes 1 GiB
// of output, which must be counted to the byte while memory and the stored log stay bounded, and one that never
// exits and ignores SIGTERM, which must be killed after its timeout and the kill grace.
func TestCommandExtremes(t *testing.T) {
	t.Parallel()

	t.Run("GiBOfOutput", func(t *testing.T) {
		t.Parallel()
		// 1 GiB; a quarter of it under the race detector, which makes the copy loop several times slower (the
		// bounds checked below do not depend on the size).
		size := 1 << 30
		if raceEnabled {
			size = 256 << 20
		}
		b := setup(t, shMapping("gib", "head -c "+strconv.Itoa(size)+" /dev/zero", func(m *orchestrator.Mapping) {
			m.MaxAttempts = 1
			m.Timeout = 5 * time.Minute
		}))
		limit := jobs.LogLimitDefault // setup leaves LogLimit at its default
		require.Zero(t, b.cfg.Worker.LogLimit)
		// Flush at the production interval rather than setup's 20 ms: restart before anything is enqueued.
		b.cfg.Worker.LogFlushInterval = jobs.LogFlushIntervalDefault
		require.NoError(t, b.client.StopAndCancel(context.Background()))
		b.start(t)

		heap := sampleHeap()
		runID := b.push(t, "acme/gib", "refs/heads/main", shaB)
		// The pipe alone carries about 450 MiB/s here; capturing must keep well above 10 MiB/s, also under -race.
		run := b.waitStatus(t, runID, 150*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		peak := heap.Stop()
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)

		attempts, err := b.store.RunAttemptList(context.Background(), runID)
		require.NoError(t, err)
		require.Len(t, attempts, 1)
		a := attempts[0]
		var stored, chunks int64
		require.NoError(t, b.pool.QueryRow(context.Background(),
			`SELECT coalesce(sum(length(data)), 0), count(*) FROM run_logs WHERE run_id = $1 AND attempt = 1`, runID).Scan(&stored, &chunks))
		took := run.FinishedAt.Sub(*run.StartedAt)
		t.Logf("%d MiB of output in %s (%.0f MiB/s): log_bytes %d, stored %d bytes in %d chunks, dropped %d; peak HeapInuse %.1f MiB over %d samples",
			size/mib, took.Round(time.Millisecond), float64(size)/mib/took.Seconds(), a.LogBytes, stored, chunks, a.LogDropped, float64(peak)/mib, heap.n)

		require.Equal(t, int64(size), a.LogBytes, "every byte is counted")
		require.GreaterOrEqual(t, stored, int64(limit), "at least the limit is kept")
		require.LessOrEqual(t, stored, int64(limit+256<<10), "at most one chunk more than the limit is kept")
		require.Equal(t, int64(size), a.LogDropped+stored, "every byte is either kept or counted as dropped")
		tail, _, err := b.store.RunLogTail(context.Background(), runID, 1, mib)
		require.NoError(t, err)
		require.NotEmpty(t, tail)
		require.Equal(t, strings.Repeat("\x00", len(tail)), string(tail))
		require.Less(t, peak, uint64(100*mib), "the test process's heap stays bounded")
	})

	t.Run("IgnoresSIGTERM", func(t *testing.T) {
		t.Parallel()
		pidFile := filepath.Join(t.TempDir(), "pid")
		b := setup(t, shMapping("stubborn", `echo $$ > `+pidFile+`; trap '' TERM; echo ignoring; while :; do sleep 1; done`,
			func(m *orchestrator.Mapping) {
				m.Timeout = time.Second
				m.MaxAttempts = 1
			}))
		grace := b.cfg.Worker.KillGrace
		runID := b.push(t, "acme/stubborn", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunFailed, run.Status)
		require.Equal(t, "SIGKILL", run.Signal)
		require.Nil(t, run.ExitCode)
		require.Equal(t, "killed by SIGKILL after timeout of 1s", run.Error)
		took := run.FinishedAt.Sub(*run.StartedAt)
		t.Logf("killed %s after it started (timeout 1s, kill grace %s)", took.Round(time.Millisecond), grace)
		require.GreaterOrEqual(t, took, time.Second+grace, "SIGTERM was ignored, so only SIGKILL after the grace ended it")
		require.LessOrEqual(t, took, time.Second+grace+2*time.Second)
		require.Equal(t, "ignoring\n", b.log(t, runID, 1))

		data, err := os.ReadFile(pidFile)
		require.NoError(t, err)
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		require.NoError(t, err)
		require.Eventually(t, func() bool { return processGone(pid) }, 3*time.Second, 20*time.Millisecond,
			"the command's shell %d is still alive", pid)
	})
}

// TestLogKeepsTheEndInOrder checks that the kept log is exactly the end of what the command wrote, in order,
// when the output overflows the limit many times between flushes and within them.
func TestLogKeepsTheEndInOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lines    int
		limit    int
		interval time.Duration
	}{
		{name: "UnderTheLimit", lines: 1000, limit: 64 << 10, interval: 20 * time.Millisecond},
		{name: "OverflowsBetweenFlushes", lines: 200000, limit: 64 << 10, interval: 250 * time.Millisecond},
		{name: "LimitSmallerThanAWrite", lines: 100000, limit: 1000, interval: 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, shMapping("seq", "seq 1 "+strconv.Itoa(tt.lines), func(m *orchestrator.Mapping) { m.MaxAttempts = 1 }))
			require.NoError(t, b.client.StopAndCancel(context.Background()))
			b.cfg.Worker.LogLimit, b.cfg.Worker.LogFlushInterval = tt.limit, tt.interval
			b.start(t)
			runID := b.push(t, "acme/seq", "refs/heads/main", shaB)
			run := b.waitStatus(t, runID, 60*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
			require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)

			var full strings.Builder
			for i := 1; i <= tt.lines; i++ {
				full.WriteString(strconv.Itoa(i))
				full.WriteByte('\n')
			}
			attempts, err := b.store.RunAttemptList(context.Background(), runID)
			require.NoError(t, err)
			require.Equal(t, int64(full.Len()), attempts[0].LogBytes, "every byte is counted")
			kept, notShown, err := b.store.RunLogTail(context.Background(), runID, 1, 64<<20)
			require.NoError(t, err)
			require.GreaterOrEqual(t, len(kept), min(tt.limit, full.Len()), "at least the limit is kept")
			require.True(t, strings.HasSuffix(full.String(), string(kept)), "the kept log is the end of the output, in order")
			require.Equal(t, int64(full.Len()), notShown+int64(len(kept)))
			require.Equal(t, attempts[0].LogDropped, notShown, "what is not kept is counted as dropped")
		})
	}
}
