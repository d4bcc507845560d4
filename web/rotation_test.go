package web_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/web"
)

// TestAdminTokenRotation follows a rotation through three starts of the server on one database: the old token
// alone, the new token with the old one as previous, the new token alone. Each credential, and each session
// cookie made along the way, is tried on every start.
func TestAdminTokenRotation(t *testing.T) {
	t.Parallel()
	const oldToken, newToken = "old-admin-token-for-tests", "new-admin-token-for-tests"
	pool, _ := dbtest.NewMigratedPool(t)
	start := func(token, previous string) *testBundle {
		return setupServer(t, pool, setupOpts{adminToken: token, adminTokenPrevious: previous, protectReads: true,
			trustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	}
	before, during, after := start(oldToken, ""), start(newToken, oldToken), start(newToken, "")

	// Every try comes from a client of its own, so that the wrong tokens tried here never throttle the right ones.
	var clients atomic.Int64
	client := func() map[string]string {
		n := clients.Add(1)
		return map[string]string{"X-Forwarded-For": fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255)}
	}
	session := func(b *testBundle, token string) *http.Cookie {
		resp := b.login(t, token, "/", client())
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		for _, c := range resp.Cookies() {
			if c.Name == "orchestrator_session" {
				return c
			}
		}
		t.Fatal("the login set no session cookie")
		return nil
	}
	madeBefore := session(before, oldToken)  // with the old token while it was the only one
	madeWithOld := session(during, oldToken) // with the old token as the previous one
	madeWithNew := session(during, newToken)

	// reads tells whether a request with header and cookie may read the API, which ProtectReads guards.
	reads := func(b *testBundle, header map[string]string, cookie *http.Cookie) bool {
		req, err := http.NewRequest(http.MethodGet, b.server.URL+"/api/v1/runs", nil)
		require.NoError(t, err)
		for k, v := range client() {
			req.Header.Set(k, v)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Contains(t, []int{http.StatusOK, http.StatusUnauthorized}, resp.StatusCode)
		return resp.StatusCode == http.StatusOK
	}
	bearer := func(token string) func(*testBundle) bool {
		return func(b *testBundle) bool { return reads(b, map[string]string{"Authorization": "Bearer " + token}, nil) }
	}
	basic := func(token string) func(*testBundle) bool {
		return func(b *testBundle) bool {
			return reads(b, map[string]string{"Authorization": "Basic " + basicAuth("anyone", token)}, nil)
		}
	}
	login := func(token string) func(*testBundle) bool {
		return func(b *testBundle) bool {
			resp := b.login(t, token, "/", client())
			require.Contains(t, []int{http.StatusSeeOther, http.StatusUnauthorized}, resp.StatusCode)
			return resp.StatusCode == http.StatusSeeOther
		}
	}
	withSession := func(c *http.Cookie) func(*testBundle) bool {
		return func(b *testBundle) bool { return reads(b, nil, c) }
	}

	cases := []struct {
		name                  string
		try                   func(*testBundle) bool
		before, during, after bool
	}{
		{name: "Bearer old", try: bearer(oldToken), before: true, during: true},
		{name: "Bearer new", try: bearer(newToken), during: true, after: true},
		{name: "Bearer wrong", try: bearer("wrong")},
		{name: "Bearer old with a suffix", try: bearer(oldToken + "x")},
		{name: "Basic old", try: basic(oldToken), before: true, during: true},
		{name: "Basic new", try: basic(newToken), during: true, after: true},
		{name: "Basic wrong", try: basic("wrong")},
		{name: "login old", try: login(oldToken), before: true, during: true},
		{name: "login new", try: login(newToken), during: true, after: true},
		{name: "login wrong", try: login("wrong")},
		{name: "session made before the rotation", try: withSession(madeBefore), before: true, during: true},
		{name: "session made with the previous token", try: withSession(madeWithOld), before: true, during: true},
		{name: "session made with the new token", try: withSession(madeWithNew), during: true, after: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.before, tc.try(before), "with the old token alone")
			require.Equal(t, tc.during, tc.try(during), "with the new token and the old one as previous")
			require.Equal(t, tc.after, tc.try(after), "with the new token alone, the previous one removed")
		})
	}
}

