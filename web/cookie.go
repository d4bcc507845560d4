package web

import (
	"net/http"
	"time"
)

// secureSessionCookieName is the session cookie's name when it is Secure. Browsers keep a __Host- cookie only
// when it is Secure, has Path=/ and no Domain, so no other site under the same domain, and no page over plain
// http, can set or overwrite it.
const secureSessionCookieName = "__Host-" + sessionCookieName

// secureCookies reports whether the session cookie of r must be Secure: ORCHESTRATOR_PUBLIC_URL is https, or
// the request came over https (directly or, by a trusted proxy's word, through it).
func (s *Server) secureCookies(r *http.Request) bool {
	return s.publicHTTPS || s.requestHTTPS(r)
}

// sessionCookie returns the session cookie of r under either of its names, the __Host- one first.
func sessionCookie(r *http.Request) (*http.Cookie, error) {
	if c, err := r.Cookie(secureSessionCookieName); err == nil {
		return c, nil
	}
	return r.Cookie(sessionCookieName)
}

// setSessionCookie sets the session cookie: Secure and named with the __Host- prefix when secureCookies says
// so, HttpOnly and SameSite=Lax always.
func (s *Server) setSessionCookie(w http.ResponseWriter, r *http.Request, value string) {
	c := &http.Cookie{Name: sessionCookieName, Value: value, Path: "/", MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if s.secureCookies(r) {
		c.Name, c.Secure = secureSessionCookieName, true
	}
	http.SetCookie(w, c)
}

// clearSessionCookies ends the session under both names of its cookie.
func clearSessionCookies(w http.ResponseWriter) {
	for _, c := range []*http.Cookie{
		{Name: sessionCookieName, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode},
		{Name: secureSessionCookieName, Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode},
	} {
		c.Expires = time.Unix(0, 0)
		http.SetCookie(w, c)
	}
}
