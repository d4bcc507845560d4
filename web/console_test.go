package web_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"

	"github.com/retrainhq/orchestrator/orchestrator"
)

const adminToken = "admin-token-for-tests"

// pushRun posts a delivery of sha on ref for the tickets mapping and returns the new run's id.
func (b *testBundle) pushRun(t *testing.T, ref, sha string) int64 {
	t.Helper()
	body := fmt.Sprintf(`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset",
		"name":"acme/support-tickets","id":"66a1f0c2b9e4d3a1f2c3d4e5"},"updatedRefs":[{"ref":%q,"oldSha":null,"newSha":%q}]}`, ref, sha)
	status, _, resp := b.request(t, http.MethodPost, "/webhooks/huggingface", body, map[string]string{"X-Webhook-Secret": testSecret})
	require.Equal(t, 200, status, "%v", resp)
	require.Len(t, resp["runs"], 1, "%v", resp)
	return int64(resp["runs"].([]any)[0].(float64))
}

// finish plays a worker: one attempt with the given output and result.
func (b *testBundle) finish(t *testing.T, runID int64, output string, status orchestrator.RunStatus, exit int) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: runID, Attempt: 1, Argv: []string{"train"}}))
	require.NoError(t, b.store.RunLogAppend(ctx, orchestrator.RunLogAppendParams{
		RunID: runID, Attempt: 1, Seq: 1, Data: []byte(output), LogBytes: int64(len(output)),
	}))
	transition, ok := orchestrator.TransitionFor(status)
	require.True(t, ok, "no transition ends an attempt with %s", status)
	require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{
		RunID: runID, Attempt: 1, Transition: transition, ExitCode: &exit, Error: "exit code 2",
	}))
}

func anyMapping() orchestrator.Mapping {
	return orchestrator.Mapping{
		Name: "tickets", Dataset: "acme/support-tickets", Refs: []string{"refs/heads/*"}, Command: []string{"true"}, Enabled: true,
	}.WithDefaults()
}

