package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// The hf-jobs executor runs each attempt as a Hugging Face Job. The Jobs API has no idempotency key, so every
// Job carries labels naming this orchestrator instance, the mapping, the run and the attempt, and before it
// creates a Job, and after any answer that leaves it unclear whether one was created, the executor lists the
// run's Jobs by those labels and adopts the one that belongs to the attempt (see adoptable): one attempt never
// pays for two Jobs, and a worker that died is replaced by one that follows the same Job.

// Defaults of the hf-jobs executor.
const (
	// HFJobsPollDefault is how often a followed Job's stage is asked of the Hub.
	HFJobsPollDefault = 2 * time.Second
	// hfCreateTries is how many times a Job's create is sent when the answers leave it unclear whether it was
	// created, and looking the Job up by its labels does not find it.
	hfCreateTries = 4
	// hfCreateBackoff is the first wait between two creates; it doubles.
	hfCreateBackoff = time.Second
	// hfRetryAfterMax bounds a Retry-After the executor waits out before a create.
	hfRetryAfterMax = 5 * time.Minute
	// hfCallTimeout bounds the calls to the Hub that give an attempt its Job, which the attempt's end does not
	// cut short.
	hfCallTimeout = 2 * time.Minute
	// hfPricesTTL is how long the Hub's prices of hardware are kept.
	hfPricesTTL = time.Hour
)

// hfJobsExecutor runs attempts as Hugging Face Jobs.
type hfJobsExecutor struct {
	client  *hub.Client // nil: no HF_TOKEN, every hf-jobs attempt fails saying so
	store   *orchestrator.Store
	poll    time.Duration
	getenv  func(string) string
	metrics *Metrics
	logger  *slog.Logger

	mu       sync.Mutex
	instance string           // the orchestrator instance's id, read once
	prices   map[string]int64 // micro-USD per minute by flavor
	pricesAt time.Time
}

// Local implements Executor.
func (*hfJobsExecutor) Local() bool { return false }

// Start implements Executor: it adopts the attempt's Job when there is one, and creates it otherwise.
func (e *hfJobsExecutor) Start(ctx context.Context, a *Attempt) (Execution, error) {
	m := a.Mapping
	h := m.HFJobs
	switch {
	case h == nil:
		return nil, &FinalError{fmt.Errorf("mapping %s runs on Hugging Face Jobs but has no hf_jobs settings", m.Name)}
	case e.client == nil:
		return nil, &FinalError{fmt.Errorf("mapping %s runs on Hugging Face Jobs, but the orchestrator has no HF_TOKEN "+
			"to create Jobs with", m.Name)}
	}
	spec, err := e.spec(ctx, a)
	if err != nil {
		return nil, err
	}
	x := &hfExecution{e: e, a: a, namespace: h.Namespace, started: time.Now()}
	if err := x.createOrAdopt(ctx, spec); err != nil {
		return nil, err
	}
	return x, nil
}

