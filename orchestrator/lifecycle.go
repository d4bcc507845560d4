package orchestrator

import (
	"slices"
	"strings"
)

// The life of a run, in one place: the statuses a run and its attempts can have, which of them are final, and
// every transition between them. The statements that write a status (store_lifecycle.go) each carry out one
// of these transitions, and spell statuses only through the SQL lists below.

// RunStatus is where a run stands.
type RunStatus string

// Run statuses.
const (
	RunQueued    RunStatus = "queued"    // waiting for a worker
	RunRunning   RunStatus = "running"   // the command is executing
	RunRetrying  RunStatus = "retrying"  // an attempt failed and another is scheduled
	RunSucceeded RunStatus = "succeeded" // the command exited 0
	RunFailed    RunStatus = "failed"    // the last attempt failed
	RunCancelled RunStatus = "cancelled" // stopped by an operator
	// RunSuperseded is the status of a run replaced by a newer revision of its ref before it ran (or, with
	// on_new_revision cancel_running, stopped for one).
	RunSuperseded RunStatus = "superseded"
	// RunSkipped is the status of a run whose revision changed no file its mapping watches (paths,
	// ignore_paths): its command never started.
	RunSkipped RunStatus = "skipped"
)

// RunStatuses lists every run status, in the order a run meets them.
var RunStatuses = []RunStatus{RunQueued, RunRunning, RunRetrying, RunSucceeded, RunFailed, RunCancelled, RunSuperseded,
	RunSkipped}

// RunFinalStatuses lists the statuses a run never leaves.
var RunFinalStatuses = []RunStatus{RunSucceeded, RunFailed, RunCancelled, RunSuperseded, RunSkipped}

// Finished reports whether s is a final status.
func (s RunStatus) Finished() bool { return slices.Contains(RunFinalStatuses, s) }

// RunStatusNames returns the run statuses as a list for people: "queued, running, …, superseded".
func RunStatusNames() string { return strings.ReplaceAll(sqlList(RunStatuses...), "'", "") }

// Valid reports whether s is a run status.
func (s RunStatus) Valid() bool { return slices.Contains(RunStatuses, s) }

// AttemptStatus is how one execution of a run's command stands or ended.
type AttemptStatus string

// Attempt statuses.
const (
	AttemptRunning   AttemptStatus = "running"   // the command is executing
	AttemptSucceeded AttemptStatus = "succeeded" // the command exited 0
	AttemptFailed    AttemptStatus = "failed"    // the command failed, or could not start
	AttemptCancelled AttemptStatus = "cancelled" // stopped by an operator, or for a newer revision
	// AttemptInterrupted is the status of an attempt whose command was stopped, or lost, for a reason of the
	// orchestrator's (a shutdown, a crash, a worker cut off from the database): it does not count against the
	// run's attempts, and the run executes again.
	AttemptInterrupted AttemptStatus = "interrupted"
)

// AttemptStatuses lists every attempt status.
var AttemptStatuses = []AttemptStatus{AttemptRunning, AttemptSucceeded, AttemptFailed, AttemptCancelled, AttemptInterrupted}

// Transition names a change of a run's status.
type Transition string

// Transitions of a run. Creating a run makes it RunQueued.
const (
	// TransitionStart begins an attempt.
	TransitionStart Transition = "start"
	// TransitionSucceed ends the run with its command's success.
	TransitionSucceed Transition = "succeed"
	// TransitionFail ends the run: its last attempt failed, its revision does not exist or its command cannot
	// be built.
	TransitionFail Transition = "fail"
	// TransitionRetry ends a failed attempt that has attempts left after it.
	TransitionRetry Transition = "retry"
	// TransitionInterrupt ends an attempt whose command the orchestrator stopped or lost (shutdown, crash,
	// a worker cut off from the database): the run waits for a worker again and the attempt is not spent.
	TransitionInterrupt Transition = "interrupt"
	// TransitionCancel ends the run at an operator's request: at once when it waits, once its command
	// stopped when it runs.
	TransitionCancel Transition = "cancel"
	// TransitionSupersede ends a run that a newer revision of its ref replaces: before it starts, or (with
	// on_new_revision cancel_running) once its command stopped.
	TransitionSupersede Transition = "supersede"
	// TransitionSkip ends a run that has not started when its revision changed no file its mapping watches.
	TransitionSkip Transition = "skip"
)

// transitionRule is where a transition may start from, where it leads, and the status it gives the attempt
// it ends (none for a run that never ran).
type transitionRule struct {
	from    []RunStatus
	to      RunStatus
	attempt AttemptStatus
}

var transitions = map[Transition]transitionRule{
	TransitionStart:     {from: []RunStatus{RunQueued, RunRetrying}, to: RunRunning, attempt: AttemptRunning},
	TransitionSucceed:   {from: []RunStatus{RunRunning}, to: RunSucceeded, attempt: AttemptSucceeded},
	TransitionFail:      {from: []RunStatus{RunRunning}, to: RunFailed, attempt: AttemptFailed},
	TransitionRetry:     {from: []RunStatus{RunRunning}, to: RunRetrying, attempt: AttemptFailed},
	TransitionInterrupt: {from: []RunStatus{RunRunning}, to: RunQueued, attempt: AttemptInterrupted},
	TransitionCancel:    {from: []RunStatus{RunQueued, RunRetrying, RunRunning}, to: RunCancelled, attempt: AttemptCancelled},
	TransitionSupersede: {from: []RunStatus{RunQueued, RunRetrying, RunRunning}, to: RunSuperseded, attempt: AttemptCancelled},
	TransitionSkip:      {from: []RunStatus{RunQueued}, to: RunSkipped},
}

// Transitions lists every transition.
var Transitions = []Transition{TransitionStart, TransitionSucceed, TransitionFail, TransitionRetry,
	TransitionInterrupt, TransitionCancel, TransitionSupersede, TransitionSkip}

// To returns the status the transition leads to.
func (t Transition) To() RunStatus { return transitions[t].to }

// From returns the statuses the transition may start from.
func (t Transition) From() []RunStatus { return transitions[t].from }

// Allows reports whether a run in status from may take the transition.
func (t Transition) Allows(from RunStatus) bool { return slices.Contains(transitions[t].from, from) }

// AttemptStatus returns the status the transition gives the attempt it begins or ends.
func (t Transition) AttemptStatus() AttemptStatus { return transitions[t].attempt }

// TransitionFor returns the transition that ends a running attempt with the given run status.
func TransitionFor(to RunStatus) (Transition, bool) {
	for _, t := range Transitions {
		if t != TransitionStart && t.Allows(RunRunning) && t.To() == to {
			return t, true
		}
	}
	return "", false
}

// sqlList returns the statuses as the items of an SQL IN list: 'a', 'b'. The statements that write or filter
// statuses are built from it, so that no status is spelt out in SQL; partial indexes need literals, not
// parameters, to be used.
func sqlList[S ~string](statuses ...S) string {
	quoted := make([]string, len(statuses))
	for i, s := range statuses {
		quoted[i] = "'" + string(s) + "'"
	}
	return strings.Join(quoted, ", ")
}

// SQL lists of statuses, for the statements.
var (
	sqlFinal  = sqlList(RunFinalStatuses...)
	sqlActive = sqlList(RunQueued, RunRetrying, RunRunning)
	sqlWaits  = sqlList(TransitionStart.From()...)
)

// sqlStatus returns a status as an SQL literal.
func sqlStatus[S ~string](s S) string { return sqlList(s) }
