package jobs

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// An Executor runs the attempts of runs somewhere: as a child process of the worker (the local executor,
// executor_local.go) or elsewhere (Hugging Face Jobs, executor_hfjobs.go). The worker does the rest the same
// way for every executor: the attempt's start and finish, its lease, its log, cancel and shutdown.

// Executor starts attempts' executions, or finds the one already going for an attempt.
type Executor interface {
	// Local reports whether the execution is a process of this machine: it then gets the worker's own
	// environment, RUN_OUTPUT, the lists of changed files and the watchdog. Any other gets the run's variables
	// and the mapping's env only.
	Local() bool
	// Start starts the attempt's execution, or adopts the one of the same attempt (or of an interrupted one
	// before it) that is running already or ended with nobody watching. An error means none runs for the
	// attempt; wrapped in a FinalError, retrying will not help.
	Start(ctx context.Context, a *Attempt) (Execution, error)
}

// Execution is one attempt's command, running.
type Execution interface {
	// Wait follows the execution to its end, copying its output into the attempt's Output as it comes, and
	// says how it ended. When ctx ends first, Wait returns an Outcome with Cancelled set; whether the execution
	// stops with it is the executor's: a local process does (it must not outlive its worker), a remote one goes
	// on for the next worker to adopt, unless Cancel stops it.
	Wait(ctx context.Context) Outcome
	// Cancel stops the execution for good: an operator's cancel, a newer revision's. It is safe to repeat, and
	// after Wait returned.
	Cancel(ctx context.Context) error
}

// Attempt is what an Executor is given of one attempt of a run.
type Attempt struct {
	Run     *orchestrator.Run
	Mapping *orchestrator.Mapping
	// Number is the attempt's number, counted by the run.
	Number int
	// Argv is the command with ${NAME} expanded; Env its complete environment.
	Argv []string
	Env  []string
	// Output receives the execution's output as it comes.
	Output io.Writer
	// OnStart, for a local execution, is the command's Command.OnStart.
	OnStart func(pgid int) (stop func())
	Logger  *slog.Logger
}

// Outcome is how an execution ended.
type Outcome struct {
	// Result holds what a local command's would: the exit code (0 for a remote success), the timeout, a cancel,
	// an error that kept it from starting, and when it started and ended.
	Result
	// Message, when set, describes the outcome in place of Result.Describe: a remote executor's own reason.
	Message string
	// Final says that trying again will not help: the run fails at once.
	Final bool
}

// Describe returns a short human text of the outcome.
func (o Outcome) Describe() string {
	if o.Message != "" && !o.Cancelled {
		return o.Message
	}
	return o.Result.Describe()
}

// FinalError is an error of an executor that trying again will not help with.
type FinalError struct{ Err error }

// Error implements error.
func (e *FinalError) Error() string { return e.Err.Error() }

// Unwrap returns the error.
func (e *FinalError) Unwrap() error { return e.Err }

// isFinal reports whether err, or an error it wraps, is a FinalError.
func isFinal(err error) bool {
	var f *FinalError
	return errors.As(err, &f)
}
