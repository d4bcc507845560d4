package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	shaMain    = "8d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f"
	shaTag     = "3c8e0a1f5b7d9c2e4f6a8b0d1c3e5f7a9b2d4c6e"
	shaParquet = "2b04cb882b107dd808e084c70c08383fa2f342f4"
	testToken  = "hf_testTokenThatMustNeverBeLogged"
)

// refsBody is an answer of GET /api/datasets/{repo}/refs as the Hub sends it.
const refsBody = `{"branches":[{"name":"main","ref":"refs/heads/main","targetCommit":"` + shaMain + `"},
	{"name":"v2-dev","ref":"refs/heads/v2-dev","targetCommit":"` + shaTag + `"}],
	"converts":[{"name":"parquet","ref":"refs/convert/parquet","targetCommit":"` + shaParquet + `"}],
	"tags":[{"name":"v1.0","ref":"refs/tags/v1.0","targetCommit":"` + shaTag + `"}]}`

// infoBody is the beginning of an answer of GET /api/datasets/{repo}.
const infoBody = `{"_id":"66a1f0c2b9e4d3a1f2c3d4e5","id":"acme/support-tickets","author":"acme","sha":"` + shaMain + `",
	"lastModified":"2025-03-04T10:11:12.000Z","private":false,"gated":false,"disabled":false,"downloads":12,"likes":0,
	"tags":["language:en"],"cardData":{"license":"mit"},"siblings":[{"rfilename":".gitattributes"},{"rfilename":"README.md"}],
	"createdAt":"2024-07-25T10:00:00.000Z"}`

// request is what the fake Hub saw of one request.
type request struct {
	Path, EscapedPath, Authorization, Accept string
}

// fakeHub serves answers by escaped path and records the requests it got.
type fakeHub struct {
	t      *testing.T
	server *httptest.Server
	mu     sync.Mutex
	seen   []request
	routes map[string]http.HandlerFunc // by escaped path
}

