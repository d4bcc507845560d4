package hubtest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// PageSizeDefault is how many entries a page of a tree or commits listing holds unless SetPageSize says
// otherwise: the Hub's tree pages hold 1,000.
const PageSizeDefault = 1000

// Server is a stand-in Hub serving the repositories it was given (see the package documentation for its
// endpoints). It is safe for concurrent use.
type Server struct {
	// URL is the server's address, e.g. http://127.0.0.1:40123, to use as the Hub's endpoint.
	URL string

	t     testing.TB
	srv   *httptest.Server
	repos map[string]*Repo
	done  chan struct{} // closed when the test ends: hanging answers give up

	mu       sync.Mutex
	private  map[string]string // token by repository id
	pageSize int
	faults   []*Fault
	paths    []string // of every request, in order
	trees    map[string][]entry
	logs     map[string][]commit
	jobs     *JobsServer // answers /api/jobs/ when mounted
}

// Fault is an answer the server gives instead of the real one, to requests whose path matches.
type Fault struct {
	// Path is a part of the request's (unescaped) URL path the fault applies to, e.g. "/tree/"; "" matches
	// every request.
	Path string
	// Status is the HTTP status to answer, e.g. 429 or 503, with {"error": "..."} as the body.
	Status int
	// RetryAfter, when not empty, is sent as the Retry-After header, e.g. "1".
	RetryAfter string
	// Times is how many requests the fault answers before it is spent; 0 means every request.
	Times int
	// Hang makes the server never answer, until the request's context ends (or the test does); Status is not
	// used then.
	Hang bool
}