func TestPages(t *testing.T) {
	t.Parallel()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{anyMapping()}})
	runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
	b.finish(t, runID, "epoch 1 loss 0.3\n", orchestrator.RunFailed, 2)
	queued := b.pushRun(t, "refs/heads/main", strings.Repeat("b", 40))
	// As the admin: the pages offer their buttons.
	admin := map[string]string{"Authorization": "Basic " + basicAuth("me", adminToken)}

	cases := []struct {
		path  string
		check func(t *testing.T, p *page)
	}{
		{"/", func(t *testing.T, p *page) {
			row := p.one(t, byAttr("data-mapping", "tickets"))
			latest := find(row, func(n *html.Node) bool { return attr(n, "class") == "latest" })
			require.Len(t, latest, 1)
			require.Equal(t, "queued", strings.TrimSpace(text(latest[0])), "the latest run's status, as a word")
			cells := find(row, func(n *html.Node) bool { return strings.HasPrefix(attr(n, "class"), "cell status-") })
			require.Len(t, cells, 2, "the history strip")
			require.Equal(t, "failed", text(cells[1]))
			require.Len(t, find(p.root, byAttr("data-run", fmt.Sprint(runID))), 1)
		}},
		{"/runs", func(t *testing.T, p *page) {
			rows := find(p.root, func(n *html.Node) bool { return attr(n, "data-run") != "" })
			require.Len(t, rows, 2)
			require.Equal(t, fmt.Sprint(queued), attr(rows[0], "data-run"), "newest first")
		}},
		{"/runs?status=failed", func(t *testing.T, p *page) {
			rows := find(p.root, func(n *html.Node) bool { return attr(n, "data-run") != "" })
			require.Len(t, rows, 1)
			require.Equal(t, fmt.Sprint(runID), attr(rows[0], "data-run"))
		}},
		{"/runs?limit=1", func(t *testing.T, p *page) {
			rows := find(p.root, func(n *html.Node) bool { return attr(n, "data-run") != "" })
			require.Len(t, rows, 1)
			older := p.one(t, byAttr("rel", "next"))
			require.Equal(t, fmt.Sprintf("/runs?before=%d&limit=1", queued), attr(older, "href"))
		}},
		{fmt.Sprintf("/runs/%d", runID), func(t *testing.T, p *page) {
			require.Equal(t, "epoch 1 loss 0.3\n", text(p.one(t, byID("log"))))
			require.Equal(t, "failed", text(find(p.one(t, byID("run")), byAttr("class", "status status-failed"))[0]))
			require.Len(t, find(p.root, byID("retry")), 1, "a finished run can be retried")
			require.Empty(t, find(p.root, byID("cancel")))
			link := find(p.root, byAttr("href", "https://huggingface.co/datasets/acme/support-tickets/commit/"+strings.Repeat("a", 40)))
			require.Len(t, link, 1, "the revision links to the commit on the Hub")
			require.Len(t, find(p.root, byAttr("src", "/static/run.js")), 1)
			require.Empty(t, find(p.root, func(n *html.Node) bool { return n.Data == "script" && attr(n, "src") == "" }), "no inline script")
		}},
		{fmt.Sprintf("/runs/%d", queued), func(t *testing.T, p *page) {
			require.Len(t, find(p.root, byID("cancel")), 1, "a queued run can be cancelled")
			require.Empty(t, find(p.root, byID("retry")))
		}},
		{"/deliveries", func(t *testing.T, p *page) {
			rows := find(p.root, func(n *html.Node) bool { return attr(n, "data-delivery") != "" })
			require.Len(t, rows, 2)
			require.Contains(t, text(rows[0]), "queued")
		}},
		{"/deliveries/1", func(t *testing.T, p *page) {
			require.Contains(t, p.raw, "&#34;scope&#34;: &#34;repo.content&#34;", "the raw payload, indented")
		}},
		{"/mappings/tickets", func(t *testing.T, p *page) {
			require.Len(t, find(p.root, byID("run-latest")), 1)
			require.Empty(t, find(p.root, byID("save")), "a file mapping is not edited here")
		}},
		{"/mappings/new", func(t *testing.T, p *page) {
			require.Len(t, find(p.root, byID("save")), 1)
			require.Len(t, find(p.root, byAttr("name", "csrf_token")), 1)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			p := b.getPage(t, tc.path, admin)
			require.Equal(t, http.StatusOK, p.status, p.raw)
			require.Contains(t, p.header.Get("Content-Security-Policy"), "script-src 'self'")
			require.Equal(t, "nosniff", p.header.Get("X-Content-Type-Options"))
			tc.check(t, p)
		})
	}

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/runs/999999", "/runs/abc", "/deliveries/999999", "/mappings/nope", fmt.Sprintf("/runs/%d?attempt=7", runID)} {
			p := b.getPage(t, path, nil)
			require.Equal(t, http.StatusNotFound, p.status, path)
			require.Len(t, find(p.root, byAttr("class", "error-message")), 1, path)
		}
	})
}

