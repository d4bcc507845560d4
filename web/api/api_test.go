package api_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

const slackHook = "https://hooks.slack.com/services/T0/B0/secret"

var (
	created  = time.Date(2025, 3, 1, 10, 0, 0, 123456000, time.UTC)
	finished = time.Date(2025, 3, 1, 10, 5, 0, 0, time.UTC)
)

func notifyingMapping() orchestrator.Mapping {
	return orchestrator.Mapping{
		ID: 7, Name: "a", Dataset: "x/y", Command: []string{"true"}, Timeout: 90 * time.Minute, QuietPeriod: time.Minute,
		Notify: []orchestrator.NotifyTarget{{URL: slackHook, Format: orchestrator.NotifyFormatSlack, SecretEnv: "S"}},
		Source: orchestrator.SourceAPI, Enabled: true, CreatedAt: created, UpdatedAt: finished,
		Paths: []string{"data/**"}, IgnorePaths: []string{"README.md", "**/*.md"},
	}.WithDefaults()
}

func TestNewMapping(t *testing.T) {
	t.Parallel()

	t.Run("HidesNotifyURLs", func(t *testing.T) {
		t.Parallel()
		m := notifyingMapping()
		shown := api.NewMapping(&m)
		require.Equal(t, "https://hooks.slack.com/…", shown.Notify[0].URL)
		require.Equal(t, "S", shown.Notify[0].SecretEnv)
		require.Equal(t, slackHook, m.Notify[0].URL, "the mapping itself keeps the URL")
		data, err := json.Marshal(shown)
		require.NoError(t, err)
		require.NotContains(t, string(data), "/services/")
		require.Contains(t, string(data), `"url":"https://hooks.slack.com/…"`)
	})

	t.Run("Settings", func(t *testing.T) {
		t.Parallel()
		m := notifyingMapping()
		shown := api.NewMapping(&m)
		require.Equal(t, orchestrator.Duration("1h30m0s"), shown.Timeout)
		require.Equal(t, orchestrator.Duration("1m0s"), shown.QuietPeriod)
		require.Equal(t, orchestrator.Duration("30m0s"), shown.MaxWait)
		require.Equal(t, orchestrator.RefsDefault, shown.Refs)
		require.Equal(t, orchestrator.QueueDefault, shown.Queue)
		require.Equal(t, []string{"data/**"}, shown.Paths)
		require.Equal(t, []string{"README.md", "**/*.md"}, shown.IgnorePaths)
		require.Equal(t, int64(7), shown.ID)
		require.Equal(t, created, shown.CreatedAt)
	})

	t.Run("EmptySettings", func(t *testing.T) {
		t.Parallel()
		m := orchestrator.Mapping{Name: "a"}.WithDefaults()
		data, err := json.Marshal(api.NewMapping(&m))
		require.NoError(t, err)
		require.Contains(t, string(data), `"notify":[]`, "no targets are an empty list")
		require.Contains(t, string(data), `"paths":[]`, "no paths are an empty list")
		require.Contains(t, string(data), `"ignore_paths":[]`)
		require.Contains(t, string(data), `"quiet_period":"0s"`)
		require.NotContains(t, string(data), `"workdir"`)
		require.NotContains(t, string(data), `"env"`)
	})

	require.Equal(t, api.MappingList{Mappings: []api.Mapping{}}, api.NewMappingList(nil))
}

func TestNewNotification(t *testing.T) {
	t.Parallel()
	code := 500
	n := orchestrator.Notification{
		ID: 3, RunID: 9, Event: orchestrator.NotifyFailed, Format: orchestrator.NotifyFormatSlack, URL: slackHook,
		State: orchestrator.NotificationPending, Attempts: 1, LastError: "boom", CreatedAt: created,
		History: []orchestrator.NotificationAttempt{{Attempt: 1, StartedAt: created, DurationMS: 42, StatusCode: &code}},
	}
	shown := api.NewNotification(&n)
	require.Equal(t, "https://hooks.slack.com/…", shown.Target)
	require.Equal(t, n.History, shown.History)
	data, err := json.Marshal(shown)
	require.NoError(t, err)
	require.NotContains(t, string(data), "/services/")
	require.NotContains(t, string(data), `"url"`)
}

func TestError(t *testing.T) {
	t.Parallel()
	e := &api.Error{Status: 404, Message: "run 7 not found"}
	require.EqualError(t, e, "404: run 7 not found")
	data, err := json.Marshal(e)
	require.NoError(t, err)
	require.JSONEq(t, `{"error":"run 7 not found"}`, string(data), "the status is the answer's, not the body's")
}

// TestRoundTrip checks that what the server encodes decodes into the same values, and encodes again to the
// same bytes.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	exit, next := 2, int64(41)
	m := notifyingMapping()
	run := orchestrator.Run{
		ID: 42, Mapping: "a", Dataset: "x/y", RepoID: "66a1", Ref: "refs/heads/main", Revision: "abc", Trigger: orchestrator.TriggerWebhook,
		DeliveryID: &next, Status: orchestrator.RunFailed, Attempt: 1, MaxAttempts: 2, ExitCode: &exit, Error: "exit code 2",
		CreatedAt: created, StartedAt: &created, FinishedAt: &finished, Output: json.RawMessage(`{"loss":0.1}`),
	}
	n := orchestrator.Notification{ID: 3, RunID: 42, Event: orchestrator.NotifyFailed, Format: orchestrator.NotifyFormatJSON,
		URL: slackHook, SecretEnv: "S", State: orchestrator.NotificationDelivered, CreatedAt: created, DeliveredAt: &finished,
		History: []orchestrator.NotificationAttempt{}}
	cases := []struct {
		name string
		v    any
	}{
		{"RunList", api.RunList{Runs: []orchestrator.Run{run}}},
		{"RunListPage", api.RunList{NextBefore: &next, Runs: []orchestrator.Run{run}}},
		{"RunDetail", api.RunDetail{Run: run, Attempts: []orchestrator.Attempt{{Number: 1, Argv: []string{"train"},
			Status: orchestrator.AttemptFailed, ExitCode: &exit, LogBytes: 9, StartedAt: created, FinishedAt: &finished}},
			Log: "loss nan\n", LogOmittedBytes: 3, Notifications: []api.Notification{api.NewNotification(&n)}}},
		{"RunResult", api.RunResult{Run: run}},
		{"MappingList", api.NewMappingList([]orchestrator.Mapping{m})},
		{"MappingResult", api.MappingResult{Mapping: api.NewMapping(&m)}},
		{"DeliveryList", api.DeliveryList{Deliveries: []orchestrator.DeliveryRecord{{ID: 5, ReceivedAt: created,
			Source: orchestrator.DeliverySourceWebhook, Event: "repo.content.update", RepoType: "dataset", RepoName: "x/y",
			Refs:      []orchestrator.RefUpdate{{Ref: "refs/heads/main", NewSha: "abc"}},
			Decisions: []orchestrator.Decision{{MappingName: "a", Ref: "refs/heads/main", NewSha: "abc", Decision: orchestrator.DecisionQueued, RunID: 42}}}}}},
		{"Error", api.Error{Message: "run 7 not found"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data, err := json.Marshal(tc.v)
			require.NoError(t, err)
			decoded := reflect.New(reflect.TypeOf(tc.v))
			require.NoError(t, json.Unmarshal(data, decoded.Interface()))
			require.Equal(t, tc.v, decoded.Elem().Interface())
			again, err := json.Marshal(decoded.Interface())
			require.NoError(t, err)
			require.Equal(t, string(data), string(again))
		})
	}
}