func TestAdminTokenPreviousConfig(t *testing.T) {
	t.Parallel()
	store := orchestrator.NewStore(nil)
	cases := []struct {
		name, token, previous, wantErr string
	}{
		{name: "previous without current", previous: "old", wantErr: "AdminTokenPrevious needs AdminToken"},
		{name: "previous equal to current", token: "same", previous: "same", wantErr: "AdminTokenPrevious must differ from AdminToken"},
		{name: "rotation", token: "new", previous: "old"},
		{name: "no previous", token: "new"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := web.New(web.Config{Store: store, WebhookSecret: testSecret, AdminToken: tc.token,
				AdminTokenPrevious: tc.previous, Logger: quietLogger})
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// TestLoginCSRF checks that the login form is refused without its CSRF token and the cookie it is bound to, as
// a post from another site would come, before the admin token is even looked at.
func TestLoginCSRF(t *testing.T) {
	t.Parallel()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken})
	form := b.getPage(t, "/login?next=%2Fruns", nil)
	require.Equal(t, http.StatusOK, form.status)
	token, cookies := csrfFrom(t, form), form.cookies()
	require.Len(t, cookies, 1, "the form sets the cookie its token is bound to")
	require.True(t, cookies[0].HttpOnly)
	other := b.getPage(t, "/login", nil) // another browser
	otherToken, otherCookies := csrfFrom(t, other), other.cookies()
	require.NotEqual(t, token, otherToken)

	cases := []struct {
		name       string
		values     url.Values
		cookies    []*http.Cookie
		header     map[string]string
		wantStatus int
	}{
		{name: "cross-site post: no token, no cookie", values: url.Values{"token": {adminToken}},
			header: map[string]string{"Origin": "https://evil.example"}, wantStatus: http.StatusForbidden},
		{name: "no token", values: url.Values{"token": {adminToken}}, cookies: cookies, wantStatus: http.StatusForbidden},
		{name: "token without its cookie", values: url.Values{"token": {adminToken}, "csrf_token": {token}}, wantStatus: http.StatusForbidden},
		{name: "forged token", values: url.Values{"token": {adminToken}, "csrf_token": {"forged"}}, cookies: cookies, wantStatus: http.StatusForbidden},
		{name: "another browser's token", values: url.Values{"token": {adminToken}, "csrf_token": {otherToken}}, cookies: cookies,
			wantStatus: http.StatusForbidden},
		{name: "another browser's cookie", values: url.Values{"token": {adminToken}, "csrf_token": {token}}, cookies: otherCookies,
			wantStatus: http.StatusForbidden},
		{name: "wrong admin token without CSRF token is refused for the CSRF token", values: url.Values{"token": {"wrong"}},
			wantStatus: http.StatusForbidden},
		{name: "wrong admin token", values: url.Values{"token": {"wrong"}, "csrf_token": {token}}, cookies: cookies,
			wantStatus: http.StatusUnauthorized},
		{name: "valid", values: url.Values{"token": {adminToken}, "csrf_token": {token}}, cookies: cookies, wantStatus: http.StatusSeeOther},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := b.form(t, "/login", tc.values, tc.cookies, tc.header)
			require.Equal(t, tc.wantStatus, resp.StatusCode)
			var session bool
			for _, c := range resp.Cookies() {
				session = session || c.Name == "orchestrator_session"
			}
			require.Equal(t, tc.wantStatus == http.StatusSeeOther, session, "only a login that succeeds sets a session")
		})
	}

	// The refusal shows the form again, with a message and a fresh token that works.
	req, err := http.NewRequest(http.MethodPost, b.server.URL+"/login", strings.NewReader(url.Values{"token": {adminToken}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := noRedirect.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	p := pageFrom(t, resp)
	require.Equal(t, http.StatusForbidden, p.status)
	require.Contains(t, text(p.one(t, byID("login-error"))), "CSRF token")
	resp2 := b.form(t, "/login", url.Values{"token": {adminToken}, "csrf_token": {csrfFrom(t, p)}}, p.cookies(), nil)
	require.Equal(t, http.StatusSeeOther, resp2.StatusCode)
}
