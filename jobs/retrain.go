package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"go.opentelemetry.io/otel/trace"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
	"github.com/retrainhq/orchestrator/orchestrator/tracing"
)

// RetrainArgs is the River job of one run. The run row holds everything else; the job only points at it, so
// that the history outlives the queue's rows.
type RetrainArgs struct {
	RunID int64 `json:"run_id"`
}

// Kind implements river.JobArgs.
func (RetrainArgs) Kind() string { return "retrain" }

// InsertOpts puts the job on the default queue of runs.
func (RetrainArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: orchestrator.QueueDefault}
}

// WorkerConfig configures the RetrainWorker.
type WorkerConfig struct {
	// KillGrace is the time between SIGTERM and SIGKILL when a command is stopped. Defaults to KillGraceDefault.
	KillGrace time.Duration
	// LogLimit is how many bytes of the end of each attempt's output are kept. Defaults to LogLimitDefault.
	LogLimit int
	// LogFlushInterval is how often output is written to the database. Defaults to LogFlushIntervalDefault.
	LogFlushInterval time.Duration
	// HeartbeatInterval is how often a running attempt tells the database its worker is alive. Defaults to
	// HeartbeatIntervalDefault.
	HeartbeatInterval time.Duration
	// OrphanAfter is how long an attempt's lease lasts from its last heartbeat: the reapers' OrphanAfter, after
	// which another worker may be given the run. Defaults to OrphanAfterDefault.
	OrphanAfter time.Duration
	// FenceMargin is how long before its lease expires a worker that could not renew it stops its command; it
	// must exceed KillGrace (see lease.go). Defaults to FenceMarginFor(OrphanAfter, KillGrace).
	FenceMargin time.Duration
	// Watchdog, when set, is the program and arguments that run RunWatchdogMain (the orchestrator binary and
	// WatchdogCommand): each command that has run for a heartbeat interval is then also watched by such a
	// process, which stops it in time when the worker is frozen. Nil: the worker alone fences its commands.
	Watchdog []string
	// Processes, when set, marks each command's processes and records the attempts this process runs, for the
	// Sweeper.
	Processes *Processes
	// SlotWait is how long a run waits before it looks again for a free slot of its mapping's concurrency (a
	// finishing run wakes the next one sooner). Defaults to SlotWaitDefault.
	SlotWait time.Duration
	// Revisions, when set, checks revisions for mappings with verify_revision.
	Revisions RevisionChecker
	// Heads, when set, is asked for a ref's head when the recorded history cannot tell which of two runs of
	// the ref is newer. Nil: the run starts.
	Heads RefHeads
	// Files, when set, tells which files a run's revision changed: runs whose mapping has paths or
	// ignore_paths are checked against them before they start, and the command gets the lists
	// (DATASET_CHANGED_FILES, DATASET_REMOVED_FILES). Nil: such runs go ahead, saying why they were not checked.
	Files ChangedFiles
	// FilesForEveryRun makes runs of mappings without paths or ignore_paths, and retries, list their changed
	// files too, to show them and give them to the command.
	FilesForEveryRun bool
	// FilesTimeout bounds the look at a run's changed files. Defaults to orchestrator.FilesTimeoutDefault.
	FilesTimeout time.Duration
	// Metrics, when set, counts finished attempts and their durations.
	Metrics *Metrics
	// TracerProvider, when set, traces each command in a span of its job's trace, and gives the command that
	// span as TRACEPARENT (and TRACESTATE). Nil: no span, and no TRACEPARENT.
	TracerProvider trace.TracerProvider
	// HFJobs, when set, is the Hub client (with HF_TOKEN) that runs the attempts of hf-jobs mappings as
	// Hugging Face Jobs. Nil: such attempts fail, saying that the orchestrator has no HF_TOKEN.
	HFJobs *hub.Client
	// HFJobsPoll is how often a followed Job's stage is asked of the Hub. Defaults to HFJobsPollDefault.
	HFJobsPoll time.Duration
	// Getenv reads the orchestrator's environment variables that hf-jobs mappings send as Job secrets.
	// Defaults to os.Getenv.
	Getenv func(string) string
	// BaseEnv is the environment every command starts from. Defaults to the orchestrator's own environment
	// without its secrets (see ScrubbedEnv).
	BaseEnv []string
	// Logger receives the worker's log lines.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c WorkerConfig) WithDefaults() WorkerConfig {
	if c.KillGrace == 0 {
		c.KillGrace = KillGraceDefault
	}
	if c.LogLimit == 0 {
		c.LogLimit = LogLimitDefault
	}
	if c.LogFlushInterval == 0 {
		c.LogFlushInterval = LogFlushIntervalDefault
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = HeartbeatIntervalDefault
	}
	if c.OrphanAfter == 0 {
		c.OrphanAfter = OrphanAfterDefault
	}
	if c.FenceMargin == 0 {
		c.FenceMargin = FenceMarginFor(c.OrphanAfter, c.KillGrace)
	}
	if c.SlotWait == 0 {
		c.SlotWait = SlotWaitDefault
	}
	if c.FilesTimeout == 0 {
		c.FilesTimeout = orchestrator.FilesTimeoutDefault
	}
	if c.HFJobsPoll == 0 {
		c.HFJobsPoll = HFJobsPollDefault
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if c.BaseEnv == nil {
		c.BaseEnv = ScrubbedEnv(os.Environ())
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// quietHopMax is the longest single snooze while a quiet period runs out.
const quietHopMax = 4 * time.Second

// SlotWaitDefault is how long a run waiting for a slot of its mapping's concurrency sleeps between looks.
const SlotWaitDefault = 2 * time.Second

// RevisionChecker tells whether a revision exists in a dataset on the Hub.
type RevisionChecker interface {
	RevisionExists(ctx context.Context, dataset, revision string) (bool, error)
}

// RefHeads tells which commit a dataset's ref points at on the Hub now ("" when it has no such ref).
type RefHeads interface {
	RefHead(ctx context.Context, dataset, ref string) (string, error)
}

// HeartbeatIntervalDefault is how often a running attempt's worker records that it is alive.
const HeartbeatIntervalDefault = 10 * time.Second

// SecretEnv lists the orchestrator's own secrets, which a training command never sees.
var SecretEnv = []string{
	"HUGGINGFACE_WEBHOOK_SECRET", "HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS", "ORCHESTRATOR_ADMIN_TOKEN",
	"ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS", "DATABASE_URL",
}

// ScrubbedEnv returns env without the variables in SecretEnv.
func ScrubbedEnv(env []string) []string { return withoutVars(env, SecretEnv) }

// withoutVars returns env without the variables named in names.
func withoutVars(env []string, names []string) []string {
	if len(names) == 0 {
		return env
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, name) {
			out = append(out, kv)
		}
	}
	return out
}

// RetrainWorker executes runs: it runs the mapping's command pinned to the run's revision and writes the
// run's status back as it changes.
type RetrainWorker struct {
	river.WorkerDefaults[RetrainArgs]
	store  *orchestrator.Store
	cfg    WorkerConfig
	tracer trace.Tracer // nil when tracing is off
	local  Executor
	hfJobs Executor

	outputsMu sync.Mutex
	outputs   string // the private directory of the RUN_OUTPUT files, made at the first run
}

// outputPath returns the RUN_OUTPUT path of an attempt: a file in a directory of this worker's, readable by
// its user only, made once (and again if something removed it) rather than for every run, which cost a
// directory's creation and removal per run.
func (w *RetrainWorker) outputPath(runID int64, attempt int) (string, error) {
	w.outputsMu.Lock()
	defer w.outputsMu.Unlock()
	if w.outputs != "" {
		if _, err := os.Stat(w.outputs); err != nil {
			w.outputs = ""
		}
	}
	if w.outputs == "" {
		dir, err := os.MkdirTemp("", "orchestrator-outputs-*")
		if err != nil {
			return "", fmt.Errorf("create output directory: %w", err)
		}
		w.outputs = dir
	}
	return filepath.Join(w.outputs, fmt.Sprintf("run-%d-%d.json", runID, attempt)), nil
}

// NewRetrainWorker returns a worker that records into store.
func NewRetrainWorker(store *orchestrator.Store, cfg WorkerConfig) *RetrainWorker {
	w := &RetrainWorker{store: store, cfg: cfg.WithDefaults()}
	w.local = localExecutor{killGrace: w.cfg.KillGrace}
	w.hfJobs = &hfJobsExecutor{client: w.cfg.HFJobs, store: store, poll: w.cfg.HFJobsPoll, getenv: w.cfg.Getenv,
		metrics: w.cfg.Metrics, logger: w.cfg.Logger}
	if cfg.TracerProvider != nil {
		w.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	return w
}

// Timeout disables River's own job timeout: the worker enforces the mapping's timeout itself, stopping the
// command's process group with SIGTERM and then SIGKILL, which River's context cancellation alone would not do.
func (w *RetrainWorker) Timeout(*river.Job[RetrainArgs]) time.Duration { return -1 }

// Work runs one attempt of a run.
func (w *RetrainWorker) Work(ctx context.Context, job *river.Job[RetrainArgs]) error {
	logger := w.cfg.Logger.With("run_id", job.Args.RunID)
	// Two round trips before the command: the run is read, then locked, decided on and started at once.
	work, err := w.store.RunForWork(ctx, job.Args.RunID)
	if err != nil {
		if orchestrator.ErrorCode(err) == orchestrator.CodeNotFound {
			return river.JobCancel(err)
		}
		return err
	}
	run, mapping := work.Run, work.Mapping
	if run.Status.Finished() {
		logger.InfoContext(ctx, "run already finished, nothing to do", "status", run.Status)
		return nil
	}
	if run.JobID == nil || *run.JobID != job.ID {
		// The run was handed to another job (its worker was taken for dead): this one is spent.
		logger.InfoContext(ctx, "run belongs to another job now, nothing to do", "run_job_id", run.JobID)
		return nil
	}
	// Attempts are the run's own executions, numbered by the run: an interrupted one is not spent, so the
	// queue's count of tries is not the attempt's number.
	attempt := run.Attempt + 1
	logger = logger.With("attempt", attempt)

	// The changed files are looked at before a slot is taken: a run that changed nothing watched is skipped
	// without one.
	changes, skipped, err := w.checkFiles(ctx, logger, work)
	if err != nil {
		return err
	}
	if skipped {
		// A run waiting on its order in the ref's history may go now.
		w.wakeNext(ctx, logger, mapping.ID)
		return nil
	}

	executor := w.executorFor(mapping)
	var env, argv []string
	var outputPath string
	var expandErr error
	if executor.Local() {
		// The secrets that sign notifications are the orchestrator's, not the command's.
		env = RunEnv(withoutVars(w.cfg.BaseEnv, work.SecretEnv), mapping, run, attempt)
		outputPath, err = w.outputPath(run.ID, attempt)
		if err != nil {
			return err
		}
		_ = os.Remove(outputPath) // left by an earlier execution of the same attempt
		defer os.Remove(outputPath)
		env = append(env, "RUN_OUTPUT="+outputPath)
		lists, removeLists, err := writeFileLists(strings.TrimSuffix(outputPath, ".json"), changes)
		defer removeLists()
		if err != nil {
			return err
		}
		env = append(env, lists...)
		argv, expandErr = ExpandArgv(mapping.Command, env)
		if w.cfg.Processes != nil {
			key := orchestrator.AttemptKey{RunID: run.ID, Attempt: attempt}
			env = append(env, w.cfg.Processes.marker(key))
			defer w.cfg.Processes.start(key)()
		}
	} else {
		// An execution elsewhere gets the run's variables and the mapping's env: nothing of this machine's.
		env = RunEnv(nil, mapping, run, attempt)
		argv, expandErr = ExpandArgv(mapping.Command, env)
	}
	if expandErr != nil {
		argv = mapping.Command
	}
	// The attempt's lease counts from when its start was sent (the first, when the start asks the Hub and
	// starts again).
	leaseFrom := time.Now()
	if err := w.start(ctx, logger, run, attempt, argv); err != nil {
		var wait *orchestrator.WaitError
		switch {
		case errors.As(err, &wait):
			// Snoozing does not spend an attempt; a run that frees a slot wakes the oldest waiting one. A quiet
			// period is waited out in short hops: River then keeps the job available and picks it up on time,
			// where a long snooze would leave it to the scheduler, which runs every few seconds.
			if wait.Delay > 0 {
				return river.JobSnooze(min(wait.Delay, quietHopMax))
			}
			// Older runs may be the ones waiting (River fetched this newer one first): wake them for the free
			// slots, so that order costs no time.
			w.wakeNext(ctx, logger, mapping.ID)
			return river.JobSnooze(w.cfg.SlotWait)
		case orchestrator.ErrorCode(err) == orchestrator.CodeConflict:
			logger.InfoContext(ctx, "run finished meanwhile, not starting", "reason", err)
			// A superseded run may have held a slot's turn: pass it on.
			w.wakeNext(ctx, logger, mapping.ID)
			return nil
		}
		return err
	}

	if mapping.VerifyRevision && w.cfg.Revisions != nil {
		if err := w.verifyRevision(ctx, run, attempt, job.Attempt >= job.MaxAttempts); err != nil {
			return err
		}
	}

	// Writes after the command ends must happen even when ctx was cancelled.
	finishCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// The finish also wakes the runs of the mapping waiting for the slot it frees.
	finish := orchestrator.RunAttemptFinishParams{
		RunID: run.ID, Attempt: attempt, NoTargets: len(mapping.Notify) == 0, WakeMapping: mapping.ID,
	}
	lastAttempt := job.Attempt >= job.MaxAttempts

	if expandErr != nil {
		finish.Transition, finish.Error = orchestrator.TransitionFail, expandErr.Error()
		if err := w.store.RunAttemptFinish(finishCtx, finish); err != nil {
			return err
		}
		return river.JobCancel(expandErr) // a bad command does not get better with retries
	}

	logger.InfoContext(ctx, "starting command", "mapping", mapping.Name, "revision", run.Revision)
	output := newLogWriter(w.store, logger, run.ID, attempt, w.cfg.LogLimit, w.cfg.LogFlushInterval)
	cmdCtx, stopCmd := context.WithCancelCause(ctx)
	defer stopCmd(nil)
	spanCtx, span := startCommandSpan(cmdCtx, w.tracer, mapping, run, attempt, argv)
	watch := w.newWatchdog(logger)
	heartbeatDone := w.holdLease(cmdCtx, logger, run.ID, attempt, leaseFrom, stopCmd, watch)
	a := &Attempt{Run: run, Mapping: mapping, Number: attempt, Argv: argv, Env: tracing.CommandEnv(spanCtx, env),
		Output: output, Logger: logger}
	if executor.Local() {
		a.OnStart = watch.onStart()
	}
	execution, out := execute(spanCtx, executor, a)
	res := out.Result
	stopCmd(nil)
	<-heartbeatDone
	output.Close()

	if errors.Is(context.Cause(cmdCtx), errAttemptTakenOver) && ctx.Err() == nil {
		// The reaper gave the job to another worker while this one could not reach the database: the attempt
		// is closed already, and its result belongs to nobody.
		logger.WarnContext(ctx, "attempt was closed by the reaper; stopped the command", "result", res.Describe())
		endCommandSpan(span, res, "taken over")
		w.wakeNext(ctx, logger, mapping.ID)
		return nil
	}
	if (res.Cancelled && errors.Is(context.Cause(cmdCtx), errLeaseLost)) || watch.fired() {
		// Stopped by its own fence or its watchdog, not failed nor cancelled by an operator (a cancel River
		// delivers when the link returns comes from the reaper of another process).
		logger.WarnContext(ctx, "stopped the command: the attempt's lease ran out", "result", res.Describe())
		endCommandSpan(span, res, "lease lost")
		w.abandonFenced(ctx, logger, run.ID, attempt, mapping.ID)
		return nil
	}

	if res.ExitCode >= 0 {
		finish.ExitCode = &res.ExitCode
	}
	var runOutput []byte
	var outputErr error
	if outputPath != "" {
		runOutput, outputErr = readRunOutput(outputPath)
		_ = os.Remove(outputPath) // gone before the run is recorded finished
	}
	finish.Output = runOutput
	finish.Signal = res.Signal
	var retErr error
	switch {
	case res.Succeeded():
		finish.Transition = orchestrator.TransitionSucceed
		if outputErr != nil {
			finish.Error = outputErr.Error()
		}
	case res.Cancelled && errors.Is(context.Cause(ctx), river.ErrJobCancelledRemotely):
		finish.Transition = orchestrator.TransitionCancel
		finish.Error = "cancelled by an operator"
		if execution != nil {
			if err := execution.Cancel(finishCtx); err != nil {
				logger.WarnContext(ctx, "could not stop the execution", "error", err)
				finish.Error += "; stopping its execution failed: " + err.Error()
			}
		}
		retErr = river.JobCancel(errors.New(finish.Error))
	case res.Cancelled:
		// The client is stopping: River puts the job back without spending the attempt when the worker
		// returns the context's error, and the run goes back to queued.
		finish.Transition = orchestrator.TransitionInterrupt
		finish.Error = "interrupted by shutdown; it will run again"
		retErr = ctx.Err()
	default:
		finish.Transition, finish.Error = orchestrator.TransitionRetry, out.Describe()
		if lastAttempt || out.Final {
			finish.Transition = orchestrator.TransitionFail
		}
		retErr = errors.New(finish.Error)
		if out.Final {
			retErr = river.JobCancel(retErr) // retrying will not help
		}
	}
	logger.InfoContext(ctx, "command ended", "result", out.Describe(), "status", finish.Transition.To(),
		"duration", res.Finished.Sub(res.Started).Round(time.Millisecond))
	w.cfg.Metrics.observe(mapping.Name, finish.Transition.To(), res.Finished.Sub(res.Started))
	endCommandSpan(span, res, string(finish.Transition.To()))
	if err := w.store.RunAttemptFinish(finishCtx, finish); err != nil {
		return fmt.Errorf("record result (%s): %w", out.Describe(), err)
	}
	return retErr
}

// executorFor returns the executor of the mapping's runs.
func (w *RetrainWorker) executorFor(m *orchestrator.Mapping) Executor {
	if m.Executor == orchestrator.ExecutorHFJobs {
		return w.hfJobs
	}
	return w.local
}

// execute starts the attempt's execution and follows it to its end. An execution that could not start is
// returned nil, with an Outcome that says why.
func execute(ctx context.Context, executor Executor, a *Attempt) (Execution, Outcome) {
	started := time.Now()
	execution, err := executor.Start(ctx, a)
	if err == nil {
		return execution, execution.Wait(ctx)
	}
	res := Result{ExitCode: -1, StartErr: err, Started: started, Finished: time.Now(), Cancelled: ctx.Err() != nil}
	return nil, Outcome{Result: res, Final: isFinal(err)}
}

// start starts the attempt. When the recorded history of the run's ref cannot tell whether another run of it
// is newer, it asks the Hub for the ref's head, which wins; without an answer the run starts, since training an
// older revision once more costs less than never training the newest.
func (w *RetrainWorker) start(ctx context.Context, logger *slog.Logger, run *orchestrator.Run, attempt int, argv []string) error {
	p := orchestrator.RunAttemptStartParams{RunID: run.ID, Attempt: attempt, Argv: argv}
	err := w.store.RunAttemptStart(ctx, p)
	var unordered *orchestrator.UnorderedError
	if !errors.As(err, &unordered) {
		return err
	}
	p.Head = run.Revision
	if w.cfg.Heads != nil {
		head, herr := w.cfg.Heads.RefHead(ctx, run.Dataset, run.Ref)
		switch {
		case herr != nil:
			logger.WarnContext(ctx, "could not ask the Hub which revision is newer; starting", "other_run", unordered.RunID, "error", herr)
		case head != "":
			p.Head = head
		}
	}
	logger.InfoContext(ctx, "the recorded history does not order two runs of the ref; the Hub's head wins",
		"other_run", unordered.RunID, "other_revision", unordered.Revision, "head", p.Head)
	return w.store.RunAttemptStart(ctx, p)
}

// wakeNext makes the oldest runs of the mapping that wait for a slot available at once, since a slot is free
// now, or may be.
func (w *RetrainWorker) wakeNext(ctx context.Context, logger *slog.Logger, mappingID int64) {
	if err := w.store.RunWakeWaiting(context.WithoutCancel(ctx), mappingID); err != nil {
		logger.DebugContext(ctx, "could not wake the runs waiting for a slot", "error", err)
	}
}

// verifyRevision checks with the Hub that the run's revision exists in its dataset before any GPU time is
// spent: a revision that does not exist fails the run for good; a Hub that cannot answer is retried.
func (w *RetrainWorker) verifyRevision(ctx context.Context, run *orchestrator.Run, attempt int, lastAttempt bool) error {
	finishCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	exists, err := w.cfg.Revisions.RevisionExists(ctx, run.Dataset, run.Revision)
	finish := orchestrator.RunAttemptFinishParams{RunID: run.ID, Attempt: attempt, WakeMapping: run.MappingID}
	switch {
	case err != nil:
		finish.Transition, finish.Error = orchestrator.TransitionRetry, "could not verify the revision with the Hub: "+err.Error()
		if lastAttempt {
			finish.Transition = orchestrator.TransitionFail
		}
		if ferr := w.store.RunAttemptFinish(finishCtx, finish); ferr != nil {
			return ferr
		}
		return errors.New(finish.Error)
	case !exists:
		finish.Transition, finish.Error = orchestrator.TransitionFail, fmt.Sprintf("revision %s does not exist in dataset %s on the Hub", run.Revision, run.Dataset)
		if ferr := w.store.RunAttemptFinish(finishCtx, finish); ferr != nil {
			return ferr
		}
		return river.JobCancel(errors.New(finish.Error))
	}
	return nil
}

// RunOutputMaxBytes is the largest RUN_OUTPUT document kept.
const RunOutputMaxBytes = 1 << 20

// readRunOutput reads the JSON object a command wrote to RUN_OUTPUT: nil when it wrote none, and an error that
// says why when it is not a JSON object of at most RunOutputMaxBytes.
func readRunOutput(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("RUN_OUTPUT ignored: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, RunOutputMaxBytes+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("RUN_OUTPUT ignored: %w", err)
	case len(data) > RunOutputMaxBytes:
		return nil, fmt.Errorf("RUN_OUTPUT ignored: larger than %d bytes", RunOutputMaxBytes)
	case len(bytes.TrimSpace(data)) == 0:
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("RUN_OUTPUT ignored: not a JSON object: %w", err)
	}
	// PostgreSQL's jsonb cannot hold a NUL character.
	if bytes.Contains(data, []byte(`\u0000`)) {
		return nil, errors.New("RUN_OUTPUT ignored: contains a NUL character")
	}
	return data, nil
}

// RunEnv returns the environment of a run's command: base, then the mapping's env, then the run's own
// variables, which always win. TRACEPARENT and TRACESTATE are left out: the worker adds the run's own when
// tracing is on.
func RunEnv(base []string, m *orchestrator.Mapping, run *orchestrator.Run, attempt int) []string {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		if k == tracing.EnvTraceParent || k == tracing.EnvTraceState {
			continue // the orchestrator's own trace is not the run's: the worker sets the run's
		}
		set(k, v)
	}
	keys := make([]string, 0, len(m.Env))
	for k := range m.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		set(k, m.Env[k])
	}
	set("DATASET_REPO", run.Dataset)
	set("DATASET_REF", run.Ref)
	set("DATASET_REVISION", run.Revision)
	set("DATASET_OLD_REVISION", run.OldRevision)
	set("RUN_ID", strconv.FormatInt(run.ID, 10))
	set("RUN_ATTEMPT", strconv.Itoa(attempt))
	set("MAPPING_NAME", m.Name)

	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env
}

var braceVarRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// ExpandArgv replaces ${NAME} in each argument with NAME's value in env. Only the braced form is expanded: a
// bare $ passes through, so a script given to `sh -c` keeps its own "$1". A ${NAME} that env does not define is
// an error: a command never runs with a silently empty parameter.
func ExpandArgv(argv []string, env []string) ([]string, error) {
	vars := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	out := make([]string, len(argv))
	var missing []string
	for i, arg := range argv {
		out[i] = braceVarRE.ReplaceAllStringFunc(arg, func(m string) string {
			name := m[2 : len(m)-1]
			v, ok := vars[name]
			if !ok {
				missing = append(missing, fmt.Sprintf("argument %d uses ${%s}, which is not set", i, name))
			}
			return v
		})
	}
	if len(missing) > 0 {
		return nil, errors.New(strings.Join(missing, "; "))
	}
	return out, nil
}