// TestPagesOfferLogin checks that a page offers a button that changes state only to a browser that may press it:
// logged out while an admin token is set, a link to the login form that leads back to the page stands in its
// place, and the form to register a mapping asks for the login before it is shown.
func TestPagesOfferLogin(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		token   string
		header  map[string]string
		buttons bool // the buttons are offered; otherwise the links to the login form
	}{
		{"LoggedOut", adminToken, nil, false},
		{"LoggedIn", adminToken, map[string]string{"Authorization": "Basic " + basicAuth("me", adminToken)}, true},
		{"NoTokenConfigured", "", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupWithOpts(t, setupOpts{adminToken: tc.token, mappings: []orchestrator.Mapping{anyMapping()}})
			finished := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
			b.finish(t, finished, "epoch 1\n", orchestrator.RunFailed, 2)
			queued := b.pushRun(t, "refs/heads/main", strings.Repeat("b", 40))
			_, err := b.store.MappingCreate(context.Background(), orchestrator.Mapping{
				Name: "faces", Dataset: "acme/faces", Command: []string{"true"}})
			require.NoError(t, err)

			pages := []struct {
				path    string
				buttons []string // ids of the buttons
				links   []string // ids of the links that stand in for them
			}{
				{fmt.Sprintf("/runs/%d", finished), []string{"retry"}, []string{"retry-login"}},
				{fmt.Sprintf("/runs/%d", queued), []string{"cancel"}, []string{"cancel-login"}},
				{"/mappings/faces", []string{"run-latest", "disable", "save"}, []string{"run-latest-login", "disable-login", "edit-login"}},
				{"/mappings/tickets", []string{"run-latest"}, []string{"run-latest-login"}},
			}
			for _, pg := range pages {
				p := b.getPage(t, pg.path, tc.header)
				require.Equal(t, http.StatusOK, p.status, pg.path)
				offered, missing := pg.buttons, pg.links
				if !tc.buttons {
					offered, missing = pg.links, pg.buttons
				}
				for _, id := range offered {
					require.Len(t, find(p.root, byID(id)), 1, "%s offers #%s", pg.path, id)
				}
				for _, id := range missing {
					require.Empty(t, find(p.root, byID(id)), "%s offers #%s", pg.path, id)
				}
				if tc.buttons {
					continue
				}
				require.Empty(t, find(p.root, byTag("button")), "%s offers a button to a logged-out browser", pg.path)
				// Each link leads to the login form, and the login back to the page.
				for _, id := range pg.links {
					href := attr(p.one(t, byID(id)), "href")
					require.Equal(t, "/login?next="+url.QueryEscape(pg.path), href, "#%s", id)
				}
				resp := b.login(t, adminToken, pg.path)
				require.Equal(t, pg.path, resp.Header.Get("Location"))
			}

			home := b.getPage(t, "/", tc.header)
			newMapping := home.one(t, byID("new-mapping"))
			form := b.getPage(t, "/mappings/new", tc.header)
			if !tc.buttons {
				require.Equal(t, "Log in to register a mapping", text(newMapping))
				require.Equal(t, "/login?next=%2Fmappings%2Fnew", attr(newMapping, "href"))
				require.Equal(t, http.StatusSeeOther, form.status, "the form asks for the login before it is shown")
				require.Equal(t, "/login?next=%2Fmappings%2Fnew", form.header.Get("Location"))
				return
			}
			require.Equal(t, "New mapping", text(newMapping))
			require.Equal(t, "/mappings/new", attr(newMapping, "href"))
			require.Equal(t, http.StatusOK, form.status)
			require.Len(t, find(form.root, byID("save")), 1)
			require.Equal(t, tc.token == "", len(find(form.root, byID("no-admin-token"))) == 1,
				"the form says saving needs ORCHESTRATOR_ADMIN_TOKEN exactly when none is set")
		})
	}
}

func TestPagesEscapeUserData(t *testing.T) {
	t.Parallel()
	b := setupWithOpts(t, setupOpts{mappings: []orchestrator.Mapping{anyMapping()}})
	ref := `refs/heads/"><img src=x onerror=alert(1)>`
	runID := b.pushRun(t, ref, strings.Repeat("c", 40))
	b.finish(t, runID, "<script>alert(1)</script>\n", orchestrator.RunFailed, 1)

	for _, path := range []string{"/", "/runs", fmt.Sprintf("/runs/%d", runID), "/deliveries", "/deliveries/1"} {
		p := b.getPage(t, path, nil)
		require.Equal(t, http.StatusOK, p.status, path)
		require.NotContains(t, p.raw, "<img src=x", path)
		require.NotContains(t, p.raw, "<script>alert", path)
		require.Empty(t, find(p.root, byTag("img")), path)
		for _, s := range find(p.root, byTag("script")) {
			require.Contains(t, []string{"/static/run.js", "/static/copy.js"}, attr(s, "src"), path)
		}
	}
	p := b.getPage(t, fmt.Sprintf("/runs/%d", runID), nil)
	require.Equal(t, "<script>alert(1)</script>\n", text(p.one(t, byID("log"))), "the log is shown as text")
	require.Contains(t, text(p.root), ref, "the ref is shown as text")
}

