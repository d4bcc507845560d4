package hub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
)

const jobsToken = "hf_test_token"

// jobsBundle is a stand-in Jobs API and a client of it.
type jobsBundle struct {
	srv *hubtest.JobsServer
	c   *Client
}

func setupJobs(t *testing.T) jobsBundle {
	t.Helper()
	srv := hubtest.NewJobsServer(t, jobsToken)
	return jobsBundle{srv: srv, c: New(srv.URL(), jobsToken)}
}

// testCtx bounds a test: a guard against hangs, never a timing assertion.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func shellSpec(script string, labels map[string]string) JobSpec {
	return JobSpec{DockerImage: "python:3.12", Command: []string{"sh", "-c", script}, Labels: labels, TimeoutSeconds: 600}
}

// waitStage inspects the Job until its stage is want (or terminal when want is "").
func waitStage(ctx context.Context, t *testing.T, c *Client, id string, want JobStage) *Job {
	t.Helper()
	for {
		j, err := c.InspectJob(ctx, "acme", id)
		require.NoError(t, err)
		if j.Status.Stage == want || (want == "" && j.Status.Stage.Terminal()) {
			return j
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s: still %s, want %s", id, j.Status.Stage, want)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// groupAlive reports whether any process of group pgid is alive (zombies do not count).
func groupAlive(t *testing.T, pgid int) bool {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	require.NoError(t, err)
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // ended meanwhile
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so read after the last ")".
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) >= 3 && fields[0] != "Z" && fields[2] == fmt.Sprint(pgid) {
			return true
		}
	}
	return false
}

func TestJobStageTerminal(t *testing.T) {
	t.Parallel()
	for stage, want := range map[JobStage]bool{JobScheduling: false, JobRunning: false, "UPDATING": false, "": false,
		JobCompleted: true, JobCanceled: true, JobError: true, JobDeleted: true} {
		require.Equal(t, want, stage.Terminal(), "stage %q", stage)
	}
}

func TestRunJobCompletes(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	spec := shellSpec(`echo "repo=$DATASET_REPO token=${HF_TOKEN:+set} home=${HOME:+set}"; env`,
		map[string]string{"orchestrator-run": "7"})
	spec.Environment = map[string]string{"DATASET_REPO": "acme/tickets"}
	spec.Secrets = map[string]string{"HF_TOKEN": "hf_secret_value"}
	spec.Flavor = "a10g-small"
	spec.Volumes = []JobVolume{{Type: "dataset", Source: "acme/tickets", MountPath: "/data", Revision: strings.Repeat("a", 40), ReadOnly: true}}
	j, err := b.c.RunJob(ctx, "acme", spec)
	require.NoError(t, err)
	require.Equal(t, "acme", j.Namespace)
	require.Equal(t, b.srv.URL()+"/jobs/acme/"+j.ID, j.URL)
	require.Equal(t, "a10g-small", j.Flavor)
	require.Equal(t, []string{"HF_TOKEN"}, j.SecretNames)
	require.Equal(t, map[string]string{"DATASET_REPO": "acme/tickets"}, j.Environment)
	require.Equal(t, spec.Volumes, j.Volumes)
	require.False(t, j.CreatedAt.IsZero())

	done := waitStage(ctx, t, b.c, j.ID, "")
	require.Equal(t, JobCompleted, done.Status.Stage)
	rec, ok := b.srv.Job(j.ID)
	require.True(t, ok)
	require.Equal(t, "hf_secret_value", rec.Spec.Secrets["HF_TOKEN"])
	require.Equal(t, strings.Repeat("a", 40), rec.Spec.Volumes[0].Revision)
	require.Equal(t, []string{}, rec.Spec.Arguments)
	require.Contains(t, rec.Lines, "repo=acme/tickets token=set home=set")
	require.Contains(t, rec.Lines, "HF_TOKEN=hf_secret_value")
	// The test's own environment does not reach the Job, as a host's does not reach a container.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != "PATH" && name != "HOME" && name != "PWD" {
			require.NotContains(t, rec.Lines, kv)
		}
	}
	require.Equal(t, 1, b.srv.JobsCreated())
}

