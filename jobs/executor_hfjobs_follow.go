package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// Following a Job: its stage is asked of the Hub every poll interval and decides the run's end; its log
// streams into the run's log meanwhile, reconnected when the stream breaks or ends early, without a line twice
// or a line lost, and given up a little after the Job ended when the stream stays open.

const (
	// hfLogDrain is how long the log stream is given, once the Job ended, to bring its last lines.
	hfLogDrain = 3 * time.Second
	// hfLogRetryMin and hfLogRetryMax bound the wait before the log stream is opened again.
	hfLogRetryMin = 250 * time.Millisecond
	hfLogRetryMax = 10 * time.Second
	// hfTimeoutSlack is how long after the mapping's timeout a Job the Hub has not stopped is cancelled.
	hfTimeoutSlack = time.Minute
	// hfCancelWait bounds the wait for a cancelled Job to reach a final stage.
	hfCancelWait = 10 * time.Second
	// hfRecordEvery is how often a running Job's execution (its cost so far) is recorded between stages.
	hfRecordEvery = time.Minute
	// hfBanner starts the first line of every Job's log, which the Hub writes and the run's log leaves out.
	hfBanner = "===== Job started"
)

// hfExecution is one attempt's Job, followed.
type hfExecution struct {
	e         *hfJobsExecutor
	a         *Attempt
	namespace string
	started   time.Time
	adopted   bool
	earlier   []orchestrator.AttemptExecution // the run's earlier attempts' executions

	job        *hub.Job
	rec        orchestrator.AttemptExecution
	recordedAt time.Time
	timedOut   bool // cancelled by the worker for the mapping's timeout
	cancelled  bool // cancelled by the worker at an operator's request
	counted    bool // counted in the metrics
}

// begin takes job as the attempt's and records it.
func (x *hfExecution) begin(ctx context.Context, job *hub.Job) error {
	x.job = job
	x.rec = orchestrator.AttemptExecution{RunID: x.a.Run.ID, Attempt: x.a.Number, Executor: orchestrator.ExecutorHFJobs,
		ExternalID: job.ID, Namespace: x.namespace, URL: job.URL, Flavor: job.Flavor, CreatedAt: job.CreatedAt}
	if x.rec.Flavor == "" {
		x.rec.Flavor = x.a.Mapping.HFJobs.Flavor
	}
	for _, ex := range x.earlier {
		if ex.ExternalID == job.ID && ex.RunningAt != nil {
			x.rec.RunningAt = ex.RunningAt // seen running by the attempt that created it
		}
	}
	x.rec.UnitCostMicroUSD = x.e.unitCost(ctx, x.rec.Flavor)
	x.observe(ctx, job, true)
	return nil
}

// observe takes what the Hub said of the Job and records it when its stage changed (or force), or when its
// cost so far is due to be recorded again.
func (x *hfExecution) observe(ctx context.Context, job *hub.Job, force bool) {
	now := time.Now()
	stage := job.Status.Stage
	changed := force || string(stage) != x.rec.Stage || job.Status.Message != x.rec.Message
	// A Job seen running, or ended otherwise than cancelled or deleted, ran (when it went from SCHEDULING to
	// its end between two looks: since about now).
	neverRan := (stage == hub.JobCanceled || stage == hub.JobDeleted) && x.rec.Stage == string(hub.JobScheduling)
	if stage != "" && stage != hub.JobScheduling && x.rec.RunningAt == nil && !neverRan {
		x.rec.RunningAt = &now
	}
	if stage.Terminal() && x.rec.EndedAt == nil {
		x.rec.EndedAt = &now
	}
	x.job = job
	x.rec.Stage, x.rec.Message = string(stage), job.Status.Message
	x.rec.CostMicroUSD = x.cost(now)
	if changed && stage != "" {
		x.a.Logger.InfoContext(ctx, "the Job's stage", "job", job.ID, "stage", stage, "message", job.Status.Message)
	}
	if !changed && now.Sub(x.recordedAt) < hfRecordEvery {
		return
	}
	x.record(ctx)
}

// record writes the execution to the store; a failure is logged, not fatal: the next record repeats it.
func (x *hfExecution) record(ctx context.Context) {
	x.recordedAt = time.Now()
	recordCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := x.e.store.AttemptExecutionRecord(recordCtx, x.rec); err != nil {
		x.a.Logger.WarnContext(ctx, "could not record the attempt's Job", "job", x.rec.ExternalID, "error", err)
	}
}

