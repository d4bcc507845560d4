package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Session settings of the browser login.
const (
	sessionCookieName = "orchestrator_session"
	sessionTTL        = 12 * time.Hour
	csrfFieldName     = "csrf_token"
	csrfHeaderName    = "X-CSRF-Token"
)

// authMethod is how a request proved it holds the admin token.
type authMethod int

const (
	authNone    authMethod = iota
	authBearer             // Authorization: Bearer <token>: API and CLI, no CSRF token needed
	authBasic              // HTTP Basic with the token as password: a browser, CSRF token needed for writes
	authSession            // the login form's session cookie: a browser, CSRF token needed for writes
)

// auth checks the admin token. Sessions and CSRF tokens are HMACs keyed by the token, so every process that
// shares the token accepts them, and changing the token ends every session. During a rotation the previous
// token is accepted too, and a session stays bound to the token that created it: it ends when that token is
// no longer configured.
type auth struct {
	current, previous adminToken
	protectReads      bool
}

// adminToken is one accepted admin token and the key its sessions are signed with.
type adminToken struct {
	token []byte
	key   []byte
}

func newAdminToken(token string) adminToken {
	if token == "" {
		return adminToken{}
	}
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("orchestrator session key v1"))
	return adminToken{token: []byte(token), key: mac.Sum(nil)}
}

func newAuth(token, previous string, protectReads bool) *auth {
	return &auth{current: newAdminToken(token), previous: newAdminToken(previous), protectReads: protectReads}
}

func (a *auth) configured() bool { return len(a.current.token) > 0 }

// matchToken returns the configured token given is, if any. Both tokens are always compared, in constant
// time, so that neither the answer's timing nor its path tells which one came close.
func (a *auth) matchToken(given string) (adminToken, bool) {
	current, previous := secretMatches(given, a.current.token), secretMatches(given, a.previous.token)
	switch {
	case !a.configured():
		return adminToken{}, false
	case current:
		return a.current, true
	case previous:
		return a.previous, true
	}
	return adminToken{}, false
}

func (a *auth) tokenMatches(given string) bool {
	_, ok := a.matchToken(given)
	return ok
}

func (t adminToken) sign(msg string) string {
	mac := hmac.New(sha256.New, t.key)
	mac.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// sign signs msg with the current token's key.
func (a *auth) sign(msg string) string { return a.current.sign(msg) }

// newSession returns a session cookie value valid until now + sessionTTL, bound to the token t it was made with.
func (t adminToken) newSession(now time.Time) string {
	exp := strconv.FormatInt(now.Add(sessionTTL).Unix(), 10)
	return exp + "." + t.sign("session:"+exp)
}

// validSession reports whether value is an unexpired session made with the current or the previous token;
// both signatures are always compared.
func (a *auth) validSession(value string, now time.Time) bool {
	exp, mac, ok := strings.Cut(value, ".")
	if !ok || !a.configured() {
		return false
	}
	expUnix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() > expUnix {
		return false
	}
	current := subtle.ConstantTimeCompare([]byte(mac), []byte(a.current.sign("session:"+exp)))
	previous := 0
	if len(a.previous.key) > 0 {
		previous = subtle.ConstantTimeCompare([]byte(mac), []byte(a.previous.sign("session:"+exp)))
	}
	return current|previous == 1
}

// identify returns how r is authenticated as admin, if at all.
func (a *auth) identify(r *http.Request) authMethod {
	if !a.configured() {
		return authNone
	}
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		if a.tokenMatches(strings.TrimPrefix(h, "Bearer ")) {
			return authBearer
		}
		return authNone
	}
	if _, pass, ok := r.BasicAuth(); ok {
		if a.tokenMatches(pass) {
			return authBasic
		}
		return authNone
	}
	if c, err := sessionCookie(r); err == nil && a.validSession(c.Value, time.Now()) {
		return authSession
	}
	return authNone
}

// csrfToken returns the token a browser form must send back with a state-changing request: bound to the
// session (or to Basic auth), unknowable to another site.
func (a *auth) csrfToken(r *http.Request) string {
	if !a.configured() {
		return ""
	}
	binding := "basic"
	if c, err := sessionCookie(r); err == nil {
		binding = c.Value
	}
	return a.sign("csrf:" + binding)
}

func (a *auth) validCSRF(r *http.Request) bool {
	given := r.Header.Get(csrfHeaderName)
	if given == "" {
		given = r.PostFormValue(csrfFieldName)
	}
	return given != "" && subtle.ConstantTimeCompare([]byte(given), []byte(a.csrfToken(r))) == 1
}

