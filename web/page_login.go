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
	if !s.auth.tokenMatches(r.PostFormValue("token")) {
		s.logger.WarnContext(r.Context(), "failed login", "remote", remoteHost(r))
		return s.render(w, http.StatusUnauthorized, "login.html", loginPage{
			basePage: s.base(r, "Log in"), Next: next, Error: "That is not the admin token.",
		})
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookieName, Value: s.auth.newSession(time.Now()), Path: "/", MaxAge: int(sessionTTL.Seconds()),
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
