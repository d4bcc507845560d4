// Package hub is what the orchestrator knows of the Hugging Face Hub: the body of its webhooks (Payload, parsed
// leniently by ParsePayload, built by DatasetUpdate, shortened for storage by ShortenPayload), and a small client
// of its API (Client): the refs of a dataset, its id, whether a revision exists in it, the files of a revision
// (ListTree) and a commit's parent (ParentCommit); and Hugging Face Jobs (RunJob, InspectJob, ListJobs,
// CancelJob, JobLogs, JobHardware). The client follows the huggingface_hub conventions: the
// endpoint is HF_ENDPOINT (https://huggingface.co when unset) and the optional token, for private datasets, is
// sent as a Bearer token.
package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults of the client.
const (
	// EndpointDefault is the Hub's address when HF_ENDPOINT is unset.
	EndpointDefault = "https://huggingface.co"
	// TimeoutDefault bounds every request, from dialling to reading the last byte of the answer.
	TimeoutDefault = 15 * time.Second
	// errorBodyLimit is how much of an error answer's body a StatusError keeps.
	errorBodyLimit = 200
	// bodyLimit bounds the answers read: a dataset's info lists its files, which can be many.
	bodyLimit = 64 << 20
	userAgent = "retrain-orchestrator"
)

// Client asks the Hub about datasets. It is safe for concurrent use. Its token never appears in its string
// forms, its log value or its errors.
type Client struct {
	endpoint string
	token    string
	http     *http.Client
	logIdle  time.Duration // of JobLogs; JobLogIdleDefault when zero
}

// New returns a client of the Hub at endpoint (EndpointDefault when empty; a trailing slash is ignored). The
// token, when not empty, is sent with every request as "Authorization: Bearer <token>"; it is needed for private
// datasets only. Requests time out after TimeoutDefault.
func New(endpoint, token string) *Client {
	endpoint = strings.TrimRight(strings.TrimSpace(endpoint), "/")
	if endpoint == "" {
		endpoint = EndpointDefault
	}
	return &Client{endpoint: endpoint, token: token, http: &http.Client{Timeout: TimeoutDefault}}
}

// WithTimeout returns a copy of c whose requests time out after d.
func (c *Client) WithTimeout(d time.Duration) *Client {
	cp := *c
	cp.http = &http.Client{Timeout: d, Transport: c.http.Transport}
	return &cp
}

// Endpoint returns the Hub's address the client asks, without a trailing slash.
func (c *Client) Endpoint() string { return c.endpoint }

// String describes the client without its token.
func (c *Client) String() string {
	return fmt.Sprintf("hub.Client{endpoint: %s, token: %s}", c.endpoint, c.tokenState())
}

// GoString describes the client without its token, for %#v.
func (c *Client) GoString() string { return c.String() }

// LogValue describes the client without its token, for log/slog.
func (c *Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("endpoint", c.endpoint), slog.String("token", c.tokenState()))
}

func (c *Client) tokenState() string {
	if c.token == "" {
		return "none"
	}
	return "set"
}

// Ref is one git ref of a repository as the Hub lists it, e.g. {Name: "main", Ref: "refs/heads/main",
// TargetCommit: "<40 hexadecimal characters>"}.
type Ref struct {
	Name         string `json:"name"`
	Ref          string `json:"ref"`
	TargetCommit string `json:"targetCommit"`
}

// Refs are a repository's refs by kind: branches (refs/heads/...), tags (refs/tags/...) and the Hub's own
// conversions (refs/convert/...).
type Refs struct {
	Branches []Ref `json:"branches"`
	Tags     []Ref `json:"tags"`
	Converts []Ref `json:"converts"`
}

// All returns every ref, branches first, then tags, then conversions.
func (r Refs) All() []Ref {
	all := make([]Ref, 0, len(r.Branches)+len(r.Tags)+len(r.Converts))
	all = append(all, r.Branches...)
	all = append(all, r.Tags...)
	return append(all, r.Converts...)
}

// StatusError is an answer of the Hub other than the one expected.
type StatusError struct {
	// Status is the HTTP status code, e.g. 429.
	Status int
	// RetryAfter is how long the Hub asked us to wait (its Retry-After header, in seconds or as an HTTP date);
	// zero when it did not say.
	RetryAfter time.Duration
	// Body is the beginning of the answer's body, at most 200 bytes.
	Body string
}

// Error implements the error interface.
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the Hub answered %d %s", e.Status, http.StatusText(e.Status))
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Body != "" {
		b.WriteString(": " + e.Body)
	}
	return b.String()
}

// DatasetRefs returns the branches, tags and conversions of a dataset ("owner/name") with the commit each
// points at (GET /api/datasets/{repo}/refs).
func (c *Client) DatasetRefs(ctx context.Context, repo string) (Refs, error) {
	var refs Refs
	err := c.getJSON(ctx, repo, "/refs", &refs)
	return refs, err
}

