package orchestrator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
)

// notifyMapping is a mapping with one target per way of listening: the default (failed, recovered), succeeded
// only, succeeded and recovered, and failed only.
func notifyMapping(name, dataset string) orchestrator.Mapping {
	m := mapping(name, dataset, "refs/heads/*")
	m.Notify = []orchestrator.NotifyTarget{
		{URL: "https://example.com/default"},
		{URL: "https://example.com/succeeded", On: []orchestrator.NotifyEvent{orchestrator.NotifySucceeded}},
		{URL: "https://example.com/both", On: []orchestrator.NotifyEvent{orchestrator.NotifySucceeded, orchestrator.NotifyRecovered}},
		{URL: "https://example.com/failed", Format: orchestrator.NotifyFormatSlack, On: []orchestrator.NotifyEvent{orchestrator.NotifyFailed}},
	}
	return m.WithDefaults()
}

// pushRun records a delivery of a new commit on ref of dataset and returns the new run's id.
// pushRun records push n of a ref (revision n+1), which replaced push after (-1 for none).
func pushRun(t *testing.T, b *testBundle, dataset, ref string, n, after int) int64 {
	t.Helper()
	old := ""
	if after >= 0 {
		old = fmt.Sprintf("%040x", after+1)
	}
	res, err := b.store.DeliveryInsert(context.Background(), orchestrator.DeliveryInsertParams{Delivery: &orchestrator.Delivery{
		Scope: "repo.content", Action: "update", RepoType: "dataset", RepoName: dataset, RepoID: "66a1f0c2b9e4d3a1f2c3d4e5",
		Raw:  []byte(`{}`),
		Refs: []orchestrator.RefUpdate{{Ref: ref, OldSha: old, NewSha: fmt.Sprintf("%040x", n+1)}},
	}})
	require.NoError(t, err)
	require.Len(t, res.RunIDs, 1, "decisions: %+v", res.Decisions)
	return res.RunIDs[0]
}

// finishRun starts attempt 1 of a run and ends it with status.
func finishRun(t *testing.T, b *testBundle, runID int64, status orchestrator.RunStatus) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: runID, Attempt: 1, Argv: []string{"x"}}))
	transition, ok := orchestrator.TransitionFor(status)
	require.True(t, ok, "no transition ends an attempt with %s", status)
	require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{
		RunID: runID, Attempt: 1, Transition: transition,
	}))
}

// notified returns the event each target heard about a run, by the path of its URL.
func notified(t *testing.T, b *testBundle, runID int64) map[string]orchestrator.NotifyEvent {
	t.Helper()
	list, err := b.store.NotificationList(context.Background(), runID)
	require.NoError(t, err)
	out := map[string]orchestrator.NotifyEvent{}
	for _, n := range list {
		key := n.URL[len("https://example.com/"):]
		_, dup := out[key]
		require.False(t, dup, "one notification per target at most")
		out[key] = n.Event
		require.Equal(t, orchestrator.NotificationPending, n.State)
	}
	return out
}

func TestRunTransitionsNotify(t *testing.T) {
	t.Parallel()
	const (
		failed    = orchestrator.RunFailed
		succeeded = orchestrator.RunSucceeded
	)
	type step struct {
		ref    string
		status orchestrator.RunStatus
		want   map[string]orchestrator.NotifyEvent
	}
	main := "refs/heads/main"
	failure := map[string]orchestrator.NotifyEvent{"default": "failed", "failed": "failed"}
	success := map[string]orchestrator.NotifyEvent{"succeeded": "succeeded", "both": "succeeded"}
	recovery := map[string]orchestrator.NotifyEvent{"default": "recovered", "succeeded": "succeeded", "both": "recovered"}
	none := map[string]orchestrator.NotifyEvent{}
	cases := []struct {
		name  string
		steps []step
	}{
		{"FailThenSucceedRecovers", []step{{main, failed, failure}, {main, succeeded, recovery}}},
		{"SucceedTwiceNeverRecovers", []step{{main, succeeded, success}, {main, succeeded, success}}},
		{"FirstRunSucceedingIsNoRecovery", []step{{main, succeeded, success}}},
		{"FailTwiceThenRecover", []step{{main, failed, failure}, {main, failed, failure}, {main, succeeded, recovery}, {main, succeeded, success}}},
		{"OtherRefDoesNotRecover", []step{{main, failed, failure}, {"refs/heads/dev", succeeded, success}, {main, succeeded, recovery}}},
		{"RetryingNotifiesNothing", []step{{main, orchestrator.RunRetrying, none}}},
		{"CancelledNotifiesNothingAndDoesNotCount", []step{{main, failed, failure}, {main, orchestrator.RunCancelled, none}, {main, succeeded, recovery}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, notifyMapping("tickets", "acme/support-tickets"))
			last := map[string]int{} // the last push of each ref
			for i, s := range tc.steps {
				after, ok := last[s.ref]
				if !ok {
					after = -1
				}
				last[s.ref] = i
				id := pushRun(t, b, "acme/support-tickets", s.ref, i, after)
				finishRun(t, b, id, s.status)
				require.Equal(t, s.want, notified(t, b, id), "step %d: %s on %s", i+1, s.status, s.ref)
			}
		})
	}
}

func TestRunTransitionNotificationsCommitWithStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("QueuedOnceWithTheirJobs", func(t *testing.T) {
		t.Parallel()
		b := setup(t, notifyMapping("tickets", "acme/support-tickets"))
		id := pushRun(t, b, "acme/support-tickets", "refs/heads/main", 0, -1)
		finishRun(t, b, id, orchestrator.RunFailed)
		// Finishing again (a worker recording its result twice) changes nothing.
		require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{
			RunID: id, Attempt: 1, Transition: orchestrator.TransitionFail,
		}))
		require.Equal(t, 2, count(t, b.pool, `SELECT count(*) FROM notifications WHERE run_id = $1`, id))
		rows, err := b.pool.Query(ctx, `SELECT id, job_id FROM notifications WHERE run_id = $1`, id)
		require.NoError(t, err)
		queued := 0
		for rows.Next() {
			var notificationID, jobID int64
			require.NoError(t, rows.Scan(&notificationID, &jobID))
			job := jobGet(t, b, jobID)
			require.Equal(t, jobs.NotifyArgs{}.Kind(), job.Kind)
			require.Equal(t, orchestrator.QueueNotify, job.Queue)
			require.Equal(t, 10, job.MaxAttempts)
			require.JSONEq(t, fmt.Sprintf(`{"notification_id": %d}`, notificationID), string(job.EncodedArgs))
			queued++
		}
		require.NoError(t, rows.Err())
		require.Equal(t, 2, queued, "each notification with its job")
	})

	t.Run("NoTargetsNoRows", func(t *testing.T) {
		t.Parallel()
		b := setup(t, mapping("tickets", "acme/support-tickets", "refs/heads/*"))
		id := pushRun(t, b, "acme/support-tickets", "refs/heads/main", 0, -1)
		finishRun(t, b, id, orchestrator.RunFailed)
		require.Equal(t, 0, count(t, b.pool, `SELECT count(*) FROM notifications`))
	})

	t.Run("ReapedRunDoesNotNotify", func(t *testing.T) {
		t.Parallel()
		m := notifyMapping("tickets", "acme/support-tickets")
		m.MaxAttempts = 1
		b := setup(t, m)
		id := pushRun(t, b, "acme/support-tickets", "refs/heads/main", 0, -1)
		require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: id, Attempt: 1, Argv: []string{"x"}}))
		_, err := b.pool.Exec(ctx, `UPDATE run_attempts SET heartbeat_at = now() - interval '10 minutes' WHERE run_id = $1`, id)
		require.NoError(t, err)
		reaped, err := b.store.RunReapOrphans(ctx, time.Minute)
		require.NoError(t, err)
		require.Equal(t, []orchestrator.ReapedRun{{RunID: id, Attempt: 1}}, reaped)
		require.Empty(t, notified(t, b, id), "an interrupted run goes on; it has not failed")
	})

	t.Run("TargetsSyncAndSecretNames", func(t *testing.T) {
		t.Parallel()
		m := notifyMapping("tickets", "acme/support-tickets")
		m.Notify[0].SecretEnv = "NOTIFY_SECRET_OPS"
		b := setup(t, m)
		got, err := b.store.MappingGetByName(ctx, "tickets")
		require.NoError(t, err)
		require.Equal(t, m.Notify, got.Notify)
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
		require.NoError(t, err)
		require.Len(t, res.RunIDs, 1)
		work, err := b.store.RunForWork(ctx, res.RunIDs[0])
		require.NoError(t, err)
		require.Equal(t, []string{"NOTIFY_SECRET_OPS"}, work.SecretEnv, "the worker keeps the secret from the command")
		require.Equal(t, "tickets", work.Mapping.Name)
		require.Equal(t, res.RunIDs[0], work.Run.ID)

		// The file drops the targets: the mapping keeps none.
		m.Notify = nil
		_, err = b.store.MappingSync(ctx, []orchestrator.Mapping{m})
		require.NoError(t, err)
		got, err = b.store.MappingGetByName(ctx, "tickets")
		require.NoError(t, err)
		require.Empty(t, got.Notify)
	})
}

func TestRunAttemptFinishWithoutTargets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	tests := []struct {
		name        string
		addTarget   bool // a target is added to the mapping while the run runs
		wantNotices int
	}{
		{name: "NoTargetsNoNotifications"},
		{name: "TargetAddedWhileRunningIsNotified", addTarget: true, wantNotices: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := mapping("tickets", "acme/support-tickets", "refs/heads/*")
			b := setup(t, m)
			runID := pushRun(t, b, "acme/support-tickets", "refs/heads/main", 1, -1)
			require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: runID, Attempt: 1, Argv: []string{"x"}}))
			if tt.addTarget {
				m.Notify = []orchestrator.NotifyTarget{{URL: "https://example.com/late"}}
				_, err := b.store.MappingSync(ctx, []orchestrator.Mapping{m.WithDefaults()})
				require.NoError(t, err)
			}
			code := 1
			require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{
				RunID: runID, Attempt: 1, Transition: orchestrator.TransitionFail,
				ExitCode: &code, Error: "exit status 1", NoTargets: true,
			}))
			run, err := b.store.RunGetByID(ctx, runID)
			require.NoError(t, err)
			require.Equal(t, orchestrator.RunFailed, run.Status)
			require.NotNil(t, run.FinishedAt)
			attempts, err := b.store.RunAttemptList(ctx, runID)
			require.NoError(t, err)
			require.Equal(t, orchestrator.AttemptFailed, attempts[0].Status)
			list, err := b.store.NotificationList(ctx, runID)
			require.NoError(t, err)
			require.Len(t, list, tt.wantNotices)
			require.Len(t, jobList(t, b, river.NewJobListParams().Kinds(jobs.NotifyArgs{}.Kind())), tt.wantNotices)
		})
	}
}
