package jobs_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func newRevision() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// interval is one execution of a command, read from the events file it wrote.
type interval struct {
	revision   string
	start, end int64
}

// exclusiveScript records start and end times of each execution and fails loudly ("CONCURRENT") when another
// execution of the mapping holds the lock: with concurrency 1 that must never happen.
func exclusiveScript(dir string, hold time.Duration) string {
	events, lock := filepath.Join(dir, "events"), filepath.Join(dir, "lock")
	return `exec 9>>` + lock + `; if ! flock -n 9; then echo "CONCURRENT $1" >> ` + events + `; exit 3; fi; ` +
		`echo "start $1 $(date +%s%N)" >> ` + events + `; sleep ` + strconv.FormatFloat(hold.Seconds(), 'f', 3, 64) +
		`; echo "end $1 $(date +%s%N)" >> ` + events
}

// timedScript records start and end times without a lock, for concurrency above 1.
func timedScript(dir string, hold time.Duration) string {
	events := filepath.Join(dir, "events")
	return `echo "start $1 $(date +%s%N)" >> ` + events + `; sleep ` + strconv.FormatFloat(hold.Seconds(), 'f', 3, 64) +
		`; echo "end $1 $(date +%s%N)" >> ` + events
}

func readIntervals(t *testing.T, dir string) []interval {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "events"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	require.NotContains(t, string(data), "CONCURRENT", "two executions overlapped")
	byRev := map[string]*interval{}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		require.Len(t, f, 3, line)
		ts, err := strconv.ParseInt(f[2], 10, 64)
		require.NoError(t, err)
		iv, ok := byRev[f[1]]
		if !ok {
			iv = &interval{revision: f[1]}
			byRev[f[1]] = iv
			order = append(order, f[1])
		}
		if f[0] == "start" {
			iv.start = ts
		} else {
			iv.end = ts
		}
	}
	out := make([]interval, 0, len(order))
	for _, rev := range order {
		out = append(out, *byRev[rev])
	}
	return out
}

