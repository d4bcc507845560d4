package hubtest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
)

// treeEntry is an entry of a tree or paths-info answer as huggingface_hub reads it.
type treeEntry struct {
	Type string `json:"type"`
	OID  string `json:"oid"`
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *struct {
		OID         string `json:"oid"`
		Size        int64  `json:"size"`
		PointerSize int64  `json:"pointerSize"`
	} `json:"lfs"`
}

// answer is what the server answered.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(a.body, v), "%s", a.body)
}

// do sends a request with the given headers ("Name", "value", ...).
func do(t *testing.T, method, rawURL, body string, headers ...string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{resp.StatusCode, resp.Header, b}
}

func get(t *testing.T, rawURL string, headers ...string) answer {
	t.Helper()
	return do(t, http.MethodGet, rawURL, "", headers...)
}

var nextLink = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// listAll follows the Link headers from rawURL and returns every entry and how many pages there were.
func listAll[T any](t *testing.T, rawURL string, headers ...string) ([]T, int) {
	t.Helper()
	var all []T
	pages := 0
	for rawURL != "" {
		a := get(t, rawURL, headers...)
		require.Equal(t, http.StatusOK, a.status, "%s: %s", rawURL, a.body)
		var items []T
		a.decode(t, &items)
		all = append(all, items...)
		pages++
		rawURL = ""
		if link := a.header.Get("Link"); link != "" {
			m := nextLink.FindStringSubmatch(link)
			require.NotNil(t, m, "Link %q", link)
			rawURL = m[1]
		}
	}
	return all, pages
}

