package orchestrator_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
)

func TestFileFinder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	repo := hubtest.NewRepo(t, "acme/finder")
	repo.Write("README.md", "card")
	repo.WriteLFS("data/a.parquet", "a")
	first := repo.Commit(t, "first")
	repo.Write("README.md", "card 2")
	repo.WriteLFS("data/b.parquet", "b")
	second := repo.Commit(t, "second")
	for i := range 30 {
		repo.Write(fmt.Sprintf("many/%02d.txt", i), "x")
	}
	third := repo.Commit(t, "third")
	srv := hubtest.NewServer(t, repo)
	srv.SetPageSize(10)
	b := setup(t)

	t.Run("EachCommitListedOnce", func(t *testing.T) {
		f := orchestrator.NewFileFinder(b.store, hub.New(srv.URL, ""), 0)
		c, err := f.Changes(ctx, "acme/finder", first, second)
		require.NoError(t, err)
		require.Equal(t, []orchestrator.FileChange{
			{Path: "README.md", Change: orchestrator.FileModified, Size: 6, OldSize: 4},
			{Path: "data/b.parquet", Change: orchestrator.FileAdded, Size: 1}}, c.Files)
		listings := srv.Requests("/tree/")
		require.Equal(t, 2, listings)
		// The same comparison, and one that reuses a revision, from another finder (another process): the
		// kept listings answer.
		other := orchestrator.NewFileFinder(b.store, hub.New(srv.URL, ""), 0)
		again, err := other.Changes(ctx, "acme/finder", first, second)
		require.NoError(t, err)
		require.Equal(t, c, again)
		all, err := other.Changes(ctx, "acme/finder", "", second)
		require.NoError(t, err)
		require.Equal(t, 3, all.Added, "a new ref: every file added")
		require.Equal(t, listings, srv.Requests("/tree/"), "no revision is listed twice")
	})

	t.Run("BranchNamesAreNotKept", func(t *testing.T) {
		f := orchestrator.NewFileFinder(b.store, hub.New(srv.URL, ""), 0)
		before := srv.Requests("/tree/")
		for range 2 {
			c, err := f.Changes(ctx, "acme/finder", first, "main")
			require.NoError(t, err)
			require.Equal(t, 32, c.Total())
		}
		require.Equal(t, before+2*4, srv.Requests("/tree/"), "main moves: it is listed each time (4 pages of 10)")
	})

	t.Run("TooManyFiles", func(t *testing.T) {
		f := orchestrator.NewFileFinder(b.store, hub.New(srv.URL, ""), 20)
		_, err := f.Changes(ctx, "acme/finder", second, third)
		require.ErrorIs(t, err, hub.ErrTooManyFiles)
		require.ErrorContains(t, err, "more than 20 files")
	})

	t.Run("CheckMapping", func(t *testing.T) {
		f := orchestrator.NewFileFinder(b.store, hub.New(srv.URL, ""), 0)
		m := mapping("finder", "acme/finder")
		m.Paths = []string{"data/**"}
		check, err := f.CheckMapping(ctx, &m, "acme/finder", third, "")
		require.NoError(t, err)
		require.Equal(t, second, check.OldRevision, "the parent by default")
		require.False(t, check.Trigger())
		require.Equal(t, "no watched file changed (many/00.txt, many/01.txt, many/02.txt and 27 more)", check.Files.Reason)
		check, err = f.CheckMapping(ctx, &m, "acme/finder", third, first)
		require.NoError(t, err)
		require.True(t, check.Trigger())
		_, err = f.CheckMapping(ctx, &m, "acme/finder", fmt.Sprintf("%040d", 0), "")
		require.Equal(t, orchestrator.CodeNotFound, orchestrator.ErrorCode(err))
		_, err = f.CheckMapping(ctx, &m, "acme/other", third, "")
		require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err))
		// A Hub that cannot answer: the commit would run, saying why.
		srv.Fail(hubtest.Fault{Path: "/tree/", Status: 500})
		defer srv.ClearFaults()
		check, err = f.CheckMapping(ctx, &m, "acme/finder", "main", first)
		require.NoError(t, err)
		require.True(t, check.Trigger())
		require.Equal(t, orchestrator.FilesUnknown, check.Files.Check)
		require.Contains(t, check.Files.Unknown, "500")
	})
}
