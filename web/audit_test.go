package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// TestAuditTrail: every state-changing request, through the API and the console, and every login records
// exactly one entry with its action, target, outcome, status, client and authentication; never the token.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{anyMapping()}})
	bearer := map[string]string{"Authorization": "Bearer " + adminToken}
	basic := map[string]string{"Authorization": "Basic " + basicAuth("me", adminToken)}
	runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
	b.finish(t, runID, "boom\n", orchestrator.RunFailed, 2)
	run := fmt.Sprint(runID)
	csrf := csrfFrom(t, b.getPage(t, "/runs/"+run, basic))
	api := func(method, path, body string) func(t *testing.T) int {
		return func(t *testing.T) int {
			status, _, _ := b.request(t, method, path, body, bearer)
			return status
		}
	}
	form := func(path string, values url.Values, header map[string]string) func(t *testing.T) int {
		return func(t *testing.T) int { return b.form(t, path, values, nil, header).StatusCode }
	}
	withCSRF := url.Values{"csrf_token": {csrf}}
	login := func(token string) func(t *testing.T) int {
		return func(t *testing.T) int {
			loginToken, cookies := b.loginCSRF(t, nil)
			return b.form(t, "/login", url.Values{"token": {token}, "csrf_token": {loginToken}}, cookies, nil).StatusCode
		}
	}
	mappingBody := func(notify string) string {
		return `{"name":"faces","dataset":"acme/faces","command":["true"],"notify":[` + notify + `]}`
	}

	for _, tc := range []struct {
		name string
		send func(t *testing.T) int
		want orchestrator.AuditEntry // ID, At and Client not compared; Detail is a part of the detail
	}{
		{"LoginWrongToken", login("wrong-" + adminToken),
			orchestrator.AuditEntry{Action: orchestrator.AuditLogin, Outcome: orchestrator.AuditRefused, Status: 401, Auth: orchestrator.AuditAuthNone, Detail: "Unauthorized"}},
		{"Login", login(adminToken),
			orchestrator.AuditEntry{Action: orchestrator.AuditLogin, Outcome: orchestrator.AuditOK, Status: 303, Auth: orchestrator.AuditAuthSession}},
		{"RetryAPI", api(http.MethodPost, "/api/v1/runs/"+run+"/retry", ""),
			orchestrator.AuditEntry{Action: orchestrator.AuditRunRetry, Target: run, Outcome: orchestrator.AuditOK, Status: 201, Auth: orchestrator.AuditAuthBearer, Detail: "new run "}},
		{"RetryUnknownRun", api(http.MethodPost, "/api/v1/runs/999999/retry", ""),
			orchestrator.AuditEntry{Action: orchestrator.AuditRunRetry, Target: "999999", Outcome: orchestrator.AuditRefused, Status: 404, Auth: orchestrator.AuditAuthBearer, Detail: "not found"}},
		{"RetryForm", form("/runs/"+run+"/retry", withCSRF, basic),
			orchestrator.AuditEntry{Action: orchestrator.AuditRunRetry, Target: run, Outcome: orchestrator.AuditOK, Status: 303, Auth: orchestrator.AuditAuthBasic, Detail: "new run "}},
		{"CancelAPI", api(http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/cancel", runID+1), ""),
			orchestrator.AuditEntry{Action: orchestrator.AuditRunCancel, Target: fmt.Sprint(runID + 1), Outcome: orchestrator.AuditOK, Status: 200, Auth: orchestrator.AuditAuthBearer, Detail: "run is cancelled"}},
		{"CancelFinishedForm", form("/runs/"+run+"/cancel", withCSRF, basic),
			orchestrator.AuditEntry{Action: orchestrator.AuditRunCancel, Target: run, Outcome: orchestrator.AuditRefused, Status: 409, Auth: orchestrator.AuditAuthBasic, Detail: "failed"}},
		{"RunLatestAPI", api(http.MethodPost, "/api/v1/mappings/tickets/run", ""),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingRunLatest, Target: "tickets", Outcome: orchestrator.AuditOK, Status: 201, Auth: orchestrator.AuditAuthBearer, Detail: "new run "}},
		{"RunLatestForm", form("/mappings/tickets/run", withCSRF, basic),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingRunLatest, Target: "tickets", Outcome: orchestrator.AuditOK, Status: 303, Auth: orchestrator.AuditAuthBasic, Detail: "new run "}},
		{"CreateAPI", api(http.MethodPost, "/api/v1/mappings", mappingBody(`{"url":"https://a.example/hook/SECRET"}`)),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingCreate, Target: "faces", Outcome: orchestrator.AuditOK, Status: 201, Auth: orchestrator.AuditAuthBearer}},
		{"CreateAPIExists", api(http.MethodPost, "/api/v1/mappings", mappingBody("")),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingCreate, Target: "faces", Outcome: orchestrator.AuditRefused, Status: 409, Auth: orchestrator.AuditAuthBearer, Detail: "exists already"}},
		{"UpdateAPINotifyTargets", api(http.MethodPut, "/api/v1/mappings/faces",
			mappingBody(`{"url":"https://b.example/hook/SECRET"},{"url":"https://c.example/x"}`)),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingUpdate, Target: "faces", Outcome: orchestrator.AuditOK, Status: 200, Auth: orchestrator.AuditAuthBearer,
				Detail: "notify targets added: b.example, c.example; removed: a.example"}},
		{"UpdateForm", form("/mappings/faces", url.Values{"csrf_token": {csrf}, "dataset": {"acme/faces"}, "command": {"true"}}, basic),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingUpdate, Target: "faces", Outcome: orchestrator.AuditOK, Status: 303, Auth: orchestrator.AuditAuthBasic}},
		{"UpdateFormInvalid", form("/mappings/faces", url.Values{"csrf_token": {csrf}, "dataset": {"acme/faces"}, "command": {""}}, basic),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingUpdate, Target: "faces", Outcome: orchestrator.AuditRefused, Status: 400, Auth: orchestrator.AuditAuthBasic, Detail: "command"}},
		{"CreateForm", form("/mappings", url.Values{"csrf_token": {csrf}, "name": {"cards"}, "dataset": {"acme/cards"}, "command": {"true"}}, basic),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingCreate, Target: "cards", Outcome: orchestrator.AuditOK, Status: 303, Auth: orchestrator.AuditAuthBasic}},
		{"DisableForm", form("/mappings/cards/disable", withCSRF, basic),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingDisable, Target: "cards", Outcome: orchestrator.AuditOK, Status: 303, Auth: orchestrator.AuditAuthBasic}},
		{"DisableAPI", api(http.MethodDelete, "/api/v1/mappings/faces", ""),
			orchestrator.AuditEntry{Action: orchestrator.AuditMappingDisable, Target: "faces", Outcome: orchestrator.AuditOK, Status: 200, Auth: orchestrator.AuditAuthBearer}},
	} {
		t.Run(tc.name, func(t *testing.T) { // in order: each step records after the one before
			before := b.count(t, `SELECT count(*) FROM audit_log`)
			status := tc.send(t)
			require.Equal(t, tc.want.Status, status)
			require.Equal(t, before+1, b.count(t, `SELECT count(*) FROM audit_log`), "exactly one entry")
			entries, err := b.store.AuditList(ctx, orchestrator.AuditListParams{Limit: 1})
			require.NoError(t, err)
			got := entries[0]
			require.Equal(t, "127.0.0.1", got.Client)
			require.Contains(t, got.Detail, tc.want.Detail)
			require.NotContains(t, got.Detail, adminToken)
			require.NotContains(t, got.Detail, "SECRET", "a URL's path may be a secret")
			got.ID, got.Client, got.Detail, tc.want.Detail = 0, "", "", ""
			got.At = tc.want.At
			require.Equal(t, tc.want, got)
		})
	}
	require.Zero(t, b.count(t, `SELECT count(*) FROM audit_log WHERE detail LIKE '%`+adminToken+`%' OR target LIKE '%`+adminToken+`%'`))
}

