package jobs

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errCancelledBeforeStart is the StartErr of a local execution cancelled before Wait.
var errCancelledBeforeStart = errors.New("not started: cancelled")

// localExecutor runs each attempt as a child process of the worker, through RunCommand.
type localExecutor struct {
	killGrace time.Duration
}

// Local implements Executor.
func (localExecutor) Local() bool { return true }

// Start implements Executor. Nothing of a local process outlives its worker, so there is never one to adopt:
// the process starts in Wait, which owns it to its end.
func (e localExecutor) Start(_ context.Context, a *Attempt) (Execution, error) {
	return &localExecution{a: a, killGrace: e.killGrace}, nil
}

// localExecution is one attempt's command as a child process.
type localExecution struct {
	a         *Attempt
	killGrace time.Duration

	mu     sync.Mutex
	cancel context.CancelFunc // set while the command runs
	done   bool
}

// Wait implements Execution: the command runs to its end, its timeout or ctx's end, which stop its process
// group (SIGTERM, then SIGKILL after the kill grace).
func (x *localExecution) Wait(ctx context.Context) Outcome {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	x.mu.Lock()
	if x.done {
		x.mu.Unlock()
		return Outcome{Result: Result{ExitCode: -1, Cancelled: true, StartErr: errCancelledBeforeStart}}
	}
	x.cancel = cancel
	x.mu.Unlock()
	a := x.a
	res := RunCommand(ctx, Command{
		Argv: a.Argv, Dir: a.Mapping.Workdir, Env: a.Env, Timeout: a.Mapping.Timeout,
		KillGrace: x.killGrace, Output: a.Output, OnStart: a.OnStart,
	})
	return Outcome{Result: res}
}

// Cancel implements Execution: it stops the command if it still runs, and keeps one that has not started from
// starting.
func (x *localExecution) Cancel(context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.done = true
	if x.cancel != nil {
		x.cancel()
	}
	return nil
}
