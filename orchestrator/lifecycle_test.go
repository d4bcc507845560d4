package orchestrator_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// TestRunStatuses checks the declared sets against each other and against the schema's partial indexes, which
// spell statuses as literals.
func TestRunStatuses(t *testing.T) {
	t.Parallel()
	for _, s := range orchestrator.RunFinalStatuses {
		require.True(t, s.Valid(), s)
		require.True(t, s.Finished(), s)
	}
	for _, s := range orchestrator.RunStatuses {
		require.Equal(t, slices.Contains(orchestrator.RunFinalStatuses, s), s.Finished(), s)
	}
	require.False(t, orchestrator.RunStatus("done").Valid())

	// Every status literal a migration's index predicate uses is a declared status.
	files, err := filepath.Glob(filepath.Join("..", "migrations", "*.sql"))
	require.NoError(t, err)
	literal := regexp.MustCompile(`status (?:=|IN) \(?('[a-z_]+'(?:, '[a-z_]+')*)\)?`)
	seen := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range literal.FindAllStringSubmatch(string(data), -1) {
			for _, q := range strings.Split(m[1], ", ") {
				seen++
				require.True(t, orchestrator.RunStatus(strings.Trim(q, "'")).Valid(), "%s: %s", filepath.Base(f), q)
			}
		}
	}
	require.NotZero(t, seen, "the migrations' status literals were found")
}

