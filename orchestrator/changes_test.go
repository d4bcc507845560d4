package orchestrator_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func TestDiffRevisions(t *testing.T) {
	t.Parallel()
	git := func(path, oid string, size int64) orchestrator.RevisionFile {
		return orchestrator.RevisionFile{Path: path, OID: oid, Size: size}
	}
	lfs := func(path, oid, sha string, size int64) orchestrator.RevisionFile {
		return orchestrator.RevisionFile{Path: path, OID: oid, Size: size, LFS: sha}
	}
	base := []orchestrator.RevisionFile{git("README.md", "r1", 10), lfs("data/a.parquet", "pa", "sa", 1000), git("x.csv", "x1", 5)}
	tests := []struct {
		name     string
		old, new []orchestrator.RevisionFile
		want     []orchestrator.FileChange
	}{
		{name: "Same", old: base, new: base, want: nil},
		{name: "NewRef", old: nil, new: base[:2], want: []orchestrator.FileChange{
			{Path: "README.md", Change: orchestrator.FileAdded, Size: 10},
			{Path: "data/a.parquet", Change: orchestrator.FileAdded, Size: 1000}}},
		{name: "CardEdited", old: base, new: []orchestrator.RevisionFile{git("README.md", "r2", 12), base[1], base[2]},
			want: []orchestrator.FileChange{{Path: "README.md", Change: orchestrator.FileModified, Size: 12, OldSize: 10}}},
		{name: "LFSContentChanged", old: base, new: []orchestrator.RevisionFile{base[0], lfs("data/a.parquet", "pb", "sb", 2000), base[2]},
			want: []orchestrator.FileChange{{Path: "data/a.parquet", Change: orchestrator.FileModified, Size: 2000, OldSize: 1000}}},
		// Two pointers of one content (a pointer rewritten with other line endings) are the same file.
		{name: "LFSSameContentOtherPointer", old: base, new: []orchestrator.RevisionFile{base[0], lfs("data/a.parquet", "pz", "sa", 1000), base[2]},
			want: nil},
		{name: "Rename", old: base, new: []orchestrator.RevisionFile{base[0], lfs("data/b.parquet", "pa", "sa", 1000), base[2]},
			want: []orchestrator.FileChange{
				{Path: "data/a.parquet", Change: orchestrator.FileRemoved, OldSize: 1000},
				{Path: "data/b.parquet", Change: orchestrator.FileAdded, Size: 1000}}},
		{name: "Removed", old: base, new: base[:2], want: []orchestrator.FileChange{
			{Path: "x.csv", Change: orchestrator.FileRemoved, OldSize: 5}}},
		{name: "MovedToLFS", old: base, new: []orchestrator.RevisionFile{base[0], base[1], lfs("x.csv", "xp", "sx", 5)},
			want: []orchestrator.FileChange{{Path: "x.csv", Change: orchestrator.FileModified, Size: 5, OldSize: 5}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := orchestrator.DiffRevisions(tc.old, tc.new)
			require.Equal(t, tc.want, got.Files)
			counts := map[orchestrator.FileChangeKind]int{}
			for _, c := range tc.want {
				counts[c.Change]++
			}
			require.Equal(t, []int{counts[orchestrator.FileAdded], counts[orchestrator.FileModified], counts[orchestrator.FileRemoved]},
				[]int{got.Added, got.Modified, got.Removed})
			require.Equal(t, len(tc.want), got.Total())
		})
	}
}

func TestFilesDecide(t *testing.T) {
	t.Parallel()
	changes := func(paths ...string) orchestrator.FileChanges {
		var c orchestrator.FileChanges
		for _, p := range paths {
			c.Files = append(c.Files, orchestrator.FileChange{Path: p, Change: orchestrator.FileModified})
			c.Modified++
		}
		return c
	}
	data := orchestrator.PathFilter{Paths: []string{"data/**", "**/*.parquet"}, IgnorePaths: []string{"README.md", "**/*.md"}}
	tests := []struct {
		name       string
		filter     orchestrator.PathFilter
		changes    orchestrator.FileChanges
		want       orchestrator.FilesCheck
		wantReason string
	}{
		{name: "CardOnly", filter: data, changes: changes("README.md", ".gitattributes"),
			want: orchestrator.FilesUnwatched, wantReason: "no watched file changed (README.md, .gitattributes)"},
		{name: "NewShard", filter: data, changes: changes("README.md", "data/train-00002.parquet"),
			want: orchestrator.FilesWatched, wantReason: "watched files changed (data/train-00002.parquet)"},
		{name: "IgnoredUnderData", filter: data, changes: changes("data/NOTES.md"),
			want: orchestrator.FilesUnwatched, wantReason: "no watched file changed (data/NOTES.md)"},
		{name: "ParquetAnywhere", filter: data, changes: changes("extra/x.parquet"),
			want: orchestrator.FilesWatched, wantReason: "watched files changed (extra/x.parquet)"},
		{name: "IgnoreOnly", filter: orchestrator.PathFilter{IgnorePaths: []string{"**/*.md"}}, changes: changes("a.md", "b/c.md", "d.md", "e.md"),
			want: orchestrator.FilesUnwatched, wantReason: "no watched file changed (a.md, b/c.md, d.md and 1 more)"},
		{name: "IgnoreOnlyScript", filter: orchestrator.PathFilter{IgnorePaths: []string{"**/*.md"}}, changes: changes("a.md", "train.py"),
			want: orchestrator.FilesWatched, wantReason: "watched files changed (train.py)"},
		{name: "EmptyCommit", filter: data, changes: changes(),
			want: orchestrator.FilesUnwatched, wantReason: "no file changed"},
		{name: "NoFilter", filter: orchestrator.PathFilter{}, changes: changes("README.md"),
			want: orchestrator.FilesWatched, wantReason: "watched files changed (README.md)"},
		{name: "ManyWatched", filter: data, changes: changes(shards(5)...),
			want: orchestrator.FilesWatched, wantReason: "watched files changed (data/0.parquet, data/1.parquet, data/2.parquet and 2 more)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, reason := orchestrator.FilesDecide(tc.filter, tc.changes)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.wantReason, reason)
		})
	}
}

// shards returns n paths under data/.
func shards(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("data/%d.parquet", i)
	}
	return out
}

func TestNewRunFilesShowsTheFirstHundred(t *testing.T) {
	t.Parallel()
	var c orchestrator.FileChanges
	for _, p := range shards(250) {
		c.Files = append(c.Files, orchestrator.FileChange{Path: p, Change: orchestrator.FileAdded})
		c.Added++
	}
	f := orchestrator.NewRunFiles(orchestrator.FilesWatched, "r", c)
	require.Len(t, f.Files, orchestrator.RunFilesShownMax)
	require.Equal(t, 250, f.Total)
	require.Equal(t, 250, f.Added)
}