// form posts a browser form, without following redirects.
func (b *testBundle) form(t *testing.T, path string, values url.Values, cookies []*http.Cookie, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.server.URL+path, strings.NewReader(values.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := noRedirect.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// login logs in through the form as a browser does: it loads the form, for its CSRF token and the cookie that
// token is bound to, and posts token with them.
func (b *testBundle) login(t *testing.T, token, next string, header ...map[string]string) *http.Response {
	t.Helper()
	var h map[string]string
	if len(header) > 0 {
		h = header[0]
	}
	p := b.getPage(t, "/login?next="+url.QueryEscape(next), h)
	require.Equal(t, http.StatusOK, p.status, p.raw)
	return b.form(t, "/login", url.Values{"token": {token}, "next": {next}, "csrf_token": {csrfFrom(t, p)}}, p.cookies(), h)
}

// loginCSRF loads the login form with header, as a browser does, and returns its CSRF token and the cookies the
// token is bound to.
func (b *testBundle) loginCSRF(t *testing.T, header map[string]string) (string, []*http.Cookie) {
	t.Helper()
	p := b.getPage(t, "/login", header)
	require.Equal(t, http.StatusOK, p.status, p.raw)
	return csrfFrom(t, p), p.cookies()
}

// cookieHeader returns cookies as the value of a Cookie header.
func cookieHeader(cookies []*http.Cookie) string {
	parts := make([]string, len(cookies))
	for i, c := range cookies {
		parts[i] = c.Name + "=" + c.Value
	}
	return strings.Join(parts, "; ")
}

// csrfFrom reads the CSRF token from a page's form.
func csrfFrom(t *testing.T, p *page) string {
	t.Helper()
	fields := find(p.root, byAttr("name", "csrf_token"))
	require.NotEmpty(t, fields, p.raw)
	return attr(fields[0], "value")
}

func TestAdminAccess(t *testing.T) {
	t.Parallel()

	t.Run("NoTokenConfigured", func(t *testing.T) {
		t.Parallel()
		b := setupWithOpts(t, setupOpts{mappings: []orchestrator.Mapping{anyMapping()}})
		runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
		status, _, resp := b.request(t, http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/cancel", runID), "", map[string]string{"Authorization": "Bearer anything"})
		require.Equal(t, http.StatusForbidden, status)
		require.Contains(t, resp["error"], "set ORCHESTRATOR_ADMIN_TOKEN")
		status, _, _ = b.request(t, http.MethodGet, "/api/v1/runs", "", nil)
		require.Equal(t, http.StatusOK, status, "reads stay open")
	})

	t.Run("BearerForTheAPI", func(t *testing.T) {
		t.Parallel()
		b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{anyMapping()}})
		runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
		path := fmt.Sprintf("/api/v1/runs/%d/cancel", runID)
		for _, h := range []map[string]string{nil, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + adminToken + "x"}} {
			status, header, resp := b.request(t, http.MethodPost, path, "", h)
			require.Equal(t, http.StatusUnauthorized, status)
			require.Contains(t, header.Get("WWW-Authenticate"), "Bearer")
			require.Contains(t, resp["error"], "admin token")
		}
		status, _, resp := b.request(t, http.MethodPost, path, "", map[string]string{"Authorization": "Bearer " + adminToken})
		require.Equal(t, http.StatusOK, status, "no CSRF token needed with a Bearer token: %v", resp)
		require.Equal(t, "cancelled", resp["run"].(map[string]any)["status"])
	})

	t.Run("BrowserLoginAndCSRF", func(t *testing.T) {
		t.Parallel()
		b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{anyMapping()}})
		runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
		runPage := fmt.Sprintf("/runs/%d", runID)
		action := runPage + "/cancel"

		// Without credentials, a form post leads to the login form, and back to the page afterwards.
		resp := b.form(t, action, url.Values{}, nil, map[string]string{"Referer": b.server.URL + runPage})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/login?next="+url.QueryEscape(runPage), resp.Header.Get("Location"))

		resp = b.login(t, "wrong", runPage)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		require.Empty(t, resp.Cookies())

		resp = b.login(t, adminToken, runPage)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, runPage, resp.Header.Get("Location"))
		cookies := resp.Cookies()
		require.Len(t, cookies, 1)
		require.True(t, cookies[0].HttpOnly)
		require.Equal(t, http.SameSiteLaxMode, cookies[0].SameSite)

		// The session alone is not enough: a form needs the page's CSRF token.
		resp = b.form(t, action, url.Values{}, cookies, nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		resp = b.form(t, action, url.Values{"csrf_token": {"forged"}}, cookies, nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode)

		p := b.getPage(t, runPage, nil, cookies...)
		require.Len(t, find(p.root, byAttr("action", "/logout")), 1, "logged in")
		resp = b.form(t, action, url.Values{"csrf_token": {csrfFrom(t, p)}}, cookies, nil)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, runPage, resp.Header.Get("Location"))
		run, err := b.store.RunGetByID(context.Background(), runID)
		require.NoError(t, err)
		require.Equal(t, orchestrator.RunCancelled, run.Status)

		// Open redirects are refused.
		for _, next := range []string{"//evil.example/x", "https://evil.example/", "/\\evil.example"} {
			resp = b.login(t, adminToken, next)
			require.Equal(t, "/", resp.Header.Get("Location"), next)
		}
	})

	t.Run("BasicAuthNeedsCSRF", func(t *testing.T) {
		t.Parallel()
		b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{anyMapping()}})
		runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
		basic := map[string]string{"Authorization": "Basic " + basicAuth("anyone", adminToken)}
		resp := b.form(t, fmt.Sprintf("/runs/%d/cancel", runID), url.Values{}, nil, basic)
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		p := b.getPage(t, fmt.Sprintf("/runs/%d", runID), basic)
		resp = b.form(t, fmt.Sprintf("/runs/%d/cancel", runID), url.Values{"csrf_token": {csrfFrom(t, p)}}, nil, basic)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	})

	t.Run("ProtectReads", func(t *testing.T) {
		t.Parallel()
		b := setupWithOpts(t, setupOpts{adminToken: adminToken, protectReads: true, mappings: []orchestrator.Mapping{anyMapping()}})
		b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40)) // the webhook has its own secret
		p := b.getPage(t, "/runs", nil)
		require.Equal(t, http.StatusSeeOther, p.status)
		require.Equal(t, "/login?next=%2Fruns", p.header.Get("Location"))
		status, _, _ := b.request(t, http.MethodGet, "/api/v1/runs", "", nil)
		require.Equal(t, http.StatusUnauthorized, status)
		status, _, resp := b.request(t, http.MethodGet, "/api/v1/runs", "", map[string]string{"Authorization": "Bearer " + adminToken})
		require.Equal(t, http.StatusOK, status)
		require.Len(t, resp["runs"], 1)
		for _, open := range []string{"/healthz", "/readyz", "/login", "/static/style.css"} {
			status, _, _ := b.request(t, http.MethodGet, open, "", nil)
			require.Equal(t, http.StatusOK, status, open)
		}
	})
}

