package orchestrator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func TestIsDatasetPattern(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dataset string
		want    bool
	}{
		{"acme/support-tickets", false},
		{"squad", false},
		{"acme/*", true},
		{"acme/ticket?", true},
		{"acme/[ab]", true},
		{`acme/\x`, true},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, orchestrator.IsDatasetPattern(tc.dataset), tc.dataset)
	}
}

func TestRefRecordedRevisions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sha := func(c string) string { return strings.Repeat(c, 40) }
	b := setup(t,
		mapping("tickets", "acme/support-tickets", "refs/heads/*", "refs/tags/*"),
		mapping("main-only", "acme/support-tickets"),
		mapping("other", "acme/other"))
	mappings, err := b.store.MappingList(ctx)
	require.NoError(t, err)
	ids := map[string]int64{}
	for _, m := range mappings {
		ids[m.Name] = m.ID
	}

	insert := func(source orchestrator.DeliverySource, refs ...orchestrator.RefUpdate) *orchestrator.DeliveryInsertResult {
		t.Helper()
		res, err := b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Source: source, Delivery: &orchestrator.Delivery{
			Scope: "repo.content", Action: "update", RepoType: "dataset", RepoName: "acme/support-tickets",
			RepoID: "66a1f0c2b9e4d3a1f2c3d4e5", Raw: []byte(`{}`), Refs: refs,
		}})
		require.NoError(t, err)
		return res
	}

	empty, err := b.store.RefRecordedRevisions(ctx, ids["tickets"])
	require.NoError(t, err)
	require.Empty(t, empty, "nothing recorded yet")

	// Catch-up's first sight of refs/tags/v1 is a baseline: recorded, not run.
	res := insert(orchestrator.DeliverySourceReconcile, orchestrator.RefUpdate{Ref: "refs/tags/v1", NewSha: sha("1")})
	require.Empty(t, res.RunIDs)
	kinds := map[string]orchestrator.DecisionKind{}
	for _, dec := range res.Decisions {
		kinds[dec.MappingName] = dec.Decision
	}
	require.Equal(t, map[string]orchestrator.DecisionKind{
		"tickets": orchestrator.DecisionBaseline, "main-only": orchestrator.DecisionIgnored,
	}, kinds)

	insert("", orchestrator.RefUpdate{Ref: "refs/heads/main", NewSha: sha("a")})                     // queued
	insert("", orchestrator.RefUpdate{Ref: "refs/heads/main", OldSha: sha("a"), NewSha: sha("b")})   // queued, newer
	insert("", orchestrator.RefUpdate{Ref: "refs/heads/dev", NewSha: sha("c")})                      // queued for tickets only
	insert("", orchestrator.RefUpdate{Ref: "refs/heads/dev", OldSha: sha("c")})                      // deleted: ignored
	insert("", orchestrator.RefUpdate{Ref: "refs/pr/7", NewSha: sha("d")})                           // not watched: ignored
	insert("", orchestrator.RefUpdate{Ref: "refs/heads/feature", NewSha: "not-a-sha"})               // malformed: ignored
	insert("", orchestrator.RefUpdate{Ref: "refs/heads/hotfix", NewSha: sha("e")})                   // queued
	insert("", orchestrator.RefUpdate{Ref: "refs/heads/hotfix", OldSha: sha("f"), NewSha: sha("e")}) // replay: duplicate

	cases := []struct {
		mapping string
		want    map[string]string
	}{
		{"tickets", map[string]string{
			"refs/tags/v1": sha("1"), "refs/heads/main": sha("b"), "refs/heads/dev": sha("c"), "refs/heads/hotfix": sha("e"),
		}},
		{"main-only", map[string]string{"refs/heads/main": sha("b")}},
		{"other", map[string]string{}},
	}
	for _, tc := range cases {
		got, err := b.store.RefRecordedRevisions(ctx, ids[tc.mapping])
		require.NoError(t, err)
		require.Equal(t, tc.want, got, tc.mapping)
	}

	// A late replay of an older revision is not the newest for its ref: the push of b replaced it, so catch-up
	// has nothing to bring.
	insert("", orchestrator.RefUpdate{Ref: "refs/heads/main", NewSha: sha("a")})
	got, err := b.store.RefRecordedRevisions(ctx, ids["main-only"])
	require.NoError(t, err)
	require.Equal(t, sha("b"), got["refs/heads/main"])
}

func TestReconcileStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	const base, maxWait = time.Second, 5 * time.Second

	list, err := b.store.ReconcileStatusList(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	_, err = b.store.ReconcileStatusGet(ctx, "acme/x")
	require.Equal(t, orchestrator.CodeNotFound, orchestrator.ErrorCode(err))

	// Repeated failures back off exponentially up to the cap; the Hub's Retry-After wins when longer.
	cases := []struct {
		retryAfter time.Duration
		wantWait   time.Duration
	}{
		{0, base},
		{0, 2 * base},
		{0, 4 * base},
		{0, maxWait},
		{0, maxWait},
		{time.Minute, time.Minute},
		{2 * time.Second, maxWait},
	}
	var first *time.Time
	for i, tc := range cases {
		before := time.Now()
		st, err := b.store.ReconcileStatusFailed(ctx, orchestrator.ReconcileFailure{
			Dataset: "acme/x", Error: "the Hub answered 503\x00 Service Unavailable", RetryAfter: tc.retryAfter,
			BackoffBase: base, BackoffMax: maxWait,
		})
		require.NoError(t, err)
		require.Equal(t, i+1, st.Failures)
		require.True(t, st.Failing())
		require.True(t, st.Held)
		require.Equal(t, "the Hub answered 503 Service Unavailable", st.LastError, "NUL dropped")
		require.Nil(t, st.LastOKAt)
		require.NotNil(t, st.NextAttemptAt)
		wait := st.NextAttemptAt.Sub(before)
		require.InDelta(t, tc.wantWait.Seconds(), wait.Seconds(), 0.5, "failure %d", i+1)
		if first == nil {
			first = st.FailingSince
		}
		require.Equal(t, *first, *st.FailingSince, "failing since the first failure in a row")
	}

	failingSince, err := b.store.ReconcileStatusOK(ctx, "acme/x")
	require.NoError(t, err)
	require.NotNil(t, failingSince)
	require.Equal(t, *first, *failingSince, "the end of a failure says when it started")
	st, err := b.store.ReconcileStatusGet(ctx, "acme/x")
	require.NoError(t, err)
	require.False(t, st.Failing())
	require.False(t, st.Held)
	require.Zero(t, st.Failures)
	require.Empty(t, st.LastError)
	require.Nil(t, st.NextAttemptAt)
	require.NotNil(t, st.LastOKAt)
	require.WithinDuration(t, time.Now(), *st.LastOKAt, 5*time.Second)

	failingSince, err = b.store.ReconcileStatusOK(ctx, "acme/y")
	require.NoError(t, err)
	require.Nil(t, failingSince, "a dataset that was not failing")

	require.NoError(t, b.store.ReconcileStatusNote(ctx, "acme/*", "a pattern"))
	require.NoError(t, b.store.ReconcileStatusNote(ctx, "acme/*", "a pattern"))
	list, err = b.store.ReconcileStatusList(ctx)
	require.NoError(t, err)
	require.Len(t, list, 3)
	require.Equal(t, []string{"acme/*", "acme/x", "acme/y"}, []string{list[0].Dataset, list[1].Dataset, list[2].Dataset})
	require.Equal(t, "a pattern", list[0].Note)
	require.Nil(t, list[0].LastOKAt)

	require.NoError(t, b.store.ReconcileStatusPrune(ctx, []string{"acme/x"}))
	list, err = b.store.ReconcileStatusList(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "acme/x", list[0].Dataset)
	require.NoError(t, b.store.ReconcileStatusPrune(ctx, nil))
	list, err = b.store.ReconcileStatusList(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
}
