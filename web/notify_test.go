package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"

	"github.com/retrainhq/orchestrator/orchestrator"
)

const slackHook = "https://hooks.slack.com/services/T0AAA/B0BBB/xoxsecretpath"

func notifyingMapping() orchestrator.Mapping {
	m := anyMapping()
	m.Notify = []orchestrator.NotifyTarget{
		{URL: slackHook, Format: orchestrator.NotifyFormatSlack},
		{URL: "https://ops.example.com/hooks/orchestrator?key=abc", SecretEnv: "NOTIFY_SECRET_OPS",
			On: []orchestrator.NotifyEvent{orchestrator.NotifyFailed}},
	}
	return m.WithDefaults()
}

// rawGet returns the body of a GET, for checks on what it must never contain.
func (b *testBundle) rawGet(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(b.server.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(data)
}

func TestNotificationsShown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{notifyingMapping()}})
	runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
	b.finish(t, runID, "loss nan\n", orchestrator.RunFailed, 2)
	list, err := b.store.NotificationList(ctx, runID)
	require.NoError(t, err)
	require.Len(t, list, 2)
	code := 500
	require.NoError(t, b.store.NotificationAttemptRecord(ctx, orchestrator.NotificationAttemptParams{
		NotificationID: list[0].ID, Attempt: 1, StartedAt: time.Now(), Duration: 42 * time.Millisecond,
		StatusCode: &code, Error: "https://hooks.slack.com/… answered 500 Internal Server Error", State: orchestrator.NotificationPending,
	}))

	t.Run("RunAPI", func(t *testing.T) {
		t.Parallel()
		raw := b.rawGet(t, fmt.Sprintf("/api/v1/runs/%d", runID))
		require.NotContains(t, raw, "xoxsecretpath")
		require.NotContains(t, raw, "key=abc")
		status, _, resp := b.request(t, http.MethodGet, fmt.Sprintf("/api/v1/runs/%d", runID), "", nil)
		require.Equal(t, http.StatusOK, status)
		notifications := resp["notifications"].([]any)
		require.Len(t, notifications, 2)
		first := notifications[0].(map[string]any)
		require.Equal(t, "https://hooks.slack.com/…", first["target"])
		require.Equal(t, "failed", first["event"])
		require.Equal(t, "slack", first["format"])
		require.Equal(t, "pending", first["state"])
		require.NotContains(t, first, "url")
		history := first["history"].([]any)
		require.Len(t, history, 1)
		require.Equal(t, float64(500), history[0].(map[string]any)["status_code"])
		require.Equal(t, float64(42), history[0].(map[string]any)["duration_ms"])
		second := notifications[1].(map[string]any)
		require.Equal(t, "https://ops.example.com/…", second["target"])
		require.Equal(t, "NOTIFY_SECRET_OPS", second["secret_env"])
		require.Empty(t, second["history"])
	})

	t.Run("RunPage", func(t *testing.T) {
		t.Parallel()
		p := b.getPage(t, fmt.Sprintf("/runs/%d", runID), nil)
		require.Equal(t, http.StatusOK, p.status)
		require.NotContains(t, p.raw, "xoxsecretpath")
		rows := find(p.one(t, byID("notifications")), func(n *html.Node) bool { return attr(n, "data-notification") != "" })
		require.Len(t, rows, 2)
		require.Contains(t, text(rows[0]), "https://hooks.slack.com/…")
		require.Contains(t, text(rows[0]), "HTTP 500")
		require.Contains(t, text(rows[0]), "42 ms")
		require.Contains(t, text(rows[1]), "none yet")
	})

	t.Run("MappingPageAndAPI", func(t *testing.T) {
		t.Parallel()
		p := b.getPage(t, "/mappings/tickets", nil)
		require.Equal(t, http.StatusOK, p.status)
		require.NotContains(t, p.raw, "xoxsecretpath")
		notify := text(p.one(t, byID("notify")))
		require.Contains(t, notify, "https://hooks.slack.com/… slack on failed, recovered")
		require.Contains(t, notify, "https://ops.example.com/… json on failed, signed with $NOTIFY_SECRET_OPS")
		raw := b.rawGet(t, "/api/v1/mappings/tickets")
		require.NotContains(t, raw, "xoxsecretpath")
		require.Contains(t, raw, `"url":"https://hooks.slack.com/…"`)
	})
}

