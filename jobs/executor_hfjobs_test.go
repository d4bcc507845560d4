package jobs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/hub"
	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
)

const hfToken = "hf_test_token"

// hfBundle is a worker whose hf-jobs mappings run on a stand-in Jobs API.
type hfBundle struct {
	*testBundle
	jobs *hubtest.JobsServer
}

// setupHF starts a stand-in Jobs API and a worker that reaches it with token, with the mappings.
func setupHF(t *testing.T, token string, mappings ...orchestrator.Mapping) *hfBundle {
	t.Helper()
	srv := hubtest.NewJobsServer(t, hfToken)
	b := setupWith(t, func(cfg *jobs.ClientConfig) {
		cfg.Worker.HFJobs = hub.New(srv.URL(), token)
		cfg.Worker.HFJobsPoll = 50 * time.Millisecond
		cfg.Worker.BaseEnv = append(cfg.Worker.BaseEnv, "FROM_BASE=base")
		cfg.Worker.Getenv = func(name string) string {
			return map[string]string{"WANDB_API_KEY": "wandb-secret-value"}[name]
		}
	}, mappings...)
	return &hfBundle{testBundle: b, jobs: srv}
}

// hfMapping is a mapping whose command, sh -c script, runs as a Hugging Face Job.
func hfMapping(name, script string, mods ...func(*orchestrator.Mapping)) orchestrator.Mapping {
	m := orchestrator.Mapping{
		Name: name, Dataset: "acme/" + name, Refs: []string{"refs/heads/*"},
		Command: []string{"sh", "-c", script, "sh", "${DATASET_REVISION}"}, Enabled: true,
		Executor: orchestrator.ExecutorHFJobs,
		HFJobs:   &orchestrator.HFJobsSettings{Namespace: "acme", Image: "python:3.12", Flavor: "a10g-small"},
	}.WithDefaults()
	for _, mod := range mods {
		mod(&m)
	}
	return m
}

// execution returns the recorded execution of the run's attempt, nil when there is none.
func (b *hfBundle) execution(t *testing.T, runID int64, attempt int) *orchestrator.AttemptExecution {
	t.Helper()
	execs, err := b.store.RunExecutions(context.Background(), runID)
	require.NoError(t, err)
	for i := range execs {
		if execs[i].Attempt == attempt {
			return &execs[i]
		}
	}
	return nil
}

