package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// blobID asks git for the blob id of content.
func blobID(t *testing.T, content string) string {
	t.Helper()
	cmd := exec.Command("git", "hash-object", "--stdin")
	cmd.Stdin = strings.NewReader(content)
	out, err := cmd.Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

// treeRepo is a dataset of 27 files: a card, 25 shards under data/ and one LFS file.
func treeRepo(t *testing.T) (repo *hubtest.Repo, head string) {
	t.Helper()
	repo = hubtest.NewRepo(t, "acme/tickets")
	repo.Write("README.md", "# Tickets\n")
	for i := range 25 {
		repo.Write(fmt.Sprintf("data/part-%02d.csv", i), fmt.Sprintf("id\n%d\n", i))
	}
	repo.WriteLFS("data/train.parquet", strings.Repeat("PAR1", 500))
	head = repo.Commit(t, "Add the data")
	repo.Branch(t, "feature/x+y", head)
	return repo, head
}

func TestListTree(t *testing.T) {
	t.Parallel()
	repo, head := treeRepo(t)
	shard := strings.Repeat("PAR1", 500)
	pointer := "version https://git-lfs.github.com/spec/v1\noid sha256:" + sha256Hex(shard) + "\nsize 2000\n"

	srv := hubtest.NewServer(t, repo)
	srv.SetPageSize(10)
	c := New(srv.URL, "")
	for _, rev := range []string{head, "main", "feature/x+y"} {
		files, err := c.ListTree(context.Background(), "acme/tickets", rev, 0)
		require.NoError(t, err, rev)
		require.Len(t, files, 27, "28 entries in pages of 10, the directory left out")
		byPath := map[string]TreeFile{}
		for _, f := range files {
			byPath[f.Path] = f
		}
		require.Len(t, byPath, 27)
		require.Equal(t, TreeFile{Path: "README.md", OID: blobID(t, "# Tickets\n"), Size: 10}, byPath["README.md"])
		require.Equal(t, TreeFile{Path: "data/part-07.csv", OID: blobID(t, "id\n7\n"), Size: 5}, byPath["data/part-07.csv"])
		require.Equal(t, TreeFile{Path: "data/train.parquet", OID: blobID(t, pointer), Size: 2000,
			LFS: &LFSInfo{OID: sha256Hex(shard), Size: 2000}}, byPath["data/train.parquet"])
	}
	require.Equal(t, 9, srv.Requests("/tree/"), "three pages for each revision")
	require.Equal(t, 3, srv.Requests("/tree/feature/x+y"), "the branch name is one escaped segment")
}

func TestListTreeFailures(t *testing.T) {
	t.Parallel()
	repo, head := treeRepo(t)
	const token = "hf_treeTokenThatMustNeverBeLogged"
	cases := []struct {
		name     string
		setup    func(*hubtest.Server)
		token    string
		timeout  time.Duration // the client's per-request timeout; 0 for the default
		deadline time.Duration // ctx's; 0 for none
		rev      string
		max      int

		wantFiles    int
		wantStatus   int   // the *StatusError's; 0 for none
		wantErr      error // errors.Is
		wantTimeout  bool
		wantRequests int
		minElapsed   time.Duration
		maxElapsed   time.Duration
	}{
		{name: "unknown revision", rev: "nope", wantStatus: 404, wantRequests: 1, maxElapsed: time.Second},
		{name: "unknown commit", rev: strings.Repeat("0", 40), wantStatus: 404, wantRequests: 1},
		{name: "rate limited, then answered", rev: head, wantFiles: 27, wantRequests: 1 + 3, minElapsed: time.Second,
			setup: func(s *hubtest.Server) {
				s.Fail(hubtest.Fault{Path: "/tree/", Status: 429, RetryAfter: "1", Times: 1})
			}},
		{name: "rate limited without Retry-After waits a second", rev: head, wantFiles: 27, wantRequests: 1 + 3,
			minElapsed: time.Second, setup: func(s *hubtest.Server) {
				s.Fail(hubtest.Fault{Path: "/tree/", Status: 429, Times: 1})
			}},
		{name: "rate limited for ever", rev: head, wantStatus: 429, wantRequests: 6, minElapsed: 5 * time.Second,
			setup: func(s *hubtest.Server) { s.Fail(hubtest.Fault{Status: 429, RetryAfter: "1"}) }},
		{name: "a Retry-After over a minute gives up at once", rev: head, wantStatus: 429, wantRequests: 1,
			maxElapsed: time.Second, setup: func(s *hubtest.Server) { s.Fail(hubtest.Fault{Status: 429, RetryAfter: "61"}) }},
		{name: "a Retry-After past the deadline gives up at once", rev: head, deadline: 3 * time.Second,
			wantStatus: 429, wantRequests: 1, maxElapsed: time.Second,
			setup: func(s *hubtest.Server) { s.Fail(hubtest.Fault{Status: 429, RetryAfter: "5"}) }},
		{name: "server errors, then answered", rev: head, wantFiles: 27, wantRequests: 2 + 3, minElapsed: 3 * time.Second,
			setup: func(s *hubtest.Server) { s.Fail(hubtest.Fault{Path: "/tree/", Status: 503, Times: 2}) }},
		{name: "server errors for ever", rev: head, wantStatus: 502, wantRequests: 3, minElapsed: 3 * time.Second,
			maxElapsed: 6 * time.Second, setup: func(s *hubtest.Server) { s.Fail(hubtest.Fault{Status: 502}) }},
		{name: "the Hub hangs", rev: head, timeout: 200 * time.Millisecond, wantTimeout: true, wantRequests: 3,
			minElapsed: 3 * time.Second, maxElapsed: 8 * time.Second,
			setup: func(s *hubtest.Server) { s.Fail(hubtest.Fault{Hang: true}) }},
		{name: "the deadline ends the retries", rev: head, deadline: 1500 * time.Millisecond, wantStatus: 500,
			wantRequests: 2, maxElapsed: 2 * time.Second, setup: func(s *hubtest.Server) { s.Fail(hubtest.Fault{Status: 500}) }},
		{name: "private without token", rev: head, wantStatus: 401, wantRequests: 1,
			setup: func(s *hubtest.Server) { s.SetPrivate("acme/tickets", token) }},
		{name: "private with another token", rev: head, token: "hf_other", wantStatus: 401, wantRequests: 1,
			setup: func(s *hubtest.Server) { s.SetPrivate("acme/tickets", token) }},
		{name: "private with its token", rev: head, token: token, wantFiles: 27, wantRequests: 3,
			setup: func(s *hubtest.Server) { s.SetPrivate("acme/tickets", token) }},
		{name: "private and missing", rev: "nope", token: token, wantStatus: 404, wantRequests: 1,
			setup: func(s *hubtest.Server) { s.SetPrivate("acme/tickets", token) }},
		{name: "more files than asked for", rev: head, max: 5, wantErr: ErrTooManyFiles, wantRequests: 1},
		{name: "more files than asked for, on a later page", rev: head, max: 26, wantErr: ErrTooManyFiles, wantRequests: 3},
		{name: "exactly as many files as asked for", rev: head, max: 27, wantFiles: 27, wantRequests: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := hubtest.NewServer(t, repo)
			srv.SetPageSize(10)
			if tc.setup != nil {
				tc.setup(srv)
			}
			c := New(srv.URL, tc.token)
			if tc.timeout > 0 {
				c = c.WithTimeout(tc.timeout)
			}
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			start := time.Now()
			files, err := c.ListTree(ctx, "acme/tickets", tc.rev, tc.max)
			elapsed := time.Since(start)

			require.Equal(t, tc.wantRequests, srv.Requests("/tree/"), "requests")
			require.GreaterOrEqual(t, elapsed, tc.minElapsed)
			if tc.maxElapsed > 0 {
				require.Less(t, elapsed, tc.maxElapsed)
			}
			if tc.wantStatus == 0 && tc.wantErr == nil && !tc.wantTimeout {
				require.NoError(t, err)
				require.Len(t, files, tc.wantFiles)
				return
			}
			require.Error(t, err)
			require.Nil(t, files)
			require.NotContains(t, err.Error(), token)
			var se *StatusError
			if tc.wantStatus != 0 {
				require.ErrorAs(t, err, &se)
				require.Equal(t, tc.wantStatus, se.Status, "%v", err)
				require.Contains(t, err.Error(), "/api/datasets/acme/tickets/tree/", "the error says what was asked")
			}
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
			}
			if tc.wantTimeout {
				var netErr net.Error
				require.ErrorAs(t, err, &netErr)
				require.True(t, netErr.Timeout(), "%v", err)
				require.False(t, errors.As(err, &se), "a timeout is no answer")
			}
		})
	}
}

