package jobs_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/jobs/jobstest"
	"github.com/retrainhq/orchestrator/migrations"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

type testBundle struct {
	pool   *pgxpool.Pool
	store  *orchestrator.Store
	client *river.Client[pgx.Tx]
	cfg    jobs.ClientConfig

	headsMu sync.Mutex
	heads   map[string]string // the last revision push recorded for each dataset and ref
}

// setup starts a real River client with the retrain worker on a fresh schema, with the given mappings.
func setup(t *testing.T, mappings ...orchestrator.Mapping) *testBundle {
	t.Helper()
	return setupWith(t, func(cfg *jobs.ClientConfig) {
		cfg.Worker.BaseEnv = append(cfg.Worker.BaseEnv, "FROM_BASE=base")
	}, mappings...)
}

// setupWith is setup with the client's configuration changed by configure before the client starts.
func setupWith(t *testing.T, configure func(*jobs.ClientConfig), mappings ...orchestrator.Mapping) *testBundle {
	t.Helper()
	url, _ := dbtest.NewSchema(t)
	return setupOn(t, url, configure, mappings...)
}

// setupOn is setupWith on the fresh schema that url reaches.
func setupOn(t *testing.T, url string, configure func(*jobs.ClientConfig), mappings ...orchestrator.Mapping) *testBundle {
	t.Helper()
	ctx := context.Background()
	poolCfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	// As many connections as the serve command gives a process with the default workers, not pgxpool's
	// default of four, which River's listener, the workers, their heartbeats and log flushes would share.
	poolCfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, migrations.Apply(ctx, pool, nil))
	store := orchestrator.NewStore(pool)
	_, err = store.MappingSync(ctx, mappings)
	require.NoError(t, err)

	b := &testBundle{pool: pool, store: store, cfg: jobs.ClientConfig{
		Logger: quietLogger,
		Worker: jobs.WorkerConfig{
			KillGrace: 300 * time.Millisecond, LogFlushInterval: 20 * time.Millisecond,
			BaseEnv: []string{"PATH=" + os.Getenv("PATH")},
		},
	}}
	configure(&b.cfg)
	b.start(t)
	return b
}

// start starts a new River client for the bundle and makes the store enqueue through it.
func (b *testBundle) start(t *testing.T) {
	t.Helper()
	b.client = jobstest.NewClient(t, b.pool, b.store, b.cfg)
	jobstest.Start(t, b.client)
}

func shMapping(name, script string, mods ...func(*orchestrator.Mapping)) orchestrator.Mapping {
	m := orchestrator.Mapping{
		Name: name, Dataset: "acme/" + name, Refs: []string{"refs/heads/*"},
		Command: []string{"sh", "-c", script, "sh", "${DATASET_REVISION}"}, Enabled: true,
	}.WithDefaults()
	for _, mod := range mods {
		mod(&m)
	}
	return m
}

const (
	shaA = "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"
	shaB = "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f"
)

// push records a delivery of a new commit on ref, which replaced the commit the bundle pushed before on it (shaA
// for the first), as the Hub's pushes do, and returns the new run's id. Concurrent pushes are recorded in the
// order push was called.
func (b *testBundle) push(t *testing.T, dataset, ref, sha string) int64 {
	t.Helper()
	b.headsMu.Lock()
	if b.heads == nil {
		b.heads = map[string]string{}
	}
	old := cmp.Or(b.heads[dataset+" "+ref], shaA)
	b.heads[dataset+" "+ref] = sha
	b.headsMu.Unlock()
	return b.pushAfter(t, dataset, ref, old, sha)
}

// pushAfter records a delivery of the push that moved ref from old to sha and returns the new run's id.
func (b *testBundle) pushAfter(t *testing.T, dataset, ref, old, sha string) int64 {
	t.Helper()
	res := b.deliver(t, dataset, ref, old, sha)
	require.Len(t, res.RunIDs, 1, "decisions: %+v", res.Decisions)
	return res.RunIDs[0]
}