// gitRev asks git itself, with a command the server does not use, for an object's id.
func gitRev(t *testing.T, dir, spec string) string {
	t.Helper()
	cmd := exec.Command("git", "rev-parse", spec)
	cmd.Dir = dir
	out, err := cmd.Output()
	require.NoError(t, err, "git rev-parse %s", spec)
	return strings.TrimSpace(string(out))
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestTree(t *testing.T) {
	t.Parallel()
	repo := hubtest.NewRepo(t, "acme/tickets")
	shard := strings.Repeat("parquet bytes ", 1000)
	repo.Write("README.md", "# Tickets\n")
	repo.Write("data/labels.csv", "id,label\n1,spam\n")
	repo.WriteLFS("data/train-00000.parquet", shard)
	first := repo.Commit(t, "Add the first shard")
	srv := hubtest.NewServer(t, repo)
	base := srv.URL + "/api/datasets/acme/tickets"

	entries, pages := listAll[treeEntry](t, base+"/tree/"+first+"?recursive=true&expand=false")
	require.Equal(t, 1, pages)
	byPath := map[string]treeEntry{}
	for _, e := range entries {
		byPath[e.Path] = e
	}
	require.Len(t, byPath, 4)
	dir := hubtest.Dir(repo)
	require.Equal(t, "directory", byPath["data"].Type)
	require.Equal(t, gitRev(t, dir, first+":data"), byPath["data"].OID, "a directory's oid is its tree id")
	readme := byPath["README.md"]
	require.Equal(t, treeEntry{Type: "file", OID: gitRev(t, dir, first+":README.md"), Size: 10, Path: "README.md"}, readme)

	lfs := byPath["data/train-00000.parquet"]
	pointer := fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", sha256Hex(shard), len(shard))
	require.Equal(t, gitRev(t, dir, first+":data/train-00000.parquet"), lfs.OID, "the pointer's blob id")
	require.Equal(t, int64(len(shard)), lfs.Size, "the content's size")
	require.NotNil(t, lfs.LFS)
	require.Equal(t, sha256Hex(shard), lfs.LFS.OID)
	require.Equal(t, int64(len(shard)), lfs.LFS.Size)
	require.Equal(t, int64(len(pointer)), lfs.LFS.PointerSize)

	// Not recursive: the top level only; a folder path: what is under it.
	top, _ := listAll[treeEntry](t, base+"/tree/main")
	require.Len(t, top, 2)
	under, _ := listAll[treeEntry](t, base+"/tree/main/data?recursive=true")
	require.Len(t, under, 2)
	require.Equal(t, http.StatusNotFound, get(t, base+"/tree/main/nowhere").status)

	// A rename keeps the blob id and moves the path; a removal drops it.
	repo.Rename("data/labels.csv", "data/v2/labels.csv")
	repo.Remove("README.md")
	second := repo.Commit(t, "Move the labels\n\nAnd drop the card.")
	entries, _ = listAll[treeEntry](t, base+"/tree/"+second+"?recursive=true")
	paths := map[string]string{}
	for _, e := range entries {
		paths[e.Path] = e.OID
	}
	require.NotContains(t, paths, "README.md")
	require.NotContains(t, paths, "data/labels.csv")
	require.Equal(t, byPath["data/labels.csv"].OID, paths["data/v2/labels.csv"])
	require.NotEqual(t, byPath["data"].OID, paths["data"])

	// The first commit's listing did not move.
	again, _ := listAll[treeEntry](t, base+"/tree/"+first+"?recursive=true")
	require.Len(t, again, 4)
}

func TestManyFiles(t *testing.T) {
	t.Parallel()
	repo := hubtest.NewRepo(t, "acme/big")
	for i := range 2000 {
		repo.Write(fmt.Sprintf("data/part-%05d.jsonl", i), fmt.Sprintf(`{"row":%d}`+"\n", i))
	}
	repo.Write("README.md", "big\n")
	sha := repo.Commit(t, "Two thousand shards")
	srv := hubtest.NewServer(t, repo)

	entries, pages := listAll[treeEntry](t, srv.URL+"/api/datasets/acme/big/tree/"+sha+"?recursive=true&expand=false")
	require.Equal(t, 3, pages, "2,002 entries in pages of 1,000")
	seen := map[string]bool{}
	files := 0
	for _, e := range entries {
		require.False(t, seen[e.Path], "%s listed twice", e.Path)
		seen[e.Path] = true
		if e.Type == "file" {
			files++
			require.Regexp(t, "^[0-9a-f]{40}$", e.OID)
		}
	}
	require.Equal(t, 2001, files)
	require.Equal(t, 3, srv.Requests("/tree/"))
}

func TestRevisions(t *testing.T) {
	t.Parallel()
	repo := hubtest.NewRepo(t, "acme/revs")
	srv := hubtest.NewServer(t, repo)
	base := srv.URL + "/api/datasets/acme/revs"

	var info map[string]any
	a := get(t, base)
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	a.decode(t, &info)
	require.Equal(t, "acme/revs", info["id"])
	require.NotContains(t, info, "sha", "no commit yet")
	require.Equal(t, http.StatusNotFound, get(t, base+"/tree/main").status, "no main yet")

	repo.Write("a.txt", "a\n")
	c1 := repo.Commit(t, "First")
	repo.Branch(t, "dev", c1)
	repo.Checkout(t, "dev")
	repo.WriteLFS("big.bin", "large content")
	c2 := repo.Commit(t, "On dev")
	repo.Checkout(t, "main")
	repo.Write("b.txt", "b\n")
	c3 := repo.Commit(t, "Second on main")

	a = get(t, base)
	a.decode(t, &info)
	require.Equal(t, c3, info["sha"])
	id := info["_id"]
	require.Regexp(t, "^[0-9a-f]{24}$", id)
	get(t, base).decode(t, &info)
	require.Equal(t, id, info["_id"], "a stable id")

	var refs struct {
		Branches []struct{ Name, Ref, TargetCommit string }
		Tags     []any
		Converts []any
	}
	get(t, base+"/refs").decode(t, &refs)
	require.Len(t, refs.Branches, 2)
	require.NotNil(t, refs.Tags)
	require.NotNil(t, refs.Converts)
	heads := map[string]string{}
	for _, b := range refs.Branches {
		heads[b.Ref] = b.TargetCommit
		require.Equal(t, "refs/heads/"+b.Name, b.Ref)
	}
	require.Equal(t, map[string]string{"refs/heads/main": c3, "refs/heads/dev": c2}, heads)

	cases := []struct {
		rev      string
		want     string // "" for 404
		siblings []string
	}{
		{c1, c1, []string{"a.txt"}},
		{"dev", c2, []string{"a.txt", "big.bin"}},
		{url.PathEscape("refs/heads/dev"), c2, []string{"a.txt", "big.bin"}},
		{"main", c3, []string{"a.txt", "b.txt"}},
		{"nope", "", nil},
		{strings.Repeat("0", 40), "", nil},
		{"-h", "", nil},
		{c1[:7], "", nil},
	}
	for _, tc := range cases {
		a := get(t, base+"/revision/"+tc.rev+"?blobs=true")
		if tc.want == "" {
			require.Equal(t, http.StatusNotFound, a.status, "%s: %s", tc.rev, a.body)
			require.Equal(t, "RevisionNotFound", a.header.Get("X-Error-Code"))
			var e struct{ Error string }
			a.decode(t, &e)
			require.NotEmpty(t, e.Error)
			continue
		}
		require.Equal(t, http.StatusOK, a.status, "%s: %s", tc.rev, a.body)
		var rev struct {
			SHA      string
			Siblings []struct {
				RFilename string
				BlobID    string
				Size      int64
				LFS       *struct {
					SHA256      string
					Size        int64
					PointerSize int64
				}
			}
		}
		a.decode(t, &rev)
		require.Equal(t, tc.want, rev.SHA, tc.rev)
		var names []string
		for _, s := range rev.Siblings {
			names = append(names, s.RFilename)
			require.Regexp(t, "^[0-9a-f]{40}$", s.BlobID)
			if s.RFilename == "big.bin" {
				require.Equal(t, sha256Hex("large content"), s.LFS.SHA256)
				require.Equal(t, int64(13), s.Size)
			}
		}
		require.Equal(t, tc.siblings, names, tc.rev)
	}

	// Commits, newest first, in pages.
	srv.SetPageSize(1)
	type commitItem struct {
		ID, Title, Message, Date string
		Authors                  []struct{ User string }
	}
	commits, pages := listAll[commitItem](t, base+"/commits/main")
	require.Equal(t, 2, pages)
	require.Equal(t, []string{c3, c1}, []string{commits[0].ID, commits[1].ID})
	require.Equal(t, "Second on main", commits[0].Title)
	require.Equal(t, "2025-03-04T10:00:02.000Z", commits[0].Date)
	require.Equal(t, "hubtest", commits[0].Authors[0].User)
	commits, _ = listAll[commitItem](t, base+"/commits/"+url.PathEscape("refs/heads/dev"))
	require.Equal(t, []string{c2, c1}, []string{commits[0].ID, commits[1].ID})
	require.Equal(t, http.StatusNotFound, get(t, base+"/commits/nope").status)

	require.Equal(t, http.StatusNotFound, get(t, srv.URL+"/api/datasets/acme/other/refs").status)
	require.Equal(t, "RepoNotFound", get(t, srv.URL+"/api/datasets/acme/other").header.Get("X-Error-Code"))
}

func TestPathsInfo(t *testing.T) {
	t.Parallel()
	repo := hubtest.NewRepo(t, "acme/paths")
	repo.Write("README.md", "card\n")
	repo.WriteLFS("data/x.parquet", "x")
	sha := repo.Commit(t, "Files")
	srv := hubtest.NewServer(t, repo)
	endpoint := srv.URL + "/api/datasets/acme/paths/paths-info/" + sha

	cases := []struct {
		name, body, contentType string
		wantStatus              int
		wantPaths               []string
	}{
		{"form", "paths=README.md&paths=data&paths=missing&expand=false", "application/x-www-form-urlencoded", 200,
			[]string{"README.md", "data"}},
		{"json", `{"paths":["data/x.parquet"]}`, "application/json", 200, []string{"data/x.parquet"}},
		{"nothing asked", "expand=false", "application/x-www-form-urlencoded", 400, nil},
		{"bad json", `{"paths":`, "application/json", 400, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := do(t, http.MethodPost, endpoint, tc.body, "Content-Type", tc.contentType)
			require.Equal(t, tc.wantStatus, a.status, "%s", a.body)
			if tc.wantStatus != 200 {
				return
			}
			var entries []treeEntry
			a.decode(t, &entries)
			var paths []string
			for _, e := range entries {
				paths = append(paths, e.Path)
				if e.Path == "data/x.parquet" {
					require.Equal(t, int64(1), e.Size)
					require.Equal(t, sha256Hex("x"), e.LFS.OID)
				}
			}
			require.Equal(t, tc.wantPaths, paths)
		})
	}
	require.Equal(t, http.StatusMethodNotAllowed, get(t, endpoint).status)
}