func TestListTreeLinks(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		elsewhere.Add(1)
		_, _ = w.Write([]byte(`[]`))
	}))
	t.Cleanup(other.Close)
	entry := `[{"type":"file","oid":"` + strings.Repeat("a", 40) + `","size":1,"path":"a.txt"}]`
	hub := newFakeHub(t, map[string]http.HandlerFunc{
		"/api/datasets/acme/away/tree/main":  answer(http.StatusOK, entry, "Link", "<"+other.URL+`/api/datasets/acme/away/tree/main?cursor=x>; rel="next"`),
		"/api/datasets/acme/loop/tree/main":  answer(http.StatusOK, entry, "Link", `</api/datasets/acme/loop/tree/main?recursive=true&expand=false>; rel="next"`),
		"/api/datasets/acme/empty/tree/main": answer(http.StatusOK, `[]`, "Link", `</api/datasets/acme/empty/tree/main?cursor=1>; rel="next"`),
		"/api/datasets/acme/relative/tree/main": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.RawQuery == "recursive=true&expand=false" {
				answer(http.StatusOK, entry, "Link", `<?cursor=2>; rel="next", <?cursor=9>; rel="last"`)(w, r)
				return
			}
			answer(http.StatusOK, strings.Replace(entry, "a.txt", "b.txt", 1))(w, r)
		},
		"/api/datasets/acme/garbled/tree/main": answer(http.StatusOK, `[{"type":"file","path":"a.txt"}]`),
	})
	c := New(hub.server.URL, testToken)
	cases := []struct {
		repo      string
		wantPaths []string
		wantErr   string
	}{
		{"acme/away", nil, "is not on the Hub's endpoint"},
		{"acme/loop", nil, "was read already"},
		{"acme/empty", nil, "an empty page links to another"},
		{"acme/relative", []string{"a.txt", "b.txt"}, ""},
		{"acme/garbled", nil, "file a.txt of the listing has no oid"},
	}
	for _, tc := range cases {
		files, err := c.ListTree(context.Background(), tc.repo, "main", 0)
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, tc.repo)
			require.NotContains(t, err.Error(), testToken)
			continue
		}
		require.NoError(t, err, tc.repo)
		var paths []string
		for _, f := range files {
			paths = append(paths, f.Path)
		}
		require.Equal(t, tc.wantPaths, paths)
	}
	require.Zero(t, elsewhere.Load(), "no request went to another host")
}

