package web

import (
	"net/http"
	"net/netip"
	"strings"
)

// clientAddr returns the IP address of the client that sent r: the peer, unless the peer is one of the
// trusted proxies (Config.TrustedProxies), in which case the right-most address of X-Forwarded-For (or, without
// it, of the Forwarded header's for=) that is not itself a trusted proxy. Addresses to the left of that one were
// written by the client and are not believed. The peer is the answer when a trusted proxy sent nothing
// readable.
func (s *Server) clientAddr(r *http.Request) string {
	peer := remoteHost(r)
	if !s.trustedPeer(r) {
		return peer
	}
	chain := forwardedFor(r)
	for i := len(chain) - 1; i >= 0; i-- {
		addr, ok := parseNodeAddr(chain[i])
		if !ok {
			return peer
		}
		if !s.trusted(addr) || i == 0 {
			return addr.String()
		}
	}
	return peer
}

// requestHTTPS reports whether the client reached us over https: directly over TLS, or through a trusted proxy
// that says so with X-Forwarded-Proto or the Forwarded header's proto=.
func (s *Server) requestHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if !s.trustedPeer(r) {
		return false
	}
	if v := r.Header.Get("X-Forwarded-Proto"); v != "" {
		first, _, _ := strings.Cut(v, ",")
		return strings.EqualFold(strings.TrimSpace(first), "https")
	}
	for _, element := range forwardedElements(r) {
		if proto, ok := element["proto"]; ok {
			return strings.EqualFold(proto, "https")
		}
	}
	return false
}

// trustedPeer reports whether the peer of r is a trusted proxy.
func (s *Server) trustedPeer(r *http.Request) bool {
	if len(s.trustedProxies) == 0 {
		return false
	}
	addr, ok := parseNodeAddr(remoteHost(r))
	return ok && s.trusted(addr)
}

func (s *Server) trusted(addr netip.Addr) bool {
	for _, p := range s.trustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// forwardedFor returns the addresses a proxy chain reported, nearest client first: those of X-Forwarded-For
// when there is one, else the for= of each Forwarded element.
func forwardedFor(r *http.Request) []string {
	var chain []string
	for _, line := range r.Header.Values("X-Forwarded-For") {
		for _, a := range strings.Split(line, ",") {
			chain = append(chain, strings.TrimSpace(a))
		}
	}
	if len(chain) > 0 {
		return chain
	}
	for _, element := range forwardedElements(r) {
		chain = append(chain, element["for"])
	}
	return chain
}

// forwardedElements parses the RFC 7239 Forwarded header: one map of lower-case parameter to unquoted value per
// element, in order. An element without for= maps "for" to "", which no address parses from.
func forwardedElements(r *http.Request) []map[string]string {
	var elements []map[string]string
	for _, line := range r.Header.Values("Forwarded") {
		for _, element := range strings.Split(line, ",") {
			params := map[string]string{"for": ""}
			for _, pair := range strings.Split(element, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok {
					params[strings.ToLower(k)] = strings.Trim(v, `"`)
				}
			}
			elements = append(elements, params)
		}
	}
	return elements
}

// parseNodeAddr reads an address as proxies write it: 192.0.2.1, 192.0.2.1:4711, 2001:db8::1, [2001:db8::1]
// or [2001:db8::1]:4711. An IPv4 address mapped into IPv6 comes back as IPv4.
func parseNodeAddr(s string) (netip.Addr, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if addr, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return addr.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