// RefHead returns the commit a dataset's ref points at now (from DatasetRefs), or "" when the dataset has no
// such ref.
func (c *Client) RefHead(ctx context.Context, repo, ref string) (string, error) {
	refs, err := c.DatasetRefs(ctx, repo)
	if err != nil {
		return "", err
	}
	for _, r := range refs.All() {
		if r.Ref == ref {
			return r.TargetCommit, nil
		}
	}
	return "", nil
}

// DatasetID returns the Hub's id of a dataset (the "_id" of GET /api/datasets/{repo}), which webhooks send as
// repo.id and which stays the same when the dataset is renamed.
func (c *Client) DatasetID(ctx context.Context, repo string) (string, error) {
	var info struct {
		ID string `json:"_id"`
	}
	if err := c.getJSON(ctx, repo, "", &info); err != nil {
		return "", err
	}
	if info.ID == "" {
		return "", fmt.Errorf("dataset %s: the Hub's answer has no _id", repo)
	}
	return info.ID, nil
}

// RevisionExists reports whether revision exists in the dataset (GET /api/datasets/{repo}/revision/{revision}):
// true when the Hub answers 200, false when it answers 404, and an error for anything else (a rate limit, a
// server error, a timeout), which is worth retrying.
func (c *Client) RevisionExists(ctx context.Context, repo, revision string) (bool, error) {
	if revision == "" {
		return false, errors.New("empty revision")
	}
	resp, err := c.get(ctx, repo, "/revision/"+url.PathEscape(revision))
	if err != nil {
		return false, err
	}
	defer drain(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("%s %s: %w", resp.Request.Method, resp.Request.URL.Redacted(), statusError(resp))
}

// getJSON decodes the 200 answer of GET /api/datasets/{repo}{suffix} into v.
func (c *Client) getJSON(ctx context.Context, repo, suffix string, v any) error {
	resp, err := c.get(ctx, repo, suffix)
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	where := resp.Request.Method + " " + resp.Request.URL.Redacted()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %w", where, statusError(resp))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, bodyLimit)).Decode(v); err != nil {
		return fmt.Errorf("%s: decode the answer: %w", where, err)
	}
	return nil
}

// get sends GET /api/datasets/{repo}{suffix}.
func (c *Client) get(ctx context.Context, repo, suffix string) (*http.Response, error) {
	path, err := datasetPath(repo)
	if err != nil {
		return nil, err
	}
	return c.getURL(ctx, repo, c.endpoint+path+suffix)
}

// getURL sends GET rawURL, an address of the Hub's about dataset repo, with the client's token.
func (c *Client) getURL(ctx context.Context, repo, rawURL string) (*http.Response, error) {
	return c.send(ctx, "dataset "+repo, http.MethodGet, rawURL, nil)
}

// send sends one request to rawURL, an address of the Hub's about what (e.g. "dataset owner/name"), with the
// client's token and body, when not nil, as JSON.
func (c *Client) send(ctx context.Context, what, method, rawURL string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error names the method and URL, never the headers.
		return nil, fmt.Errorf("ask the Hub about %s: %w", what, err)
	}
	return resp, nil
}

// datasetPath returns /api/datasets/{repo} with each segment of repo escaped. A repo is "owner/name" (or a
// bare "name"); empty, "." and ".." segments are refused, so that a name can never point elsewhere.
func datasetPath(repo string) (string, error) {
	parts := strings.Split(repo, "/")
	if len(parts) > 2 {
		return "", fmt.Errorf("dataset %q: a dataset is owner/name", repo)
	}
	for i, p := range parts {
		if p == "" || p == "." || p == ".." {
			return "", fmt.Errorf("dataset %q: a dataset is owner/name", repo)
		}
		parts[i] = url.PathEscape(p)
	}
	return "/api/datasets/" + strings.Join(parts, "/"), nil
}

// statusError describes an unexpected answer.
func statusError(resp *http.Response) *StatusError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	return &StatusError{
		Status:     resp.StatusCode,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Body:       cleanBody(body),
	}
}

// cleanBody makes the beginning of a body fit for a message: valid UTF-8, no NUL, one line, trimmed.
func cleanBody(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) {
		// A multi-byte character cut at the limit, or a body that is not text.
		s = strings.ToValidUTF8(s, "")
	}
	s = strings.Map(func(r rune) rune {
		switch {
		case r == 0:
			return -1
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// parseRetryAfter reads a Retry-After header: a number of seconds, or an HTTP date. It returns zero when the
// header is absent, malformed or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(7*24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			// Whole seconds, rounded up: never ask before the date.
			return (d + time.Second - 1).Truncate(time.Second)
		}
	}
	return 0
}

// drain reads what is left of a body, a little, so that the connection can be reused, and closes it.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}
