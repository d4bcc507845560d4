package web_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"
)

// page is a parsed HTML answer.
type page struct {
	status int
	header http.Header
	root   *html.Node
	raw    string
}

// getPage fetches path as a browser would, with optional extra headers and cookies, without following redirects.
func (b *testBundle) getPage(t *testing.T, path string, header map[string]string, cookies ...*http.Cookie) *page {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.server.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/html")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := noRedirect.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	return pageFrom(t, resp)
}

// pageFrom reads and parses the page of resp.
func pageFrom(t *testing.T, resp *http.Response) *page {
	t.Helper()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	root, err := html.Parse(strings.NewReader(string(data)))
	require.NoError(t, err)
	return &page{status: resp.StatusCode, header: resp.Header, root: root, raw: string(data)}
}

// cookies returns the cookies the page's response set.
func (p *page) cookies() []*http.Cookie { return (&http.Response{Header: p.header}).Cookies() }

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// find returns every element below n for which match is true.
func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func byTag(tag string) func(*html.Node) bool {
	return func(n *html.Node) bool { return n.Data == tag }
}

func byID(id string) func(*html.Node) bool {
	return func(n *html.Node) bool { return attr(n, "id") == id }
}

func byAttr(key, value string) func(*html.Node) bool {
	return func(n *html.Node) bool { return attr(n, key) == value }
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// text returns the text content of n.
func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

// one returns the single element below the page's root that matches.
func (p *page) one(t *testing.T, match func(*html.Node) bool) *html.Node {
	t.Helper()
	nodes := find(p.root, match)
	require.Len(t, nodes, 1, "page:\n%s", p.raw)
	return nodes[0]
}
