package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// ChangedFiles tells which files a revision of a dataset changed (orchestrator.FileFinder).
type ChangedFiles interface {
	Changes(ctx context.Context, dataset, oldRevision, revision string) (orchestrator.FileChanges, error)
}

// Environment variables naming the files that list a run's changed files, one path per line.
const (
	// EnvChangedFiles names the file that lists the files the revision added or modified.
	EnvChangedFiles = "DATASET_CHANGED_FILES"
	// EnvRemovedFiles names the file that lists the files the revision removed.
	EnvRemovedFiles = "DATASET_REMOVED_FILES"
)

// unknownReason is the reason of a check the Hub could not answer.
const unknownReason = "could not tell which files changed; the run goes ahead"

// checkFiles finds the files the run's revision changed, before any slot of the mapping is taken, and records
// what it found the first time. A run whose check is pending is decided: skipped (true) when no watched file
// changed, otherwise let go ahead. The changes are returned when they are known, for the command's
// environment; nil when they are not, or nobody asked for them.
func (w *RetrainWorker) checkFiles(ctx context.Context, logger *slog.Logger, work *orchestrator.RunWork) (*orchestrator.FileChanges, bool, error) {
	run, mapping := work.Run, work.Mapping
	pending := run.FilesCheck == orchestrator.FilesPending
	if !pending && (w.cfg.Files == nil || !(w.cfg.FilesForEveryRun || run.FilesCheck != "")) {
		return nil, false, nil
	}
	var changes *orchestrator.FileChanges
	var rec orchestrator.RunFiles
	var took time.Duration
	if w.cfg.Files == nil {
		rec = orchestrator.RunFiles{Check: orchestrator.FilesUnknown, Reason: unknownReason,
			Unknown: "this worker has no Hub to ask (no file finder configured)"}
	} else {
		lookCtx, cancel := context.WithTimeout(ctx, w.cfg.FilesTimeout)
		began := time.Now()
		found, err := w.cfg.Files.Changes(lookCtx, run.Dataset, run.OldRevision, run.Revision)
		took = time.Since(began)
		timedOut := errors.Is(lookCtx.Err(), context.DeadlineExceeded)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			// Shutting down: the job is put back, and the next worker looks again.
			return nil, false, ctx.Err()
		case err != nil:
			if timedOut {
				err = fmt.Errorf("no answer within %s: %w", w.cfg.FilesTimeout, err)
			}
			logger.WarnContext(ctx, "could not tell which files the revision changed; the run goes ahead", "error", err)
			rec = orchestrator.RunFiles{Check: orchestrator.FilesUnknown, Reason: unknownReason, Unknown: err.Error()}
		case pending:
			check, reason := orchestrator.FilesDecide(mapping.PathFilter(), found)
			rec = orchestrator.NewRunFiles(check, reason, found)
			changes = &found
		default:
			rec = orchestrator.NewRunFiles("", "", found)
			changes = &found
		}
	}
	if !pending {
		if work.FilesRecorded {
			// A run that looks again after waiting for a slot: its first look was counted and kept.
			return changes, false, nil
		}
		rec.Check = ""
	}
	outcome := rec.Check
	if rec.Unknown != "" {
		outcome = orchestrator.FilesUnknown
	}
	w.cfg.Metrics.observeFiles(outcome, took)
	err := w.store.RunFilesRecord(ctx, orchestrator.RunFilesRecordParams{RunID: run.ID, Files: rec})
	if orchestrator.ErrorCode(err) == orchestrator.CodeConflict {
		// Cancelled meanwhile, or checked by an earlier execution of the job: RunAttemptStart decides.
		logger.InfoContext(ctx, "changed files recorded already, or the run finished", "reason", err)
		return changes, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if rec.Check == orchestrator.FilesUnwatched {
		logger.InfoContext(ctx, "run skipped", "reason", rec.Reason)
		return changes, true, nil
	}
	return changes, false, nil
}

// writeFileLists writes the lists of a run's changed files next to its RUN_OUTPUT file and returns the
// variables that name them, and a function that removes them.
func writeFileLists(base string, changes *orchestrator.FileChanges) ([]string, func(), error) {
	if changes == nil {
		return nil, func() {}, nil
	}
	var changed, removed strings.Builder
	for _, c := range changes.Files {
		b := &changed
		if c.Change == orchestrator.FileRemoved {
			b = &removed
		}
		b.WriteString(c.Path)
		b.WriteByte('\n')
	}
	changedPath, removedPath := base+".changed", base+".removed"
	remove := func() { _ = os.Remove(changedPath); _ = os.Remove(removedPath) }
	if err := os.WriteFile(changedPath, []byte(changed.String()), 0o600); err != nil {
		return nil, remove, fmt.Errorf("write %s: %w", EnvChangedFiles, err)
	}
	if err := os.WriteFile(removedPath, []byte(removed.String()), 0o600); err != nil {
		return nil, remove, fmt.Errorf("write %s: %w", EnvRemovedFiles, err)
	}
	return []string{EnvChangedFiles + "=" + changedPath, EnvRemovedFiles + "=" + removedPath}, remove, nil
}