// TestRunTransitions walks every transition from every status, through the store: each allowed one leads to
// the status it declares (and gives the attempt its status), each other one is refused and changes nothing.
func TestRunTransitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// pushAfter records a push of a new revision of main that replaced old ("" for none) and returns its run.
	pushAfter := func(t *testing.T, b *testBundle, old string) int64 {
		t.Helper()
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: &orchestrator.Delivery{
			Scope: "repo.content", Action: "update", RepoType: "dataset", RepoName: "acme/support-tickets",
			RepoID: "66a1f0c2b9e4d3a1f2c3d4e5", Raw: []byte(`{}`),
			Refs: []orchestrator.RefUpdate{{Ref: "refs/heads/main", OldSha: old, NewSha: fmt.Sprintf("%040x", time.Now().UnixNano())}},
		}})
		require.NoError(t, err)
		require.Len(t, res.RunIDs, 1)
		return res.RunIDs[0]
	}

	var skip func(t *testing.T, b *testBundle, id int64)

	// reach returns a run of its own mapping in status from: a fresh run is queued; running has attempt 1
	// started; retrying has attempt 1 failed with another left; the final statuses are reached the way runs
	// reach them.
	reach := func(t *testing.T, b *testBundle, from orchestrator.RunStatus) int64 {
		t.Helper()
		id := pushAfter(t, b, "")
		start := func(attempt int) {
			require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: id, Attempt: attempt, Argv: []string{"x"}}))
		}
		finish := func(attempt int, tr orchestrator.Transition) {
			require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id, Attempt: attempt,
				Transition: tr, NoTargets: true}))
		}
		switch from {
		case orchestrator.RunQueued:
		case orchestrator.RunRunning:
			start(1)
		case orchestrator.RunRetrying:
			start(1)
			finish(1, orchestrator.TransitionRetry)
		case orchestrator.RunSucceeded, orchestrator.RunFailed:
			start(1)
			tr, _ := orchestrator.TransitionFor(from)
			finish(1, tr)
		case orchestrator.RunCancelled:
			_, err := b.store.RunCancel(ctx, id)
			require.NoError(t, err)
		case orchestrator.RunSkipped:
			skip(t, b, id)
		case orchestrator.RunSuperseded:
			// A newer revision of the ref, recorded after it, replaces it when a worker picks it up.
			run, err := b.store.RunGetByID(ctx, id)
			require.NoError(t, err)
			pushAfter(t, b, run.Revision)
			require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(b.store.RunAttemptStart(ctx,
				orchestrator.RunAttemptStartParams{RunID: id, Attempt: 1, Argv: []string{"x"}})))
		}
		run, err := b.store.RunGetByID(ctx, id)
		require.NoError(t, err)
		require.Equal(t, from, run.Status, "reached")
		return id
	}

	// skip is how a worker skips a run whose revision changed no watched file: the mapping here watches every
	// file, so the check is made pending first, as it is for a run of a mapping with paths.
	skip = func(t *testing.T, b *testBundle, id int64) {
		t.Helper()
		_, err := b.pool.Exec(ctx, `UPDATE runs SET files_check = 'pending' WHERE id = $1 AND files_check IS NULL AND status = 'queued'`, id)
		require.NoError(t, err)
		_ = b.store.RunFilesRecord(ctx, orchestrator.RunFilesRecordParams{RunID: id,
			Files: orchestrator.RunFiles{Check: orchestrator.FilesUnwatched, Reason: "no watched file changed (README.md)"}})
	}

	// take asks the store for the transition on the run, the way the code that carries it out does.
	take := func(t *testing.T, b *testBundle, id int64, tr orchestrator.Transition) {
		t.Helper()
		run, err := b.store.RunGetByID(ctx, id)
		require.NoError(t, err)
		switch tr {
		case orchestrator.TransitionStart:
			_ = b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: id, Attempt: run.Attempt + 1, Argv: []string{"x"}})
		case orchestrator.TransitionCancel:
			_, _ = b.store.RunCancel(ctx, id)
			if run.Status == orchestrator.RunRunning {
				// The worker stops the command and ends the attempt.
				require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id,
					Attempt: run.Attempt, Transition: tr, NoTargets: true}))
			}
		case orchestrator.TransitionSupersede:
			if run.Status == orchestrator.RunRunning {
				// Stopped for a newer revision (cancel_running): the worker ends it as cancelled, which the
				// stop's mark turns into superseded.
				_, err := b.pool.Exec(ctx, `UPDATE runs SET superseded_by = id WHERE id = $1`, id)
				require.NoError(t, err)
				require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id,
					Attempt: run.Attempt, Transition: orchestrator.TransitionCancel, NoTargets: true}))
				return
			}
			run, err := b.store.RunGetByID(ctx, id)
			require.NoError(t, err)
			pushAfter(t, b, run.Revision)
			_ = b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: id, Attempt: run.Attempt + 1, Argv: []string{"x"}})
		case orchestrator.TransitionSkip:
			skip(t, b, id)
		case orchestrator.TransitionInterrupt:
			_, _ = b.store.RunAttemptAbandon(ctx, orchestrator.RunAttemptAbandonParams{RunID: id, Attempt: run.Attempt, Reason: "interrupted"})
		default:
			err := b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id, Attempt: run.Attempt,
				Transition: tr, NoTargets: true})
			require.NoError(t, err, "a finish that does not apply changes nothing, without an error")
		}
	}

	for _, tr := range orchestrator.Transitions {
		for _, from := range orchestrator.RunStatuses {
			t.Run(fmt.Sprintf("%s/%s", tr, from), func(t *testing.T) {
				t.Parallel()
				m := mapping("tickets", "acme/support-tickets")
				m.OnNewRevision = orchestrator.OnNewRevisionCancelRunning // cancel_running also supersedes retrying runs
				b := setup(t, m)
				id := reach(t, b, from)
				before, err := b.store.RunGetByID(ctx, id)
				require.NoError(t, err)
				take(t, b, id, tr)
				after, err := b.store.RunGetByID(ctx, id)
				require.NoError(t, err)
				if !tr.Allows(from) {
					require.Equal(t, before.Status, after.Status, "%s is not allowed from %s", tr, from)
					require.Equal(t, before.Attempt, after.Attempt)
					return
				}
				require.Equal(t, tr.To(), after.Status, "%s from %s", tr, from)
				require.Equal(t, tr.To().Finished(), after.FinishedAt != nil, "finished_at is set with a final status")
				attempts, err := b.store.RunAttemptList(ctx, id)
				require.NoError(t, err)
				if from == orchestrator.RunRunning || tr == orchestrator.TransitionStart {
					require.Equal(t, tr.AttemptStatus(), attempts[len(attempts)-1].Status, "the attempt's status")
				}
			})
		}
	}
}
