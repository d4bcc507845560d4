package web_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/jobs/jobstest"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/web"
)

const throttleToken = "admin-token-for-the-throttle-test-0123456789"

// setupBehindProxy serves the web handler with the test's own address as a trusted proxy, so that each
// request can name its client with X-Forwarded-For.
func setupBehindProxy(t *testing.T, publicURL string) *testBundle {
	t.Helper()
	pool, _ := dbtest.NewMigratedPool(t)
	store := orchestrator.NewStore(pool)
	client := jobstest.NewClient(t, pool, store, jobs.ClientConfig{Logger: quietLogger})
	_, err := store.MappingSync(context.Background(), []orchestrator.Mapping{ticketsMapping()})
	require.NoError(t, err)
	srv, err := web.New(web.Config{Store: store, WebhookSecret: testSecret, AdminToken: throttleToken, PublicURL: publicURL,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Logger:         quietLogger})
	require.NoError(t, err)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &testBundle{pool: pool, store: store, river: client, server: ts}
}

// TestAdminGuessingThrottled: after five wrong tokens a client gets 429 with Retry-After, JSON for the API and
// a page for a browser, whatever it sends; another client is not held back; the webhook never is.
func TestAdminGuessingThrottled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		wrong func(client string, login loginForm) (string, string, string, map[string]string) // method, path, body, header
		html  bool
	}{
		{name: "bearer", wrong: func(client string, _ loginForm) (string, string, string, map[string]string) {
			return "POST", "/api/v1/runs/1/retry", "", map[string]string{"Authorization": "Bearer wrong", "X-Forwarded-For": client}
		}},
		{name: "basic", wrong: func(client string, _ loginForm) (string, string, string, map[string]string) {
			return "POST", "/api/v1/runs/1/cancel", "", map[string]string{"Authorization": "Basic " +
				"YWRtaW46d3Jvbmc=", "X-Forwarded-For": client}
		}},
		{name: "login form", html: true, wrong: func(client string, login loginForm) (string, string, string, map[string]string) {
			return "POST", "/login", url.Values{"token": {"wrong"}, "next": {"/"}, "csrf_token": {login.token}}.Encode(), map[string]string{
				"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html", "X-Forwarded-For": client,
				"Cookie": login.cookie}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupBehindProxy(t, "")
			const attacker, bystander = "198.51.100.66", "198.51.100.7"
			// The login form's CSRF token, as the attacker's browser got it: refused logins are not guesses.
			token, cookies := b.loginCSRF(t, map[string]string{"X-Forwarded-For": attacker})
			login := loginForm{token: token, cookie: cookieHeader(cookies)}
			wrong := func() (int, http.Header, []byte) {
				method, path, body, header := tt.wrong(attacker, login)
				return b.rawRequest(t, method, path, body, header)
			}
			for i := range 5 {
				status, _, _ := wrong()
				require.Equal(t, http.StatusUnauthorized, status, "wrong token %d", i+1)
			}
			status, header, body := wrong()
			require.Equal(t, http.StatusTooManyRequests, status)
			require.Equal(t, "1", header.Get("Retry-After"))
			require.Contains(t, string(body), "too many wrong admin tokens")
			if tt.html {
				require.Contains(t, header.Get("Content-Type"), "text/html")
			} else {
				require.Contains(t, header.Get("Content-Type"), "application/json")
			}
			// Even the right token waits: otherwise the guessing would go on.
			status, _, _ = b.rawRequest(t, "GET", "/api/v1/runs", "", map[string]string{
				"Authorization": "Bearer " + throttleToken, "X-Forwarded-For": attacker})
			require.Equal(t, http.StatusOK, status, "reads are open, the token is not checked")
			status, _, _ = b.rawRequest(t, "POST", "/api/v1/runs/999/retry", "", map[string]string{
				"Authorization": "Bearer " + throttleToken, "X-Forwarded-For": attacker})
			require.Equal(t, http.StatusTooManyRequests, status)
			// Another client is not held back.
			status, _, _ = b.rawRequest(t, "POST", "/api/v1/runs/999/retry", "", map[string]string{
				"Authorization": "Bearer " + throttleToken, "X-Forwarded-For": bystander})
			require.Equal(t, http.StatusNotFound, status)

			// The webhook from the same address: wrong secrets stay 401, the right one is accepted.
			for range 20 {
				status, _, _ := b.rawRequest(t, "POST", "/webhooks/huggingface", fixture(t, "dataset-main-push.json"),
					map[string]string{"X-Webhook-Secret": "wrong", "X-Forwarded-For": attacker})
				require.Equal(t, http.StatusUnauthorized, status)
			}
			status, _, _ = b.rawRequest(t, "POST", "/webhooks/huggingface", fixture(t, "dataset-main-push.json"),
				map[string]string{"X-Webhook-Secret": testSecret, "X-Forwarded-For": attacker})
			require.Equal(t, http.StatusOK, status, "a correct secret is always accepted")

			_, _, metrics := b.rawRequest(t, "GET", "/metrics", "", nil)
			require.Contains(t, string(metrics), "orchestrator_admin_auth_failures_total 5\n")
			require.Contains(t, string(metrics), "orchestrator_admin_auth_throttled_total 2\n")
			require.Contains(t, string(metrics), "orchestrator_webhook_secret_failures_total 20\n")
		})
	}
}

