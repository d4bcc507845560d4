package jobs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// TestCommitOrder delivers the pushes of one ref out of order, as the Hub may (a delivery it retries after an
// outage arrives after the ones that followed it): X's push starts a run, then the push of Z, whose oldSha is
// Y, then, late, the push of Y, whose oldSha is X. "Newer" is decided by the ref's history, never by arrival:
// with supersede and cancel_running the last revision to train is Z and Y never trains; with queue every
// revision trains in the history's order, X, Y, Z. A worker executes the runs, with concurrency 1.
func TestCommitOrder(t *testing.T) {
	t.Parallel()
	cases := []struct {
		policy orchestrator.NewRevisionPolicy
		want   func(x, y, z string) []string // the revisions executed, in order
	}{
		{orchestrator.OnNewRevisionSupersede, func(x, _, z string) []string { return []string{x, z} }},
		{orchestrator.OnNewRevisionCancelRunning, func(x, _, z string) []string { return []string{x, z} }},
		{orchestrator.OnNewRevisionQueue, func(x, y, z string) []string { return []string{x, y, z} }},
	}
	for _, tc := range cases {
		t.Run(string(tc.policy), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			b := setup(t, shMapping("order", exclusiveScript(dir, 600*time.Millisecond), func(m *orchestrator.Mapping) {
				m.OnNewRevision = tc.policy
			}))
			w, x, y, z := newRevision(), newRevision(), newRevision(), newRevision()
			began := time.Now()
			runX := b.pushAfter(t, "acme/order", "refs/heads/main", w, x)
			b.waitStatus(t, runX, 10*time.Second, orchestrator.RunRunning)
			runZ := b.pushAfter(t, "acme/order", "refs/heads/main", y, z)
			late := b.deliver(t, "acme/order", "refs/heads/main", x, y)

			ids := append([]int64{runX, runZ}, late.RunIDs...)
			runs := b.allFinished(t, ids, 30*time.Second)
			for _, id := range ids {
				require.NotEqual(t, orchestrator.RunFailed, runs[id].Status, "run %d: %s", id, runs[id].Error)
			}
			require.Equal(t, orchestrator.RunSucceeded, runs[runZ].Status, "the ref's head trains: %s", runs[runZ].Error)

			ivs := readIntervals(t, dir)
			got := make([]string, len(ivs))
			for i, iv := range ivs {
				got[i] = iv.revision
			}
			require.Equal(t, tc.want(x, y, z), got, "revisions executed (x=%.7s y=%.7s z=%.7s)", x, y, z)
			require.Equal(t, 1, maxOverlap(ivs))

			dec := late.Decisions[0]
			if tc.policy == orchestrator.OnNewRevisionQueue {
				require.Equal(t, orchestrator.DecisionQueued, dec.Decision, "every revision trains")
			} else {
				require.Equal(t, orchestrator.DecisionIgnored, dec.Decision)
				require.Equal(t, orchestrator.IgnoreOlder, dec.Cause)
				require.Equal(t, "older than revision "+z[:12]+"…, already recorded for refs/heads/main", dec.Reason)
				list, err := b.store.DeliveryList(context.Background(), orchestrator.DeliveryListParams{Limit: 1})
				require.NoError(t, err)
				require.Equal(t, dec.Reason, list[0].Decisions[0].Reason, "the delivery page says why")
			}
			t.Logf("%s: executed %d revisions in %s, the last %.7s (the ref's head)", tc.policy, len(ivs),
				time.Since(began).Round(time.Millisecond), got[len(got)-1])

			// A replay of Y after Z trained still never trains Y again over Z.
			replay := b.deliver(t, "acme/order", "refs/heads/main", x, y)
			require.Empty(t, replay.RunIDs)
		})
	}
}

// TestCommitOrderAsksTheHubAcrossAGap covers deliveries whose history has a gap: the push between two revisions
// never arrived, so the recorded history cannot tell which is newer. The worker then asks the Hub for the
// ref's head, and the head wins, whichever arrived last.
func TestCommitOrderAsksTheHubAcrossAGap(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		headIsV  bool // the Hub's head is the revision that arrived first
		wantLast string
	}{
		{"HeadArrivedFirst", true, "v"},
		{"HeadArrivedLast", false, "u"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			h := newReconcileHub(t)
			b := setupWith(t, func(cfg *jobs.ClientConfig) {
				cfg.Worker.Heads = hub.New(h.server.URL, "")
			}, shMapping("gap", exclusiveScript(dir, 300*time.Millisecond)))
			a, v, c, u := newRevision(), newRevision(), newRevision(), newRevision()
			head := u
			if tc.headIsV {
				head = v
			}
			h.mu.Lock()
			h.datasets["acme/gap"] = &reconcileDataset{id: "66a1f0c2b9e4d3a1f2c3d4e5", refs: map[string]string{"refs/heads/main": head}}
			h.mu.Unlock()

			// a → v, then c → u: nothing recorded says whether c came after v or before it.
			first := b.pushAfter(t, "acme/gap", "refs/heads/main", a, v)
			b.waitStatus(t, first, 10*time.Second, orchestrator.RunSucceeded)
			second := b.pushAfter(t, "acme/gap", "refs/heads/main", c, u)
			runs := b.allFinished(t, []int64{first, second}, 20*time.Second)

			ivs := readIntervals(t, dir)
			last := ivs[len(ivs)-1].revision
			names := map[string]string{v: "v", u: "u"}
			require.Equal(t, tc.wantLast, names[last], "the Hub's head trains last")
			if tc.headIsV {
				require.Equal(t, orchestrator.RunSuperseded, runs[second].Status)
				require.Equal(t, first, *runs[second].SupersededBy)
				require.True(t, strings.HasPrefix(runs[second].Error, "superseded by run"), runs[second].Error)
			} else {
				require.Equal(t, orchestrator.RunSucceeded, runs[second].Status)
			}
			h.mu.Lock()
			asked := h.asked["acme/gap"]
			h.mu.Unlock()
			require.Equal(t, 1, asked, "the Hub is asked once, for the run the history cannot place")
		})
	}
}
