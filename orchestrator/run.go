package orchestrator

import (
	"encoding/json"
	"slices"
	"time"
)

// Trigger says what created a run.
type Trigger string

// Run triggers.
const (
	// TriggerWebhook is a run of a delivery: from the Hub, or recorded by catch-up when the Hub has a revision
	// no webhook brought. Runs of this trigger are deduplicated by (mapping, repo, ref, revision).
	TriggerWebhook Trigger = "webhook"
	// TriggerManual is an operator's retry or run on latest.
	TriggerManual Trigger = "manual"
)

// Triggers lists every trigger.
var Triggers = []Trigger{TriggerWebhook, TriggerManual}

// Valid reports whether t is a trigger.
func (t Trigger) Valid() bool { return slices.Contains(Triggers, t) }

// Run is one triggered training of a mapping on a pinned dataset revision, with its current status.
type Run struct {
	ID          int64      `json:"id"`
	MappingID   int64      `json:"-"`
	Mapping     string     `json:"mapping"`
	Dataset     string     `json:"dataset"`
	RepoID      string     `json:"repo_id"`
	Ref         string     `json:"ref"`
	Revision    string     `json:"revision"`
	OldRevision string     `json:"old_revision"`
	Trigger     Trigger    `json:"trigger"`
	DeliveryID  *int64     `json:"delivery_id"`
	RetryOf     *int64     `json:"retry_of"`
	Status      RunStatus  `json:"status"`
	Attempt     int        `json:"attempt"`
	MaxAttempts int        `json:"max_attempts"`
	ExitCode    *int       `json:"exit_code"`
	Signal      string     `json:"signal"`
	Error       string     `json:"error"`
	JobID       *int64     `json:"job_id"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	// CancelRequestedAt is when an operator asked to cancel the run; it is cancelled once its command stopped.
	CancelRequestedAt *time.Time `json:"cancel_requested_at"`
	// SupersededBy is the run that replaced this one; NotBefore is when a run held back by a quiet period may
	// start.
	SupersededBy *int64     `json:"superseded_by"`
	NotBefore    *time.Time `json:"not_before"`
	// Output is the JSON object the command wrote to RUN_OUTPUT, if any.
	Output json.RawMessage `json:"output"`
	// FilesCheck is where the check of the revision's changed files against the mapping's paths and
	// ignore_paths stands; empty when the run needs none.
	FilesCheck FilesCheck `json:"files_check"`
}

// Cancellable reports whether an operator may cancel the run.
func (r Run) Cancellable() bool {
	return !r.Status.Finished()
}

// ShortRevision returns the first 12 characters of the revision.
func (r Run) ShortRevision() string {
	if len(r.Revision) > 12 {
		return r.Revision[:12]
	}
	return r.Revision
}

// Attempt is one execution of a run's command.
type Attempt struct {
	Number     int           `json:"attempt"`
	Argv       []string      `json:"argv"`
	Status     AttemptStatus `json:"status"`
	ExitCode   *int          `json:"exit_code"`
	Signal     string        `json:"signal"`
	Error      string        `json:"error"`
	LogBytes   int64         `json:"log_bytes"`
	LogDropped int64         `json:"log_dropped"`
	StartedAt  time.Time     `json:"started_at"`
	FinishedAt *time.Time    `json:"finished_at"`
}