func TestAuditListAPIAndPage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken})
	for i := range 5 {
		action := orchestrator.AuditRunRetry
		if i%2 == 1 {
			action = orchestrator.AuditRunCancel
		}
		require.NoError(t, b.store.AuditRecord(ctx, orchestrator.AuditEntry{Action: action, Target: fmt.Sprint(i % 3),
			Outcome: orchestrator.AuditOK, Status: 200, Client: "192.0.2.1", Auth: orchestrator.AuditAuthBearer}))
	}
	bearer := map[string]string{"Authorization": "Bearer " + adminToken}

	t.Run("API", func(t *testing.T) {
		for _, tc := range []struct {
			query   string
			status  int
			targets []any
			next    bool
		}{
			{"", 200, []any{"1", "0", "2", "1", "0"}, false},
			{"?limit=2", 200, []any{"1", "0"}, true},
			{"?action=run.cancel", 200, []any{"0", "1"}, false},
			{"?action=run.retry&target=1", 200, []any{"1"}, false},
			{"?target=nothing", 200, []any{}, false},
			{"?action=run.delete", 400, nil, false},
			{"?before=x", 400, nil, false},
		} {
			status, _, resp := b.request(t, http.MethodGet, "/api/v1/audit"+tc.query, "", bearer)
			require.Equal(t, tc.status, status, "%s: %v", tc.query, resp)
			if status != 200 {
				require.NotEmpty(t, resp["error"], tc.query)
				continue
			}
			var targets []any
			for _, e := range resp["entries"].([]any) {
				targets = append(targets, e.(map[string]any)["target"])
			}
			require.Equal(t, tc.targets, append([]any{}, targets...), tc.query)
			_, hasNext := resp["next_before"]
			require.Equal(t, tc.next, hasNext, tc.query)
		}
		status, _, resp := b.request(t, http.MethodGet, "/api/v1/audit?limit=2", "", bearer)
		require.Equal(t, 200, status)
		status, _, older := b.request(t, http.MethodGet, fmt.Sprintf("/api/v1/audit?limit=2&before=%v", resp["next_before"]), "", bearer)
		require.Equal(t, 200, status)
		require.Equal(t, "2", older["entries"].([]any)[0].(map[string]any)["target"], "the next page goes on where the first ended")
	})

	t.Run("AdminOnly", func(t *testing.T) {
		status, _, _ := b.request(t, http.MethodGet, "/api/v1/audit", "", nil)
		require.Equal(t, http.StatusUnauthorized, status)
		p := b.getPage(t, "/audit", nil)
		require.Equal(t, http.StatusSeeOther, p.status)
		require.Equal(t, "/login?next=%2Faudit", p.header.Get("Location"))
		require.Empty(t, find(b.getPage(t, "/runs", nil).root, byID("audit-link")), "no link for those who cannot read it")
	})

	t.Run("Page", func(t *testing.T) {
		basic := map[string]string{"Authorization": "Basic " + basicAuth("me", adminToken)}
		require.Len(t, find(b.getPage(t, "/runs", basic).root, byID("audit-link")), 1)
		p := b.getPage(t, "/audit?action=run.cancel&limit=1", basic)
		require.Equal(t, http.StatusOK, p.status)
		rows := find(p.one(t, byID("audit")), byTag("tr"))
		require.Len(t, rows, 2, "a header and one entry")
		require.Contains(t, text(rows[1]), "run.cancel")
		require.Contains(t, text(rows[1]), "192.0.2.1")
		older := find(p.root, byAttr("rel", "next"))
		require.Len(t, older, 1)
		p = b.getPage(t, attr(older[0], "href"), basic)
		rows = find(p.one(t, byID("audit")), byTag("tr"))
		require.Len(t, rows, 2)
		require.Contains(t, text(rows[1]), "run.cancel")
	})
}