func TestParentCommit(t *testing.T) {
	t.Parallel()
	repo := hubtest.NewRepo(t, "acme/history")
	repo.Write("a.txt", "1\n")
	c1 := repo.Commit(t, "First")
	repo.Write("a.txt", "2\n")
	c2 := repo.Commit(t, "Second")
	repo.Remove("a.txt")
	c3 := repo.Commit(t, "Third")
	repo.Branch(t, "old", c1)
	const token = "hf_historyToken"

	cases := []struct {
		name, rev, token string
		pageSize         int
		private          bool
		want             string
		wantStatus       int
	}{
		{name: "head by id", rev: c3, want: c2},
		{name: "head by branch", rev: "main", want: c2},
		{name: "middle", rev: c2, want: c1},
		{name: "first commit", rev: c1, want: ""},
		{name: "first commit by branch", rev: "old", want: ""},
		{name: "pages of one", rev: c3, pageSize: 1, want: c2},
		{name: "first commit, pages of one", rev: c1, pageSize: 1, want: ""},
		{name: "unknown", rev: "nope", wantStatus: 404},
		{name: "private without token", rev: c3, private: true, wantStatus: 401},
		{name: "private with token", rev: c3, private: true, token: token, want: c2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := hubtest.NewServer(t, repo)
			if tc.pageSize > 0 {
				srv.SetPageSize(tc.pageSize)
			}
			if tc.private {
				srv.SetPrivate("acme/history", token)
			}
			got, err := New(srv.URL, tc.token).ParentCommit(context.Background(), "acme/history", tc.rev)
			if tc.wantStatus != 0 {
				var se *StatusError
				require.ErrorAs(t, err, &se)
				require.Equal(t, tc.wantStatus, se.Status)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}

	// Server errors are retried as the tree's are.
	srv := hubtest.NewServer(t, repo)
	srv.Fail(hubtest.Fault{Path: "/commits/", Status: 500, Times: 1})
	got, err := New(srv.URL, "").ParentCommit(context.Background(), "acme/history", c2)
	require.NoError(t, err)
	require.Equal(t, c1, got)
	require.Equal(t, 2, srv.Requests("/commits/"))

	_, err = New(srv.URL, "").ParentCommit(context.Background(), "acme/history", "")
	require.ErrorContains(t, err, "empty revision")
	_, err = New(srv.URL, "").ParentCommit(context.Background(), "../x", c2)
	require.ErrorContains(t, err, "a dataset is owner/name")
}

func TestParentCommitAnswers(t *testing.T) {
	t.Parallel()
	other := strings.Repeat("b", 40)
	hub := newFakeHub(t, map[string]http.HandlerFunc{
		"/api/datasets/acme/x/commits/" + shaMain: answer(http.StatusOK, `[{"id":"`+other+`","title":"t"}]`),
		"/api/datasets/acme/x/commits/" + shaTag:  answer(http.StatusOK, `[]`),
		"/api/datasets/acme/x/commits/main":       answer(http.StatusOK, `[{"id":"`+shaMain+`"},{"title":"no id"}]`),
	})
	c := New(hub.server.URL, "")
	_, err := c.ParentCommit(context.Background(), "acme/x", shaMain)
	require.ErrorContains(t, err, "the Hub listed "+other+" first")
	_, err = c.ParentCommit(context.Background(), "acme/x", shaTag)
	require.ErrorContains(t, err, "listed no commit")
	_, err = c.ParentCommit(context.Background(), "acme/x", "main")
	require.ErrorContains(t, err, "has no id")
}

func TestEscapeSegment(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"main", "main"},
		{shaMain, shaMain},
		{"refs/pr/7", "refs%2Fpr%2F7"},
		{"feature/x+y", "feature%2Fx%2By"},
		{"a b~c_d.e-f", "a%20b~c_d.e-f"},
		{"v1:2@3&4=5;6,7$8!9'(0)*", "v1%3A2%403%264%3D5%3B6%2C7%248%219%27%280%29%2A"},
		{"é?#%", "%C3%A9%3F%23%25"},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, escapeSegment(tc.in), tc.in)
	}
}

func TestNextLink(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		values []string
		want   string
	}{
		{"none", nil, ""},
		{"the Hub's", []string{`<https://huggingface.co/api/datasets/a/b/tree/main?recursive=true&cursor=eyJ>; rel="next"`},
			"https://huggingface.co/api/datasets/a/b/tree/main?recursive=true&cursor=eyJ"},
		{"among others", []string{`<https://x/1>; rel="prev", <https://x/3>; rel="next", <https://x/9>; rel="last"`}, "https://x/3"},
		{"in a second header", []string{`<https://x/1>; rel="prev"`, `<https://x/2>; rel=next`}, "https://x/2"},
		{"several relations", []string{`<https://x/2>; title="a, b; c"; rel="last next"`}, "https://x/2"},
		{"case", []string{`<https://x/2>; REL="Next"`}, "https://x/2"},
		{"no next", []string{`<https://x/9>; rel="last"`}, ""},
		{"next in a title only", []string{`<https://x/9>; title="rel=next"`}, ""},
		{"garbled", []string{`https://x/2; rel="next"`, `<https://x/3; rel="next"`}, ""},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, nextLink(tc.values), tc.name)
	}
}