func TestPrivate(t *testing.T) {
	t.Parallel()
	repo := hubtest.NewRepo(t, "acme/secret")
	repo.Write("a.txt", "a\n")
	repo.Commit(t, "First")
	public := hubtest.NewRepo(t, "acme/open")
	public.Write("a.txt", "a\n")
	public.Commit(t, "First")
	srv := hubtest.NewServer(t, repo, public)
	srv.SetPrivate("acme/secret", "hf_right")

	cases := []struct {
		repo, auth string
		want       int
	}{
		{"acme/secret", "", http.StatusUnauthorized},
		{"acme/secret", "Bearer hf_wrong", http.StatusUnauthorized},
		{"acme/secret", "hf_right", http.StatusUnauthorized},
		{"acme/secret", "Bearer hf_right", http.StatusOK},
		{"acme/open", "", http.StatusOK},
		{"acme/open", "Bearer hf_right", http.StatusOK},
	}
	for _, tc := range cases {
		var headers []string
		if tc.auth != "" {
			headers = []string{"Authorization", tc.auth}
		}
		for _, suffix := range []string{"", "/refs", "/tree/main?recursive=true", "/commits/main", "/revision/main"} {
			a := get(t, srv.URL+"/api/datasets/"+tc.repo+suffix, headers...)
			require.Equal(t, tc.want, a.status, "%s%s with %q: %s", tc.repo, suffix, tc.auth, a.body)
		}
	}
	var info struct{ Private bool }
	get(t, srv.URL+"/api/datasets/acme/secret", "Authorization", "Bearer hf_right").decode(t, &info)
	require.True(t, info.Private)
}

