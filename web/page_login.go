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
	if !s.auth.validLoginCSRF(r) {
		s.logger.WarnContext(r.Context(), "login without a valid CSRF token", "remote", remoteHost(r))
		return s.renderLogin(w, r, http.StatusForbidden, next,
			"The login form was missing or stale (no valid CSRF token): log in again from this form.")
	}
	token, ok := s.auth.matchToken(r.PostFormValue("token"))
	if !ok {
		s.logger.WarnContext(r.Context(), "failed login", "remote", remoteHost(r))
		return s.renderLogin(w, r, http.StatusUnauthorized, next, "That is not the admin token.")
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookieName, Value: token.newSession(time.Now()), Path: "/", MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// handleLogout clears the session cookie.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	http.SetCookie(w, &http.Cookie{Name: sessionCookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}
