package orchestrator

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Which files a revision changed, and whether its mapping watches them: the files of the run's revision and of
// the revision its push replaced, compared file by file (RevisionFile), give the changes (FileChanges); a
// mapping's PathFilter says whether any of them matters (FilesDecide).

// FileChange is how one file differs between two revisions.
type FileChange struct {
	Path   string         `json:"path"`
	Change FileChangeKind `json:"change"`
	// Size is the file's size at the new revision (0 when removed); OldSize at the old one (0 when added).
	Size    int64 `json:"size"`
	OldSize int64 `json:"old_size"`
}

// FileChangeKind says how a file changed.
type FileChangeKind string

// Kinds of change. A rename is the removal of the old path and the addition of the new one.
const (
	FileAdded    FileChangeKind = "added"
	FileModified FileChangeKind = "modified"
	FileRemoved  FileChangeKind = "removed"
)

// FileChangeKinds lists every kind of change.
var FileChangeKinds = []FileChangeKind{FileAdded, FileModified, FileRemoved}

// RevisionFile is one file of a revision as the Hub lists it.
type RevisionFile struct {
	Path string
	// OID is the git blob id of the file as committed (for an LFS file, of its pointer).
	OID  string
	Size int64
	// LFS is the sha256 of an LFS file's content; empty for a file stored in git.
	LFS string
}

// sameContent reports whether f and o hold the same content: two LFS files by their sha256, otherwise by their
// git blob ids.
func (f RevisionFile) sameContent(o RevisionFile) bool {
	if f.LFS != "" && o.LFS != "" {
		return f.LFS == o.LFS
	}
	return f.OID == o.OID
}

// FileChanges are the changes between two revisions, by path.
type FileChanges struct {
	Files                    []FileChange
	Added, Modified, Removed int
}

// Total returns how many files changed.
func (c FileChanges) Total() int { return len(c.Files) }

// DiffRevisions returns the files added, removed or whose content differs from old to new, sorted by path.
// A nil old (a new ref) makes every file of new added.
func DiffRevisions(old, new []RevisionFile) FileChanges {
	before := make(map[string]RevisionFile, len(old))
	for _, f := range old {
		before[f.Path] = f
	}
	var c FileChanges
	for _, f := range new {
		o, ok := before[f.Path]
		switch {
		case !ok:
			c.Files = append(c.Files, FileChange{Path: f.Path, Change: FileAdded, Size: f.Size})
			c.Added++
		case !o.sameContent(f):
			c.Files = append(c.Files, FileChange{Path: f.Path, Change: FileModified, Size: f.Size, OldSize: o.Size})
			c.Modified++
		}
		delete(before, f.Path)
	}
	for _, o := range before {
		c.Files = append(c.Files, FileChange{Path: o.Path, Change: FileRemoved, OldSize: o.Size})
		c.Removed++
	}
	slices.SortFunc(c.Files, func(a, b FileChange) int { return strings.Compare(a.Path, b.Path) })
	return c
}

// FilesCheck is where the check of a run's changed files against its mapping's paths and ignore_paths stands.
// A run whose mapping watches every file, and a retry, need no check: their FilesCheck is empty.
type FilesCheck string

// States of the check.
const (
	// FilesPending: no worker has asked the Hub yet. A pending run replaces no older run of its ref, since it
	// may yet be skipped.
	FilesPending FilesCheck = "pending"
	// FilesWatched: a watched file changed; the run goes ahead.
	FilesWatched FilesCheck = "watched"
	// FilesUnknown: the Hub could not tell which files changed; the run goes ahead, since missing a retraining
	// costs more than one run too many.
	FilesUnknown FilesCheck = "unknown"
	// FilesUnwatched: no watched file changed; the run is skipped.
	FilesUnwatched FilesCheck = "unwatched"
)

// FilesChecks lists every state of the check.
var FilesChecks = []FilesCheck{FilesPending, FilesWatched, FilesUnknown, FilesUnwatched}

// Valid reports whether c is a state of the check.
func (c FilesCheck) Valid() bool { return slices.Contains(FilesChecks, c) }

// filesNamedMax is how many files a decision's reason names.
const filesNamedMax = 3

// FilesDecide says whether changes are worth a run of a mapping with filter f, and why, in the words the run
// and the delivery page show: FilesWatched, or FilesUnwatched with a reason that names the first files that
// changed and their count, e.g. "no watched file changed (README.md, .gitattributes)".
func FilesDecide(f PathFilter, changes FileChanges) (FilesCheck, string) {
	var watched []string
	for _, c := range changes.Files {
		if f.Watches(c.Path) {
			watched = append(watched, c.Path)
		}
	}
	if len(watched) > 0 {
		return FilesWatched, "watched files changed (" + namedFiles(watched, len(watched)) + ")"
	}
	if changes.Total() == 0 {
		return FilesUnwatched, "no file changed"
	}
	paths := make([]string, 0, min(changes.Total(), filesNamedMax))
	for _, c := range changes.Files[:min(changes.Total(), filesNamedMax)] {
		paths = append(paths, c.Path)
	}
	return FilesUnwatched, "no watched file changed (" + namedFiles(paths, changes.Total()) + ")"
}

// namedFiles names the first of total paths, and how many more there are: "a, b, c and 7 more".
func namedFiles(paths []string, total int) string {
	shown := paths[:min(len(paths), filesNamedMax)]
	s := strings.Join(shown, ", ")
	if total > len(shown) {
		s += fmt.Sprintf(" and %d more", total-len(shown))
	}
	return s
}

// RunFilesShownMax is how many of a run's changed files are kept for its page and the API; the command gets
// them all.
const RunFilesShownMax = 100

// RunFiles is what a worker found out about a run's changed files: the counts, the first RunFilesShownMax files,
// and, when the Hub could not tell, why.
type RunFiles struct {
	Check    FilesCheck   `json:"check"`
	Total    int          `json:"total"`
	Added    int          `json:"added"`
	Modified int          `json:"modified"`
	Removed  int          `json:"removed"`
	Files    []FileChange `json:"files"`
	// Unknown, when not empty, is why the changed files are not known: the Hub's error, or why it was not
	// asked.
	Unknown   string    `json:"unknown"`
	Reason    string    `json:"reason"`
	CheckedAt time.Time `json:"checked_at,omitzero"`
}

// NewRunFiles returns what a run shows of changes.
func NewRunFiles(check FilesCheck, reason string, changes FileChanges) RunFiles {
	shown := changes.Files[:min(len(changes.Files), RunFilesShownMax)]
	return RunFiles{Check: check, Reason: reason, Total: changes.Total(), Added: changes.Added,
		Modified: changes.Modified, Removed: changes.Removed, Files: slices.Clone(shown)}
}