// TestSessionCookieSecure: the session cookie is Secure with the __Host- prefix when the public URL is https or
// a trusted proxy says the request came over https, plain otherwise; and either name logs in.
func TestSessionCookieSecure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		publicURL string
		header    map[string]string
		secure    bool
	}{
		{name: "plain http", secure: false},
		{name: "https public URL", publicURL: "https://orchestrator.example.com", secure: true},
		{name: "http public URL", publicURL: "http://orchestrator.example.com", secure: false},
		{name: "trusted proxy says https", header: map[string]string{"X-Forwarded-Proto": "https"}, secure: true},
		{name: "trusted proxy says http", header: map[string]string{"Forwarded": "for=192.0.2.1;proto=http"}, secure: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupBehindProxy(t, tt.publicURL)
			header := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
			for k, v := range tt.header {
				header[k] = v
			}
			loginToken, loginCookies := b.loginCSRF(t, tt.header)
			req, err := http.NewRequest("POST", b.server.URL+"/login",
				strings.NewReader(url.Values{"token": {throttleToken}, "next": {"/"}, "csrf_token": {loginToken}}.Encode()))
			require.NoError(t, err)
			for k, v := range header {
				req.Header.Set(k, v)
			}
			for _, c := range loginCookies {
				req.AddCookie(c)
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusSeeOther, resp.StatusCode)
			cookies := resp.Cookies()
			require.Len(t, cookies, 1)
			c := cookies[0]
			require.Equal(t, tt.secure, c.Secure)
			require.True(t, c.HttpOnly)
			if tt.secure {
				require.Equal(t, "__Host-orchestrator_session", c.Name)
			} else {
				require.Equal(t, "orchestrator_session", c.Name)
			}
			// Both names are read: the session works under the name it was given and under the other.
			for _, name := range []string{"orchestrator_session", "__Host-orchestrator_session"} {
				status, _, _ := b.rawRequest(t, "POST", "/api/v1/runs/999/retry", "", map[string]string{
					"Cookie": name + "=" + c.Value, "X-CSRF-Token": "x"})
				require.Equal(t, http.StatusForbidden, status, "%s: a session, refused only for its CSRF token", name)
			}
			status, _, _ := b.rawRequest(t, "POST", "/api/v1/runs/999/retry", "", map[string]string{
				"Cookie": "orchestrator_session=1." + c.Value})
			require.Equal(t, http.StatusUnauthorized, status, "a forged session is no session")
		})
	}
}

// loginForm is the CSRF token of a login form and the Cookie header it is bound to.
type loginForm struct{ token, cookie string }
