package orchestrator_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
)

// revisionDelivery returns a delivery of revision n (40 hex digits) of acme/support-tickets's main branch.
func revisionDelivery(t *testing.T, n int) *orchestrator.Delivery {
	t.Helper()
	d, err := orchestrator.ParseDelivery(fmt.Appendf(nil, `{"event":{"scope":"repo.content","action":"update"},
		"repo":{"type":"dataset","name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},
		"updatedRefs":[{"ref":"refs/heads/main","newSha":"%040x"}]}`, n))
	require.NoError(t, err)
	return d
}

// pgDeadlocks returns how many deadlocks PostgreSQL has counted in the test's database, which other tests
// share: it is reported, not asserted.
func pgDeadlocks(t *testing.T, b *testBundle) int {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), `SELECT pg_stat_clear_snapshot()`)
	require.NoError(t, err)
	return count(t, b.pool, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`)
}

// TestIngestDuplicatesAtOnceNeverDeadlock sends every revision twice at the same moment, from many callers of
// two stores on one schema (two processes behind one load balancer), so that a revision and its duplicate land
// in two group transactions in flight together, in any order within their groups. Every delivery is answered,
// no group write ends in a deadlock, each (mapping, repository, ref, revision) has exactly one run with its
// job, and the other delivery of it is recorded as its duplicate.
func TestIngestDuplicatesAtOnceNeverDeadlock(t *testing.T) {
	t.Parallel()
	b := setup(t, mapping("tickets", "acme/support-tickets"), mapping("tickets-nightly", "acme/support-tickets"))
	second := orchestrator.NewStore(b.pool)
	second.SetQueue(jobs.NewQueue(b.pool, b.river))
	stores := []*orchestrator.Store{b.store, second}
	// A pause before each run's insert (in this test's schema only) widens the moment in which two groups
	// insert their runs side by side, so that groups taking them in opposing orders would meet.
	_, err := b.pool.Exec(context.Background(), `
		CREATE FUNCTION runs_insert_pause() RETURNS trigger LANGUAGE plpgsql AS
			$$BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END$$;
		CREATE TRIGGER runs_insert_pause BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION runs_insert_pause()`)
	require.NoError(t, err)
	deadlocksBefore := pgDeadlocks(t, b)

	// Each pair of callers sends its revisions one after the other, both callers of a pair at once and each
	// through a store of its own, so that the two deliveries of a revision are written by two groups; the
	// pairs are not in step, so each group holds revisions in an order of its own.
	const pairs, perPair = 16, 16
	type sent struct {
		revision int
		res      *orchestrator.DeliveryInsertResult
		err      error
	}
	results := make([]*sent, 0, 2*pairs*perPair)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perPair {
				n := i*pairs + p + 1
				calls := []*sent{{revision: n}, {revision: n}}
				var both sync.WaitGroup
				for j, c := range calls {
					both.Add(1)
					d := revisionDelivery(t, n)
					go func() {
						defer both.Done()
						c.res, c.err = stores[j].DeliveryInsert(context.Background(),
							orchestrator.DeliveryInsertParams{Delivery: d, RemoteAddr: "192.0.2.1"})
					}()
				}
				both.Wait()
				mu.Lock()
				results = append(results, calls...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	type key struct {
		mappingID int64
		revision  int
	}
	queued, duplicates := map[key]int64{}, map[key]int64{}
	for _, c := range results {
		require.NoError(t, c.err, "revision %d", c.revision)
		require.Len(t, c.res.Decisions, 2, "revision %d", c.revision)
		for _, dec := range c.res.Decisions {
			k := key{dec.MappingID, c.revision}
			require.NotZero(t, dec.RunID, "revision %d: %s", c.revision, dec.Reason)
			switch dec.Decision {
			case orchestrator.DecisionQueued:
				require.NotContains(t, queued, k, "revision %d queued twice", c.revision)
				queued[k] = dec.RunID
			case orchestrator.DecisionDuplicate:
				require.NotContains(t, duplicates, k, "revision %d a duplicate twice", c.revision)
				require.Equal(t, fmt.Sprintf("duplicate of run %d", dec.RunID), dec.Reason)
				duplicates[k] = dec.RunID
			default:
				t.Fatalf("revision %d: decision %s (%s)", c.revision, dec.Decision, dec.Reason)
			}
		}
	}
	require.Len(t, queued, 2*pairs*perPair, "one run per mapping and revision")
	require.Equal(t, queued, duplicates, "each duplicate names the run of its revision")

	want := 2 * pairs * perPair
	require.Equal(t, want, count(t, b.pool, `SELECT count(*) FROM runs`))
	require.Equal(t, want, count(t, b.pool, `SELECT count(DISTINCT (mapping_id, repo_id, ref, revision)) FROM runs`))
	require.Equal(t, want, runsWithTheirJobs(t, b, b.pool))
	require.Equal(t, want, count(t, b.pool, `SELECT count(*) FROM decisions d JOIN runs r ON r.id = d.run_id
		WHERE d.decision = 'duplicate' AND d.reason = 'duplicate of run ' || r.id AND d.new_sha = r.revision
			AND d.mapping_id = r.mapping_id`), "every duplicate is recorded, with its reason, in the database")
	require.Equal(t, 2*want, count(t, b.pool, `SELECT count(*) FROM decisions`))
	t.Logf("deadlocks counted by PostgreSQL in the shared test database meanwhile: %d",
		pgDeadlocks(t, b)-deadlocksBefore)
	for i, s := range stores {
		require.Zero(t, s.IngestDeadlocks(), "store %d: group writes that PostgreSQL failed as a deadlock", i)
	}
}