// cost returns the estimated cost of the Job so far: its running minutes, each begun minute counted, times the
// flavor's price per minute.
func (x *hfExecution) cost(now time.Time) int64 {
	if x.rec.RunningAt == nil || x.rec.UnitCostMicroUSD == 0 {
		return 0
	}
	end := now
	if x.rec.EndedAt != nil {
		end = *x.rec.EndedAt
	}
	minutes := int64((end.Sub(*x.rec.RunningAt) + time.Minute - 1) / time.Minute)
	return max(minutes, 1) * x.rec.UnitCostMicroUSD
}

// Wait implements Execution. The Job's stage decides the end, never its log stream's. When ctx ends (a
// shutdown, the lease lost, an operator's cancel) Wait stops following and leaves the Job alone: Cancel stops
// it, or the next attempt adopts it.
func (x *hfExecution) Wait(ctx context.Context) Outcome {
	logsCtx, stopLogs := context.WithCancel(ctx)
	defer stopLogs()
	running, ended := make(chan struct{}), make(chan struct{})
	logsDone := make(chan struct{})
	go x.followLogs(logsCtx, x.job.ID, running, ended, logsDone)
	runningClosed := false
	poll := time.NewTicker(x.e.poll)
	defer poll.Stop()
	for {
		stage := x.job.Status.Stage
		if !runningClosed && stage != hub.JobScheduling && stage != "" {
			close(running)
			runningClosed = true
		}
		if stage.Terminal() {
			close(ended)
			drain := time.NewTimer(hfLogDrain)
			select {
			case <-logsDone:
			case <-drain.C:
				x.a.Logger.InfoContext(ctx, "the Job ended; its log stream did not: closing it", "job", x.job.ID)
			}
			drain.Stop()
			stopLogs()
			<-logsDone
			return x.outcome(ctx)
		}
		select {
		case <-ctx.Done():
			stopLogs()
			<-logsDone
			return x.result(Result{Cancelled: true})
		case <-poll.C:
		}
		if x.overdue() {
			x.timedOut = true
			x.a.Logger.WarnContext(ctx, "the Job ran past the mapping's timeout: cancelling it", "job", x.job.ID,
				"timeout", x.a.Mapping.Timeout)
			if err := x.e.client.CancelJob(ctx, x.namespace, x.job.ID); err != nil {
				x.a.Logger.WarnContext(ctx, "could not cancel the Job", "job", x.job.ID, "error", err)
			}
		}
		job, err := x.e.client.InspectJob(ctx, x.namespace, x.job.ID)
		var se *hub.StatusError
		switch {
		case err == nil:
			x.observe(ctx, job, false)
		case ctx.Err() != nil:
		case hub.IsAuthError(err):
			stopLogs()
			<-logsDone
			out := x.result(Result{})
			out.Message = fmt.Sprintf("the Hub refused the token: %v (the Job %s may still run: see %s)", err, x.job.ID, x.job.URL)
			out.Final = true
			return out
		case errors.As(err, &se) && se.Status == http.StatusNotFound:
			gone := *x.job
			gone.Status = hub.JobStatus{Stage: hub.JobDeleted, Message: "the Hub no longer knows the Job"}
			x.observe(ctx, &gone, false)
		default:
			x.a.Logger.WarnContext(ctx, "could not ask the Hub for the Job's stage; asking again", "job", x.job.ID, "error", err)
		}
	}
}

// overdue reports whether the Job has run longer than the mapping's timeout and a slack after it, which the
// Hub's own timeout should have stopped: the worker then cancels it, once a poll interval.
func (x *hfExecution) overdue() bool {
	timeout := x.a.Mapping.Timeout
	return timeout > 0 && x.rec.RunningAt != nil && time.Since(*x.rec.RunningAt) > timeout+hfTimeoutSlack
}

// result returns an Outcome of res, with the times of the execution.
func (x *hfExecution) result(res Result) Outcome {
	res.Started, res.Finished, res.Timeout = x.started, time.Now(), x.a.Mapping.Timeout
	if res.ExitCode == 0 && !res.Succeeded() {
		res.ExitCode = -1
	}
	return Outcome{Result: res}
}