func TestFaults(t *testing.T) {
	t.Parallel()
	repo := hubtest.NewRepo(t, "acme/faulty")
	repo.Write("a.txt", "a\n")
	repo.Commit(t, "First")
	srv := hubtest.NewServer(t, repo)
	tree := srv.URL + "/api/datasets/acme/faulty/tree/main?recursive=true"
	refs := srv.URL + "/api/datasets/acme/faulty/refs"

	srv.Fail(hubtest.Fault{Path: "/tree/", Status: http.StatusTooManyRequests, RetryAfter: "7", Times: 2})
	srv.Fail(hubtest.Fault{Path: "/refs", Status: http.StatusBadGateway})
	for range 2 {
		a := get(t, tree)
		require.Equal(t, http.StatusTooManyRequests, a.status)
		require.Equal(t, "7", a.header.Get("Retry-After"))
	}
	require.Equal(t, http.StatusOK, get(t, tree).status, "the fault is spent after Times")
	for range 3 {
		require.Equal(t, http.StatusBadGateway, get(t, refs).status, "Times 0: for ever")
	}
	require.Equal(t, 3, srv.Requests("/tree/"))
	require.Equal(t, 3, srv.Requests("/refs"))

	srv.Fail(hubtest.Fault{Path: "/commits/", Hang: true})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/datasets/acme/faulty/commits/main", nil)
	require.NoError(t, err)
	start := time.Now()
	_, err = http.DefaultClient.Do(req)
	require.ErrorIs(t, err, context.DeadlineExceeded, "a hang never answers")
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestHangAtCleanup checks that a request still hanging when the test ends does not keep the server from
// closing.
func TestHangAtCleanup(t *testing.T) {
	t.Parallel()
	done := make(chan error, 1)
	t.Run("inner", func(t *testing.T) {
		repo := hubtest.NewRepo(t, "acme/hang")
		srv := hubtest.NewServer(t, repo)
		srv.Fail(hubtest.Fault{Hang: true})
		go func() {
			resp, err := http.Get(srv.URL + "/api/datasets/acme/hang")
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		require.Eventually(t, func() bool { return srv.Requests("/api/") == 1 }, 5*time.Second, 10*time.Millisecond)
	})
	select {
	case err := <-done:
		require.Error(t, err, "the hanging request ends with the server, unanswered")
	case <-time.After(10 * time.Second):
		t.Fatal("the hanging request outlived the server")
	}
}