func maxOverlap(ivs []interval) int {
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	for _, iv := range ivs {
		edges = append(edges, edge{iv.start, 1}, edge{iv.end, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at == edges[j].at {
			return edges[i].delta < edges[j].delta
		}
		return edges[i].at < edges[j].at
	})
	cur, best := 0, 0
	for _, e := range edges {
		cur += e.delta
		best = max(best, cur)
	}
	return best
}

func (b *testBundle) allFinished(t *testing.T, ids []int64, timeout time.Duration) map[int64]*orchestrator.Run {
	t.Helper()
	out := map[int64]*orchestrator.Run{}
	for _, id := range ids {
		out[id] = b.waitStatus(t, id, timeout, orchestrator.RunSucceeded, orchestrator.RunFailed,
			orchestrator.RunSuperseded, orchestrator.RunCancelled)
	}
	return out
}

func TestTriggers(t *testing.T) {
	t.Parallel()

	t.Run("BurstCoalescesIntoOneRunOnTheNewestRevision", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		// The quiet period is long enough that a loaded machine still posts the burst within it.
		b := setup(t, shMapping("burst", exclusiveScript(dir, 0), func(m *orchestrator.Mapping) {
			m.QuietPeriod, m.MaxWait = 3*time.Second, 30*time.Second
		}))
		var ids []int64
		var revs []string
		for range 5 {
			rev := newRevision()
			revs = append(revs, rev)
			ids = append(ids, b.push(t, "acme/burst", "refs/heads/main", rev))
			time.Sleep(100 * time.Millisecond)
		}
		runs := b.allFinished(t, ids, 15*time.Second)
		newest := ids[len(ids)-1]
		require.Equal(t, orchestrator.RunSucceeded, runs[newest].Status, runs[newest].Error)
		for _, id := range ids[:len(ids)-1] {
			require.Equal(t, orchestrator.RunSuperseded, runs[id].Status, "run %d", id)
			// A run picked up while the burst was still arriving gives way to the newest revision of that moment,
			// which gives way in turn: the chain ends at the newest run.
			next := id
			for next != newest {
				require.NotNil(t, runs[next].SupersededBy, "run %d", next)
				require.Greater(t, *runs[next].SupersededBy, next, "run %d points at a newer run", next)
				next = *runs[next].SupersededBy
			}
		}
		ivs := readIntervals(t, dir)
		require.Len(t, ivs, 1, "one execution for the burst")
		require.Equal(t, revs[len(revs)-1], ivs[0].revision, "on the newest revision")

		// The deliveries say why the other revisions did not run.
		list, err := b.store.DeliveryList(context.Background(), orchestrator.DeliveryListParams{Limit: 10})
		require.NoError(t, err)
		oldest := list[len(list)-1].Decisions[0]
		require.Equal(t, orchestrator.RunSuperseded, oldest.RunStatus)
		require.Equal(t, *runs[ids[0]].SupersededBy, oldest.SupersededBy)
	})

	t.Run("MaxWaitBoundsAQuietPeriod", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		b := setup(t, shMapping("steady", timedScript(dir, 0), func(m *orchestrator.Mapping) {
			m.QuietPeriod, m.MaxWait = time.Second, 1500*time.Millisecond
		}))
		start := time.Now()
		var first int64
		for i := range 12 { // a commit every 250 ms for 3 s: never quiet for a second
			id := b.push(t, "acme/steady", "refs/heads/main", newRevision())
			if i == 0 {
				first = id
			}
			time.Sleep(250 * time.Millisecond)
		}
		run, err := b.store.RunGetByID(context.Background(), first)
		require.NoError(t, err)
		require.NotNil(t, run.NotBefore)
		ivs := readIntervals(t, dir)
		require.NotEmpty(t, ivs, "a run started although commits kept coming")
		require.Less(t, time.Unix(0, ivs[0].start).Sub(start), 2500*time.Millisecond, "started within max_wait of the first commit")
	})

	t.Run("QueueRunsEveryRevisionInOrderOneAtATime", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		b := setup(t, shMapping("ordered", exclusiveScript(dir, 150*time.Millisecond), func(m *orchestrator.Mapping) {
			m.OnNewRevision = orchestrator.OnNewRevisionQueue
		}))
		b.start(t) // a second "process" on the same database
		var ids []int64
		var revs []string
		for range 6 {
			rev := newRevision()
			revs = append(revs, rev)
			ids = append(ids, b.push(t, "acme/ordered", "refs/heads/main", rev))
		}
		runs := b.allFinished(t, ids, 20*time.Second)
		for _, id := range ids {
			require.Equal(t, orchestrator.RunSucceeded, runs[id].Status, "run %d: %s", id, runs[id].Error)
		}
		ivs := readIntervals(t, dir)
		got := make([]string, len(ivs))
		for i, iv := range ivs {
			got[i] = iv.revision
		}
		require.Equal(t, revs, got, "every revision ran, in the order it arrived")
		require.Equal(t, 1, maxOverlap(ivs))
	})

	t.Run("ConcurrencyLimitAcrossProcesses", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		b := setup(t, shMapping("pair", timedScript(dir, 300*time.Millisecond), func(m *orchestrator.Mapping) {
			m.OnNewRevision, m.Concurrency = orchestrator.OnNewRevisionQueue, 2
		}))
		b.start(t)
		var ids []int64
		for range 6 {
			ids = append(ids, b.push(t, "acme/pair", "refs/heads/main", newRevision()))
		}
		runs := b.allFinished(t, ids, 20*time.Second)
		for _, id := range ids {
			require.Equal(t, orchestrator.RunSucceeded, runs[id].Status)
		}
		ivs := readIntervals(t, dir)
		require.Len(t, ivs, 6)
		require.Equal(t, 2, maxOverlap(ivs), "two at a time, never three")
	})

	t.Run("CancelRunningStopsTheOlderRevision", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		b := setup(t, shMapping("fresh", timedScript(dir, 30*time.Second), func(m *orchestrator.Mapping) {
			m.OnNewRevision = orchestrator.OnNewRevisionCancelRunning
		}))
		old := b.push(t, "acme/fresh", "refs/heads/main", newRevision())
		b.waitStatus(t, old, 10*time.Second, orchestrator.RunRunning)
		b.cfg.Worker.LogLimit = 0
		require.NoError(t, os.WriteFile(filepath.Join(dir, "events"), nil, 0o644))
		newer := b.push(t, "acme/fresh", "refs/heads/main", newRevision())
		run := b.waitStatus(t, old, 10*time.Second, orchestrator.RunSuperseded, orchestrator.RunCancelled, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSuperseded, run.Status, run.Error)
		require.Equal(t, newer, *run.SupersededBy)
		require.Contains(t, run.Error, "superseded by run")
		b.waitStatus(t, newer, 10*time.Second, orchestrator.RunRunning)
	})

	t.Run("ManyDeliveriesAtOnceFromSeveralProcesses", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		b := setup(t, shMapping("storm", exclusiveScript(dir, 100*time.Millisecond)))
		b.start(t)
		// Each push replaces the one before it in the ref's history; four senders deliver them at once, so
		// they arrive in any order. A push that arrives after its successor creates no run: it is older than
		// a revision already recorded.
		var mu sync.Mutex
		head, pushes := newRevision(), 0
		place := map[int64]int{} // each run's place in the ref's history
		var ids []int64
		older := 0 // pushes that arrived after their successor
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					mu.Lock()
					old, rev := head, newRevision()
					head, pushes = rev, pushes+1
					n := pushes
					mu.Unlock()
					res := b.deliver(t, "acme/storm", "refs/heads/main", old, rev)
					mu.Lock()
					if len(res.RunIDs) == 1 {
						ids, place[res.RunIDs[0]] = append(ids, res.RunIDs[0]), n
					} else {
						require.Equal(t, orchestrator.IgnoreOlder, res.Decisions[0].Cause, "%+v", res.Decisions)
						older++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		require.Equal(t, 20, len(ids)+older)
		runs := b.allFinished(t, ids, 30*time.Second)
		newest := ids[0]
		for _, id := range ids {
			if place[id] > place[newest] {
				newest = id
			}
		}
		require.Equal(t, pushes, place[newest], "the ref's head has a run: nothing comes after it")
		require.Equal(t, orchestrator.RunSucceeded, runs[newest].Status, "the ref's head always runs")
		executed := 0
		for _, id := range ids {
			switch runs[id].Status {
			case orchestrator.RunSucceeded:
				executed++
			case orchestrator.RunSuperseded:
				require.Greater(t, place[*runs[id].SupersededBy], place[id], "replaced by a later revision of the history")
			default:
				t.Fatalf("run %d ended %s: %s", id, runs[id].Status, runs[id].Error)
			}
		}
		ivs := readIntervals(t, dir)
		require.Len(t, ivs, executed)
		require.Equal(t, 1, maxOverlap(ivs), "never two running with concurrency 1")
		require.Equal(t, runs[newest].Revision, ivs[len(ivs)-1].revision, "the head trains last")
		require.Less(t, executed, len(ids), "a storm is coalesced")
	})
}
