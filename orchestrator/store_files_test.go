package orchestrator_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// filesSeq makes the revisions of the tests in this file unique.
var filesSeq atomic.Int64

// pushRev records a push of a new revision of main that replaced old ("" for none) and returns the revision
// and its run (0 when none was created).
func pushRev(t *testing.T, b *testBundle, old string) (string, int64) {
	t.Helper()
	return pushRevFrom(t, b, old, newRev())
}

// newRev returns a revision no other test of this file uses.
func newRev() string { return fmt.Sprintf("%040x", filesSeq.Add(1)<<20) }

// filtered returns a mapping that watches data/ only, with the given policy.
func filtered(policy orchestrator.NewRevisionPolicy) orchestrator.Mapping {
	m := mapping("tickets", "acme/support-tickets")
	m.Paths, m.IgnorePaths, m.OnNewRevision = []string{"data/**"}, []string{"**/*.md"}, policy
	return m
}

// checked records the outcome of run's check, as a worker does.
func checked(t *testing.T, b *testBundle, run int64, check orchestrator.FilesCheck, paths ...string) {
	t.Helper()
	var c orchestrator.FileChanges
	for _, p := range paths {
		c.Files = append(c.Files, orchestrator.FileChange{Path: p, Change: orchestrator.FileModified, Size: 2, OldSize: 1})
		c.Modified++
	}
	_, reason := orchestrator.FilesDecide(orchestrator.PathFilter{Paths: []string{"data/**"}}, c)
	require.NoError(t, b.store.RunFilesRecord(context.Background(), orchestrator.RunFilesRecordParams{RunID: run,
		Files: orchestrator.NewRunFiles(check, reason, c)}))
}

func runStatus(t *testing.T, b *testBundle, id int64) *orchestrator.Run {
	t.Helper()
	run, err := b.store.RunGetByID(context.Background(), id)
	require.NoError(t, err)
	return run
}

func startRun(b *testBundle, id int64) error {
	return b.store.RunAttemptStart(context.Background(), orchestrator.RunAttemptStartParams{RunID: id, Attempt: 1, Argv: []string{"x"}})
}

func TestRunFilesRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("SkipEndsTheRunAndIgnoresTheDecision", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionSupersede))
		_, id := pushRev(t, b, "")
		require.Equal(t, orchestrator.FilesPending, runStatus(t, b, id).FilesCheck)
		checked(t, b, id, orchestrator.FilesUnwatched, "README.md", ".gitattributes")
		run := runStatus(t, b, id)
		require.Equal(t, orchestrator.RunSkipped, run.Status)
		require.Equal(t, orchestrator.FilesUnwatched, run.FilesCheck)
		require.Equal(t, "no watched file changed (README.md, .gitattributes)", run.Error)
		require.NotNil(t, run.FinishedAt)
		var kind, reason string
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT decision, reason FROM decisions WHERE run_id = $1`, id).Scan(&kind, &reason))
		require.Equal(t, string(orchestrator.DecisionIgnored), kind)
		require.Equal(t, run.Error, reason)
		files, err := b.store.RunFilesGet(ctx, id)
		require.NoError(t, err)
		require.Equal(t, 2, files.Total)
		require.Equal(t, orchestrator.FilesUnwatched, files.Check)
		require.Equal(t, run.Error, files.Reason)
		// The check is over: a second outcome is refused, and the run cannot start.
		err = b.store.RunFilesRecord(ctx, orchestrator.RunFilesRecordParams{RunID: id, Files: orchestrator.RunFiles{Check: orchestrator.FilesWatched}})
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(err))
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(startRun(b, id)))
	})

	t.Run("CancelledMeanwhileIsNotSkipped", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionSupersede))
		_, id := pushRev(t, b, "")
		_, err := b.store.RunCancel(ctx, id)
		require.NoError(t, err)
		err = b.store.RunFilesRecord(ctx, orchestrator.RunFilesRecordParams{RunID: id, Files: orchestrator.RunFiles{Check: orchestrator.FilesUnwatched}})
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(err))
		require.Equal(t, orchestrator.RunCancelled, runStatus(t, b, id).Status)
	})

	t.Run("UnfilteredRunsAreShownOnly", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets"))
		_, id := pushRev(t, b, "")
		require.Empty(t, runStatus(t, b, id).FilesCheck)
		rec := orchestrator.NewRunFiles("", "", orchestrator.FileChanges{Files: []orchestrator.FileChange{{Path: "a", Change: orchestrator.FileAdded}}, Added: 1})
		require.NoError(t, b.store.RunFilesRecord(ctx, orchestrator.RunFilesRecordParams{RunID: id, Files: rec}))
		// Recorded once: a second look (a run that waited for a slot) keeps the first.
		require.NoError(t, b.store.RunFilesRecord(ctx, orchestrator.RunFilesRecordParams{RunID: id, Files: orchestrator.RunFiles{}}))
		files, err := b.store.RunFilesGet(ctx, id)
		require.NoError(t, err)
		require.Equal(t, 1, files.Added)
		require.Equal(t, []orchestrator.FileChange{{Path: "a", Change: orchestrator.FileAdded}}, files.Files)
		err = b.store.RunFilesRecord(ctx, orchestrator.RunFilesRecordParams{RunID: id, Files: orchestrator.RunFiles{Check: orchestrator.FilesUnwatched}})
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(err), "a run without a pending check is never skipped")
		none, err := b.store.RunFilesGet(ctx, id+1000)
		require.NoError(t, err)
		require.Nil(t, none)
	})

	t.Run("RunOnLatestIsChecked", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionSupersede))
		pushRev(t, b, "")
		run, err := b.store.RunOnLatest(ctx, "tickets")
		require.NoError(t, err)
		require.Equal(t, orchestrator.FilesPending, run.FilesCheck, "a run on latest is checked as a delivery's run is")
	})

	t.Run("RetryIsNotChecked", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionSupersede))
		_, id := pushRev(t, b, "")
		checked(t, b, id, orchestrator.FilesUnwatched, "README.md")
		retry, err := b.store.RunRetry(ctx, id)
		require.NoError(t, err)
		require.Empty(t, retry.FilesCheck)
	})
}

// TestPendingRunsReplaceNothing checks the promise that a commit which may yet be skipped never costs the
// training of an older one: it supersedes, stops and shadows nothing until its check lets it go ahead.
func TestPendingRunsReplaceNothing(t *testing.T) {
	t.Parallel()

	t.Run("SupersedeWaitsForTheCheck", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionSupersede))
		a, older := pushRev(t, b, "")
		checked(t, b, older, orchestrator.FilesWatched, "data/x")
		_, newer := pushRev(t, b, a)
		// The newer run's check is pending: the older run starts.
		require.NoError(t, startRun(b, older))
		require.Equal(t, orchestrator.RunRunning, runStatus(t, b, older).Status)
		require.Equal(t, orchestrator.RunQueued, runStatus(t, b, newer).Status)
	})

	t.Run("SkippedRunSupersedesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionSupersede))
		a, older := pushRev(t, b, "")
		checked(t, b, older, orchestrator.FilesWatched, "data/x")
		_, newer := pushRev(t, b, a)
		checked(t, b, newer, orchestrator.FilesUnwatched, "README.md")
		require.NoError(t, startRun(b, older))
		require.Equal(t, orchestrator.RunRunning, runStatus(t, b, older).Status)
	})

	t.Run("WatchedRunSupersedes", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionSupersede))
		a, older := pushRev(t, b, "")
		checked(t, b, older, orchestrator.FilesWatched, "data/x")
		b2, skipped := pushRev(t, b, a)
		checked(t, b, skipped, orchestrator.FilesUnwatched, "README.md")
		_, newest := pushRev(t, b, b2)
		checked(t, b, newest, orchestrator.FilesWatched, "data/y")
		// The walk along the history passes the skipped run and finds the watched one after it.
		require.Equal(t, orchestrator.CodeConflict, orchestrator.ErrorCode(startRun(b, older)))
		run := runStatus(t, b, older)
		require.Equal(t, orchestrator.RunSuperseded, run.Status)
		require.Equal(t, newest, *run.SupersededBy)
	})

	t.Run("CancelRunningWaitsForTheCheck", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionCancelRunning))
		a, older := pushRev(t, b, "")
		checked(t, b, older, orchestrator.FilesWatched, "data/x")
		require.NoError(t, startRun(b, older))
		_, newer := pushRev(t, b, a)
		require.Nil(t, runStatus(t, b, older).CancelRequestedAt, "a pending run stops nothing")
		checked(t, b, newer, orchestrator.FilesWatched, "data/y")
		run := runStatus(t, b, older)
		require.NotNil(t, run.CancelRequestedAt, "a watched run stops the older running one")
		require.Equal(t, newer, *run.SupersededBy)
	})

	t.Run("CancelRunningSkippedStopsNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, filtered(orchestrator.OnNewRevisionCancelRunning))
		a, older := pushRev(t, b, "")
		checked(t, b, older, orchestrator.FilesWatched, "data/x")
		require.NoError(t, startRun(b, older))
		_, newer := pushRev(t, b, a)
		checked(t, b, newer, orchestrator.FilesUnwatched, "README.md")
		require.Nil(t, runStatus(t, b, older).CancelRequestedAt)
	})

	t.Run("LateOlderDeliveryAfterASkippedOne", func(t *testing.T) {
		t.Parallel()
		// The push of c (a card fix after b) arrives first and is skipped; the push of b (new data), delivered
		// late, still gets its run, since c's comparison did not include b's data.
		b := setup(t, filtered(orchestrator.OnNewRevisionSupersede))
		a, first := pushRev(t, b, "")
		checked(t, b, first, orchestrator.FilesWatched, "data/x")
		bRev := newRev()
		_, card := pushRev(t, b, bRev)
		checked(t, b, card, orchestrator.FilesUnwatched, "README.md")
		_, late := pushRevFrom(t, b, a, bRev)
		require.NotZero(t, late, "the late delivery of b gets a run")
	})
}

// pushRevFrom records a push of rev that replaced old and returns its run (0 when none was created).
func pushRevFrom(t *testing.T, b *testBundle, old, rev string) (string, int64) {
	t.Helper()
	res, err := b.store.DeliveryInsert(context.Background(), orchestrator.DeliveryInsertParams{Delivery: &orchestrator.Delivery{
		Scope: "repo.content", Action: "update", RepoType: "dataset", RepoName: "acme/support-tickets",
		RepoID: "66a1f0c2b9e4d3a1f2c3d4e5", Raw: []byte(`{}`),
		Refs: []orchestrator.RefUpdate{{Ref: "refs/heads/main", OldSha: old, NewSha: rev}},
	}})
	require.NoError(t, err)
	if len(res.RunIDs) == 0 {
		return rev, 0
	}
	return rev, res.RunIDs[0]
}

func TestRevisionFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	_, ok, err := b.store.RevisionFilesGet(ctx, "acme/x", "r0")
	require.NoError(t, err)
	require.False(t, ok)
	files := []orchestrator.RevisionFile{{Path: "README.md", OID: "o1", Size: 3}, {Path: "data/a.parquet", OID: "o2", Size: 1 << 40, LFS: "s"}}
	require.NoError(t, b.store.RevisionFilesPut(ctx, "acme/x", "r0", files))
	require.NoError(t, b.store.RevisionFilesPut(ctx, "acme/x", "r0", files[:1]), "a kept listing stays as it is")
	got, ok, err := b.store.RevisionFilesGet(ctx, "acme/x", "r0")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, files, got)
	// Only the newest listings of a dataset are kept.
	for i := 1; i <= 60; i++ {
		require.NoError(t, b.store.RevisionFilesPut(ctx, "acme/x", fmt.Sprintf("r%d", i), files))
	}
	require.Equal(t, 50, count(t, b.pool, `SELECT count(*) FROM revision_files WHERE dataset = 'acme/x'`))
	_, ok, err = b.store.RevisionFilesGet(ctx, "acme/x", "r60")
	require.NoError(t, err)
	require.True(t, ok)
}