// waitStage waits until the run's attempt's Job is recorded at stage and returns its id.
func (b *hfBundle) waitStage(t *testing.T, runID int64, attempt int, stage hub.JobStage) string {
	t.Helper()
	var id string
	require.Eventually(t, func() bool {
		e := b.execution(t, runID, attempt)
		if e != nil && e.Stage == string(stage) {
			id = e.ExternalID
			return true
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "run %d attempt %d never recorded at %s", runID, attempt, stage)
	return id
}

func TestHFJobsExecutor(t *testing.T) {
	t.Parallel()

	t.Run("SuccessPinsTheRevision", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, hfToken, hfMapping("pinned",
			`echo "arg=$1 rev=$DATASET_REVISION run=$RUN_ID attempt=$RUN_ATTEMPT env=$FROM_MAPPING base=$FROM_BASE"; echo "secret=${#WANDB_API_KEY}"`,
			func(m *orchestrator.Mapping) {
				m.Env = map[string]string{"FROM_MAPPING": "mapped"}
				m.Timeout = 90 * time.Minute
				m.HFJobs.Secrets = []string{"WANDB_API_KEY"}
				m.HFJobs.MountDataset = "/data"
				m.HFJobs.Labels = map[string]string{"team": "nlp"}
			}))
		runID := b.push(t, "acme/pinned", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, "error: %s", run.Error)
		require.Equal(t, 0, *run.ExitCode)
		require.Equal(t, fmt.Sprintf("arg=%s rev=%s run=%d attempt=1 env=mapped base=\nsecret=18\n", shaB, shaB, runID),
			b.log(t, runID, 1), "the run's variables and the mapping's env, not the orchestrator's; no banner")

		all := b.jobs.Jobs()
		require.Len(t, all, 1)
		job := all[0]
		require.Equal(t, "COMPLETED", job.Stage)
		spec := job.Spec
		require.Equal(t, []string{"sh", "-c", spec.Command[2], "sh", shaB}, spec.Command, "the argv expanded as a local one is")
		require.Equal(t, shaB, spec.Environment["DATASET_REVISION"])
		require.Equal(t, shaA, spec.Environment["DATASET_OLD_REVISION"])
		require.Equal(t, "acme/pinned", spec.Environment["DATASET_REPO"])
		require.Equal(t, "mapped", spec.Environment["FROM_MAPPING"])
		for _, name := range []string{"FROM_BASE", "PATH", "WANDB_API_KEY"} {
			require.NotContains(t, spec.Environment, name, "the Job's environment holds only the run's variables and the mapping's env")
		}
		require.Equal(t, map[string]string{"WANDB_API_KEY": "wandb-secret-value"}, spec.Secrets)
		require.Len(t, spec.Volumes, 1)
		v := spec.Volumes[0]
		require.Equal(t, []string{"dataset", "acme/pinned", "/data", shaB}, []string{v.Type, v.Source, v.MountPath, v.Revision})
		require.NotNil(t, v.ReadOnly)
		require.True(t, *v.ReadOnly)
		require.Equal(t, 90*60, spec.TimeoutSeconds)
		require.Equal(t, "a10g-small", spec.Flavor)
		instance, err := b.store.InstanceID(context.Background())
		require.NoError(t, err)
		require.Equal(t, map[string]string{"team": "nlp", orchestrator.LabelInstance: instance,
			orchestrator.LabelMapping: "pinned", orchestrator.LabelRun: strconv.FormatInt(runID, 10),
			orchestrator.LabelAttempt: "1"}, spec.Labels)

		e := b.execution(t, runID, 1)
		require.NotNil(t, e)
		require.Equal(t, job.ID, e.ExternalID)
		require.Equal(t, "COMPLETED", e.Stage)
		require.Equal(t, "acme", e.Namespace)
		require.Contains(t, e.URL, "/jobs/acme/"+job.ID)
		require.NotNil(t, e.RunningAt)
		require.NotNil(t, e.EndedAt)
		require.Positive(t, e.UnitCostMicroUSD, "the flavor's price from the Hub's list of hardware")
		require.Equal(t, e.UnitCostMicroUSD, e.CostMicroUSD, "a Job of seconds is billed its one begun minute")
	})

	t.Run("FailingCommandRetriedWithOneJobPerAttempt", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, hfToken, hfMapping("failing", `echo "attempt $RUN_ATTEMPT"; exit 3`,
			func(m *orchestrator.Mapping) { m.MaxAttempts = 2 }))
		runID := b.push(t, "acme/failing", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunFailed)
		require.Equal(t, 2, run.Attempt)
		require.Equal(t, "the Job failed on Hugging Face Jobs: exit code 3", run.Error)
		require.Equal(t, 2, b.jobs.JobsCreated(), "a failed attempt's Job is never adopted: the retry has its own")
		for attempt := 1; attempt <= 2; attempt++ {
			require.Equal(t, fmt.Sprintf("attempt %d\n", attempt), b.log(t, runID, attempt))
			e := b.execution(t, runID, attempt)
			require.NotNil(t, e)
			require.Equal(t, "ERROR", e.Stage)
		}
	})

	t.Run("CreateAnswered500AfterCreatingIsAdopted", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, hfToken, hfMapping("flaky", `echo done`))
		b.jobs.FailCreates(1)
		runID := b.push(t, "acme/flaky", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		require.Equal(t, 1, b.jobs.JobsCreated(), "exactly one Job")
		require.Equal(t, 1, b.jobs.Requests("create"))
		require.Equal(t, "done\n", b.log(t, runID, 1))
	})

	t.Run("RateLimitedWaitsRetryAfter", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, hfToken, hfMapping("limited", `echo done`))
		b.jobs.RateLimit(3, "1")
		runID := b.push(t, "acme/limited", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 30*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		require.Equal(t, 1, b.jobs.JobsCreated())
		require.Equal(t, 1, run.Attempt, "a rate limit is waited out, not an attempt spent")
	})

	t.Run("BadTokenFailsAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, "hf_wrong", hfMapping("refused", `echo never`, func(m *orchestrator.Mapping) { m.MaxAttempts = 3 }))
		runID := b.push(t, "acme/refused", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunFailed)
		require.Contains(t, run.Error, "the Hub refused the token")
		require.Equal(t, 1, run.Attempt, "no retry: a refused token does not get better")
		require.Zero(t, b.jobs.JobsCreated())
		total := 0
		for _, route := range []string{"create", "list", "inspect", "cancel", "logs", "hardware", "other"} {
			total += b.jobs.Requests(route)
		}
		require.LessOrEqual(t, total, 2, "no storm of refused requests")
	})

	t.Run("MissingSecretFailsWithoutAJob", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, hfToken, hfMapping("nosecret", `echo never`, func(m *orchestrator.Mapping) {
			m.HFJobs.Secrets = []string{"NOT_SET_ANYWHERE"}
			m.MaxAttempts = 3
		}))
		runID := b.push(t, "acme/nosecret", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunFailed)
		require.Equal(t, "could not start: hf_jobs secret NOT_SET_ANYWHERE of mapping nosecret is not set in the orchestrator's environment", run.Error)
		require.Equal(t, 1, run.Attempt)
		require.Zero(t, b.jobs.JobsCreated())
	})

	t.Run("CancelledOnTheHubFailsWithoutRetry", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, hfToken, hfMapping("elsewhere", `echo started; exec sleep 1000`, func(m *orchestrator.Mapping) {
			m.MaxAttempts = 3
		}))
		runID := b.push(t, "acme/elsewhere", "refs/heads/main", shaB)
		jobID := b.waitStage(t, runID, 1, hub.JobRunning)
		require.NoError(t, hub.New(b.jobs.URL(), hfToken).CancelJob(context.Background(), "acme", jobID))
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunFailed)
		require.Equal(t, "the Job was cancelled on the Hub", run.Error)
		require.Equal(t, 1, run.Attempt, "a Job someone cancelled is not started again")
		require.Equal(t, 1, b.jobs.JobsCreated())
	})

	t.Run("DeletedOnTheHubFailsWithoutRetry", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, hfToken, hfMapping("deleted", `echo started; exec sleep 1000`, func(m *orchestrator.Mapping) {
			m.MaxAttempts = 3
		}))
		runID := b.push(t, "acme/deleted", "refs/heads/main", shaB)
		jobID := b.waitStage(t, runID, 1, hub.JobRunning)
		b.jobs.Delete(jobID)
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunFailed)
		require.Equal(t, "the Job was deleted on the Hub", run.Error)
		require.Equal(t, 1, run.Attempt, "a Job someone deleted is not started again")
		require.Equal(t, 1, b.jobs.JobsCreated())
		job, ok := b.jobs.Job(jobID)
		require.True(t, ok)
		require.Equal(t, "DELETED", job.Stage)
	})

	t.Run("TimeoutOnTheHub", func(t *testing.T) {
		t.Parallel()
		b := setupHF(t, hfToken, hfMapping("slow", `echo started; exec sleep 1000`, func(m *orchestrator.Mapping) {
			m.Timeout = time.Second
			m.MaxAttempts = 1
		}))
		runID := b.push(t, "acme/slow", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunFailed)
		require.Equal(t, "timed out after 1s on Hugging Face Jobs (Job timeout)", run.Error)
		all := b.jobs.Jobs()
		require.Len(t, all, 1)
		require.Equal(t, []string{"ERROR", "Job timeout"}, []string{all[0].Stage, all[0].Message})
		require.Equal(t, 1, all[0].Spec.TimeoutSeconds)
		require.Equal(t, "started\n", b.log(t, runID, 1))
	})
}