// NewServer starts a stand-in Hub serving repos, and closes it when the test ends.
func NewServer(t testing.TB, repos ...*Repo) *Server {
	t.Helper()
	s := &Server{t: t, repos: map[string]*Repo{}, done: make(chan struct{}), private: map[string]string{},
		pageSize: PageSizeDefault, trees: map[string][]entry{}, logs: map[string][]commit{}}
	for _, r := range repos {
		if _, dup := s.repos[r.ID()]; dup {
			t.Fatalf("hubtest: repository %s given twice", r.ID())
		}
		s.repos[r.ID()] = r
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(func() {
		close(s.done)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
	return s
}

// SetPrivate makes the repository private: requests without "Authorization: Bearer <token>" are answered 401, as
// the Hub answers them.
func (s *Server) SetPrivate(repoID, token string) {
	s.t.Helper()
	if _, ok := s.repos[repoID]; !ok || token == "" {
		s.t.Fatalf("hubtest: SetPrivate(%q, ...): want a served repository and a token", repoID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.private[repoID] = token
}

// SetPageSize sets how many entries a page of a tree or commits listing holds (PageSizeDefault until then).
func (s *Server) SetPageSize(n int) {
	s.t.Helper()
	if n < 1 {
		s.t.Fatalf("hubtest: page size %d: want at least 1", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

// MountJobs makes the server answer the Jobs API (/api/jobs/...) with j, so that datasets and Jobs are at one
// endpoint. The dataset faults (Fail) do not apply to those requests: j has its own.
func (s *Server) MountJobs(j *JobsServer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs = j
}

// Fail adds a fault. Faults are tried in the order they were added; the first that matches a request answers it.
func (s *Server) Fail(f Fault) {
	s.t.Helper()
	if !f.Hang && (f.Status < 100 || f.Status > 599) {
		s.t.Fatalf("hubtest: fault with status %d: want an HTTP status, or Hang", f.Status)
	}
	if f.Times < 0 {
		s.t.Fatalf("hubtest: fault with Times %d: want 0 (for ever) or more", f.Times)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault: the Hub answers again.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Requests returns how many requests the server got whose (unescaped) URL path contains substr, faults and
// refusals included.
func (s *Server) Requests(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.paths {
		if strings.Contains(p, substr) {
			n++
		}
	}
	return n
}

// hubError is an error answer: its status, the X-Error-Code header and the message of its JSON body.
type hubError struct {
	status  int
	code    string
	message string
}

func (s *Server) serve(w http.ResponseWriter, req *http.Request) {
	s.mu.Lock()
	jobs := s.jobs
	s.mu.Unlock()
	if jobs != nil && strings.HasPrefix(req.URL.Path, "/api/jobs") {
		jobs.ServeHTTP(w, req)
		return
	}
	if f := s.record(req.URL.Path); f != nil {
		if f.Hang {
			select {
			case <-req.Context().Done():
			case <-s.done:
			}
			// Drop the connection: returning would answer 200 with an empty body.
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = conn.Close()
			}
			return
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		writeJSON(w, f.Status, map[string]string{"error": "fault injected by hubtest"})
		return
	}
	v, herr := s.route(req)
	if herr != nil {
		if herr.code != "" {
			w.Header().Set("X-Error-Code", herr.code)
		}
		writeJSON(w, herr.status, map[string]string{"error": herr.message})
		return
	}
	if p, ok := v.(page); ok {
		if p.next != "" {
			w.Header().Set("Link", "<"+p.next+`>; rel="next"`)
		}
		v = p.items
	}
	writeJSON(w, http.StatusOK, v)
}

// record counts the request and returns the fault that answers it, if any.
func (s *Server) record(path string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paths = append(s.paths, path)
	for i, f := range s.faults {
		if !strings.Contains(path, f.Path) {
			continue
		}
		if f.Times > 0 {
			if f.Times--; f.Times == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return f
	}
	return nil
}

// route answers a request: the value to send as JSON (a page for a paginated listing), or an error answer.
func (s *Server) route(req *http.Request) (any, *hubError) {
	rest, ok := strings.CutPrefix(req.URL.EscapedPath(), "/api/datasets/")
	if !ok {
		return nil, &hubError{http.StatusNotFound, "", "Not Found"}
	}
	segs := strings.Split(rest, "/")
	for i, seg := range segs {
		u, err := url.PathUnescape(seg)
		if err != nil {
			return nil, &hubError{http.StatusBadRequest, "", "invalid path"}
		}
		segs[i] = u
	}
	if len(segs) < 2 {
		return nil, &hubError{http.StatusNotFound, "", "Not Found"}
	}
	id := segs[0] + "/" + segs[1]
	repo, ok := s.repos[id]
	if !ok {
		return nil, &hubError{http.StatusNotFound, "RepoNotFound", "Repository not found"}
	}
	if herr := s.authorize(req, id); herr != nil {
		return nil, herr
	}
	ctx := req.Context()
	method := http.MethodGet
	if len(segs) >= 4 && segs[2] == "paths-info" {
		method = http.MethodPost
	}
	if req.Method != method {
		return nil, &hubError{http.StatusMethodNotAllowed, "", "Method not allowed"}
	}
	switch {
	case len(segs) == 2:
		return s.info(ctx, repo, "main", false, true)
	case len(segs) == 3 && segs[2] == "refs":
		branches, tags, err := repo.refs(ctx)
		if err != nil {
			return nil, internal(err)
		}
		return map[string][]ref{"branches": branches, "tags": tags, "converts": {}}, nil
	case len(segs) < 4:
		return nil, &hubError{http.StatusNotFound, "", "Not Found"}
	}
	sha, herr := s.revision(ctx, repo, segs[3])
	if herr != nil {
		return nil, herr
	}
	switch {
	case segs[2] == "revision" && len(segs) == 4:
		return s.info(ctx, repo, sha, req.URL.Query().Get("blobs") == "true", false)
	case segs[2] == "tree":
		return s.treePage(ctx, req, repo, sha, strings.Join(segs[4:], "/"))
	case segs[2] == "paths-info" && len(segs) == 4:
		return s.pathsInfo(ctx, req, repo, sha)
	case segs[2] == "commits" && len(segs) == 4:
		list, err := s.commitList(ctx, repo, sha)
		if err != nil {
			return nil, internal(err)
		}
		return paginate(s, req, list)
	}
	return nil, &hubError{http.StatusNotFound, "", "Not Found"}
}

func internal(err error) *hubError {
	return &hubError{http.StatusInternalServerError, "", err.Error()}
}

// authorize refuses a request for a private repository without its token.
func (s *Server) authorize(req *http.Request, id string) *hubError {
	s.mu.Lock()
	token, private := s.private[id]
	s.mu.Unlock()
	switch auth := req.Header.Get("Authorization"); {
	case !private || auth == "Bearer "+token:
		return nil
	case auth == "":
		return &hubError{http.StatusUnauthorized, "RepoNotFound", "Repository not found"}
	}
	return &hubError{http.StatusUnauthorized, "", "Invalid credentials in Authorization header"}
}

// revision resolves a revision of the path, or answers 404.
func (s *Server) revision(ctx context.Context, repo *Repo, rev string) (string, *hubError) {
	sha, ok, err := repo.resolve(ctx, rev)
	if err != nil {
		return "", internal(err)
	}
	if !ok {
		return "", &hubError{http.StatusNotFound, "RevisionNotFound", "Invalid rev id: " + rev}
	}
	return sha, nil
}

// fileTree returns the entries of commit sha, listed once per commit.
func (s *Server) fileTree(ctx context.Context, repo *Repo, sha string) ([]entry, error) {
	return cached(s, s.trees, repo.ID()+"@"+sha, func() ([]entry, error) { return repo.tree(ctx, sha) })
}

// commitList returns commit sha and its ancestors, listed once per commit.
func (s *Server) commitList(ctx context.Context, repo *Repo, sha string) ([]commit, error) {
	return cached(s, s.logs, repo.ID()+"@"+sha, func() ([]commit, error) { return repo.history(ctx, sha) })
}

// cached returns m[key], filled by load the first time: a commit's listings never change.
func cached[T any](s *Server, m map[string][]T, key string, load func() ([]T, error)) ([]T, error) {
	s.mu.Lock()
	list, ok := m[key]
	s.mu.Unlock()
	if ok {
		return list, nil
	}
	list, err := load()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	m[key] = list
	s.mu.Unlock()
	return list, nil
}

// sibling is a file of a dataset's info; blobs=true adds its blob id, size and LFS details.
type sibling struct {
	RFilename string      `json:"rfilename"`
	BlobID    string      `json:"blobId,omitempty"`
	Size      *int64      `json:"size,omitempty"`
	LFS       *siblingLFS `json:"lfs,omitempty"`
}

type siblingLFS struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	PointerSize int64  `json:"pointerSize"`
}

// info answers a dataset's info at rev; a repository's own info (top) has no 404 for an empty main.
func (s *Server) info(ctx context.Context, repo *Repo, rev string, blobs, top bool) (any, *hubError) {
	s.mu.Lock()
	_, private := s.private[repo.ID()]
	s.mu.Unlock()
	sum := sha256.Sum256([]byte(repo.ID()))
	info := map[string]any{"_id": hex.EncodeToString(sum[:12]), "id": repo.ID(), "private": private}
	sha := rev
	if top {
		var ok bool
		var err error
		if sha, ok, err = repo.resolve(ctx, rev); err != nil {
			return nil, internal(err)
		} else if !ok {
			info["siblings"] = []sibling{}
			return info, nil
		}
	}
	entries, err := s.fileTree(ctx, repo, sha)
	if err != nil {
		return nil, internal(err)
	}
	siblings := []sibling{}
	for _, e := range entries {
		if e.Type != "file" {
			continue
		}
		sb := sibling{RFilename: e.Path}
		if blobs {
			sb.BlobID, sb.Size = e.OID, &e.Size
			if e.LFS != nil {
				sb.LFS = &siblingLFS{SHA256: e.LFS.OID, Size: e.LFS.Size, PointerSize: e.LFS.PointerSize}
			}
		}
		siblings = append(siblings, sb)
	}
	info["sha"], info["siblings"] = sha, siblings
	return info, nil
}

// treePage answers a page of the tree of commit sha under dir ("" for the root).
func (s *Server) treePage(ctx context.Context, req *http.Request, repo *Repo, sha, dir string) (any, *hubError) {
	entries, err := s.fileTree(ctx, repo, sha)
	if err != nil {
		return nil, internal(err)
	}
	prefix := ""
	if dir = strings.Trim(dir, "/"); dir != "" {
		found := false
		for _, e := range entries {
			if e.Path == dir && e.Type == "directory" {
				found = true
				break
			}
		}
		if !found {
			return nil, &hubError{http.StatusNotFound, "EntryNotFound", "Entry not found: " + dir}
		}
		prefix = dir + "/"
	}
	recursive := req.URL.Query().Get("recursive")
	deep := recursive == "true" || recursive == "True" || recursive == "1"
	var list []entry
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Path, prefix)
		if ok && (deep || !strings.Contains(rest, "/")) {
			list = append(list, e)
		}
	}
	return paginate(s, req, list)
}

// pathsInfo answers the entries of commit sha for the paths the form or the JSON body names, unknown ones left
// out.
func (s *Server) pathsInfo(ctx context.Context, req *http.Request, repo *Repo, sha string) (any, *hubError) {
	var paths []string
	if ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); ct == "application/json" {
		var body struct {
			Paths []string `json:"paths"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(nil, req.Body, 1<<20)).Decode(&body); err != nil {
			return nil, &hubError{http.StatusBadRequest, "", "invalid JSON body: " + err.Error()}
		}
		paths = body.Paths
	} else {
		if err := req.ParseForm(); err != nil {
			return nil, &hubError{http.StatusBadRequest, "", "invalid form: " + err.Error()}
		}
		paths = req.PostForm["paths"]
	}
	if len(paths) == 0 {
		return nil, &hubError{http.StatusBadRequest, "", "paths is required"}
	}
	entries, err := s.fileTree(ctx, repo, sha)
	if err != nil {
		return nil, internal(err)
	}
	byPath := make(map[string]entry, len(entries))
	for _, e := range entries {
		byPath[e.Path] = e
	}
	list := []entry{}
	seen := map[string]bool{}
	for _, p := range paths {
		p = strings.Trim(p, "/")
		if e, ok := byPath[p]; ok && !seen[p] {
			seen[p] = true
			list = append(list, e)
		}
	}
	return list, nil
}

// page is one page of a listing and the address of the next, if any.
type page struct {
	items any
	next  string
}

// paginate returns the page of list the request's cursor points at (the first without one), linking the next
// page by the request's own URL with another cursor.
func paginate[T any](s *Server, req *http.Request, list []T) (any, *hubError) {
	s.mu.Lock()
	size := s.pageSize
	s.mu.Unlock()
	return pageOf(size, s.URL, req, list)
}

// pageOf returns the page of list, size entries, the request's cursor points at, linking the next page by base
// (the server's address) and the request's own path and query with another cursor.
func pageOf[T any](size int, base string, req *http.Request, list []T) (page, *hubError) {
	q := req.URL.Query()
	start := 0
	if c := q.Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		n, err2 := strconv.Atoi(string(raw))
		if err != nil || err2 != nil || n < 0 {
			return page{}, &hubError{http.StatusBadRequest, "", "invalid cursor"}
		}
		start = n
	}
	start = min(start, len(list))
	p := page{items: append([]T{}, list[start:min(start+size, len(list))]...)}
	if start+size < len(list) {
		q.Set("cursor", base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(start+size))))
		p.next = base + req.URL.EscapedPath() + "?" + q.Encode()
	}
	return p, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"hubtest: cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