// deliver records a delivery of the push that moved ref from old to sha.
func (b *testBundle) deliver(t *testing.T, dataset, ref, old, sha string) *orchestrator.DeliveryInsertResult {
	t.Helper()
	res, err := b.store.DeliveryInsert(context.Background(), orchestrator.DeliveryInsertParams{Delivery: &orchestrator.Delivery{
		Scope: "repo.content", Action: "update", RepoType: "dataset", RepoName: dataset, RepoID: "66a1f0c2b9e4d3a1f2c3d4e5",
		Raw:  []byte(`{}`),
		Refs: []orchestrator.RefUpdate{{Ref: ref, OldSha: old, NewSha: sha}},
	}})
	require.NoError(t, err)
	return res
}

// waitStatus waits until the run has one of the statuses and returns it.
func (b *testBundle) waitStatus(t *testing.T, runID int64, timeout time.Duration, statuses ...orchestrator.RunStatus) *orchestrator.Run {
	t.Helper()
	var run *orchestrator.Run
	require.Eventually(t, func() bool {
		var err error
		run, err = b.store.RunGetByID(context.Background(), runID)
		require.NoError(t, err)
		for _, s := range statuses {
			if run.Status == s {
				return true
			}
		}
		return false
	}, timeout, 10*time.Millisecond, "run %d never reached %v", runID, statuses)
	return run
}

func (b *testBundle) log(t *testing.T, runID int64, attempt int) string {
	t.Helper()
	data, _, err := b.store.RunLogTail(context.Background(), runID, attempt, 1<<20)
	require.NoError(t, err)
	return string(data)
}