func TestMappingsAPINotify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken})
	auth := map[string]string{"Authorization": "Bearer " + adminToken}

	status, _, resp := b.request(t, http.MethodPost, "/api/v1/mappings", `{"name":"faces","dataset":"acme/faces","command":["true"],
		"notify":[{"url":"`+slackHook+`","format":"slack","on":["failed","succeeded"]},{"url":"http://ops.internal:8080/hook","secret_env":"OPS_SECRET"}]}`, auth)
	require.Equal(t, http.StatusCreated, status, "%v", resp)
	shown := resp["mapping"].(map[string]any)["notify"].([]any)
	require.Equal(t, map[string]any{"url": "https://hooks.slack.com/…", "format": "slack", "on": []any{"failed", "succeeded"}}, shown[0])
	require.Equal(t, map[string]any{"url": "http://ops.internal:8080/…", "format": "json", "on": []any{"failed", "recovered"},
		"secret_env": "OPS_SECRET"}, shown[1])
	m, err := b.store.MappingGetByName(ctx, "faces")
	require.NoError(t, err)
	require.Equal(t, slackHook, m.Notify[0].URL, "the store keeps the whole URL")

	invalid := []struct{ notify, want string }{
		{`[{"url":"hooks.example.com/x"}]`, "notify[0]: url must be an absolute http or https URL"},
		{`[{"url":"https://example.com","format":"teams"}]`, `notify[0]: format "teams" must be json or slack`},
		{`[{"url":"https://example.com","on":["finished"]}]`, `notify[0]: event "finished" in on must be failed, succeeded or recovered`},
		{`[{"url":"https://example.com","secret":"x"}]`, `unknown field "secret"`},
		{`[{"url":"https://example.com","secret_env":"my-secret"}]`, `secret_env "my-secret" must be the name of an environment variable`},
		{`{"url":"https://example.com"}`, `field "notify" has the wrong type`},
	}
	for _, tc := range invalid {
		status, _, resp := b.request(t, http.MethodPut, "/api/v1/mappings/faces",
			`{"dataset":"acme/faces","command":["true"],"notify":`+tc.notify+`}`, auth)
		require.Equal(t, http.StatusBadRequest, status, tc.notify)
		require.Contains(t, resp["error"], tc.want, tc.notify)
	}

	// A form post without the notify rows keeps the targets as they are.
	basic := map[string]string{"Authorization": "Basic " + basicAuth("me", adminToken)}
	p := b.getPage(t, "/mappings/faces", basic)
	resp2 := b.form(t, "/mappings/faces", url.Values{"csrf_token": {csrfFrom(t, p)}, "dataset": {"acme/faces2"}, "command": {"true"}}, nil, basic)
	require.Equal(t, http.StatusSeeOther, resp2.StatusCode)
	m2, err := b.store.MappingGetByName(ctx, "faces")
	require.NoError(t, err)
	require.Equal(t, "acme/faces2", m2.Dataset)
	require.Equal(t, m.Notify, m2.Notify)

	// A PUT without notify removes them.
	status, _, resp = b.request(t, http.MethodPut, "/api/v1/mappings/faces", `{"dataset":"acme/faces","command":["true"]}`, auth)
	require.Equal(t, http.StatusOK, status, "%v", resp)
	require.Empty(t, resp["mapping"].(map[string]any)["notify"])
}

