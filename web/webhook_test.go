package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/migrations"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/pgcluster"
)

// seedBody builds the seed suite's base fixture with the given event.
func seedBody(scope, action, extra string) string {
	return `{"event": {"action": "` + action + `", "scope": "` + scope + `"}, "repo": {"type": "model",
		"name": "openai-community/gpt2", "id": "621ffdc036468d709f17434d", "private": false,
		"url": {"web": "https://huggingface.co/openai-community/gpt2", "api": "https://huggingface.co/api/models/openai-community/gpt2"},
		"headSha": "c379e821c9c95d613899e8c4343e4bfee2b0c600", "owner": {"id": "628b753283ef59b5be89e937"}},
		"webhook": {"id": "6390e855e30d9209411de93b", "version": 3}` + extra + `}`
}

func TestWebhook(t *testing.T) {
	t.Parallel()
	// The cases run in parallel, so pushes of one ref arrive in any order: with queue every revision trains
	// whatever the order, where supersede would skip the one the history places before one already recorded.
	m := ticketsMapping()
	m.OnNewRevision = orchestrator.OnNewRevisionQueue
	b := setup(t, m)
	right := map[string]string{"X-Webhook-Secret": testSecret, "Content-Type": "application/json"}

	cases := []struct {
		name       string
		path       string
		header     map[string]string
		body       string
		wantStatus int
		wantEvent  string
		wantError  string
		wantRuns   int
	}{
		// The seed suite.
		{name: "V2NoSecret", body: seedBody("repo", "update", ""), wantStatus: 401, wantError: "missing or wrong webhook secret"},
		{name: "V3WrongSecret", header: map[string]string{"X-Webhook-Secret": "wrong_secret"}, body: seedBody("repo", "update", ""), wantStatus: 401},
		{name: "V4ShortSecret", header: map[string]string{"X-Webhook-Secret": "short"}, body: seedBody("repo", "update", ""), wantStatus: 401},
		{name: "V5Header", header: right, body: seedBody("repo", "update", ""), wantStatus: 200, wantEvent: "repo.update"},
		{name: "V6Query", path: "?secret=" + testSecret, body: seedBody("repo", "update", ""), wantStatus: 200, wantEvent: "repo.update"},
		{name: "V7InvalidPayload", header: right, body: `{"repo":{"type":"model","name":"x/y"}}`, wantStatus: 400, wantError: "missing event.scope, event.action"},
		{name: "V8InvalidJSON", header: right, body: `not-json{`, wantStatus: 400, wantError: "invalid JSON"},
		{name: "S1RepoCreate", header: right, body: seedBody("repo", "create", ""), wantStatus: 200, wantEvent: "repo.create"},
		{name: "S2RepoUpdate", header: right, body: seedBody("repo", "update", ""), wantStatus: 200, wantEvent: "repo.update"},
		{name: "S3RepoDelete", header: right, body: seedBody("repo", "delete", ""), wantStatus: 200, wantEvent: "repo.delete"},
		{name: "S4RepoMove", header: right, body: seedBody("repo", "move", `, "movedTo": {"name": "x/z", "owner": {"id": "1"}}`), wantStatus: 200, wantEvent: "repo.move"},
		{name: "S5ModelContent", header: right, body: seedBody("repo.content", "update", `, "updatedRefs": [
			{"ref": "refs/heads/main", "oldSha": "c379e821c9c95d613899e8c4343e4bfee2b0c600", "newSha": "d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7a8b9c0d"},
			{"ref": "refs/tags/v1", "oldSha": null, "newSha": "d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7a8b9c0d"},
			{"ref": "refs/heads/old", "oldSha": "c379e821c9c95d613899e8c4343e4bfee2b0c600", "newSha": null}]`), wantStatus: 200, wantEvent: "repo.content.update"},
		{name: "S6ConfigPrivate", header: right, body: seedBody("repo.config", "update", `, "updatedConfig": {"private": true}`), wantStatus: 200, wantEvent: "repo.config.update"},
		{name: "S7ConfigEmpty", header: right, body: seedBody("repo.config", "update", `, "updatedConfig": {}`), wantStatus: 200, wantEvent: "repo.config.update"},
		{name: "S8DiscussionPR", header: right, body: seedBody("discussion", "create", `, "discussion": {"id": "1", "num": 19, "title": "t", "isPullRequest": true, "status": "open", "author": {"id": "a"}, "changes": {"base": "refs/heads/main"}}`), wantStatus: 200, wantEvent: "discussion.create"},
		{name: "S9DiscussionUpdate", header: right, body: seedBody("discussion", "update", `, "discussion": {"id": "1", "num": 19, "title": "new", "status": "closed", "isPullRequest": false}`), wantStatus: 200, wantEvent: "discussion.update"},
		{name: "S10DiscussionDelete", header: right, body: seedBody("discussion", "delete", `, "discussion": {"id": "1", "num": 19}`), wantStatus: 200, wantEvent: "discussion.delete"},
		{name: "S11CommentCreate", header: right, body: seedBody("discussion.comment", "create", `, "discussion": {"id": "1", "num": 19}, "comment": {"id": "c", "author": {"id": "a"}, "content": "hello", "hidden": false}`), wantStatus: 200, wantEvent: "discussion.comment.create"},
		{name: "S12CommentHidden", header: right, body: seedBody("discussion.comment", "update", `, "comment": {"id": "c", "author": {"id": "a"}, "hidden": true}`), wantStatus: 200, wantEvent: "discussion.comment.update"},
		{name: "S13NarrowedScope", header: right, body: seedBody("repo.config.dois", "update", `, "updatedConfig": {}`), wantStatus: 200, wantEvent: "repo.config.dois.update"},

		// The cases the seed leaves open.
		{name: "WrongSecretInvalidJSON", header: map[string]string{"X-Webhook-Secret": "nope"}, body: `not-json{`, wantStatus: 401},
		{name: "HeaderBeatsQuery", path: "?secret=" + testSecret, header: map[string]string{"X-Webhook-Secret": "wrong"}, body: seedBody("repo", "update", ""), wantStatus: 401},
		{name: "EmptyHeaderFallsBackToQuery", path: "?secret=" + testSecret, header: map[string]string{"X-Webhook-Secret": ""}, body: seedBody("repo", "update", ""), wantStatus: 200, wantEvent: "repo.update"},
		{name: "SecretWithTrailingNewline", header: map[string]string{"X-Webhook-Secret": testSecret + "x"}, body: seedBody("repo", "update", ""), wantStatus: 401},
		{name: "NonObjectJSON", header: right, body: `[{"event": {}}]`, wantStatus: 400, wantError: "must be a JSON object"},
		{name: "WrongFieldType", header: right, body: `{"event": "repo.update", "repo": {"type": "model", "name": "x/y"}}`, wantStatus: 400, wantError: `field "event" must be an object`},
		{name: "Oversized", header: right, body: `{"pad":"` + strings.Repeat("x", 64<<10) + `"}`, wantStatus: 413, wantError: "body larger than 65536 bytes"},
		{name: "OtherContentType", header: map[string]string{"X-Webhook-Secret": testSecret, "Content-Type": "text/plain"}, body: seedBody("repo", "update", ""), wantStatus: 200, wantEvent: "repo.update"},
		{name: "DatasetPush", header: right, body: fixture(t, "dataset-main-push.json"), wantStatus: 200, wantEvent: "repo.content.update", wantRuns: 1},
		{name: "DatasetPRRef", header: right, body: fixture(t, "dataset-pr-ref.json"), wantStatus: 200, wantEvent: "repo.content.update"},
		{name: "DatasetParquetBot", header: right, body: fixture(t, "dataset-parquet-bot.json"), wantStatus: 200, wantEvent: "repo.content.update"},
		{name: "DatasetNarrowedContent", header: right, body: fixture(t, "dataset-narrowed-content.json"), wantStatus: 200, wantEvent: "repo.content.lfs.update", wantRuns: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, header, resp := b.request(t, http.MethodPost, "/webhooks/huggingface"+tc.path, tc.body, tc.header)
			require.Equal(t, tc.wantStatus, status, "body: %v", resp)
			require.Contains(t, header.Get("Content-Type"), "application/json")
			require.NotNil(t, resp, "the answer is JSON")
			if tc.wantStatus != 200 {
				require.Contains(t, resp["error"], tc.wantError)
				return
			}
			require.Equal(t, true, resp["received"])
			require.Equal(t, tc.wantEvent, resp["event"])
			require.NotEmpty(t, resp["repo"])
			require.NotZero(t, resp["delivery_id"])
			require.Len(t, resp["runs"], tc.wantRuns)
			require.NotEmpty(t, resp["decisions"])
		})
	}
}

func TestWebhookRejectedRequestsStoreNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, ticketsMapping())
	for _, tc := range []struct {
		header map[string]string
		body   string
	}{
		{nil, fixture(t, "dataset-main-push.json")},
		{map[string]string{"X-Webhook-Secret": "wrong"}, fixture(t, "dataset-main-push.json")},
		{map[string]string{"X-Webhook-Secret": testSecret}, `{"event": {"scope": "repo.content"}}`},
		{map[string]string{"X-Webhook-Secret": testSecret}, `{"pad":"` + strings.Repeat("x", 70<<10) + `"}`},
	} {
		status, _, _ := b.request(t, http.MethodPost, "/webhooks/huggingface", tc.body, tc.header)
		require.GreaterOrEqual(t, status, 400)
	}
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM deliveries`))
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM runs`))
}

func TestWebhookMultiRefAndReplay(t *testing.T) {
	t.Parallel()
	b := setup(t, ticketsMapping())
	header := map[string]string{"X-Webhook-Secret": testSecret}

	status, _, first := b.request(t, http.MethodPost, "/webhooks/huggingface", fixture(t, "dataset-multi-ref.json"), header)
	require.Equal(t, 200, status)
	require.Len(t, first["runs"], 1)
	runID := first["runs"].([]any)[0].(float64)
	decisions := first["decisions"].([]any)
	require.Len(t, decisions, 4)
	got := make([]string, len(decisions))
	for i, d := range decisions {
		m := d.(map[string]any)
		got[i] = fmt.Sprintf("%s %s %s %v", m["ref"], m["decision"], m["reason"], m["run_id"])
	}
	require.Equal(t, []string{
		fmt.Sprintf("refs/heads/main queued %%!s(<nil>) %v", runID),
		"refs/tags/v3 ignored ref refs/tags/v3 is not watched (refs: refs/heads/main) <nil>",
		"refs/heads/experiment ignored ref refs/heads/experiment is not watched (refs: refs/heads/main) <nil>",
		"refs/pr/4 ignored pull-request ref refs/pr/4 <nil>",
	}, got)

	// The Hub retries and an operator replays: identical payloads, no second run.
	for range 3 {
		status, _, again := b.request(t, http.MethodPost, "/webhooks/huggingface", fixture(t, "dataset-multi-ref.json"), header)
		require.Equal(t, 200, status)
		require.Empty(t, again["runs"])
		d := again["decisions"].([]any)[0].(map[string]any)
		require.Equal(t, "duplicate", d["decision"])
		require.Equal(t, runID, d["run_id"])
	}
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM runs`))
	require.Equal(t, 1, b.jobCount(t, river.NewJobListParams()))
	require.Equal(t, 4, b.count(t, `SELECT count(*) FROM deliveries`))
}

// TestWebhookDatabaseDown stops a real PostgreSQL server under the handler: deliveries answered 200 before the
// stop are stored, those during the outage get 503 quickly and leave nothing behind, and after the server is
// back deliveries work again without restarting anything.
func TestWebhookDatabaseDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The server runs as an unprivileged user when the tests run as root: its directory must be reachable.
	parent, err := os.MkdirTemp("", "orchestrator-web-test-*")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(parent, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	dir := filepath.Join(parent, "pg")
	cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir, NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop(context.Background()) })
	port := cluster.Port()

	poolCfg, err := pgxpool.ParseConfig(cluster.URL())
	require.NoError(t, err)
	poolCfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, migrations.Apply(ctx, pool, nil))
	b := setupWithPool(t, pool, ticketsMapping())
	header := map[string]string{"X-Webhook-Secret": testSecret}

	push := func(sha string) string {
		return `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},
			"updatedRefs":[{"ref":"refs/heads/main","newSha":"` + sha + `"}]}`
	}
	status, _, _ := b.request(t, http.MethodPost, "/webhooks/huggingface", push(strings.Repeat("a", 40)), header)
	require.Equal(t, 200, status)

	require.NoError(t, cluster.Stop(ctx))
	start := time.Now()
	status, h, resp := b.request(t, http.MethodPost, "/webhooks/huggingface", push(strings.Repeat("b", 40)), header)
	require.Equal(t, http.StatusServiceUnavailable, status, "body: %v", resp)
	require.Less(t, time.Since(start), 10*time.Second)
	require.Equal(t, "5", h.Get("Retry-After"))
	require.Contains(t, resp["error"], "database unavailable")
	status, _, _ = b.request(t, http.MethodGet, "/readyz", "", nil)
	require.Equal(t, http.StatusServiceUnavailable, status)

	cluster, err = pgcluster.Start(ctx, pgcluster.Config{Dir: dir, NoSync: true, Port: port})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop(context.Background()) })

	require.Eventually(t, func() bool {
		status, _, _ := b.request(t, http.MethodPost, "/webhooks/huggingface", push(strings.Repeat("c", 40)), header)
		return status == 200
	}, 15*time.Second, 100*time.Millisecond)

	var revisions []string
	rows, err := pool.Query(ctx, `SELECT revision FROM runs ORDER BY id`)
	require.NoError(t, err)
	for rows.Next() {
		var r string
		require.NoError(t, rows.Scan(&r))
		revisions = append(revisions, r)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{strings.Repeat("a", 40), strings.Repeat("c", 40)}, revisions, "nothing of the 503 delivery was stored")
	require.Equal(t, 2, b.count(t, `SELECT count(*) FROM deliveries`))
}

func TestHealthAndNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/healthz", "/health"} {
		status, _, resp := b.request(t, http.MethodGet, path, "", nil)
		require.Equal(t, 200, status)
		require.Equal(t, "ok", resp["status"])
	}
	status, _, resp := b.request(t, http.MethodGet, "/unknown", "", nil)
	require.Equal(t, 404, status)
	require.Equal(t, map[string]any{"error": "Not found"}, resp)

	status, _, resp = b.request(t, http.MethodGet, "/webhooks/huggingface", "", nil)
	require.Equal(t, 405, status)
	require.Equal(t, "method not allowed", resp["error"])
}

func TestWebhookResponseShape(t *testing.T) {
	t.Parallel()
	b := setup(t, ticketsMapping())
	req, err := http.NewRequest(http.MethodPost, b.server.URL+"/webhooks/huggingface", strings.NewReader(fixture(t, "dataset-main-push.json")))
	require.NoError(t, err)
	req.Header.Set("X-Webhook-Secret", testSecret)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	type decision struct {
		Mapping  string `json:"mapping"`
		Ref      string `json:"ref"`
		Revision string `json:"revision"`
		Decision string `json:"decision"`
		Reason   string `json:"reason"`
		RunID    int64  `json:"run_id"`
	}
	var body struct {
		Received   bool       `json:"received"`
		Event      string     `json:"event"`
		Repo       string     `json:"repo"`
		DeliveryID int64      `json:"delivery_id"`
		Runs       []int64    `json:"runs"`
		Decisions  []decision `json:"decisions"`
	}
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&body))
	require.True(t, body.Received)
	require.Equal(t, "repo.content.update", body.Event)
	require.Equal(t, "acme/support-tickets", body.Repo)
	require.Positive(t, body.DeliveryID)
	require.Len(t, body.Runs, 1)
	require.Equal(t, []decision{{
		Mapping: "tickets", Ref: "refs/heads/main", Revision: "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f",
		Decision: "queued", RunID: body.Runs[0],
	}}, body.Decisions)
}