func TestRetrainWorker(t *testing.T) {
	t.Parallel()

	t.Run("CommandSeesPinnedRevision", func(t *testing.T) {
		t.Parallel()
		workdir := t.TempDir()
		b := setup(t, shMapping("pinned",
			`echo "arg=$1 rev=$DATASET_REVISION old=$DATASET_OLD_REVISION repo=$DATASET_REPO ref=$DATASET_REF"; `+
				`echo "run=$RUN_ID attempt=$RUN_ATTEMPT mapping=$MAPPING_NAME env=$FROM_MAPPING base=$FROM_BASE"; pwd`,
			func(m *orchestrator.Mapping) {
				m.Workdir = workdir
				m.Env = map[string]string{"FROM_MAPPING": "mapped"}
			}))
		runID := b.push(t, "acme/pinned", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 10*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, "error: %s", run.Error)
		require.Equal(t, 0, *run.ExitCode)
		require.Equal(t, 1, run.Attempt)
		require.NotNil(t, run.StartedAt)
		require.NotNil(t, run.FinishedAt)
		require.Equal(t,
			fmt.Sprintf("arg=%s rev=%s old=%s repo=acme/pinned ref=refs/heads/main\nrun=%d attempt=1 mapping=pinned env=mapped base=base\n%s\n",
				shaB, shaB, shaA, runID, workdir),
			b.log(t, runID, 1))

		attempts, err := b.store.RunAttemptList(context.Background(), runID)
		require.NoError(t, err)
		require.Len(t, attempts, 1)
		require.Equal(t, shaB, attempts[0].Argv[4], "the recorded argv is the expanded one")
		require.Equal(t, orchestrator.AttemptSucceeded, attempts[0].Status)
	})

	t.Run("RunOutputIsStored", func(t *testing.T) {
		t.Parallel()
		b := setup(t,
			shMapping("outputs", `printf '{"model": "acme/clf", "model_revision": "%s", "metrics": {"f1": 0.91}}' "$1" > "$RUN_OUTPUT"; printf '%s' "$RUN_OUTPUT"`),
			shMapping("badoutput", `echo 'not json' > "$RUN_OUTPUT"`))
		good := b.push(t, "acme/outputs", "refs/heads/main", shaB)
		bad := b.push(t, "acme/badoutput", "refs/heads/main", shaB)
		run := b.waitStatus(t, good, 10*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		require.JSONEq(t, `{"model": "acme/clf", "model_revision": "`+shaB+`", "metrics": {"f1": 0.91}}`, string(run.Output))
		// The file is read, then removed; its directory is the worker's alone.
		path := b.log(t, good, 1)
		_, err := os.Stat(path)
		require.ErrorIs(t, err, os.ErrNotExist, "RUN_OUTPUT %s is removed after the run", path)
		dir, err := os.Stat(filepath.Dir(path))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), dir.Mode().Perm())
		run = b.waitStatus(t, bad, 10*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, "a bad output does not fail the training")
		require.Nil(t, run.Output)
		require.Contains(t, run.Error, "RUN_OUTPUT ignored: not a JSON object")
	})

	t.Run("FailingCommandRetriedToFailed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, shMapping("failing", `echo "attempt $RUN_ATTEMPT"; exit 3`,
			func(m *orchestrator.Mapping) { m.MaxAttempts = 2 }))
		runID := b.push(t, "acme/failing", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 15*time.Second, orchestrator.RunFailed)
		require.Equal(t, 2, run.Attempt)
		require.Equal(t, 3, *run.ExitCode)
		require.Equal(t, "exit code 3", run.Error)
		attempts, err := b.store.RunAttemptList(context.Background(), runID)
		require.NoError(t, err)
		require.Len(t, attempts, 2)
		for i, a := range attempts {
			require.Equal(t, orchestrator.AttemptFailed, a.Status)
			require.Equal(t, 3, *a.ExitCode)
			require.Equal(t, fmt.Sprintf("attempt %d\n", i+1), b.log(t, runID, i+1))
		}
		require.Eventually(t, func() bool {
			return len(jobstest.List(t, b.client, river.NewJobListParams().States(rivertype.JobStateDiscarded))) == 1
		}, 5*time.Second, 10*time.Millisecond, "the queue gives the job up too")
	})

	t.Run("TimeoutKillsProcessGroup", func(t *testing.T) {
		t.Parallel()
		pidFile := filepath.Join(t.TempDir(), "child.pid")
		b := setup(t, shMapping("slow", `sleep 1000 & echo $! > `+pidFile+`; echo started; wait`,
			func(m *orchestrator.Mapping) { m.Timeout = 500 * time.Millisecond; m.MaxAttempts = 1 }))
		runID := b.push(t, "acme/slow", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 10*time.Second, orchestrator.RunFailed)
		require.Contains(t, run.Error, "timeout of 500ms")
		require.Equal(t, "SIGTERM", run.Signal)
		require.Nil(t, run.ExitCode)
		require.Equal(t, "started\n", b.log(t, runID, 1))

		data, err := os.ReadFile(pidFile)
		require.NoError(t, err)
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		require.NoError(t, err)
		require.Eventually(t, func() bool { return processGone(pid) }, 3*time.Second, 20*time.Millisecond,
			"the background child %d of the timed-out command is still alive", pid)
	})

	t.Run("UnsetVariableFailsWithoutRetry", func(t *testing.T) {
		t.Parallel()
		b := setup(t, shMapping("unset", `echo never`, func(m *orchestrator.Mapping) {
			m.Command = []string{"echo", "${NOT_SET_ANYWHERE}"}
			m.MaxAttempts = 3
		}))
		runID := b.push(t, "acme/unset", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 10*time.Second, orchestrator.RunFailed)
		require.Equal(t, "argument 1 uses ${NOT_SET_ANYWHERE}, which is not set", run.Error)
		require.Equal(t, 1, run.Attempt)
	})

	t.Run("HostileRefIsOnlyData", func(t *testing.T) {
		t.Parallel()
		marker := filepath.Join(t.TempDir(), "pwned")
		b := setup(t, shMapping("hostile", "", func(m *orchestrator.Mapping) {
			m.Command = []string{"printf", "%s|", "${DATASET_REF}", "--revision=${DATASET_REVISION}"}
		}))
		ref := "refs/heads/$(touch " + strings.ReplaceAll(marker, "/", "\\") + ");`touch x`;${IFS}--flag"
		require.True(t, (&orchestrator.Mapping{Refs: []string{"refs/heads/*"}}).WatchesRef(ref))
		runID := b.push(t, "acme/hostile", ref, shaB)
		run := b.waitStatus(t, runID, 10*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		require.Equal(t, ref+"|--revision="+shaB+"|", b.log(t, runID, 1), "the ref reaches the command as one argument, verbatim")
		require.NoFileExists(t, marker)
	})

	t.Run("OutputIsBounded", func(t *testing.T) {
		t.Parallel()
		b := setup(t, shMapping("chatty", `head -c 1048576 /dev/zero | tr '\0' 'x'; echo; echo tail-marker`))
		b.cfg.Worker.LogLimit = 64 << 10
		// Restart with the smaller limit before anything is enqueued.
		require.NoError(t, b.client.StopAndCancel(context.Background()))
		b.start(t)
		runID := b.push(t, "acme/chatty", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 10*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		attempts, err := b.store.RunAttemptList(context.Background(), runID)
		require.NoError(t, err)
		total := int64(1<<20 + len("\ntail-marker\n"))
		require.Equal(t, total, attempts[0].LogBytes)
		log := b.log(t, runID, 1)
		require.True(t, strings.HasSuffix(log, "x\ntail-marker\n"), "log ends with %q", log[max(0, len(log)-40):])
		require.GreaterOrEqual(t, len(log), 64<<10, "at least the limit is kept")
		require.LessOrEqual(t, len(log), 64<<10+256<<10, "at most one chunk more than the limit is kept")
		require.Equal(t, total, attempts[0].LogDropped+int64(len(log)), "every byte is either kept or counted as dropped")
	})

	t.Run("CancelledWhileRunning", func(t *testing.T) {
		t.Parallel()
		b := setup(t, shMapping("cancel", `echo started; exec sleep 1000`))
		runID := b.push(t, "acme/cancel", "refs/heads/main", shaB)
		b.waitStatus(t, runID, 10*time.Second, orchestrator.RunRunning)
		require.Eventually(t, func() bool { return strings.Contains(b.log(t, runID, 1), "started") }, 5*time.Second, 10*time.Millisecond)
		run, err := b.store.RunGetByID(context.Background(), runID)
		require.NoError(t, err)
		_, err = b.client.JobCancel(context.Background(), *run.JobID)
		require.NoError(t, err)
		run = b.waitStatus(t, runID, 10*time.Second, orchestrator.RunCancelled)
		require.Equal(t, "cancelled by an operator", run.Error)
		require.Equal(t, "SIGTERM", run.Signal)
		require.NotNil(t, run.FinishedAt)
	})

	t.Run("ShutdownRequeuesWithoutSpendingAnAttempt", func(t *testing.T) {
		t.Parallel()
		gate := filepath.Join(t.TempDir(), "gate")
		b := setup(t, shMapping("restart", `echo "attempt $RUN_ATTEMPT"; while [ ! -e `+gate+` ]; do sleep 0.05; done; echo finished`,
			func(m *orchestrator.Mapping) { m.MaxAttempts = 1 }))
		runID := b.push(t, "acme/restart", "refs/heads/main", shaB)
		b.waitStatus(t, runID, 10*time.Second, orchestrator.RunRunning)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, b.client.StopAndCancel(ctx))
		// A loaded machine (the whole suite at once, under the race detector) can take seconds to record it.
		run := b.waitStatus(t, runID, 20*time.Second, orchestrator.RunQueued)
		require.Equal(t, "interrupted by shutdown; it will run again", run.Error)

		require.NoError(t, os.WriteFile(gate, nil, 0o644))
		b.start(t)
		run = b.waitStatus(t, runID, 10*time.Second, orchestrator.RunSucceeded, orchestrator.RunFailed)
		require.Equal(t, orchestrator.RunSucceeded, run.Status, run.Error)
		require.Equal(t, 2, run.Attempt, "the run's second execution")
		attempts, err := b.store.RunAttemptList(context.Background(), runID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.AttemptInterrupted, attempts[0].Status, "the interrupted execution did not use up the only attempt")
		require.Equal(t, orchestrator.AttemptSucceeded, attempts[1].Status)
		require.Equal(t, "attempt 2\nfinished\n", b.log(t, runID, 2))
	})
}