func TestListJobsByLabelAcrossPages(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	b.srv.SetPageSize(2)
	b.srv.HoldScheduling(true)
	want := map[string]bool{}
	for i := range 7 {
		labels := map[string]string{"orchestrator-run": "other", "n": fmt.Sprint(i)}
		if i%2 == 0 {
			labels["orchestrator-run"] = "42"
		}
		j, err := b.c.RunJob(ctx, "acme", shellSpec("true", labels))
		require.NoError(t, err)
		if i%2 == 0 {
			want[j.ID] = true
		}
	}
	// A Job of another namespace with the same label is not listed.
	_, err := b.c.RunJob(ctx, "other", shellSpec("true", map[string]string{"orchestrator-run": "42"}))
	require.NoError(t, err)

	jobs, err := b.c.ListJobs(ctx, "acme", map[string]string{"orchestrator-run": "42"})
	require.NoError(t, err)
	got := map[string]bool{}
	for _, j := range jobs {
		got[j.ID] = true
		require.Equal(t, JobScheduling, j.Status.Stage)
	}
	require.Equal(t, want, got)
	require.Equal(t, 2, b.srv.Requests("list"), "4 matches in pages of 2")

	all, err := b.c.ListJobs(ctx, "acme", nil)
	require.NoError(t, err)
	require.Len(t, all, 7)
}

func TestCancelRunningJobTwice(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	// A child in the group as well: cancel kills the whole group.
	j, err := b.c.RunJob(ctx, "acme", shellSpec(`sleep 300 & echo ready; wait`, nil))
	require.NoError(t, err)
	var pid int
	for pid == 0 || !contains(b.srv, j.ID, "ready") {
		rec, _ := b.srv.Job(j.ID)
		pid = rec.PID
		select {
		case <-ctx.Done():
			t.Fatal("the Job never printed ready")
		case <-time.After(10 * time.Millisecond):
		}
	}
	require.True(t, groupAlive(t, pid))
	require.NoError(t, b.c.CancelJob(ctx, "acme", j.ID))
	require.NoError(t, b.c.CancelJob(ctx, "acme", j.ID))
	done := waitStage(ctx, t, b.c, j.ID, "")
	require.Equal(t, JobCanceled, done.Status.Stage)
	require.False(t, groupAlive(t, pid), "process group %d outlived the cancel", pid)
	require.NoError(t, b.c.CancelJob(ctx, "acme", j.ID), "cancelling an ended Job")
	require.Equal(t, 3, b.srv.Requests("cancel"))
}

func contains(srv *hubtest.JobsServer, id, line string) bool {
	rec, _ := srv.Job(id)
	for _, l := range rec.Lines {
		if l == line {
			return true
		}
	}
	return false
}

func TestCancelScheduledJob(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	b.srv.HoldScheduling(true)
	marker := filepath.Join(t.TempDir(), "ran")
	j, err := b.c.RunJob(ctx, "acme", shellSpec("touch "+marker, nil))
	require.NoError(t, err)
	require.Equal(t, JobScheduling, j.Status.Stage)
	require.NoError(t, b.c.CancelJob(ctx, "acme", j.ID))
	require.Equal(t, JobCanceled, waitStage(ctx, t, b.c, j.ID, "").Status.Stage)
	b.srv.Release(j.ID) // too late: a canceled Job never starts
	rec, _ := b.srv.Job(j.ID)
	require.Zero(t, rec.PID)
	require.NoFileExists(t, marker)
}

func TestJobFailures(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, script string
		timeout      int
		want         string
	}{
		{"exit code", "echo failing; exit 3", 600, "exit code 3"},
		{"timeout", "echo $$ > pid; exec sleep 300", 1, "Job timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, b := testCtx(t), setupJobs(t)
			spec := shellSpec(tt.script, nil)
			spec.TimeoutSeconds = tt.timeout
			j, err := b.c.RunJob(ctx, "acme", spec)
			require.NoError(t, err)
			done := waitStage(ctx, t, b.c, j.ID, "")
			require.Equal(t, JobStatus{Stage: JobError, Message: tt.want}, done.Status)
			rec, _ := b.srv.Job(j.ID)
			require.False(t, groupAlive(t, rec.PID))
		})
	}
}

