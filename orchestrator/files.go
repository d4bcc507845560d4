package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// FilesMaxDefault bounds the files of one revision that FileFinder lists: a revision with more is too large to
// compare, and its runs go ahead unchecked. The Hub lists about a thousand files per request, so the bound costs
// at most a hundred requests per revision.
const FilesMaxDefault = 100_000

// FilesTimeoutDefault bounds a look at a revision's changed files, the Hub's retries included: past it, a run
// goes ahead unchecked.
const FilesTimeoutDefault = 2 * time.Minute

// diffsKept is how many comparisons a FileFinder keeps in memory, for runs that look again while they wait for
// a slot.
const diffsKept = 64

// FileFinder finds the files a revision changed from the Hub's listings of both revisions. Each revision is
// listed once: its listing is kept in the store, and a revision asked for by several callers at once is listed
// by one of them. It is safe for concurrent use.
type FileFinder struct {
	store *Store
	hub   *hub.Client
	max   int

	listing singleflight.Group

	mu    sync.Mutex
	diffs map[[3]string]FileChanges
	order [][3]string
}

// NewFileFinder returns a finder that asks hub and keeps listings in store. A revision with more than max files
// (FilesMaxDefault when max <= 0) is not compared.
func NewFileFinder(store *Store, hub *hub.Client, max int) *FileFinder {
	if max <= 0 {
		max = FilesMaxDefault
	}
	return &FileFinder{store: store, hub: hub, max: max, diffs: map[[3]string]FileChanges{}}
}

// Changes returns the files that changed in dataset from oldRevision to revision. An empty oldRevision (a new
// ref) makes every file of revision added.
func (f *FileFinder) Changes(ctx context.Context, dataset, oldRevision, revision string) (FileChanges, error) {
	key := [3]string{dataset, oldRevision, revision}
	// Only commits are kept: a branch name moves.
	keep := ValidSha(revision) && (oldRevision == "" || ValidSha(oldRevision))
	f.mu.Lock()
	c, ok := f.diffs[key]
	f.mu.Unlock()
	if ok && keep {
		return c, nil
	}
	files, err := f.Files(ctx, dataset, revision)
	if err != nil {
		return FileChanges{}, err
	}
	var old []RevisionFile
	if oldRevision != "" {
		if old, err = f.Files(ctx, dataset, oldRevision); err != nil {
			return FileChanges{}, err
		}
	}
	c = DiffRevisions(old, files)
	if !keep {
		return c, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.diffs[key]; !ok {
		if len(f.order) == diffsKept {
			delete(f.diffs, f.order[0])
			f.order = f.order[1:]
		}
		f.diffs[key] = c
		f.order = append(f.order, key)
	}
	return c, nil
}

// Parent returns the first parent of revision in dataset, as the Hub's history of it says, or "" for a first
// commit.
func (f *FileFinder) Parent(ctx context.Context, dataset, revision string) (string, error) {
	return f.hub.ParentCommit(ctx, dataset, revision)
}

// Files returns the files of a revision of dataset: the kept listing, or the Hub's, which is then kept. A
// revision that is not a commit id (a branch name, which moves) is listed every time and never kept.
func (f *FileFinder) Files(ctx context.Context, dataset, revision string) ([]RevisionFile, error) {
	if !ValidSha(revision) {
		return f.list(ctx, dataset, revision)
	}
	files, ok, err := f.store.RevisionFilesGet(ctx, dataset, revision)
	if err != nil || ok {
		return files, err
	}
	v, err, _ := f.listing.Do(dataset+"@"+revision, func() (any, error) {
		// Another process may have listed it meanwhile.
		if files, ok, err := f.store.RevisionFilesGet(ctx, dataset, revision); err != nil || ok {
			return files, err
		}
		files, err := f.list(ctx, dataset, revision)
		if err != nil {
			return nil, err
		}
		// A listing that could not be kept is still the answer; the next look lists the revision again.
		_ = f.store.RevisionFilesPut(ctx, dataset, revision, files)
		return files, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]RevisionFile), nil
}

// list asks the Hub for the files of a revision of dataset.
func (f *FileFinder) list(ctx context.Context, dataset, revision string) ([]RevisionFile, error) {
	tree, err := f.hub.ListTree(ctx, dataset, revision, f.max)
	if errors.Is(err, hub.ErrTooManyFiles) {
		return nil, fmt.Errorf("revision %s of %s has more than %d files, too many to compare: %w", short(revision), dataset, f.max, err)
	}
	if err != nil {
		return nil, fmt.Errorf("list the files of %s at %s: %w", dataset, short(revision), err)
	}
	files := make([]RevisionFile, len(tree))
	for i, t := range tree {
		files[i] = RevisionFile{Path: t.Path, OID: t.OID, Size: t.Size}
		if t.LFS != nil {
			files[i].LFS = t.LFS.OID
		}
	}
	return files, nil
}

// short returns the first 12 characters of a revision.
func short(revision string) string { return revision[:min(len(revision), 12)] }

// MappingCheck is what a commit would do to a mapping, by its changed files: the answer of
// FileFinder.CheckMapping.
type MappingCheck struct {
	// OldRevision is the revision compared against: the one asked for, or the revision's parent; empty for
	// a first commit, whose files are all added.
	OldRevision string
	// Files is what the comparison found, with its Check (FilesWatched, FilesUnwatched, or FilesUnknown when
	// the Hub could not tell) and Reason. A mapping without paths or ignore_paths watches every file.
	Files RunFiles
}

// Trigger reports whether the commit would run the mapping's command.
func (c MappingCheck) Trigger() bool { return c.Files.Check != FilesUnwatched }

// CheckMapping answers "would this commit of dataset trigger m, and why" without queuing anything: the files
// changed from oldRevision (the revision's parent, as the Hub's history says, when empty) to revision, against
// m's paths and ignore_paths. A revision the Hub does not know is CodeNotFound; a Hub that cannot answer gives
// FilesUnknown, with which a run goes ahead.
func (f *FileFinder) CheckMapping(ctx context.Context, m *Mapping, dataset, revision, oldRevision string) (*MappingCheck, error) {
	if !m.MatchesDataset(dataset) {
		return nil, Errorf(CodeInvalid, "dataset %q does not match mapping %q's dataset %q", dataset, m.Name, m.Dataset)
	}
	if revision == "" {
		return nil, Errorf(CodeInvalid, "a revision is required")
	}
	unknown := func(err error) (*MappingCheck, error) {
		var status *hub.StatusError
		if errors.As(err, &status) && status.Status == 404 {
			return nil, Errorf(CodeNotFound, "the Hub has no revision %s (or %s) in dataset %s", revision, oldRevision, dataset)
		}
		return &MappingCheck{OldRevision: oldRevision, Files: RunFiles{Check: FilesUnknown,
			Reason: "could not tell which files changed; a run would go ahead", Unknown: err.Error()}}, nil
	}
	if oldRevision == "" {
		parent, err := f.Parent(ctx, dataset, revision)
		if err != nil {
			return unknown(err)
		}
		oldRevision = parent
	}
	changes, err := f.Changes(ctx, dataset, oldRevision, revision)
	if err != nil {
		return unknown(err)
	}
	check, reason := FilesDecide(m.PathFilter(), changes)
	return &MappingCheck{OldRevision: oldRevision, Files: NewRunFiles(check, reason, changes)}, nil
}
