package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// eachPage reads a paginated listing of dataset repo from first: see eachPageOf.
func eachPage[T any](ctx context.Context, c *Client, repo, first string, fn func(where string, items []T) (bool, error)) error {
	get := func(rawURL string) ([]byte, http.Header, error) { return c.getRetrying(ctx, repo, rawURL) }
	return eachPageOf(c, get, first, fn)
}

// eachPageOf reads a paginated listing from first, each page fetched by get: each page (a JSON array of T) goes
// to fn, and the next is the target of the page's Link rel="next", which must stay on the client's endpoint. fn
// returns whether to read on. where names the page for messages.
func eachPageOf[T any](c *Client, get func(rawURL string) ([]byte, http.Header, error), first string, fn func(where string, items []T) (bool, error)) error {
	next := first
	seen := map[string]bool{}
	for {
		seen[next] = true
		body, header, err := get(next)
		if err != nil {
			return err
		}
		where := "GET " + redact(next)
		var items []T
		if err := json.Unmarshal(body, &items); err != nil {
			return fmt.Errorf("%s: decode the answer: %w", where, err)
		}
		more, err := fn(where, items)
		if err != nil || !more {
			return err
		}
		target := nextLink(header.Values("Link"))
		if target == "" {
			return nil
		}
		if len(items) == 0 {
			return fmt.Errorf("%s: an empty page links to another", where)
		}
		if next, err = c.onEndpoint(next, target); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if seen[next] {
			return fmt.Errorf("%s: the next page %s was read already", where, redact(next))
		}
	}
}

// onEndpoint resolves a Link target against the page it came with, and refuses it unless it is on the client's
// endpoint (same scheme and host): the token goes with every request.
func (c *Client) onEndpoint(page, target string) (string, error) {
	base, err := url.Parse(page)
	if err != nil {
		return "", fmt.Errorf("page address: %w", err)
	}
	u, err := base.Parse(target)
	if err != nil {
		return "", fmt.Errorf("next page %q: %w", target, err)
	}
	endpoint, err := url.Parse(c.endpoint)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", c.endpoint, err)
	}
	if !strings.EqualFold(u.Scheme, endpoint.Scheme) || !strings.EqualFold(u.Host, endpoint.Host) || u.User != nil {
		return "", fmt.Errorf("next page %s is not on the Hub's endpoint %s: refused", u.Redacted(), c.endpoint)
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String(), nil
}

// redact returns rawURL without a password, for messages.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(an unreadable address)"
	}
	return u.Redacted()
}

// nextLink returns the target of the first link with the relation "next" in Link header values
// (`<https://…?cursor=…>; rel="next"`, RFC 8288), or "" when there is none.
func nextLink(values []string) string {
	for _, v := range values {
		for s := v; ; {
			s = strings.TrimLeft(s, " \t,")
			if !strings.HasPrefix(s, "<") {
				break // empty, or not a link-value: nothing more to read in it
			}
			end := strings.IndexByte(s, '>')
			if end < 0 {
				break
			}
			target := s[1:end]
			var params []string
			params, s = linkParams(s[end+1:])
			for _, p := range params {
				name, value, _ := strings.Cut(p, "=")
				if !strings.EqualFold(strings.TrimSpace(name), "rel") {
					continue
				}
				for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(value), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target
					}
				}
			}
		}
	}
	return ""
}

// linkParams reads the ";"-separated parameters of one link-value up to the "," that ends it (outside quotes),
// and returns them with the rest of the header.
func linkParams(s string) (params []string, rest string) {
	quoted := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case '\\':
			if quoted {
				i++
			}
		case ';', ',':
			if quoted {
				continue
			}
			if p := strings.TrimSpace(s[start:i]); p != "" {
				params = append(params, p)
			}
			start = i + 1
			if s[i] == ',' {
				return params, s[i+1:]
			}
		}
	}
	if p := strings.TrimSpace(s[start:]); p != "" {
		params = append(params, p)
	}
	return params, ""
}