func basicAuth(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func TestRunActionsAPI(t *testing.T) {
	t.Parallel()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{anyMapping()}})
	auth := map[string]string{"Authorization": "Bearer " + adminToken}

	status, _, resp := b.request(t, http.MethodPost, "/api/v1/mappings/tickets/run", "", auth)
	require.Equal(t, http.StatusConflict, status)
	require.Contains(t, resp["error"], "no revision recorded yet")

	runID := b.pushRun(t, "refs/heads/main", strings.Repeat("a", 40))
	status, _, resp = b.request(t, http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/retry", runID), "", auth)
	require.Equal(t, http.StatusConflict, status, "a queued run is not retried")
	require.Contains(t, resp["error"], "only a finished run can be retried")

	b.finish(t, runID, "boom\n", orchestrator.RunFailed, 2)
	for range 2 { // the webhook's deduplication does not stop deliberate re-runs
		status, header, resp := b.request(t, http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/retry", runID), "", auth)
		require.Equal(t, http.StatusCreated, status, "%v", resp)
		retry := resp["run"].(map[string]any)
		require.Equal(t, "manual", retry["trigger"])
		require.Equal(t, float64(runID), retry["retry_of"])
		require.Equal(t, strings.Repeat("a", 40), retry["revision"])
		require.Equal(t, "queued", retry["status"])
		require.NotNil(t, retry["job_id"])
		require.Equal(t, fmt.Sprintf("/api/v1/runs/%v", retry["id"]), header.Get("Location"))
	}

	b.pushRun(t, "refs/heads/dev", strings.Repeat("d", 40))
	status, _, resp = b.request(t, http.MethodPost, "/api/v1/mappings/tickets/run", "", auth)
	require.Equal(t, http.StatusCreated, status, "%v", resp)
	latest := resp["run"].(map[string]any)
	require.Equal(t, strings.Repeat("d", 40), latest["revision"], "the newest recorded revision")
	require.Equal(t, "refs/heads/dev", latest["ref"])
	require.Nil(t, latest["retry_of"])

	id := int64(latest["id"].(float64))
	status, _, resp = b.request(t, http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/cancel", id), "", auth)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "cancelled", resp["run"].(map[string]any)["status"])
	job, err := b.river.JobGet(context.Background(), int64(resp["run"].(map[string]any)["job_id"].(float64)))
	require.NoError(t, err)
	require.Equal(t, rivertype.JobStateCancelled, job.State)
	status, _, resp = b.request(t, http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/cancel", id), "", auth)
	require.Equal(t, http.StatusConflict, status)
	require.Contains(t, resp["error"], "already cancelled")

	status, _, _ = b.request(t, http.MethodPost, "/api/v1/runs/999999/retry", "", auth)
	require.Equal(t, http.StatusNotFound, status)
}

func TestMappingsAPI(t *testing.T) {
	t.Parallel()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken, mappings: []orchestrator.Mapping{anyMapping()}})
	auth := map[string]string{"Authorization": "Bearer " + adminToken}
	body := `{"name":"faces","dataset":"acme/faces","refs":["refs/heads/main","refs/tags/v*"],
		"command":["python","train.py","--revision","${DATASET_REVISION}"],"env":{"WANDB_MODE":"offline"},"timeout":"90m","max_attempts":3,
		"paths":["data/**","**/*.parquet"],"ignore_paths":["README.md"]}`

	status, header, resp := b.request(t, http.MethodPost, "/api/v1/mappings", body, auth)
	require.Equal(t, http.StatusCreated, status, "%v", resp)
	require.Equal(t, "/api/v1/mappings/faces", header.Get("Location"))
	m := resp["mapping"].(map[string]any)
	require.Equal(t, "1h30m0s", m["timeout"])
	require.Equal(t, []any{"data/**", "**/*.parquet"}, m["paths"])
	require.Equal(t, []any{"README.md"}, m["ignore_paths"])
	require.Equal(t, "api", m["source"])
	require.Equal(t, true, m["enabled"])

	status, _, resp = b.request(t, http.MethodPost, "/api/v1/mappings", body, auth)
	require.Equal(t, http.StatusConflict, status)
	require.Contains(t, resp["error"], `mapping "faces" exists already`)

	invalid := []struct{ body, want string }{
		{`{"name":"x","dataset":"a/b","command":[]}`, "command must be a non-empty list"},
		{`{"name":"x","dataset":"a/b","command":["t"],"timeout":"soon"}`, `timeout "soon" is not a duration`},
		{`{"name":"x","dataset":"a/b","command":["t"],"refs":["main"]}`, `ref "main" must start with refs/`},
		{`{"name":"x y","dataset":"a/b","command":["t"]}`, `name "x y" must be`},
		{`{"name":"x","dataset":"a/b","command":["t"],"ignore_paths":["["]}`, `mapping "x": ignore_paths[0] "[": syntax error in pattern`},
		{`{"name":"x","dataset":"a/b","command":["t"],"paths":["data/**",""]}`, `mapping "x": paths[1] "": must not be empty`},
		{`{"name":"x","dataset":"a/b","command":["t"],"paths":"data/**"}`, `field "paths" has the wrong type`},
		{`{"name":"x","dataset":"a/b","comand":["t"]}`, `unknown field "comand"`},
		{`{"name":"x","dataset":"a/b","command":"python train.py"}`, `field "command" has the wrong type`},
		{`not json`, "invalid JSON body"},
		{``, "empty body"},
	}
	for _, tc := range invalid {
		status, _, resp := b.request(t, http.MethodPost, "/api/v1/mappings", tc.body, auth)
		require.Equal(t, http.StatusBadRequest, status, tc.body)
		require.Contains(t, resp["error"], tc.want, tc.body)
	}

	status, _, resp = b.request(t, http.MethodPut, "/api/v1/mappings/faces",
		`{"dataset":"acme/faces-v2","command":["python","train.py"]}`, auth)
	require.Equal(t, http.StatusOK, status, "%v", resp)
	m = resp["mapping"].(map[string]any)
	require.Equal(t, "acme/faces-v2", m["dataset"])
	require.Equal(t, []any{"refs/heads/main"}, m["refs"], "a PUT replaces: omitted settings take their defaults")
	require.Equal(t, []any{}, m["paths"], "no paths are an empty list")
	require.Equal(t, []any{}, m["ignore_paths"])

	status, _, resp = b.request(t, http.MethodPut, "/api/v1/mappings/tickets", `{"dataset":"x/y","command":["t"]}`, auth)
	require.Equal(t, http.StatusConflict, status)
	require.Contains(t, resp["error"], "declared in the configuration file")
	status, _, _ = b.request(t, http.MethodDelete, "/api/v1/mappings/tickets", "", auth)
	require.Equal(t, http.StatusConflict, status)

	status, _, resp = b.request(t, http.MethodDelete, "/api/v1/mappings/faces", "", auth)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, false, resp["mapping"].(map[string]any)["enabled"])

	status, _, resp = b.request(t, http.MethodGet, "/api/v1/mappings/faces", "", nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, false, resp["mapping"].(map[string]any)["enabled"])
	status, _, _ = b.request(t, http.MethodGet, "/api/v1/mappings/nope", "", nil)
	require.Equal(t, http.StatusNotFound, status)
	status, _, _ = b.request(t, http.MethodPost, "/api/v1/mappings", body, nil)
	require.Equal(t, http.StatusUnauthorized, status)

	status, _, resp = b.request(t, http.MethodGet, "/api/v1/mappings", "", nil)
	require.Equal(t, http.StatusOK, status)
	var names []string
	for _, m := range resp["mappings"].([]any) {
		names = append(names, m.(map[string]any)["name"].(string))
	}
	require.Equal(t, []string{"faces", "tickets"}, names)
}