// outcome returns how the Job that reached a final stage ended, and counts it.
func (x *hfExecution) outcome(ctx context.Context) Outcome {
	status := x.job.Status
	var out Outcome
	metric := strings.ToLower(string(status.Stage))
	switch status.Stage {
	case hub.JobCompleted:
		out = x.result(Result{ExitCode: 0})
	case hub.JobError:
		out = x.result(Result{ExitCode: -1})
		if strings.Contains(strings.ToLower(status.Message), "timeout") {
			out.TimedOut, metric = true, "timeout"
			out.Message = fmt.Sprintf("timed out after %s on Hugging Face Jobs (%s)", x.a.Mapping.Timeout, status.Message)
		} else {
			out.Message = "the Job failed on Hugging Face Jobs: " + cmp.Or(status.Message, "no reason given")
		}
	case hub.JobCanceled:
		out = x.result(Result{ExitCode: -1})
		switch {
		case x.timedOut:
			out.TimedOut, metric = true, "timeout"
			out.Message = fmt.Sprintf("timed out after %s: the Job was cancelled", x.a.Mapping.Timeout)
		default:
			// Someone stopped it on purpose: the run fails, and no retry starts another Job.
			out.Message, out.Final = "the Job was cancelled on the Hub", true
		}
	default: // DELETED
		out = x.result(Result{ExitCode: -1})
		out.Message, out.Final = "the Job was deleted on the Hub", true
		if status.Message != "" {
			out.Message += " (" + status.Message + ")"
		}
	}
	x.count(metric)
	x.a.Logger.InfoContext(ctx, "the Job ended", "job", x.job.ID, "stage", status.Stage, "message", status.Message,
		"cost_micro_usd", x.rec.CostMicroUSD)
	return out
}

// count counts the Job's outcome and cost, once.
func (x *hfExecution) count(outcome string) {
	if x.counted {
		return
	}
	x.counted = true
	x.e.metrics.observeHFJob(outcome, x.rec.CostMicroUSD)
}

// Cancel implements Execution: it asks the Hub to cancel the Job (safe to repeat, and for a Job that ended)
// and waits a little for the Job's final stage, to record it.
func (x *hfExecution) Cancel(ctx context.Context) error {
	x.cancelled = true
	if err := x.e.client.CancelJob(ctx, x.namespace, x.job.ID); err != nil {
		return fmt.Errorf("cancel the Job %s: %w", x.job.ID, err)
	}
	x.a.Logger.InfoContext(ctx, "cancelled the Job", "job", x.job.ID)
	waitCtx, cancel := context.WithTimeout(ctx, hfCancelWait)
	defer cancel()
	for {
		job, err := x.e.client.InspectJob(waitCtx, x.namespace, x.job.ID)
		if err == nil {
			x.observe(ctx, job, false)
			if job.Status.Stage.Terminal() {
				x.count("canceled")
				return nil
			}
		}
		if sleepCtx(waitCtx, min(x.e.poll, time.Second)) != nil {
			return nil // cancelled; its final stage will show on the Hub
		}
	}
}

// followLogs copies the log of the Job id into the attempt's Output from when the Job runs (running closed) until the
// stream ends after the Job did (ended closed), or ctx ends. Each connection replays the log from its first
// event: the events seen already are counted and skipped, so that a line is neither repeated nor lost. The
// banner the Hub writes first is left out, and keep-alives only say the Hub is there.
func (x *hfExecution) followLogs(ctx context.Context, id string, running, ended <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	select {
	case <-ctx.Done():
		return
	case <-running:
	}
	seen := 0
	wait := hfLogRetryMin
	for {
		before, n := seen, 0
		err := x.e.client.JobLogs(ctx, x.namespace, id, func(ev hub.JobLogEvent) error {
			if ev.KeepAlive {
				return nil
			}
			if n++; n <= seen {
				return nil
			}
			seen = n
			if n == 1 && strings.HasPrefix(ev.Line, hfBanner) {
				return nil
			}
			_, err := io.WriteString(x.a.Output, ev.Line+"\n")
			return err
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil && isDone(ended) {
			return // the whole log, after the Job's end
		}
		if seen > before {
			wait = hfLogRetryMin
		}
		if err != nil {
			x.a.Logger.DebugContext(ctx, "the Job's log stream broke; opening it again", "job", id, "error", err, "wait", wait)
		}
		// Once the Job ended, the stream is only given its last lines: no long wait, which hfLogDrain bounds.
		pause, wake := wait, ended
		if isDone(ended) {
			pause, wake = hfLogRetryMin, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
		case <-t.C:
		}
		t.Stop()
		wait = min(2*wait, hfLogRetryMax)
	}
}

// isDone reports whether ch is closed.
func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
