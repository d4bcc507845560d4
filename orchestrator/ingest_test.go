package orchestrator_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// ingestOutcome is what DeliveryInsert returned to one caller.
type ingestOutcome struct {
	res *orchestrator.DeliveryInsertResult
	err error
}

// ingestCaller sends one delivery of revision n (40 hex digits) of acme/support-tickets from a goroutine of its
// own, as a request would.
type ingestCaller struct {
	n      int
	broken bool // a NUL in the remote address, which the text column refuses
	giveUp bool // the caller's context is cancelled while the delivery waits
}

func (c ingestCaller) send(ctx context.Context, t *testing.T, b *testBundle) <-chan ingestOutcome {
	t.Helper()
	d, err := orchestrator.ParseDelivery(fmt.Appendf(nil, `{"event":{"scope":"repo.content","action":"update"},
		"repo":{"type":"dataset","name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},
		"updatedRefs":[{"ref":"refs/heads/main","newSha":"%040x"}]}`, c.n))
	require.NoError(t, err)
	addr := "192.0.2.1"
	if c.broken {
		addr += "\x00"
	}
	out := make(chan ingestOutcome, 1)
	go func() {
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d, RemoteAddr: addr})
		out <- ingestOutcome{res, err}
	}()
	return out
}

// holdWriters takes a lock that keeps deliveries from being inserted, and sends a delivery (revisions 1 and 2)
// for each of the ingester's writer places, so that both wait for the lock with a group of one. Deliveries sent
// next wait for a group. release lets the writers go on.
func holdWriters(ctx context.Context, t *testing.T, b *testBundle) (blocked []<-chan ingestOutcome, release func()) {
	t.Helper()
	tx, err := b.pool.Begin(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	_, err = tx.Exec(context.Background(), `LOCK TABLE deliveries IN SHARE MODE`)
	require.NoError(t, err)
	for i := 1; i <= 2; i++ {
		blocked = append(blocked, ingestCaller{n: i}.send(ctx, t, b))
		require.Eventually(t, func() bool {
			return count(t, b.pool, `SELECT count(*) FROM pg_locks WHERE relation = 'deliveries'::regclass AND NOT granted`) == i
		}, 10*time.Second, 5*time.Millisecond, "writer %d waits for the lock", i)
	}
	require.Equal(t, 2, b.store.IngestWriters())
	return blocked, func() { require.NoError(t, tx.Rollback(context.Background())) }
}

// transactions returns how many transactions wrote the deliveries.
func transactions(t *testing.T, b *testBundle, deliveryIDs []int64) int {
	t.Helper()
	return count(t, b.pool, `SELECT count(DISTINCT xmin::text) FROM deliveries WHERE id = ANY($1)`, deliveryIDs)
}

func TestIngester(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// group is sent while both writers are held; the callers of the held writers give up when
		// giveUpBlocked is set.
		group         []ingestCaller
		giveUpBlocked bool
		// wantFailed lists the callers of group whose delivery fails; wantTransactions is how many
		// transactions write the others; wantRuns how many runs they create.
		wantFailed       []int
		wantTransactions int
		wantRuns         int
	}{{
		name:             "deliveries sent while others are written share one transaction",
		group:            []ingestCaller{{n: 3}, {n: 4}, {n: 5}, {n: 6}, {n: 7}, {n: 8}, {n: 9}, {n: 10}},
		wantTransactions: 1,
		wantRuns:         8,
	}, {
		name:             "a group that fails is written again one delivery at a time",
		group:            []ingestCaller{{n: 3}, {n: 4}, {n: 5, broken: true}, {n: 6}, {n: 7}},
		wantFailed:       []int{2},
		wantTransactions: 4,
		wantRuns:         4,
	}, {
		name:             "the same revision sent by several callers makes one run",
		group:            []ingestCaller{{n: 3}, {n: 3}, {n: 3}, {n: 4}, {n: 3}},
		wantTransactions: 1,
		wantRuns:         2,
	}, {
		name:             "callers that give up before their group begins write nothing",
		group:            []ingestCaller{{n: 3, giveUp: true}, {n: 4}, {n: 5, giveUp: true}},
		wantFailed:       []int{0, 2},
		wantTransactions: 1,
		wantRuns:         1,
	}, {
		name:             "a group begun is written when its callers give up",
		group:            []ingestCaller{{n: 3}},
		giveUpBlocked:    true,
		wantTransactions: 1,
		wantRuns:         1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, mapping("tickets", "acme/support-tickets"))
			blockedCtx, giveUpBlocked := context.WithCancel(context.Background())
			defer giveUpBlocked()
			groupCtx, giveUp := context.WithCancel(context.Background())
			defer giveUp()

			blocked, release := holdWriters(blockedCtx, t, b)
			var sent []<-chan ingestOutcome
			for _, c := range tt.group {
				ctx := context.Background()
				if c.giveUp {
					ctx = groupCtx
				}
				sent = append(sent, c.send(ctx, t, b))
			}
			require.Eventually(t, func() bool { return b.store.IngestWaiting() == len(tt.group) },
				10*time.Second, time.Millisecond, "every delivery of the group waits")
			if tt.giveUpBlocked {
				giveUpBlocked()
			}
			giveUp()
			release()

			for i, out := range blocked {
				o := <-out
				require.NoError(t, o.err, "held writer %d", i)
				require.Len(t, o.res.RunIDs, 1, "held writer %d", i)
			}
			var written []int64
			runs := map[int64]bool{}
			for i, out := range sent {
				o := <-out
				if slices.Contains(tt.wantFailed, i) {
					require.Error(t, o.err, "caller %d", i)
					require.Equal(t, orchestrator.CodeUnavailable, orchestrator.ErrorCode(o.err), "caller %d", i)
					if tt.group[i].giveUp {
						require.True(t, errors.Is(o.err, context.Canceled), "caller %d: %v", i, o.err)
					}
					continue
				}
				require.NoError(t, o.err, "caller %d", i)
				written = append(written, o.res.DeliveryID)
				for _, dec := range o.res.Decisions {
					require.NotZero(t, dec.RunID, "caller %d: %s", i, dec.Reason)
					runs[dec.RunID] = true
				}
			}
			require.Equal(t, tt.wantTransactions, transactions(t, b, written))
			require.Len(t, runs, tt.wantRuns)
			require.Equal(t, 2+len(written), count(t, b.pool, `SELECT count(*) FROM deliveries`),
				"the deliveries that failed or were given up are not written")
			require.Equal(t, 2+tt.wantRuns, runsWithTheirJobs(t, b, b.pool))
			require.Equal(t, len(written)-tt.wantRuns, count(t, b.pool, `SELECT count(*) FROM decisions WHERE decision = 'duplicate'`))

			require.Zero(t, b.store.IngestWriters(), "no writer is left once every call returned")
			require.Zero(t, b.store.IngestWaiting())
		})
	}

	t.Run("ManyCallersAtOnceLeaveNothingRunning", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		const callers = 200
		var wg sync.WaitGroup
		errs := make([]error, callers)
		ids := make([]int64, callers)
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := <-ingestCaller{n: i + 1}.send(context.Background(), t, b)
				errs[i] = o.err
				if o.err == nil {
					ids[i] = o.res.DeliveryID
				}
			}()
		}
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "caller %d", i)
		}
		require.Equal(t, callers, runsWithTheirJobs(t, b, b.pool))
		require.Less(t, transactions(t, b, ids), callers, "some deliveries shared a transaction")
		require.Zero(t, b.store.IngestWriters())
		require.Zero(t, b.store.IngestWaiting())
	})
}