// loginCSRFCookieName holds a random value the login form's CSRF token is bound to: the browser has no
// session yet, so the form's token is the cookie's value signed, and a post from another site, which can
// neither read the cookie nor the form, cannot send a matching pair.
const loginCSRFCookieName = "orchestrator_login_csrf"

// loginCSRFCookie returns the login CSRF cookie of r, or a new one (set reports whether it is new and must be
// sent).
func loginCSRFCookie(r *http.Request) (c *http.Cookie, set bool) {
	if c, err := r.Cookie(loginCSRFCookieName); err == nil {
		if b, err := base64.RawURLEncoding.DecodeString(c.Value); err == nil && len(b) == 32 {
			return c, false
		}
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return &http.Cookie{Name: loginCSRFCookieName, Value: base64.RawURLEncoding.EncodeToString(b), Path: "/login",
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode}, true
}

// loginCSRFToken returns the token the login form sends back with the cookie c.
func (a *auth) loginCSRFToken(c *http.Cookie) string { return a.sign("login-csrf:" + c.Value) }

// validLoginCSRF reports whether r carries the login CSRF cookie and the token that matches it.
func (a *auth) validLoginCSRF(r *http.Request) bool {
	c, err := r.Cookie(loginCSRFCookieName)
	given := r.PostFormValue(csrfFieldName)
	return err == nil && given != "" && subtle.ConstantTimeCompare([]byte(given), []byte(a.loginCSRFToken(c))) == 1
}

// errNoAdminToken answers state-changing requests when no admin token is configured.
var errNoAdminToken = &orchestrator.Error{Code: codeForbidden,
	Message: "this action needs the admin token, and none is configured: set ORCHESTRATOR_ADMIN_TOKEN " +
		"(for example to the output of `openssl rand -hex 32`) and restart"}

// codeForbidden is a web-only code: the server refuses regardless of who asks.
const codeForbidden orchestrator.Code = "forbidden"

// requireAdmin lets through only requests that hold the admin token; browser requests that change state must
// also carry the CSRF token. A browser without credentials is sent to the login form.
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.auth.configured() {
			s.writeError(w, r, errNoAdminToken)
			return
		}
		method, err := s.identifyThrottled(w, r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if method == authNone {
			s.unauthenticated(w, r)
			return
		}
		if method != authBearer && !isSafeMethod(r.Method) && !s.auth.validCSRF(r) {
			s.writeError(w, r, &orchestrator.Error{Code: codeForbidden,
				Message: "missing or stale CSRF token: reload the page and try again"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireRead puts reading behind the admin token when ORCHESTRATOR_PROTECT_READS is set.
func (s *Server) requireRead(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.auth.protectReads {
			if !s.auth.configured() {
				s.writeError(w, r, errNoAdminToken)
				return
			}
			method, err := s.identifyThrottled(w, r)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			if method == authNone {
				s.unauthenticated(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// unauthenticated sends a browser to the login form and answers anything else 401.
func (s *Server) unauthenticated(w http.ResponseWriter, r *http.Request) {
	if isBrowserRequest(r) {
		http.Redirect(w, r, loginURL(r), http.StatusSeeOther)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="orchestrator", Basic realm="orchestrator"`)
	s.writeError(w, r, orchestrator.Errorf(orchestrator.CodeUnauthorized,
		"this needs the admin token: send Authorization: Bearer <ORCHESTRATOR_ADMIN_TOKEN>"))
}

// loginURL returns the login form that leads back to the page of r: the page itself, or for a form post the
// page the form was on, not the action.
func loginURL(r *http.Request) string {
	next := r.URL.RequestURI()
	if !isSafeMethod(r.Method) {
		next = refererPath(r)
	}
	return "/login?next=" + url.QueryEscape(safeNext(next))
}

func isSafeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// isBrowserRequest reports whether r comes from a page (a form post or a navigation) rather than an API client.
func isBrowserRequest(r *http.Request) bool {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		return false
	}
	ct := r.Header.Get("Content-Type")
	return strings.Contains(r.Header.Get("Accept"), "text/html") ||
		strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data")
}

func refererPath(r *http.Request) string {
	ref, err := url.Parse(r.Referer())
	if err != nil || (ref.Host != "" && ref.Host != r.Host) {
		return "/"
	}
	return ref.RequestURI()
}

// safeNext keeps a redirect target on this site: a path, never a URL to elsewhere.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}