// spec returns the Job of the attempt: its command and the run's variables and the mapping's env (nothing of
// the orchestrator's own environment), its secrets, read from the orchestrator's environment, its labels, its
// timeout and, with mount_dataset, the dataset at the run's revision.
func (e *hfJobsExecutor) spec(ctx context.Context, a *Attempt) (hub.JobSpec, error) {
	m, h, run := a.Mapping, a.Mapping.HFJobs, a.Run
	env := make(map[string]string, len(a.Env))
	for _, kv := range a.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	secrets := make(map[string]string, len(h.Secrets))
	for _, name := range h.Secrets {
		if slices.Contains(SecretEnv, name) {
			return hub.JobSpec{}, &FinalError{fmt.Errorf("hf_jobs secret %s of mapping %s is one of the orchestrator's own "+
				"secrets, which no command gets", name, m.Name)}
		}
		v := e.getenv(name)
		if v == "" {
			return hub.JobSpec{}, &FinalError{fmt.Errorf("hf_jobs secret %s of mapping %s is not set in the orchestrator's "+
				"environment", name, m.Name)}
		}
		secrets[name] = v
	}
	instance, err := e.instanceID(ctx)
	if err != nil {
		return hub.JobSpec{}, err
	}
	labels := maps.Clone(h.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[orchestrator.LabelInstance] = instance
	labels[orchestrator.LabelMapping] = m.Name
	labels[orchestrator.LabelRun] = strconv.FormatInt(run.ID, 10)
	labels[orchestrator.LabelAttempt] = strconv.Itoa(a.Number)
	spec := hub.JobSpec{
		DockerImage: h.Image, SpaceID: h.Space, Command: a.Argv, Environment: env, Secrets: secrets,
		Flavor: cmp.Or(h.Flavor, orchestrator.HFJobsFlavorDefault), TimeoutSeconds: hfTimeoutSeconds(m.Timeout),
		Labels: labels,
	}
	if h.MountDataset != "" {
		spec.Volumes = []hub.JobVolume{{Type: "dataset", Source: run.Dataset, MountPath: h.MountDataset,
			Revision: run.Revision, ReadOnly: true}}
	}
	return spec, nil
}

// hfTimeoutSeconds returns the timeoutSeconds a Job is given: the mapping's timeout in whole seconds, rounded
// up. One is always sent, since the Hub's own default is 30 minutes; a mapping always has a timeout
// (orchestrator.TimeoutDefault when it names none).
func hfTimeoutSeconds(timeout time.Duration) int {
	if timeout <= 0 {
		timeout = orchestrator.TimeoutDefault
	}
	return int(math.Ceil(timeout.Seconds()))
}

// instanceID returns the orchestrator instance's id, read once.
func (e *hfJobsExecutor) instanceID(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.instance == "" {
		id, err := e.store.InstanceID(ctx)
		if err != nil {
			return "", fmt.Errorf("read the orchestrator instance's id for the Job's labels: %w", err)
		}
		e.instance = id
	}
	return e.instance, nil
}

// unitCost returns the price per minute of flavor in micro-USD, from the Hub's list of hardware, asked at most
// once an hour (and again for a flavor it did not list); 0 when the Hub does not say.
func (e *hfJobsExecutor) unitCost(ctx context.Context, flavor string) int64 {
	e.mu.Lock()
	price, known := e.prices[flavor]
	asked := time.Since(e.pricesAt)
	e.mu.Unlock()
	if e.client == nil || known && asked < hfPricesTTL || asked < time.Minute {
		return price
	}
	hw, err := e.client.JobHardware(ctx)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pricesAt = time.Now()
	if err != nil {
		e.logger.WarnContext(ctx, "could not read the prices of the Jobs hardware; cost unknown", "error", err)
		return e.prices[flavor]
	}
	e.prices = make(map[string]int64, len(hw))
	for _, h := range hw {
		e.prices[h.Name] = h.UnitCostMicroUSD
	}
	return e.prices[flavor]
}

// createOrAdopt gives the attempt its Job: the one found by its labels, or a new one. A create whose answer
// leaves it unclear whether the Job was created is followed by another look by labels, and only then by
// another create. The calls to the Hub are not cut short by ctx (each is bounded by hfCallTimeout): a Job whose
// create was sent is known by its id, so that a cancel can stop it, and a shutdown leave it to the next attempt.
func (x *hfExecution) createOrAdopt(ctx context.Context, spec hub.JobSpec) error {
	e, a := x.e, x.a
	instance := spec.Labels[orchestrator.LabelInstance]
	calls, cancel := context.WithTimeout(context.WithoutCancel(ctx), hfCallTimeout)
	defer cancel()
	if found, err := x.adoptable(calls, instance); err != nil {
		return err
	} else if found != nil {
		a.Logger.InfoContext(ctx, "adopting the attempt's Job found by its labels", "job", found.ID,
			"stage", found.Status.Stage, "job_attempt", found.Labels[orchestrator.LabelAttempt])
		x.adopted = true
		return x.begin(calls, found)
	}
	wait := hfCreateBackoff
	for try := 1; ; try++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("create the Job: %w", err)
		}
		job, err := e.client.RunJob(calls, x.namespace, spec)
		if err == nil {
			a.Logger.InfoContext(ctx, "created the Job", "job", job.ID, "url", job.URL, "flavor", job.Flavor)
			return x.begin(calls, job)
		}
		var se *hub.StatusError
		switch {
		case hub.IsAuthError(err):
			return &FinalError{fmt.Errorf("the Hub refused the token: %w", err)}
		case !hub.JobMayExist(err) && errors.As(err, &se):
			return &FinalError{fmt.Errorf("the Hub refused the Job: %w", err)}
		case !hub.JobMayExist(err) && (try == hfCreateTries || ctx.Err() != nil):
			return fmt.Errorf("create the Job (%d tries): %w", try, err)
		}
		pause := wait
		if errors.As(err, &se) && se.RetryAfter > 0 {
			pause = min(se.RetryAfter, hfRetryAfterMax)
		}
		a.Logger.WarnContext(ctx, "the Job's create failed; looking it up by its labels before another",
			"error", err, "may_exist", hub.JobMayExist(err), "wait", pause)
		stopped := sleepCtx(ctx, pause) != nil
		wait *= 2
		if !hub.JobMayExist(err) {
			continue
		}
		// Looked up even when ctx ended meanwhile: a Job that was created must be known to be cancelled or left.
		found, lerr := x.adoptable(calls, instance)
		if lerr != nil {
			return lerr
		}
		if found != nil {
			a.Logger.InfoContext(ctx, "the failed create did create the Job: following it", "job", found.ID)
			return x.begin(calls, found)
		}
		if try == hfCreateTries || stopped {
			return fmt.Errorf("create the Job (%d tries, none found by its labels after): %w", try, err)
		}
	}
}

