package api

import (
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// RunList is the answer of GET /api/v1/runs: a page of runs, newest first. NextBefore, set when the page is
// full, is the before of the next page.
type RunList struct {
	NextBefore *int64             `json:"next_before,omitempty"`
	Runs       []orchestrator.Run `json:"runs"`
}

// RunDetail is the answer of GET /api/v1/runs/{id}: the run with its attempts, the end of its latest attempt's
// log, and what its final status sent to its mapping's notify targets.
type RunDetail struct {
	orchestrator.Run
	Attempts []orchestrator.Attempt `json:"attempts"`
	// Log is the end of the latest attempt's output; LogOmittedBytes came before it and are not shown.
	Log             string         `json:"log"`
	LogOmittedBytes int64          `json:"log_omitted_bytes"`
	Notifications   []Notification `json:"notifications"`
	// Files is what a worker found of the files the run's revision changed (the first
	// orchestrator.RunFilesShownMax of them, and the counts); null until a worker looked.
	Files *orchestrator.RunFiles `json:"files"`
	// Executions are the attempts that ran on an external executor, by attempt; WaitingForHardware says that the
	// current attempt's Job waits for its hardware.
	Executions         []Execution `json:"executions"`
	WaitingForHardware bool        `json:"waiting_for_hardware"`
}

// RunResult is the answer to an action on a run: the new run of a retry or of a run on the latest revision
// (201), or the run a cancel was asked for (200 when it is cancelled, 202 while its command is being stopped).
type RunResult struct {
	Run orchestrator.Run `json:"run"`
}

// Notification is a notification of a run's final status as the API shows it: its target's URL shortened to
// scheme://host/…, since a Slack URL is a secret. The fields are in the order in which the API has always
// written them.
type Notification struct {
	ID          int64                              `json:"id"`
	RunID       int64                              `json:"run_id"`
	Event       orchestrator.NotifyEvent           `json:"event"`
	Format      orchestrator.NotifyFormat          `json:"format"`
	SecretEnv   string                             `json:"secret_env,omitempty"`
	State       orchestrator.NotificationState     `json:"state"`
	Attempts    int                                `json:"attempts"`
	LastError   string                             `json:"last_error"`
	CreatedAt   time.Time                          `json:"created_at"`
	DeliveredAt *time.Time                         `json:"delivered_at"`
	History     []orchestrator.NotificationAttempt `json:"history"`
	Target      string                             `json:"target"`
}

// NewNotification returns n as the API shows it.
func NewNotification(n *orchestrator.Notification) Notification {
	return Notification{
		ID: n.ID, RunID: n.RunID, Event: n.Event, Format: n.Format, SecretEnv: n.SecretEnv, State: n.State,
		Attempts: n.Attempts, LastError: n.LastError, CreatedAt: n.CreatedAt, DeliveredAt: n.DeliveredAt,
		History: n.History, Target: n.Target(),
	}
}