func newFakeHub(t *testing.T, routes map[string]http.HandlerFunc) *fakeHub {
	t.Helper()
	h := &fakeHub{t: t, routes: routes}
	h.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen = append(h.seen, request{Path: r.URL.Path, EscapedPath: r.URL.EscapedPath(),
			Authorization: r.Header.Get("Authorization"), Accept: r.Header.Get("Accept")})
		h.mu.Unlock()
		if route, ok := h.routes[r.URL.EscapedPath()]; ok && r.Method == http.MethodGet {
			route(w, r)
			return
		}
		w.Header().Set("X-Error-Code", "RepoNotFound")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"Repository not found"}`))
	}))
	t.Cleanup(h.server.Close)
	return h
}

func (h *fakeHub) requests() []request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]request(nil), h.seen...)
}

func answer(status int, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	cases := []struct {
		endpoint, want string
	}{
		{"", EndpointDefault},
		{"  ", EndpointDefault},
		{"https://huggingface.co/", "https://huggingface.co"},
		{"http://hub.internal:8080//", "http://hub.internal:8080"},
		{"https://mirror.example/hf", "https://mirror.example/hf"},
	}
	for _, tc := range cases {
		c := New(tc.endpoint, "")
		require.Equal(t, tc.want, c.Endpoint(), "endpoint %q", tc.endpoint)
		require.Equal(t, TimeoutDefault, c.http.Timeout)
	}
}

func TestDatasetRefs(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(t, map[string]http.HandlerFunc{
		"/api/datasets/acme/support-tickets/refs": answer(http.StatusOK, refsBody),
		"/api/datasets/acme/weird%20name/refs":    answer(http.StatusOK, `{"branches":[],"tags":[],"converts":[]}`),
		"/api/datasets/squad/refs":                answer(http.StatusOK, `{"branches":[{"name":"main","ref":"refs/heads/main","targetCommit":"`+shaMain+`"}]}`),
	})
	c := New(hub.server.URL+"/", "")
	ctx := context.Background()

	refs, err := c.DatasetRefs(ctx, "acme/support-tickets")
	require.NoError(t, err)
	require.Equal(t, []Ref{
		{Name: "main", Ref: "refs/heads/main", TargetCommit: shaMain},
		{Name: "v2-dev", Ref: "refs/heads/v2-dev", TargetCommit: shaTag},
	}, refs.Branches)
	require.Equal(t, []Ref{{Name: "v1.0", Ref: "refs/tags/v1.0", TargetCommit: shaTag}}, refs.Tags)
	require.Equal(t, []Ref{{Name: "parquet", Ref: "refs/convert/parquet", TargetCommit: shaParquet}}, refs.Converts)
	all := refs.All()
	require.Len(t, all, 4)
	require.Equal(t, "refs/heads/main", all[0].Ref)
	require.Equal(t, "refs/tags/v1.0", all[2].Ref)
	require.Equal(t, "refs/convert/parquet", all[3].Ref)

	refs, err = c.DatasetRefs(ctx, "acme/weird name")
	require.NoError(t, err)
	require.Empty(t, refs.All())

	refs, err = c.DatasetRefs(ctx, "squad")
	require.NoError(t, err)
	require.Len(t, refs.Branches, 1)
	require.Nil(t, refs.Tags, "a kind the answer leaves out is empty")

	seen := hub.requests()
	require.Len(t, seen, 3)
	require.Equal(t, "/api/datasets/acme/support-tickets/refs", seen[0].EscapedPath)
	require.Equal(t, "/api/datasets/acme/weird%20name/refs", seen[1].EscapedPath, "each segment escaped, the slash kept")
	require.Equal(t, "application/json", seen[0].Accept)
	require.Empty(t, seen[0].Authorization, "no token, no Authorization header")
}

func TestDatasetID(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(t, map[string]http.HandlerFunc{
		"/api/datasets/acme/support-tickets": answer(http.StatusOK, infoBody),
		"/api/datasets/acme/no-id":           answer(http.StatusOK, `{"id":"acme/no-id"}`),
		"/api/datasets/acme/broken":          answer(http.StatusOK, `{"_id":`),
	})
	c := New(hub.server.URL, "")
	ctx := context.Background()

	id, err := c.DatasetID(ctx, "acme/support-tickets")
	require.NoError(t, err)
	require.Equal(t, "66a1f0c2b9e4d3a1f2c3d4e5", id)

	_, err = c.DatasetID(ctx, "acme/no-id")
	require.ErrorContains(t, err, "no _id")
	_, err = c.DatasetID(ctx, "acme/broken")
	require.ErrorContains(t, err, "decode the answer")

	_, err = c.DatasetID(ctx, "acme/missing")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusNotFound, se.Status)
	require.Equal(t, `{"error":"Repository not found"}`, se.Body)
}

func TestRevisionExists(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(t, map[string]http.HandlerFunc{
		"/api/datasets/acme/x/revision/" + shaMain: answer(http.StatusOK, infoBody),
		"/api/datasets/acme/x/revision/" + shaTag: answer(http.StatusNotFound, `{"error":"Invalid rev id: `+shaTag+`"}`,
			"X-Error-Code", "RevisionNotFound"),
		"/api/datasets/acme/x/revision/refs%2Fpr%2F7": answer(http.StatusOK, infoBody),
		"/api/datasets/acme/busy/revision/" + shaMain: answer(http.StatusTooManyRequests, `{"error":"rate limited"}`, "Retry-After", "12"),
		"/api/datasets/acme/down/revision/" + shaMain: answer(http.StatusBadGateway, `<html>bad gateway</html>`),
		"/api/datasets/acme/auth/revision/" + shaMain: answer(http.StatusUnauthorized, `{"error":"Invalid credentials in Authorization header"}`),
	})
	c := New(hub.server.URL, "")
	cases := []struct {
		name, repo, revision string
		want                 bool
		wantStatus           int // 0: no error
		wantRetryAfter       time.Duration
	}{
		{"known", "acme/x", shaMain, true, 0, 0},
		{"unknown revision", "acme/x", shaTag, false, 0, 0},
		{"unknown dataset", "acme/missing", shaMain, false, 0, 0},
		{"a ref name is one escaped segment", "acme/x", "refs/pr/7", true, 0, 0},
		{"rate limited", "acme/busy", shaMain, false, http.StatusTooManyRequests, 12 * time.Second},
		{"server error", "acme/down", shaMain, false, http.StatusBadGateway, 0},
		{"unauthorized", "acme/auth", shaMain, false, http.StatusUnauthorized, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ok, err := c.RevisionExists(context.Background(), tc.repo, tc.revision)
			require.Equal(t, tc.want, ok)
			if tc.wantStatus == 0 {
				require.NoError(t, err)
				return
			}
			var se *StatusError
			require.ErrorAs(t, err, &se)
			require.Equal(t, tc.wantStatus, se.Status)
			require.Equal(t, tc.wantRetryAfter, se.RetryAfter)
			require.Contains(t, err.Error(), "/api/datasets/"+tc.repo+"/revision/", "the error says what was asked")
		})
	}
	_, err := c.RevisionExists(context.Background(), "acme/x", "")
	require.Error(t, err)
}

func TestStatusErrors(t *testing.T) {
	t.Parallel()
	longBody := `{"error": "` + strings.Repeat("é", 150) + `"}` // 200 bytes end inside a character
	hub := newFakeHub(t, map[string]http.HandlerFunc{
		"/api/datasets/acme/seconds/refs": answer(http.StatusTooManyRequests, `{"error":"You have exceeded our hourly quotas"}`, "Retry-After", "30"),
		"/api/datasets/acme/date/refs": func(w http.ResponseWriter, r *http.Request) {
			// Dated when asked: the subtest may start a while after the test.
			date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
			answer(http.StatusTooManyRequests, "", "Retry-After", date)(w, r)
		},
		"/api/datasets/acme/bare/refs":    answer(http.StatusTooManyRequests, "slow down"),
		"/api/datasets/acme/unavail/refs": answer(http.StatusServiceUnavailable, "maintenance\x00\n", "Retry-After", "120"),
		"/api/datasets/acme/long/refs":    answer(http.StatusInternalServerError, longBody),
		"/api/datasets/acme/private/refs": answer(http.StatusUnauthorized, `{"error":"Invalid username or password."}`),
	})
	c := New(hub.server.URL, "")
	cases := []struct {
		repo            string
		wantStatus      int
		wantRetryMin    time.Duration
		wantRetryMax    time.Duration
		wantBody        string
		wantBodyPrefix  string
		wantMessagePart string
	}{
		{repo: "acme/seconds", wantStatus: 429, wantRetryMin: 30 * time.Second, wantRetryMax: 30 * time.Second,
			wantBody: `{"error":"You have exceeded our hourly quotas"}`, wantMessagePart: "429 Too Many Requests (retry after 30s)"},
		{repo: "acme/date", wantStatus: 429, wantRetryMin: 85 * time.Second, wantRetryMax: 91 * time.Second},
		{repo: "acme/bare", wantStatus: 429, wantBody: "slow down"},
		{repo: "acme/unavail", wantStatus: 503, wantRetryMin: 2 * time.Minute, wantRetryMax: 2 * time.Minute, wantBody: "maintenance"},
		{repo: "acme/long", wantStatus: 500, wantBodyPrefix: `{"error": "ééé`, wantMessagePart: "500 Internal Server Error"},
		{repo: "acme/private", wantStatus: 401, wantBody: `{"error":"Invalid username or password."}`},
		{repo: "acme/missing", wantStatus: 404, wantBody: `{"error":"Repository not found"}`, wantMessagePart: "/api/datasets/acme/missing/refs"},
	}
	for _, tc := range cases {
		t.Run(tc.repo, func(t *testing.T) {
			t.Parallel()
			_, err := c.DatasetRefs(context.Background(), tc.repo)
			var se *StatusError
			require.ErrorAs(t, err, &se)
			require.Equal(t, tc.wantStatus, se.Status)
			require.GreaterOrEqual(t, se.RetryAfter, tc.wantRetryMin)
			require.LessOrEqual(t, se.RetryAfter, tc.wantRetryMax)
			require.LessOrEqual(t, len(se.Body), errorBodyLimit)
			if tc.wantBody != "" {
				require.Equal(t, tc.wantBody, se.Body)
			}
			if tc.wantBodyPrefix != "" {
				require.True(t, strings.HasPrefix(se.Body, tc.wantBodyPrefix), se.Body)
				require.NotContains(t, se.Body, "\uFFFD", "a character cut at the limit is dropped, not mangled")
				require.Len(t, se.Body, errorBodyLimit-1)
			}
			require.Contains(t, err.Error(), tc.wantMessagePart)
		})
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	hub := newFakeHub(t, map[string]http.HandlerFunc{
		"/api/datasets/acme/slow/refs":                slow,
		"/api/datasets/acme/slow/revision/" + shaMain: slow,
	})
	defer close(release)
	c := New(hub.server.URL, testToken).WithTimeout(100 * time.Millisecond)
	start := time.Now()
	_, err := c.DatasetRefs(context.Background(), "acme/slow")
	require.Error(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	var netErr net.Error
	require.ErrorAs(t, err, &netErr)
	require.True(t, netErr.Timeout(), "%v", err)
	var se *StatusError
	require.False(t, errors.As(err, &se), "a timeout is no answer")
	require.NotContains(t, err.Error(), testToken)

	_, err = c.RevisionExists(context.Background(), "acme/slow", shaMain)
	require.Error(t, err, "a revision that cannot be checked is an error, not a no")

	// The context's deadline counts too.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = New(hub.server.URL, "").DatasetRefs(ctx, "acme/slow")
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(t, nil)
	endpoint := hub.server.URL
	hub.server.Close()
	_, err := New(endpoint, "").DatasetRefs(context.Background(), "acme/x")
	require.Error(t, err)
	var se *StatusError
	require.False(t, errors.As(err, &se))
}

func TestToken(t *testing.T) {
	t.Parallel()
	hub := newFakeHub(t, map[string]http.HandlerFunc{
		"/api/datasets/acme/private/refs": func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+testToken {
				answer(http.StatusUnauthorized, `{"error":"Invalid username or password."}`)(w, r)
				return
			}
			answer(http.StatusOK, refsBody)(w, r)
		},
	})
	ctx := context.Background()

	with := New(hub.server.URL, testToken)
	refs, err := with.DatasetRefs(ctx, "acme/private")
	require.NoError(t, err)
	require.Len(t, refs.Branches, 2)
	_, err = with.DatasetRefs(ctx, "acme/missing")
	require.Error(t, err)
	require.NotContains(t, err.Error(), testToken)

	without := New(hub.server.URL, "")
	_, err = without.DatasetRefs(ctx, "acme/private")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusUnauthorized, se.Status)

	seen := hub.requests()
	require.Equal(t, "Bearer "+testToken, seen[0].Authorization)
	require.Equal(t, "Bearer "+testToken, seen[1].Authorization)
	require.Empty(t, seen[2].Authorization)

	// Nothing that describes the client shows the token.
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	logger.Info("hub client", "hub", with)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("hub client", "hub", with)
	for _, s := range []string{
		logs.String(), fmt.Sprint(with), fmt.Sprintf("%v %+v %#v %s", with, with, with, with), with.String(),
	} {
		require.NotContains(t, s, testToken)
		require.NotContains(t, s, testToken[3:])
	}
	require.Contains(t, logs.String(), "token=set")
	require.Contains(t, without.String(), "token: none")
}