func TestHFJobsLogStream(t *testing.T) {
	t.Parallel()
	// Twenty lines, some time apart, so that the stream is read while the Job runs.
	const script = `i=1; while [ $i -le 20 ]; do echo "line $i"; i=$((i+1)); sleep 0.02; done`
	var want strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	cases := []struct {
		name  string
		fault func(*hubtest.JobsServer)
	}{
		{"DroppedMidRun", func(s *hubtest.JobsServer) { s.DropLogStreams(3, 5) }},
		{"OpenAfterTheEnd", func(s *hubtest.JobsServer) { s.KeepLogStreamsOpen(true) }},
		{"DroppedAndOpen", func(s *hubtest.JobsServer) { s.DropLogStreams(2, 7); s.KeepLogStreamsOpen(true) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setupHF(t, hfToken, hfMapping("logs", script))
			c.fault(b.jobs)
			runID := b.push(t, "acme/logs", "refs/heads/main", shaB)
			run := b.waitStatus(t, runID, 30*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
			require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
			require.Equal(t, want.String(), b.log(t, runID, 1), "every line once, in order")
		})
	}
}

func TestHFJobsCancel(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		hold bool
	}{
		{"WhileScheduling", true},
		{"WhileRunning", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setupHF(t, hfToken, hfMapping("cancel", `echo started; exec sleep 1000`))
			b.jobs.HoldScheduling(c.hold)
			runID := b.push(t, "acme/cancel", "refs/heads/main", shaB)
			if c.hold {
				b.waitStage(t, runID, 1, hub.JobScheduling)
			} else {
				b.waitStage(t, runID, 1, hub.JobRunning)
				require.Eventually(t, func() bool { return strings.Contains(b.log(t, runID, 1), "started") },
					20*time.Second, 10*time.Millisecond)
			}
			_, err := b.store.RunCancel(context.Background(), runID)
			require.NoError(t, err)
			run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunCancelled)
			require.Equal(t, "cancelled by an operator", run.Error)
			all := b.jobs.Jobs()
			require.Len(t, all, 1)
			require.Equal(t, "CANCELED", all[0].Stage, "the Job is cancelled on the Hub")
			require.Equal(t, "CANCELED", b.execution(t, runID, 1).Stage)
		})
	}
}

