package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
)

const hfJobsToken = "hf_e2e_token"

// hfJobsConfig is a mappings file with one hf-jobs mapping whose Job waits for gate before it finishes.
func hfJobsConfig(t *testing.T, dir, gate string) string {
	t.Helper()
	return writeConfig(t, dir, `
mappings:
  - name: gpu
    dataset: acme/gpu
    command: ["sh", "-c", "echo started $DATASET_REVISION; while [ ! -e `+gate+` ]; do sleep 0.05; done; echo finished"]
    max_attempts: 1
    timeout: 10m
    executor: hf-jobs
    hf_jobs:
      namespace: acme
      image: python:3.12
      flavor: a10g-small
      mount_dataset: /data
      labels: {team: nlp}
`)
}

// TestHFJobsCrashAdoptsTheJob kills the orchestrator with SIGKILL while a run's Hugging Face Job runs, then
// starts it again: the reaper closes the attempt as interrupted, and the next attempt adopts the same Job by
// its labels and follows it to its end. No second Job is created.
func TestHFJobsCrashAdoptsTheJob(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "orchestrator-hfjobs-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin := buildBinary(t, dir)
	url, _ := dbtest.NewSchema(t)
	jobsAPI := hubtest.NewJobsServer(t, hfJobsToken)
	gate := filepath.Join(dir, "gate")
	env := []string{"DATABASE_URL=" + url, "HUGGINGFACE_WEBHOOK_SECRET=" + e2eSecret,
		"ORCHESTRATOR_CONFIG=" + hfJobsConfig(t, dir, gate), "ORCHESTRATOR_RECONCILE_INTERVAL=0",
		"HF_ENDPOINT=" + jobsAPI.URL(), "HF_TOKEN=" + hfJobsToken,
		"ORCHESTRATOR_HEARTBEAT_INTERVAL=200ms", "ORCHESTRATOR_ORPHAN_AFTER=4s", "ORCHESTRATOR_KILL_GRACE=1s"}
	port := freePort(t)
	first := startProcess(t, bin, port, env)

	sha := randomRevision()
	delivery := postDelivery(t, first.base, push("acme/gpu", sha))
	runID := int64(delivery["runs"].([]any)[0].(float64))
	waitRun(t, first.base, runID, "running")
	require.Eventually(t, func() bool {
		jobs := jobsAPI.Jobs()
		return len(jobs) == 1 && len(jobs[0].Lines) >= 2
	}, 20*time.Second, 20*time.Millisecond, "the Job never printed: %s", first.logs)
	jobID := jobsAPI.Jobs()[0].ID

	require.NoError(t, first.cmd.Process.Signal(syscall.SIGKILL))
	require.Eventually(t, func() bool { return processGone(first.cmd.Process.Pid) }, 10*time.Second, 10*time.Millisecond)
	job, _ := jobsAPI.Job(jobID)
	require.Equal(t, "RUNNING", job.Stage, "the Job runs on while no orchestrator watches it")

	second := startProcess(t, bin, port, env)
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := orchestrator.NewStore(pool)
	// The reaper hands the run to a new attempt once the dead worker's lease ran out; that attempt adopts. (The
	// first attempt may have been killed before it recorded its Job: only the second one's record is certain.)
	secondExec := func() *orchestrator.AttemptExecution {
		execs, err := store.RunExecutions(context.Background(), runID)
		if err != nil {
			return nil
		}
		for i := range execs {
			if execs[i].Attempt == 2 {
				return &execs[i]
			}
		}
		return nil
	}
	require.Eventually(t, func() bool { return secondExec() != nil }, 30*time.Second, 50*time.Millisecond,
		"no second attempt followed the Job: %s", second.logs)
	require.NoError(t, os.WriteFile(gate, nil, 0o644))

	run := waitRun(t, second.base, runID, "succeeded", "failed")
	require.Equal(t, "succeeded", run.Status, "%+v\n%s", run, second.logs)
	require.Equal(t, 2, run.Attempt, "the interrupted attempt was not spent")
	require.Equal(t, 1, jobsAPI.JobsCreated(), "the same Job was followed to its end: none other was created")
	job, _ = jobsAPI.Job(jobID)
	require.Equal(t, "COMPLETED", job.Stage)
	require.Equal(t, sha, job.Spec.Environment["DATASET_REVISION"])
	require.Equal(t, sha, job.Spec.Volumes[0].Revision)
	adopted := secondExec()
	require.NotNil(t, adopted)
	require.Equal(t, jobID, adopted.ExternalID)
	require.Equal(t, "COMPLETED", adopted.Stage)
	attempts, err := store.RunAttemptList(context.Background(), runID)
	require.NoError(t, err)
	require.Equal(t, orchestrator.AttemptInterrupted, attempts[0].Status)
	require.Equal(t, "started "+sha+"\nfinished\n", run.Log, "the adopted Job's whole log, once")
}

// TestHFJobsNeedsToken refuses to serve an hf-jobs mapping without HF_TOKEN, or without the secrets it sends.
func TestHFJobsNeedsToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	url, _ := dbtest.NewSchema(t)
	cases := []struct {
		name, yamlExtra, token, want string
	}{
		{"NoToken", "", "", `mapping "gpu" runs on Hugging Face Jobs, but HF_TOKEN is not set`},
		{"NoSecret", "\n      secrets: [HFJOBS_TEST_UNSET_SECRET]", hfJobsToken,
			`mapping "gpu": hf_jobs.secrets HFJOBS_TEST_UNSET_SECRET not set in the environment`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sub := filepath.Join(dir, c.name)
			require.NoError(t, os.Mkdir(sub, 0o755))
			cfg := hfJobsConfig(t, sub, filepath.Join(sub, "gate"))
			data, err := os.ReadFile(cfg)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(cfg, append(data[:len(data)-1], []byte(c.yamlExtra+"\n")...), 0o644))
			cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0")
			cmd.Env = append(append(os.Environ(), serveTestEnv...), "DATABASE_URL="+url, "HUGGINGFACE_WEBHOOK_SECRET="+e2eSecret,
				"ORCHESTRATOR_CONFIG="+cfg, "HF_TOKEN="+c.token, "ORCHESTRATOR_RECONCILE_INTERVAL=0")
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "serve must refuse: %s", out)
			require.Contains(t, string(out), c.want)
		})
	}
}