func TestDatasetPath(t *testing.T) {
	t.Parallel()
	cases := []struct {
		repo, want string
	}{
		{"acme/support-tickets", "/api/datasets/acme/support-tickets"},
		{"squad", "/api/datasets/squad"},
		{"acme/weird name", "/api/datasets/acme/weird%20name"},
		{"acme/a?b#c%d", "/api/datasets/acme/a%3Fb%23c%25d"},
		{"", ""},
		{"acme/", ""},
		{"/x", ""},
		{"a/b/c", ""},
		{"../x", ""},
		{"acme/..", ""},
		{"acme/.", ""},
	}
	for _, tc := range cases {
		got, err := datasetPath(tc.repo)
		if tc.want == "" {
			require.Error(t, err, "repo %q", tc.repo)
			continue
		}
		require.NoError(t, err, "repo %q", tc.repo)
		require.Equal(t, tc.want, got)
	}
	_, err := New("http://127.0.0.1:1", "").DatasetRefs(context.Background(), "../../api/whoami-v2")
	require.ErrorContains(t, err, "a dataset is owner/name", "refused before any request")
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"30", 30 * time.Second},
		{" 5 ", 5 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{"1.5", 0},
		{"99999999999", 7 * 24 * time.Hour},
		{"Tue, 04 Mar 2025 10:02:00 GMT", 2 * time.Minute},
		{"Tuesday, 04-Mar-25 10:00:30 GMT", 30 * time.Second},
		{"Tue Mar  4 10:00:10 2025", 10 * time.Second},
		{"Tue, 04 Mar 2025 09:59:00 GMT", 0},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, parseRetryAfter(tc.header, now), "Retry-After %q", tc.header)
	}
	// A date is rounded up to whole seconds: never earlier than asked.
	require.Equal(t, 30*time.Second, parseRetryAfter("Tue, 04 Mar 2025 10:00:30 GMT", now.Add(500*time.Millisecond)))
}
