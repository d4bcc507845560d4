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

// revisionDelivery returns a delivery of revision n (40 hex digits) of acme/support-tickets's ref, pushed over
// oldSha (none when empty).
func revisionDelivery(t *testing.T, n int, ref, oldSha string) *orchestrator.Delivery {
	t.Helper()
	d, err := orchestrator.ParseDelivery(fmt.Appendf(nil, `{"event":{"scope":"repo.content","action":"update"},
		"repo":{"type":"dataset","name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},
		"updatedRefs":[{"ref":%q,"oldSha":%q,"newSha":"%040x"}]}`, ref, oldSha, n))
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
// no write ends in a deadlock, each (mapping, repository, ref, revision) has exactly one run with its job, and
// the other delivery of it is recorded as its duplicate.
func TestIngestDuplicatesAtOnceNeverDeadlock(t *testing.T) {
	t.Parallel()
	const base = 1 << 20 // revisions from base on are the running runs' (cancelRunning)
	cancelRunning := func(name string) orchestrator.Mapping {
		m := mapping(name, "acme/support-tickets", "refs/heads/main", "refs/heads/dev")
		m.OnNewRevision, m.Concurrency = orchestrator.OnNewRevisionCancelRunning, 4
		return m
	}
	tests := []struct {
		name     string
		mappings []orchestrator.Mapping
		// refs are those the revisions are pushed to, in turn; with running, each ref has a running run,
		// which every revision of the ref is pushed over and stops.
		refs    []string
		running bool
		// once sends the pair's second caller another revision of the same ref, so that there are no
		// duplicates to keep the groups apart.
		once bool
	}{{
		name:     "two mappings of one dataset",
		mappings: []orchestrator.Mapping{mapping("tickets", "acme/support-tickets"), mapping("tickets-nightly", "acme/support-tickets")},
		refs:     []string{"refs/heads/main"},
	}, {
		name:     "new revisions stop the running runs of their refs",
		mappings: []orchestrator.Mapping{cancelRunning("tickets"), cancelRunning("tickets-nightly")},
		refs:     []string{"refs/heads/main", "refs/heads/dev"},
		running:  true,
	}, {
		name:     "new revisions, each sent once, stop the running runs of their refs",
		mappings: []orchestrator.Mapping{cancelRunning("tickets"), cancelRunning("tickets-nightly")},
		refs:     []string{"refs/heads/main", "refs/heads/dev"},
		running:  true,
		once:     true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setup(t, tt.mappings...)
			second := orchestrator.NewStore(b.pool)
			second.SetQueue(jobs.NewQueue(b.pool, b.river))
			stores := []*orchestrator.Store{b.store, second}
			oldSha := map[string]string{}
			if tt.running {
				for i, ref := range tt.refs {
					_, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{
						Delivery: revisionDelivery(t, base+i, ref, ""), RemoteAddr: "192.0.2.1"})
					require.NoError(t, err)
					oldSha[ref] = fmt.Sprintf("%040x", base+i)
				}
				_, err := b.pool.Exec(ctx, `UPDATE runs SET status = 'running', attempt = 1, started_at = now()`)
				require.NoError(t, err)
			}
			// A pause before each run's insert (in this test's schema only) widens the moment in which two
			// groups write side by side, so that groups taking their locks in opposing orders would meet.
			_, err := b.pool.Exec(ctx, `
				CREATE FUNCTION runs_insert_pause() RETURNS trigger LANGUAGE plpgsql AS
					$$BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END$$;
				CREATE TRIGGER runs_insert_pause BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION runs_insert_pause()`)
			require.NoError(t, err)
			deadlocksBefore := pgDeadlocks(t, b)

			// Each pair of callers sends its revisions one after the other, both callers of a pair at once and
			// each through a store of its own, so that the two deliveries of a revision are written by two
			// groups; the pairs are not in step, so each group holds revisions in an order of its own.
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
						ref := tt.refs[n%len(tt.refs)]
						calls := []*sent{{revision: n}, {revision: n}}
						if tt.once {
							calls[1].revision += 2 * pairs * perPair // of the same ref
						}
						var both sync.WaitGroup
						for j, c := range calls {
							both.Add(1)
							d := revisionDelivery(t, c.revision, ref, oldSha[ref])
							go func() {
								defer both.Done()
								c.res, c.err = stores[j].DeliveryInsert(ctx,
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
				require.Len(t, c.res.Decisions, len(tt.mappings), "revision %d", c.revision)
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
			want, wantDuplicates := len(tt.mappings)*pairs*perPair, len(tt.mappings)*pairs*perPair
			if tt.once {
				want, wantDuplicates = 2*want, 0
			}
			require.Len(t, queued, want, "one run per mapping and revision")
			require.Len(t, duplicates, wantDuplicates)
			for k, runID := range duplicates {
				require.Equal(t, queued[k], runID, "the duplicate of revision %d names its run", k.revision)
			}

			require.Equal(t, want, count(t, b.pool, `SELECT count(*) FROM runs WHERE revision < $1`, fmt.Sprintf("%040x", base)))
			require.Equal(t, want, count(t, b.pool, `SELECT count(DISTINCT (mapping_id, repo_id, ref, revision)) FROM runs
				WHERE revision < $1`, fmt.Sprintf("%040x", base)))
			require.Equal(t, count(t, b.pool, `SELECT count(*) FROM runs`), runsWithTheirJobs(t, b, b.pool))
			require.Equal(t, wantDuplicates, count(t, b.pool, `SELECT count(*) FROM decisions d JOIN runs r ON r.id = d.run_id
				WHERE d.decision = 'duplicate' AND d.reason = 'duplicate of run ' || r.id AND d.new_sha = r.revision
					AND d.mapping_id = r.mapping_id`), "every duplicate is recorded, with its reason, in the database")
			if tt.running {
				require.Equal(t, len(tt.refs)*len(tt.mappings), count(t, b.pool, `SELECT count(*) FROM runs
					WHERE status = 'running' AND cancel_requested_at IS NOT NULL AND superseded_by IS NOT NULL`),
					"every running run is asked to stop")
			}
			t.Logf("deadlocks counted by PostgreSQL in the shared test database meanwhile: %d",
				pgDeadlocks(t, b)-deadlocksBefore)
			for i, s := range stores {
				require.Zero(t, s.IngestDeadlocks(), "store %d: writes that PostgreSQL failed as a deadlock", i)
			}
		})
	}
}