// TestHFJobsCancelRunning: with on_new_revision cancel_running, a newer revision of the ref cancels the older
// run's Job on the Hub, and the newer run gets a Job of its own.
func TestHFJobsCancelRunning(t *testing.T) {
	t.Parallel()
	b := setupHF(t, hfToken, hfMapping("fresh", `echo "rev $DATASET_REVISION"; exec sleep 1000`, func(m *orchestrator.Mapping) {
		m.OnNewRevision = orchestrator.OnNewRevisionCancelRunning
	}))
	older := b.push(t, "acme/fresh", "refs/heads/main", newRevision())
	olderJob := b.waitStage(t, older, 1, hub.JobRunning)
	newer := b.push(t, "acme/fresh", "refs/heads/main", newRevision())
	run := b.waitStatus(t, older, 20*time.Second, orchestrator.RunSuperseded, orchestrator.RunCancelled, orchestrator.RunFailed)
	require.Equal(t, orchestrator.RunSuperseded, run.Status, run.Error)
	require.Equal(t, newer, *run.SupersededBy)
	require.Eventually(t, func() bool {
		job, ok := b.jobs.Job(olderJob)
		return ok && job.Stage == "CANCELED"
	}, 20*time.Second, 20*time.Millisecond, "the older run's Job is cancelled on the Hub")
	newerJob := b.waitStage(t, newer, 1, hub.JobRunning)
	require.NotEqual(t, olderJob, newerJob)
	require.Equal(t, 2, b.jobs.JobsCreated())
	_, err := b.store.RunCancel(context.Background(), newer)
	require.NoError(t, err)
	b.waitStatus(t, newer, 20*time.Second, orchestrator.RunCancelled)
}

func TestHFJobsShutdownLeavesTheJobForTheNextWorker(t *testing.T) {
	t.Parallel()
	b := setupHF(t, hfToken, hfMapping("restart", `echo "attempt $RUN_ATTEMPT"; echo finished`,
		func(m *orchestrator.Mapping) { m.MaxAttempts = 1 }))
	b.jobs.HoldScheduling(true)
	runID := b.push(t, "acme/restart", "refs/heads/main", shaB)
	jobID := b.waitStage(t, runID, 1, hub.JobScheduling)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, b.client.StopAndCancel(ctx))
	run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunQueued)
	require.Equal(t, "interrupted by shutdown; it will run again", run.Error)
	job, ok := b.jobs.Job(jobID)
	require.True(t, ok)
	require.Equal(t, "SCHEDULING", job.Stage, "a shutdown does not cancel the Job")

	b.start(t)
	b.waitStage(t, runID, 2, hub.JobScheduling)
	b.jobs.Release(jobID)
	run = b.waitStatus(t, runID, 20*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
	require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
	require.Equal(t, 2, run.Attempt)
	require.Equal(t, 1, b.jobs.JobsCreated(), "the next attempt adopted the Job: none was created")
	require.Equal(t, jobID, b.execution(t, runID, 2).ExternalID)
	require.Equal(t, "attempt 1\nfinished\n", b.log(t, runID, 2), "the adopted Job's log, with the variables it was created with")
}

