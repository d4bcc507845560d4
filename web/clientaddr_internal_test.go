package web

import (
	"crypto/tls"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name    string
		proxies []netip.Prefix
		peer    string
		header  map[string][]string
		want    string
		https   bool
	}{
		{name: "no proxies: the peer", peer: "203.0.113.9:5555", want: "203.0.113.9"},
		{name: "spoofed X-Forwarded-For without trusted proxies", peer: "203.0.113.9:5555",
			header: map[string][]string{"X-Forwarded-For": {"198.51.100.1"}, "X-Forwarded-Proto": {"https"}}, want: "203.0.113.9"},
		{name: "spoofed headers from an untrusted peer", proxies: trusted, peer: "203.0.113.9:5555",
			header: map[string][]string{"X-Forwarded-For": {"198.51.100.1"}, "Forwarded": {"for=198.51.100.2;proto=https"},
				"X-Forwarded-Proto": {"https"}}, want: "203.0.113.9"},
		{name: "trusted proxy", proxies: trusted, peer: "10.1.2.3:80",
			header: map[string][]string{"X-Forwarded-For": {"198.51.100.1"}, "X-Forwarded-Proto": {"https"}}, want: "198.51.100.1", https: true},
		{name: "client-written entries to the left are not believed", proxies: trusted, peer: "10.1.2.3:80",
			header: map[string][]string{"X-Forwarded-For": {"1.2.3.4, 198.51.100.1, 10.9.9.9"}}, want: "198.51.100.1"},
		{name: "several header lines read in order", proxies: trusted, peer: "10.1.2.3:80",
			header: map[string][]string{"X-Forwarded-For": {"1.2.3.4", "198.51.100.7"}}, want: "198.51.100.7"},
		{name: "every hop trusted: the left-most", proxies: trusted, peer: "10.1.2.3:80",
			header: map[string][]string{"X-Forwarded-For": {"10.0.0.5, 10.0.0.6"}}, want: "10.0.0.5"},
		{name: "garbage from the proxy: the peer", proxies: trusted, peer: "10.1.2.3:80",
			header: map[string][]string{"X-Forwarded-For": {"1.2.3.4, not-an-address"}}, want: "10.1.2.3"},
		{name: "trusted proxy without headers", proxies: trusted, peer: "10.1.2.3:80", want: "10.1.2.3"},
		{name: "Forwarded with IPv6 and port", proxies: trusted, peer: "[fd00::1]:80",
			header: map[string][]string{"Forwarded": {`for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.2`}},
			want:   "2001:db8:cafe::17", https: true},
		{name: "Forwarded proto http", proxies: trusted, peer: "10.1.2.3:80",
			header: map[string][]string{"Forwarded": {"for=192.0.2.60;proto=http"}}, want: "192.0.2.60"},
		{name: "X-Forwarded-For wins over Forwarded", proxies: trusted, peer: "10.1.2.3:80",
			header: map[string][]string{"X-Forwarded-For": {"192.0.2.1"}, "Forwarded": {"for=192.0.2.2"}}, want: "192.0.2.1"},
		{name: "IPv4 with port in X-Forwarded-For", proxies: trusted, peer: "10.1.2.3:80",
			header: map[string][]string{"X-Forwarded-For": {"192.0.2.1:1234"}}, want: "192.0.2.1"},
		{name: "IPv4-mapped peer matches an IPv4 CIDR", proxies: trusted, peer: "[::ffff:10.1.2.3]:80",
			header: map[string][]string{"X-Forwarded-For": {"192.0.2.1"}}, want: "192.0.2.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{trustedProxies: tt.proxies}
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			for k, vs := range tt.header {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			require.Equal(t, tt.want, s.clientAddr(r))
			require.Equal(t, tt.https, s.requestHTTPS(r))
			r.TLS = &tls.ConnectionState{}
			require.True(t, s.requestHTTPS(r), "a TLS request is https")
		})
	}
}