// processGone reports whether pid no longer runs (reaped, or a zombie waiting for its reaper).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

func TestExpandArgv(t *testing.T) {
	t.Parallel()
	env := []string{"DATASET_REVISION=abc", "EMPTY=", "WITH_EQ=a=b"}
	cases := []struct {
		name    string
		argv    []string
		want    []string
		wantErr string
	}{
		{"Braced", []string{"train", "--rev", "${DATASET_REVISION}"}, []string{"train", "--rev", "abc"}, ""},
		{"Embedded", []string{"--rev=${DATASET_REVISION}@${WITH_EQ}"}, []string{"--rev=abc@a=b"}, ""},
		{"BareDollarPasses", []string{"sh", "-c", `echo "$1" $DATASET_REVISION $`}, []string{"sh", "-c", `echo "$1" $DATASET_REVISION $`}, ""},
		{"EmptyValue", []string{"x${EMPTY}y"}, []string{"xy"}, ""},
		{"NotAName", []string{"${1}", "${A-B}", "${}"}, []string{"${1}", "${A-B}", "${}"}, ""},
		{"NoRecursion", []string{"${DATASET_REVISION}"}, []string{"abc"}, ""},
		{"Unset", []string{"a", "${NOPE}"}, nil, "argument 1 uses ${NOPE}, which is not set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := jobs.ExpandArgv(tc.argv, env)
			if tc.wantErr != "" {
				require.EqualError(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestRunEnv(t *testing.T) {
	t.Parallel()
	m := &orchestrator.Mapping{Name: "m", Env: map[string]string{"WANDB_PROJECT": "x", "SHARED": "mapping"}}
	run := &orchestrator.Run{ID: 7, Dataset: "a/b", Ref: "refs/heads/main", Revision: shaB, OldRevision: shaA}
	env := jobs.RunEnv([]string{"SHARED=base", "PATH=/bin", "DATASET_REVISION=forged",
		"TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "TRACESTATE=a=b"}, m, run, 2)
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		_, dup := got[k]
		require.False(t, dup, "%s appears twice", k)
		got[k] = v
	}
	require.Equal(t, map[string]string{
		"SHARED": "mapping", "PATH": "/bin", "WANDB_PROJECT": "x",
		"DATASET_REPO": "a/b", "DATASET_REF": "refs/heads/main", "DATASET_REVISION": shaB, "DATASET_OLD_REVISION": shaA,
		"RUN_ID": "7", "RUN_ATTEMPT": "2", "MAPPING_NAME": "m",
	}, got, "the orchestrator's own trace is not passed on")
}

func TestScrubbedEnv(t *testing.T) {
	t.Parallel()
	got := jobs.ScrubbedEnv([]string{"PATH=/bin", "HUGGINGFACE_WEBHOOK_SECRET=s", "DATABASE_URL=postgres://x",
		"ORCHESTRATOR_ADMIN_TOKEN=t", "HF_TOKEN=kept", "HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS=p",
		"ORCHESTRATOR_ADMIN_TOKEN_PREVIOUS=old"})
	require.Equal(t, []string{"PATH=/bin", "HF_TOKEN=kept"}, got)
}

func TestEnqueueGivesJobsTheirReservedIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }() // nothing is left for the workers

	queue := jobs.NewQueue(b.pool, b.client)
	ids, err := queue.ReserveJobIDs(ctx, 1)
	require.NoError(t, err)
	reserved := ids[0]
	ids, err = queue.EnqueueTx(ctx, tx, []orchestrator.RunJob{
		{RunID: 1, MaxAttempts: 3, JobID: reserved},
		{RunID: 2, MaxAttempts: 3},
	})
	require.NoError(t, err)
	require.Len(t, ids, 2)
	require.Equal(t, reserved, ids[0], "the job takes the id reserved for it")
	require.Greater(t, ids[1], reserved, "a job without a reserved id takes the next one")
	job, err := b.client.JobGetTx(ctx, tx, reserved)
	require.NoError(t, err)
	require.JSONEq(t, `{"run_id": 1}`, string(job.EncodedArgs), "the job with the reserved id is the run's")
}