// collect reads one log stream of a Job into events.
func collect(ctx context.Context, c *Client, id string, events *[]JobLogEvent) error {
	return c.JobLogs(ctx, "acme", id, func(ev JobLogEvent) error {
		*events = append(*events, ev)
		return nil
	})
}

func lines(events []JobLogEvent) []string {
	var out []string
	for _, ev := range events {
		if !ev.KeepAlive {
			out = append(out, ev.Line)
		}
	}
	return out
}

func TestJobLogsBannerAndKeepAlives(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	b.srv.SetKeepAlive(20 * time.Millisecond)
	// The second line waits for a file the test writes once it has seen a keep-alive: no timing involved.
	dir := t.TempDir()
	go_ := filepath.Join(dir, "go")
	j, err := b.c.RunJob(ctx, "acme", shellSpec(`echo one; while [ ! -e `+go_+` ]; do sleep 0.01; done; echo two`, nil))
	require.NoError(t, err)
	var events []JobLogEvent
	err = b.c.JobLogs(ctx, "acme", j.ID, func(ev JobLogEvent) error {
		events = append(events, ev)
		if ev.KeepAlive && len(lines(events)) == 2 {
			return os.WriteFile(go_, nil, 0o600)
		}
		return nil
	})
	require.NoError(t, err, "the stream ends with the Job")
	got := lines(events)
	require.Len(t, got, 3)
	require.True(t, strings.HasPrefix(got[0], "===== Job started at "), got[0])
	require.Equal(t, []string{"one", "two"}, got[1:])
	require.False(t, events[0].Time.IsZero())
	sawKeepAlive := false
	for _, ev := range events {
		sawKeepAlive = sawKeepAlive || ev.KeepAlive
	}
	require.True(t, sawKeepAlive)
	require.Equal(t, JobCompleted, waitStage(ctx, t, b.c, j.ID, "").Status.Stage)
}

func TestJobLogsDroppedStream(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	j, err := b.c.RunJob(ctx, "acme", shellSpec("for i in 1 2 3 4 5; do echo line$i; done", nil))
	require.NoError(t, err)
	waitStage(ctx, t, b.c, j.ID, "")
	b.srv.DropLogStreams(1, 3)
	var first []JobLogEvent
	require.Error(t, collect(ctx, b.c, j.ID, &first), "a broken stream is an error")
	require.Len(t, lines(first), 3)
	var second []JobLogEvent
	require.NoError(t, collect(ctx, b.c, j.ID, &second))
	got := lines(second)
	require.Len(t, got, 6, "every connection replays from the first line")
	require.Equal(t, lines(first), got[:3])
	require.Equal(t, "line5", got[5])
}

