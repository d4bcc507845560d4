package web

import (
	"net/http"
	"time"
)

type loginPage struct {
	basePage
	Next  string
	Error string
}

// handleLoginForm renders the login form, which asks for the admin token.
func (s *Server) handleLoginForm(w http.ResponseWriter, r *http.Request) error {
	return s.render(w, http.StatusOK, "login.html", loginPage{
		basePage: s.base(r, "Log in"), Next: safeNext(r.URL.Query().Get("next")),
	})
}

// handleLogin checks the token and sets the session cookie.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	next := safeNext(r.PostFormValue("next"))
	if !s.auth.configured() {
		return errNoAdminToken
	}
	client := s.clientAddr(r)
	if err := s.checkThrottle(w, client); err != nil {
		return err
	}
	if !s.auth.tokenMatches(r.PostFormValue("token")) {
		s.authFailed(client)
		s.logger.WarnContext(r.Context(), "failed login", "remote", client)
		return s.render(w, http.StatusUnauthorized, "login.html", loginPage{
			basePage: s.base(r, "Log in"), Next: next, Error: "That is not the admin token.",
		})
	}
	s.throttle.succeed(client)
	s.setSessionCookie(w, r, s.auth.newSession(time.Now()))
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// handleLogout clears the session cookie.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) error {
	clearSessionCookies(w)
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}