func TestMappingForm(t *testing.T) {
	t.Parallel()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken})
	auth := map[string]string{"Authorization": "Basic " + basicAuth("me", adminToken)}
	csrf := csrfFrom(t, b.getPage(t, "/mappings/new", auth))

	resp := b.form(t, "/mappings", url.Values{"csrf_token": {csrf}, "name": {"faces"}, "dataset": {"acme/faces"},
		"refs": {"refs/heads/main\nrefs/tags/*"}, "command": {"sh\n-c\necho \"training $1\"\nsh\n${DATASET_REVISION}"},
		"env": {"WANDB_MODE=offline"}, "timeout": {"45m"}, "max_attempts": {"1"},
		"paths": {"data/**\r\n  **/*.parquet  \n\n"}, "ignore_paths": {"README.md"}}, nil, auth)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/mappings/faces", resp.Header.Get("Location"))
	m, err := b.store.MappingGetByName(context.Background(), "faces")
	require.NoError(t, err)
	require.Equal(t, []string{"sh", "-c", `echo "training $1"`, "sh", "${DATASET_REVISION}"}, m.Command, "one argument per line, spaces kept")
	require.Equal(t, []string{"refs/heads/main", "refs/tags/*"}, m.Refs)
	require.Equal(t, map[string]string{"WANDB_MODE": "offline"}, m.Env)
	require.Equal(t, orchestrator.PathFilter{Paths: []string{"data/**", "**/*.parquet"}, IgnorePaths: []string{"README.md"}}, m.PathFilter(),
		"one pattern per line, spaces around it and empty lines dropped")

	// A bad form comes back with the problem and what was typed.
	resp2 := b.form(t, "/mappings", url.Values{"csrf_token": {csrf}, "name": {"bad"}, "dataset": {"acme/x"}, "command": {""}}, nil, auth)
	require.Equal(t, http.StatusBadRequest, resp2.StatusCode)

	// A bad pattern is named with its mapping, and the form keeps what was typed.
	bad := b.postPage(t, "/mappings", url.Values{"csrf_token": {csrf}, "name": {"cards"}, "dataset": {"acme/x"}, "command": {"true"},
		"paths": {"data/**\ndata/["}}, auth)
	require.Equal(t, http.StatusBadRequest, bad.status)
	require.Equal(t, `mapping "cards": paths[1] "data/[": syntax error in pattern`, text(bad.one(t, byID("form-error"))))
	require.Equal(t, "data/**\ndata/[", text(bad.one(t, byAttr("name", "paths"))))

	p := b.getPage(t, "/mappings/faces", auth)
	require.Len(t, find(p.root, byID("save")), 1, "an API mapping is edited here")
	require.Equal(t, "data/** **/*.parquet", strings.TrimSpace(text(p.one(t, byID("paths")))))
	require.Equal(t, "README.md", strings.TrimSpace(text(p.one(t, byID("ignore-paths")))))
	require.Equal(t, "data/**\n**/*.parquet", text(p.one(t, byAttr("name", "paths"))), "the edit form shows one pattern per line")
	resp = b.form(t, "/mappings/faces", url.Values{"csrf_token": {csrfFrom(t, p)}, "dataset": {"acme/faces2"}, "command": {"true"}}, nil, auth)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	m, err = b.store.MappingGetByName(context.Background(), "faces")
	require.NoError(t, err)
	require.Equal(t, "acme/faces2", m.Dataset)
	require.True(t, m.PathFilter().Empty(), "emptied fields remove the patterns")
	p = b.getPage(t, "/mappings/faces", auth)
	require.Equal(t, "every file", text(p.one(t, byID("paths"))))
	require.Equal(t, "none", text(p.one(t, byID("ignore-paths"))))

	resp = b.form(t, "/mappings/faces/disable", url.Values{"csrf_token": {csrf}}, nil, auth)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	m, err = b.store.MappingGetByName(context.Background(), "faces")
	require.NoError(t, err)
	require.False(t, m.Enabled)
}