func TestJobLogsStreamOpenAfterEnd(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	b.srv.KeepLogStreamsOpen(true)
	j, err := b.c.RunJob(ctx, "acme", shellSpec("echo last", nil))
	require.NoError(t, err)
	require.Equal(t, JobCompleted, waitStage(ctx, t, b.c, j.ID, "").Status.Stage)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err = b.c.JobLogs(lctx, "acme", j.ID, func(ev JobLogEvent) error {
		if ev.Line == "last" {
			cancel() // the caller, having seen the Job end, stops reading
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)

	// A silent stream also ends at the client's idle bound.
	err = b.c.WithLogIdle(200*time.Millisecond).JobLogs(ctx, "acme", j.ID, func(JobLogEvent) error { return nil })
	require.ErrorIs(t, err, errLogIdle)
}

func TestJobLogsFnError(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	j, err := b.c.RunJob(ctx, "acme", shellSpec("echo x", nil))
	require.NoError(t, err)
	stop := errors.New("stop")
	require.ErrorIs(t, b.c.JobLogs(ctx, "acme", j.ID, func(JobLogEvent) error { return stop }), stop)
}

func TestInspectJobWaitsOutRateLimit(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	b.srv.HoldScheduling(true)
	j, err := b.c.RunJob(ctx, "acme", shellSpec("true", nil))
	require.NoError(t, err)
	b.srv.RateLimit(2, "1")
	got, err := b.c.InspectJob(ctx, "acme", j.ID)
	require.NoError(t, err)
	require.Equal(t, j.ID, got.ID)
	require.Equal(t, 3, b.srv.Requests("inspect"))

	// RunJob never retries: a 429 may hide a created Job for all it knows.
	b.srv.RateLimit(1, "1")
	_, err = b.c.RunJob(ctx, "acme", shellSpec("true", nil))
	require.Error(t, err)
	require.True(t, JobMayExist(err))
	require.Equal(t, 2, b.srv.Requests("create"))
}

func TestJobsBadToken(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	bad := New(b.srv.URL(), "hf_wrong")
	_, err := bad.RunJob(ctx, "acme", shellSpec("true", nil))
	require.True(t, IsAuthError(err), "%v", err)
	require.ErrorIs(t, err, ErrJobNotCreated)
	require.False(t, JobMayExist(err))
	_, err = bad.InspectJob(ctx, "acme", "0123")
	require.True(t, IsAuthError(err), "%v", err)
	require.Equal(t, 1, b.srv.Requests("inspect"), "a 401 is not retried")
	require.Zero(t, b.srv.JobsCreated())
	require.False(t, IsAuthError(errors.New("the Hub answered 401")))
}

func TestRunJob500AfterCreating(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	b.srv.FailCreates(1)
	labels := map[string]string{"orchestrator-run": "9", "orchestrator-attempt": "1"}
	_, err := b.c.RunJob(ctx, "acme", shellSpec("true", labels))
	require.Error(t, err)
	require.True(t, JobMayExist(err), "%v", err)
	jobs, err := b.c.ListJobs(ctx, "acme", labels)
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	require.Equal(t, 1, b.srv.JobsCreated())
	require.Equal(t, 1, b.srv.Requests("create"), "no retry")
}

func TestRunJobNotCreated(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	// An address nothing listens on: the request never leaves.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "http://" + l.Addr().String()
	require.NoError(t, l.Close())
	b := setupJobs(t)
	for _, tt := range []struct {
		name string
		c    *Client
		ns   string
		spec JobSpec
	}{
		{"refused connection", New(closed, ""), "acme", shellSpec("true", nil)},
		{"no image", b.c, "acme", JobSpec{Command: []string{"true"}}},
		{"image and space", b.c, "acme", JobSpec{DockerImage: "x", SpaceID: "a/b", Command: []string{"true"}}},
		{"no command", b.c, "acme", JobSpec{DockerImage: "x"}},
		{"bad namespace", b.c, "../x", shellSpec("true", nil)},
		{"unknown flavor (400)", b.c, "acme", JobSpec{DockerImage: "x", Command: []string{"true"}, Flavor: "gpu-9000"}},
		{"bad label (400)", b.c, "acme", shellSpec("true", map[string]string{"a b": "c"})},
	} {
		_, err := tt.c.RunJob(ctx, tt.ns, tt.spec)
		require.ErrorIs(t, err, ErrJobNotCreated, tt.name)
		require.False(t, JobMayExist(err), tt.name)
	}
	require.Zero(t, b.srv.JobsCreated())
	require.False(t, JobMayExist(nil))
}

func TestJobHardware(t *testing.T) {
	t.Parallel()
	ctx, b := testCtx(t), setupJobs(t)
	hw, err := b.c.JobHardware(ctx)
	require.NoError(t, err)
	byName := map[string]JobHardware{}
	for _, h := range hw {
		byName[h.Name] = h
		require.Equal(t, "minute", h.UnitLabel, h.Name)
		require.Positive(t, h.UnitCostMicroUSD, h.Name)
	}
	require.Equal(t, JobHardware{Name: "cpu-basic", PrettyName: "CPU Basic", UnitCostMicroUSD: 167, UnitCostUSD: 0.000167,
		UnitLabel: "minute"}, byName["cpu-basic"])
	require.Contains(t, byName, "a10g-small")
}

func TestJobsMountedOnHubServer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	jobs := hubtest.NewJobsServer(t, "")
	hubSrv := hubtest.NewServer(t)
	hubSrv.MountJobs(jobs)
	c := New(hubSrv.URL, "")
	j, err := c.RunJob(ctx, "acme", shellSpec("echo mounted", nil))
	require.NoError(t, err)
	require.Equal(t, hubSrv.URL+"/jobs/acme/"+j.ID, j.URL)
	require.Equal(t, JobCompleted, waitStage(ctx, t, c, j.ID, "").Status.Stage)
	require.Equal(t, 1, jobs.JobsCreated())
}