// adoptable returns the Job the attempt must follow instead of creating one, nil when there is none: of the
// Jobs labelled with this instance and the run, the newest whose attempt label is the current attempt, or an
// attempt that was interrupted (a shutdown, a crash, a fence: its Job was never followed to its end), and that
// no attempt which ended otherwise has followed since. A Job of an attempt that failed or was cancelled is
// never adopted. The Job may be running or ended: one that ended while no worker watched gives its outcome.
func (x *hfExecution) adoptable(ctx context.Context, instance string) (*hub.Job, error) {
	run := x.a.Run
	jobs, err := x.e.client.ListJobs(ctx, x.namespace, map[string]string{
		orchestrator.LabelInstance: instance, orchestrator.LabelRun: strconv.FormatInt(run.ID, 10)})
	if err != nil {
		if hub.IsAuthError(err) {
			return nil, &FinalError{fmt.Errorf("the Hub refused the token: %w", err)}
		}
		return nil, fmt.Errorf("look up the run's Jobs by their labels: %w", err)
	}
	if len(jobs) == 0 {
		return nil, nil
	}
	attempts, err := x.e.store.RunAttemptList(ctx, run.ID)
	if err != nil {
		return nil, err
	}
	status := make(map[int]orchestrator.AttemptStatus, len(attempts))
	for _, at := range attempts {
		status[at.Number] = at.Status
	}
	execs, err := x.e.store.RunExecutions(ctx, run.ID)
	if err != nil {
		return nil, err
	}
	followed := map[string]bool{} // Jobs an attempt followed to its end
	for _, ex := range execs {
		if s := status[ex.Attempt]; ex.Attempt != x.a.Number && s != orchestrator.AttemptInterrupted && s != orchestrator.AttemptRunning {
			followed[ex.ExternalID] = true
		}
		if ex.Attempt < x.a.Number {
			x.earlier = append(x.earlier, ex)
		}
	}
	var best *hub.Job
	for i := range jobs {
		j := &jobs[i]
		n, err := strconv.Atoi(j.Labels[orchestrator.LabelAttempt])
		if err != nil || followed[j.ID] || (n != x.a.Number && status[n] != orchestrator.AttemptInterrupted) {
			continue
		}
		if best == nil || j.CreatedAt.After(best.CreatedAt) {
			best = j
		}
	}
	return best, nil
}

// sleepCtx waits for d or until ctx ends (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
