package orchestrator

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// distinct fails when values is empty or holds a value twice.
func distinct[S ~string](t *testing.T, values []S) {
	t.Helper()
	require.NotEmpty(t, values)
	seen := map[S]bool{}
	for _, v := range values {
		require.NotEmpty(t, v)
		require.False(t, seen[v], "%q is listed twice", v)
		seen[v] = true
	}
}

// TestVocabularies: every list of values is complete and without repeats, and the values are the strings
// stored, sent in JSON and shown.
func TestVocabularies(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		check func(t *testing.T)
		names string
	}{
		{"DecisionKinds", func(t *testing.T) { distinct(t, DecisionKinds) }, "queued, duplicate, ignored, baseline"},
		{"IgnoreCauses", func(t *testing.T) { distinct(t, IgnoreCauses) }, "not_content_update, not_dataset, no_refs, no_mapping, " +
			"pull_request_ref, bot_ref, ref_not_watched, ref_deleted, malformed_sha, older_revision"},
		{"Triggers", func(t *testing.T) { distinct(t, Triggers) }, "webhook, manual"},
		{"NewRevisionPolicies", func(t *testing.T) { distinct(t, NewRevisionPolicies) }, "queue, supersede, cancel_running"},
		{"MappingSources", func(t *testing.T) { distinct(t, MappingSources) }, "file, api"},
		{"DeliverySources", func(t *testing.T) { distinct(t, DeliverySources) }, "webhook, reconcile"},
		{"NotifyEvents", func(t *testing.T) { distinct(t, NotifyEvents) }, "failed, succeeded, recovered"},
		{"NotifyFormats", func(t *testing.T) { distinct(t, NotifyFormats) }, "json, slack"},
		{"NotificationStates", func(t *testing.T) { distinct(t, NotificationStates) }, "pending, delivered, failed"},
		{"AuditActions", func(t *testing.T) { distinct(t, AuditActions) }, "run.retry, run.cancel, mapping.run_latest, " +
			"mapping.create, mapping.update, mapping.disable, login"},
		{"AuditOutcomes", func(t *testing.T) { distinct(t, AuditOutcomes) }, "ok, refused, failed"},
		{"AuditAuths", func(t *testing.T) { distinct(t, AuditAuths) }, "session, bearer, basic, none"},
	}
	got := map[string]string{
		"DecisionKinds": Names(DecisionKinds), "IgnoreCauses": Names(IgnoreCauses), "Triggers": Names(Triggers),
		"NewRevisionPolicies": Names(NewRevisionPolicies), "MappingSources": Names(MappingSources),
		"DeliverySources": Names(DeliverySources), "NotifyEvents": Names(NotifyEvents),
		"NotifyFormats": Names(NotifyFormats), "NotificationStates": Names(NotificationStates),
		"AuditActions": Names(AuditActions), "AuditOutcomes": Names(AuditOutcomes), "AuditAuths": Names(AuditAuths),
	}
	require.Len(t, got, len(cases))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.check(t)
			require.Equal(t, tc.names, got[tc.name])
		})
	}
}

func TestValid(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		valid bool
		got   bool
	}{
		{"TriggerWebhook", true, TriggerWebhook.Valid()},
		{"TriggerManual", true, TriggerManual.Valid()},
		{"TriggerRetry", false, Trigger("retry").Valid()},
		{"TriggerEmpty", false, Trigger("").Valid()},
		{"PolicyQueue", true, OnNewRevisionQueue.Valid()},
		{"PolicySupersede", true, OnNewRevisionSupersede.Valid()},
		{"PolicyCancelRunning", true, OnNewRevisionCancelRunning.Valid()},
		{"PolicyUpperCase", false, NewRevisionPolicy("Queue").Valid()},
		{"PolicyEmpty", false, NewRevisionPolicy("").Valid()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.valid, tc.got)
		})
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	cases := []struct {
		values        []string
		names, choice string
	}{
		{nil, "", ""},
		{[]string{"a"}, "a", "a"},
		{[]string{"a", "b"}, "a, b", "a or b"},
		{[]string{"a", "b", "c"}, "a, b, c", "a, b or c"},
	}
	for _, tc := range cases {
		t.Run(tc.names, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.names, Names(tc.values))
			require.Equal(t, tc.choice, OneOf(tc.values))
		})
	}
}
