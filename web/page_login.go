package web

import (
	"net/http"
	"time"
)

type loginPage struct {
	basePage
	Next  string
	Error string
	// LoginCSRF is the login form's CSRF token, bound to the browser's login CSRF cookie.
	LoginCSRF string
}

// handleLoginForm renders the login form, which asks for the admin token.
func (s *Server) handleLoginForm(w http.ResponseWriter, r *http.Request) error {
	return s.renderLogin(w, r, http.StatusOK, safeNext(r.URL.Query().Get("next")), "")
}

// renderLogin renders the login form with its CSRF token, setting the cookie the token is bound to when the
// browser has none yet.
func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, next, errMsg string) error {
	page := loginPage{basePage: s.base(r, "Log in"), Next: next, Error: errMsg}
	if s.auth.configured() {
		c, set := loginCSRFCookie(r)
		if set {
			// Secure under the session cookie's rule: https, directly or by a trusted proxy's word.
			c.Secure = c.Secure || s.secureCookies(r)
			http.SetCookie(w, c)
		}
		page.LoginCSRF = s.auth.loginCSRFToken(c)
	}
	return s.render(w, status, "login.html", page)
}

// handleLogin checks the form's CSRF token, then the admin token, and sets the session cookie, bound to the
// token (current or previous) it was given.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	next := safeNext(r.PostFormValue("next"))
	if !s.auth.configured() {
		return errNoAdminToken
	}
	client := s.clientAddr(r)
	if !s.auth.validLoginCSRF(r) {
		// Not a guess at the admin token: not counted by the throttle.
		s.logger.WarnContext(r.Context(), "login without a valid CSRF token", "remote", client)
		return s.renderLogin(w, r, http.StatusForbidden, next,
			"The login form was missing or stale (no valid CSRF token): log in again from this form.")
	}
	if err := s.checkThrottle(w, client); err != nil {
		return err
	}
	token, ok := s.auth.matchToken(r.PostFormValue("token"))
	if !ok {
		s.authFailed(client)
		s.logger.WarnContext(r.Context(), "failed login", "remote", client)
		return s.renderLogin(w, r, http.StatusUnauthorized, next, "That is not the admin token.")
	}
	s.throttle.succeed(client)
	s.setSessionCookie(w, r, token.newSession(time.Now()))
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// handleLogout clears the session cookie.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	clearSessionCookies(w)
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}