// TestMappingsAPIShortenedURLs checks that a target URL sent back as the API shows it keeps the full URL it
// stands for, and that one that stands for no URL, or for several, is refused and never stored.
func TestMappingsAPIShortenedURLs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken})
	auth := map[string]string{"Authorization": "Bearer " + adminToken}
	const (
		ops    = "https://ops.example.com/hooks/orchestrator?key=abc"
		slack2 = "https://hooks.slack.com/services/T0AAA/B0CCC/otherpath"
		newURL = "https://hooks.slack.com/services/T0AAA/B0DDD/newpath"
	)
	targetsJSON := func(urls ...string) string {
		var parts []string
		for _, u := range urls {
			parts = append(parts, fmt.Sprintf(`{"url":%q}`, u))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}

	cases := []struct {
		name     string
		existing []string // the full URLs the mapping is created with
		notify   string   // the notify sent; "" sends back what GET shows
		create   bool     // POST a new mapping instead of a PUT
		status   int
		want     []string // the URLs stored afterwards
		wantErr  string
	}{
		{name: "GetThenPut", existing: []string{slackHook, ops}, status: http.StatusOK, want: []string{slackHook, ops}},
		{name: "ShownFormsKeepURLs", existing: []string{slackHook, ops},
			notify: targetsJSON("https://hooks.slack.com/…", "https://ops.example.com/…"), status: http.StatusOK, want: []string{slackHook, ops}},
		{name: "Reordered", existing: []string{slackHook, ops},
			notify: targetsJSON("https://ops.example.com/…", " https://hooks.slack.com/… "), status: http.StatusOK, want: []string{ops, slackHook}},
		{name: "OneRemovedOneAdded", existing: []string{slackHook, ops},
			notify: targetsJSON("https://ops.example.com/…", newURL), status: http.StatusOK, want: []string{ops, newURL}},
		{name: "SameHostFullURLs", existing: []string{slackHook, slack2},
			notify: targetsJSON(slack2, slackHook), status: http.StatusOK, want: []string{slack2, slackHook}},
		{name: "UnknownHost", existing: []string{slackHook, ops}, notify: targetsJSON("https://hooks.slack.com/…", "https://hooks.example.com/…"),
			status: http.StatusBadRequest, want: []string{slackHook, ops},
			wantErr: `notify[1]: url "https://hooks.example.com/…" is a shortened URL, as shown for a target, and no target of the mapping has it: send the full URL`},
		{name: "OtherScheme", existing: []string{slackHook}, notify: targetsJSON("http://hooks.slack.com/…"),
			status: http.StatusBadRequest, want: []string{slackHook}, wantErr: "send the full URL"},
		{name: "EllipsisInPath", existing: []string{slackHook}, notify: targetsJSON("https://hooks.slack.com/services/…"),
			status: http.StatusBadRequest, want: []string{slackHook}, wantErr: "no target of the mapping has it: send the full URL"},
		{name: "Ambiguous", existing: []string{slackHook, slack2},
			status: http.StatusBadRequest, want: []string{slackHook, slack2},
			wantErr: `notify[0]: url "https://hooks.slack.com/…" is the shortened form of 2 different target URLs of the mapping: send the full URL`},
		{name: "NoTargets", existing: nil, notify: targetsJSON("https://hooks.slack.com/…"),
			status: http.StatusBadRequest, want: []string{}, wantErr: "no target of the mapping has it"},
		{name: "Create", create: true, notify: targetsJSON("https://hooks.slack.com/…"),
			status: http.StatusBadRequest, wantErr: "notify[0]: url \"https://hooks.slack.com/…\" is a shortened URL"},
	}
	t.Run("Cases", func(t *testing.T) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				name := fmt.Sprintf("shortened-%d", i)
				if !tc.create {
					status, _, resp := b.request(t, http.MethodPost, "/api/v1/mappings",
						fmt.Sprintf(`{"name":%q,"dataset":"acme/faces","command":["true"],"notify":%s}`, name, targetsJSON(tc.existing...)), auth)
					require.Equal(t, http.StatusCreated, status, "%v", resp)
				}
				notify := tc.notify
				if notify == "" {
					raw := b.rawGet(t, "/api/v1/mappings/"+name)
					var got struct {
						Mapping struct {
							Notify json.RawMessage `json:"notify"`
						} `json:"mapping"`
					}
					require.NoError(t, json.Unmarshal([]byte(raw), &got))
					notify = string(got.Mapping.Notify)
					require.Contains(t, notify, "https://hooks.slack.com/…")
				}
				method, path := http.MethodPut, "/api/v1/mappings/"+name
				if tc.create {
					method, path = http.MethodPost, "/api/v1/mappings"
				}
				status, _, resp := b.request(t, method, path,
					fmt.Sprintf(`{"name":%q,"dataset":"acme/faces2","command":["true"],"notify":%s}`, name, notify), auth)
				require.Equal(t, tc.status, status, "%v", resp)
				if tc.wantErr != "" {
					require.Contains(t, resp["error"], tc.wantErr)
				}

				m, err := b.store.MappingGetByName(ctx, name)
				if tc.create {
					require.Equal(t, orchestrator.CodeNotFound, orchestrator.ErrorCode(err))
					return
				}
				require.NoError(t, err)
				urls := []string{}
				for _, target := range m.Notify {
					urls = append(urls, target.URL)
				}
				require.Equal(t, tc.want, urls)
				if tc.status == http.StatusOK {
					require.Equal(t, "acme/faces2", m.Dataset)
				} else {
					require.Equal(t, "acme/faces", m.Dataset, "a refused update changes nothing")
				}
			})
		}
	})
	// Every case is done: no shortened URL was stored by any of them.
	require.Zero(t, b.count(t, `SELECT count(*) FROM mappings WHERE notify::text LIKE '%…%'`))
}
