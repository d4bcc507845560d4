package jobs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
)

// filesBundle is a worker whose runs look at their changed files on a stand-in Hub serving one dataset.
type filesBundle struct {
	*testBundle
	repo *hubtest.Repo
	hub  *hubtest.Server
	out  string // where the commands copy their lists of changed files
}

// setupFiles starts a worker with a file finder on a stand-in Hub, for one mapping of the dataset acme/<name>
// whose command copies its lists to out/<run id>.changed and .removed. configure changes the mapping.
func setupFiles(t *testing.T, name string, configure func(*orchestrator.Mapping)) *filesBundle {
	t.Helper()
	repo := hubtest.NewRepo(t, "acme/"+name)
	srv := hubtest.NewServer(t, repo)
	out := t.TempDir()
	script := `if [ -n "$DATASET_CHANGED_FILES" ]; then cp "$DATASET_CHANGED_FILES" "$OUT/$RUN_ID.changed"; ` +
		`cp "$DATASET_REMOVED_FILES" "$OUT/$RUN_ID.removed"; else touch "$OUT/$RUN_ID.unknown"; fi`
	m := shMapping(name, script, func(m *orchestrator.Mapping) {
		m.Env = map[string]string{"OUT": out}
		m.Refs = []string{"refs/heads/*"}
		m.OnNewRevision = orchestrator.OnNewRevisionQueue
	}, configure)
	var b *testBundle
	b = setupWith(t, func(cfg *jobs.ClientConfig) {
		client := hub.New(srv.URL, "").WithTimeout(2 * time.Second)
		cfg.Worker.FilesTimeout = 10 * time.Second
		cfg.Worker.FilesForEveryRun = true
		// The finder needs the store, which setupWith makes: it is given below, before any run exists.
		cfg.Worker.Files = &lazyFinder{get: func() *orchestrator.FileFinder { return orchestrator.NewFileFinder(b.store, client, 0) }}
	}, m)
	return &filesBundle{testBundle: b, repo: repo, hub: srv, out: out}
}

// lazyFinder builds its finder at the first call.
type lazyFinder struct {
	get  func() *orchestrator.FileFinder
	once sync.Once
	f    *orchestrator.FileFinder
}

func (l *lazyFinder) Changes(ctx context.Context, dataset, old, rev string) (orchestrator.FileChanges, error) {
	l.once.Do(func() { l.f = l.get() })
	return l.f.Changes(ctx, dataset, old, rev)
}

// lists returns what the command of run got: its changed and removed files, or ok false when it was told
// nothing.
func (b *filesBundle) lists(t *testing.T, runID int64) (changed, removed []string, ok bool) {
	t.Helper()
	read := func(ext string) []string {
		data, err := os.ReadFile(filepath.Join(b.out, fmt.Sprintf("%d.%s", runID, ext)))
		require.NoError(t, err)
		return strings.Fields(string(data))
	}
	if _, err := os.Stat(filepath.Join(b.out, fmt.Sprintf("%d.unknown", runID))); err == nil {
		return nil, nil, false
	}
	return read("changed"), read("removed"), true
}

func TestChangedFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dataOnly := func(m *orchestrator.Mapping) {
		m.Paths, m.IgnorePaths = []string{"data/**"}, []string{"**/*.md"}
	}

	t.Run("CardOnlyCommitIsSkipped", func(t *testing.T) {
		t.Parallel()
		b := setupFiles(t, "card", dataOnly)
		b.repo.Write("README.md", "# v1")
		b.repo.WriteLFS("data/train-0.parquet", "rows 0")
		first := b.repo.Commit(t, "first")
		b.repo.Write("README.md", "# v2")
		b.repo.Write(".gitattributes", "*.parquet filter=lfs")
		card := b.repo.Commit(t, "card")

		shard := b.pushAfter(t, "acme/card", "refs/heads/main", "", first)
		run := b.waitStatus(t, shard, 20*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		require.Equal(t, orchestrator.FilesWatched, run.FilesCheck, "a new ref: every file counts as added")
		changed, removed, ok := b.lists(t, shard)
		require.True(t, ok)
		require.Equal(t, []string{"README.md", "data/train-0.parquet"}, changed)
		require.Empty(t, removed)

		skipped := b.pushAfter(t, "acme/card", "refs/heads/main", first, card)
		run = b.waitStatus(t, skipped, 20*time.Second, orchestrator.RunSkipped, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSkipped, run.Status)
		require.Equal(t, "no watched file changed (.gitattributes, README.md)", run.Error)
		require.Nil(t, run.StartedAt, "the command never started")
		attempts, err := b.store.RunAttemptList(ctx, skipped)
		require.NoError(t, err)
		require.Empty(t, attempts)
		files, err := b.store.RunFilesGet(ctx, skipped)
		require.NoError(t, err)
		require.Equal(t, 1, files.Added)
		require.Equal(t, 1, files.Modified)
		// The first commit was listed once, as the new side of one run and the old side of the next.
		require.Equal(t, 2, b.hub.Requests("/tree/"), "each revision is listed once")
	})

	t.Run("DataChangesRun", func(t *testing.T) {
		t.Parallel()
		b := setupFiles(t, "shards", dataOnly)
		b.repo.WriteLFS("data/a.parquet", "a")
		b.repo.WriteLFS("data/b.parquet", "b")
		b.repo.Write("README.md", "card")
		base := b.repo.Commit(t, "base")
		b.repo.WriteLFS("data/c.parquet", "c")
		added := b.repo.Commit(t, "new shard")
		b.repo.Rename("data/a.parquet", "data/a2.parquet")
		renamed := b.repo.Commit(t, "rename")
		b.repo.Remove("data/b.parquet")
		deleted := b.repo.Commit(t, "delete")

		// The base is recorded as a baseline run of its own, then each push.
		b.waitStatus(t, b.pushAfter(t, "acme/shards", "refs/heads/main", "", base), 20*time.Second, orchestrator.RunSucceeded)
		for _, tc := range []struct {
			old, rev         string
			changed, removed []string
		}{
			{base, added, []string{"data/c.parquet"}, nil},
			{added, renamed, []string{"data/a2.parquet"}, []string{"data/a.parquet"}},
			{renamed, deleted, nil, []string{"data/b.parquet"}},
		} {
			id := b.pushAfter(t, "acme/shards", "refs/heads/main", tc.old, tc.rev)
			run := b.waitStatus(t, id, 20*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed, orchestrator.RunSkipped)
			require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
			changed, removed, ok := b.lists(t, id)
			require.True(t, ok)
			require.Equal(t, tc.changed, nilIfEmpty(changed))
			require.Equal(t, tc.removed, nilIfEmpty(removed))
		}
	})

	t.Run("HubDownRunGoesAhead", func(t *testing.T) {
		t.Parallel()
		b := setupFiles(t, "down", dataOnly)
		b.repo.Write("README.md", "card")
		rev := b.repo.Commit(t, "first")
		b.hub.Fail(hubtest.Fault{Status: 503})
		id := b.pushAfter(t, "acme/down", "refs/heads/main", "", rev)
		run := b.waitStatus(t, id, 30*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed, orchestrator.RunSkipped)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, "missing a retraining is worse than one run too many")
		require.Equal(t, orchestrator.FilesUnknown, run.FilesCheck)
		files, err := b.store.RunFilesGet(ctx, id)
		require.NoError(t, err)
		require.Contains(t, files.Unknown, "503")
		require.NotContains(t, files.Unknown, "no answer within", "the Hub answered, with an error")
		_, _, ok := b.lists(t, id)
		require.False(t, ok, "the command is told nothing when nothing is known")
	})

	t.Run("HubHangsRunGoesAheadAfterTheTimeout", func(t *testing.T) {
		t.Parallel()
		b := setupFiles(t, "hang", dataOnly)
		b.repo.Write("README.md", "card")
		rev := b.repo.Commit(t, "first")
		b.hub.Fail(hubtest.Fault{Hang: true})
		id := b.pushAfter(t, "acme/hang", "refs/heads/main", "", rev)
		run := b.waitStatus(t, id, 30*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed, orchestrator.RunSkipped)
		require.Equal(t, orchestrator.RunSucceeded, run.Status)
		require.Equal(t, orchestrator.FilesUnknown, run.FilesCheck)
		files, err := b.store.RunFilesGet(ctx, id)
		require.NoError(t, err)
		// Each request times out (the client's 2 s here, 15 s by default) and is tried three times, within the
		// look's own bound.
		require.Contains(t, files.Unknown, "gave up after 3 tries")
		require.Contains(t, files.Unknown, "Client.Timeout exceeded")
	})

	t.Run("RetryIsNotChecked", func(t *testing.T) {
		t.Parallel()
		b := setupFiles(t, "retry", dataOnly)
		b.repo.Write("README.md", "card")
		first := b.repo.Commit(t, "first")
		b.repo.Write("README.md", "card 2")
		card := b.repo.Commit(t, "card")
		b.pushAfter(t, "acme/retry", "refs/heads/main", "", first)
		skipped := b.pushAfter(t, "acme/retry", "refs/heads/main", first, card)
		b.waitStatus(t, skipped, 20*time.Second, orchestrator.RunSkipped)
		retry, err := b.store.RunRetry(ctx, skipped)
		require.NoError(t, err)
		run := b.waitStatus(t, retry.ID, 20*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed, orchestrator.RunSkipped)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, "an operator's retry runs whatever changed")
		changed, _, ok := b.lists(t, retry.ID)
		require.True(t, ok)
		require.Equal(t, []string{"README.md"}, changed, "and its command still gets the list")
	})
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