// TestHFJobsLeaseLostLeavesTheJob cuts the worker off from the database while its Job runs: the worker stops
// following the Job before its lease can expire, without cancelling it, and once the link is back the attempt
// is recorded interrupted and the next one adopts the same Job.
func TestHFJobsLeaseLostLeavesTheJob(t *testing.T) {
	t.Parallel()
	gate := filepath.Join(t.TempDir(), "gate")
	srv := hubtest.NewJobsServer(t, hfToken)
	b, l := setupThrough(t, func(cfg *jobs.ClientConfig) {
		cfg.Worker.HFJobs = hub.New(srv.URL(), hfToken)
		cfg.Worker.HFJobsPoll = 50 * time.Millisecond
	}, hfMapping("leased", `echo started; while [ ! -e `+gate+` ]; do sleep 0.05; done; echo finished`,
		func(m *orchestrator.Mapping) { m.MaxAttempts = 1 }))
	hb := &hfBundle{testBundle: b, jobs: srv}
	runID := b.push(t, "acme/leased", "refs/heads/main", shaB)
	jobID := hb.waitStage(t, runID, 1, hub.JobRunning)

	l.cut()
	// Past the lease's term the worker has stopped following; the link then comes back.
	time.Sleep(leaseTerm + time.Second)
	l.restore()
	job, _ := srv.Job(jobID)
	require.Equal(t, "RUNNING", job.Stage, "a lost lease does not cancel the Job")

	hb.waitStage(t, runID, 2, hub.JobRunning)
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	run := b.waitStatus(t, runID, 30*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
	require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
	attempts, err := b.store.RunAttemptList(context.Background(), runID)
	require.NoError(t, err)
	require.Len(t, attempts, 2)
	require.Equal(t, orchestrator.AttemptInterrupted, attempts[0].Status)
	require.Equal(t, 1, srv.JobsCreated(), "the next attempt adopted the Job")
	adopted := hb.execution(t, runID, 2)
	require.Equal(t, jobID, adopted.ExternalID)
	require.Equal(t, "started\nfinished\n", b.log(t, runID, 2))
	require.Positive(t, hb.execution(t, runID, 1).CostMicroUSD, "the first attempt saw the Job run")
	cost, err := b.store.MappingCost(context.Background(), run.MappingID)
	require.NoError(t, err)
	require.Equal(t, adopted.CostMicroUSD, cost, "the Job both attempts followed is counted once")
}

// TestHFJobsAdoptedJobIsNotAdoptedTwice: an interrupted attempt's Job, adopted by the next attempt and followed
// to a failure, is spent: the retry after it creates a Job of its own rather than adopting the failed one again
// (whose attempt label still names the interrupted attempt).
func TestHFJobsAdoptedJobIsNotAdoptedTwice(t *testing.T) {
	t.Parallel()
	b := setupHF(t, hfToken, hfMapping("spent", `echo "attempt $RUN_ATTEMPT"; [ "$RUN_ATTEMPT" != 1 ]`,
		func(m *orchestrator.Mapping) { m.MaxAttempts = 3 }))
	b.jobs.HoldScheduling(true)
	runID := b.push(t, "acme/spent", "refs/heads/main", shaB)
	first := b.waitStage(t, runID, 1, hub.JobScheduling)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, b.client.StopAndCancel(ctx))
	b.waitStatus(t, runID, 20*time.Second, orchestrator.RunQueued)

	b.jobs.HoldScheduling(false)
	b.start(t)
	b.waitStage(t, runID, 2, hub.JobScheduling)
	b.jobs.Release(first) // the Job made for attempt 1 fails
	run := b.waitStatus(t, runID, 30*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
	require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
	require.Equal(t, 3, run.Attempt)
	require.Equal(t, 2, b.jobs.JobsCreated(), "the interrupted attempt's Job, adopted once, then the retry's own")
	require.Equal(t, first, b.execution(t, runID, 2).ExternalID)
	require.NotEqual(t, first, b.execution(t, runID, 3).ExternalID)
	require.Equal(t, "attempt 1\n", b.log(t, runID, 2))
	require.Equal(t, "attempt 3\n", b.log(t, runID, 3))
}
