package hubtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Defaults of a JobsServer.
const (
	// JobsPageSizeDefault is how many Jobs a page of a listing holds unless SetPageSize says otherwise.
	JobsPageSizeDefault = 100
	// KeepAliveDefault is the interval of the log streams' keep-alive comments, as the Hub's.
	KeepAliveDefault = 30 * time.Second
	// JobTimeoutDefault bounds a Job whose spec has no timeoutSeconds, as the Hub's default does.
	JobTimeoutDefault = 30 * time.Minute
)

// JobsServer is a stand-in Hugging Face Jobs API (see the package documentation): each Job's command runs as a
// real local process, in a process group of its own, with the Job's environment and secrets as its environment.
// It is safe for concurrent use.
type JobsServer struct {
	t     testing.TB
	srv   *httptest.Server
	token string
	dir   string        // the Jobs' working directories are made under it
	done  chan struct{} // closed when the test ends
	wg    sync.WaitGroup

	mu          sync.Mutex
	jobs        map[string]*fakeJob
	order       []string // Job ids, by creation
	pageSize    int
	keepAlive   time.Duration
	hold        bool
	createFails int // creates that create the Job and answer 500
	rateLimited int // requests answered 429
	retryAfter  string
	dropAfter   int // events a log stream sends before it is dropped
	drops       int // log streams still to drop
	keepOpen    bool
	requests    map[string]int // by route
	created     int
}

// JobRecord is what the stand-in knows of a Job: what it received and where the Job is.
type JobRecord struct {
	ID, Namespace string
	// Spec is the body of the create request, as received: secrets included.
	Spec           ReceivedSpec
	Stage, Message string
	// PID is the process (and process group) id of the Job's command; 0 until it started.
	PID int
	// Lines are the log lines so far, the banner first.
	Lines []string
}

// ReceivedSpec is the body of POST /api/jobs/{namespace} as huggingface_hub's run_job sends it.
type ReceivedSpec struct {
	DockerImage    string            `json:"dockerImage"`
	SpaceID        string            `json:"spaceId"`
	Command        []string          `json:"command"`
	Arguments      []string          `json:"arguments"`
	Environment    map[string]string `json:"environment"`
	Secrets        map[string]string `json:"secrets"`
	Flavor         string            `json:"flavor"`
	TimeoutSeconds int               `json:"timeoutSeconds"`
	Labels         map[string]string `json:"labels"`
	Volumes        []ReceivedVolume  `json:"volumes"`
}

// ReceivedVolume is one entry of a spec's volumes.
type ReceivedVolume struct {
	Type      string `json:"type"`
	Source    string `json:"source"`
	MountPath string `json:"mountPath"`
	Revision  string `json:"revision"`
	ReadOnly  *bool  `json:"readOnly"`
}

// NewJobsServer starts a stand-in Jobs API. When token is not empty, every request must carry
// "Authorization: Bearer <token>" (401 otherwise). When the test ends, every process it started is killed and
// the server closed.
func NewJobsServer(t testing.TB, token string) *JobsServer {
	t.Helper()
	s := &JobsServer{t: t, token: token, dir: t.TempDir(), done: make(chan struct{}), jobs: map[string]*fakeJob{},
		pageSize: JobsPageSizeDefault, keepAlive: KeepAliveDefault, requests: map[string]int{}}
	s.srv = httptest.NewServer(s)
	// Registered after TempDir: runs before the directory is removed.
	t.Cleanup(s.close)
	return s
}

// URL returns the server's address, e.g. http://127.0.0.1:40123, to use as HF_ENDPOINT.
func (s *JobsServer) URL() string { return s.srv.URL }

// close kills every Job's process group, waits for them and closes the server.
func (s *JobsServer) close() {
	close(s.done)
	s.mu.Lock()
	for _, j := range s.jobs {
		j.kill()
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.wg.Wait()
}

// SetPageSize sets how many Jobs a page of a listing holds.
func (s *JobsServer) SetPageSize(n int) {
	s.t.Helper()
	if n < 1 {
		s.t.Fatalf("hubtest: page size %d: want at least 1", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

// SetKeepAlive sets the interval of the log streams' keep-alive comments (KeepAliveDefault until then).
func (s *JobsServer) SetKeepAlive(d time.Duration) {
	s.t.Helper()
	if d <= 0 {
		s.t.Fatalf("hubtest: keep-alive interval %s: want more than 0", d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keepAlive = d
}

// HoldScheduling makes the Jobs created from now on stay SCHEDULING until Release (on true), or start as soon
// as they are created (on false, the default; Jobs already held stay held).
func (s *JobsServer) HoldScheduling(hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = hold
}

// Release starts a Job held in SCHEDULING; a Job that is not held is left as it is.
func (s *JobsServer) Release(id string) {
	s.mu.Lock()
	j := s.jobs[id]
	s.mu.Unlock()
	if j == nil {
		s.t.Errorf("hubtest: Release(%q): no such Job", id)
		return
	}
	s.start(j)
}

// FailCreates makes the next n creates create the Job, and start it, then answer 500 as if the Hub failed after
// creating it.
func (s *JobsServer) FailCreates(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.createFails = n
}

// RateLimit answers the next n requests, of any route, 429 with the Retry-After header retryAfter (none when
// empty), e.g. "1".
func (s *JobsServer) RateLimit(n int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimited, s.retryAfter = n, retryAfter
}

// DropLogStreams makes the next n log streams break (the connection closed mid-answer) after sending
// afterEvents lines, keep-alives not counted.
func (s *JobsServer) DropLogStreams(n, afterEvents int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops, s.dropAfter = n, afterEvents
}

// KeepLogStreamsOpen makes the log streams stay open and silent (no line, no keep-alive) after the Job ended,
// until the client goes away, instead of ending.
func (s *JobsServer) KeepLogStreamsOpen(open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keepOpen = open
}

// JobsCreated returns how many Jobs were created, those of failed creates included.
func (s *JobsServer) JobsCreated() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// Requests returns how many requests the server got for route, refusals and faults included: "create",
// "list", "inspect", "cancel", "logs", "hardware" (and "other" for the rest).
func (s *JobsServer) Requests(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[route]
}

// Job returns what the server knows of a Job, and false when there is no such Job.
func (s *JobsServer) Job(id string) (JobRecord, bool) {
	s.mu.Lock()
	j := s.jobs[id]
	s.mu.Unlock()
	if j == nil {
		return JobRecord{}, false
	}
	return j.record(), true
}

// Jobs returns what the server knows of every Job, by creation.
func (s *JobsServer) Jobs() []JobRecord {
	s.mu.Lock()
	list := make([]*fakeJob, 0, len(s.order))
	for _, id := range s.order {
		list = append(list, s.jobs[id])
	}
	s.mu.Unlock()
	out := make([]JobRecord, 0, len(list))
	for _, j := range list {
		out = append(out, j.record())
	}
	return out
}

// ServeHTTP answers the Jobs API.
func (s *JobsServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	route, segs := jobsRoute(req)
	if herr := s.admit(w, req, route); herr != nil {
		writeJSON(w, herr.status, map[string]string{"error": herr.message})
		return
	}
	switch route {
	case "hardware":
		writeJSON(w, http.StatusOK, jobHardware)
	case "create":
		s.create(w, req, segs[0])
	case "list":
		s.list(w, req, segs[0])
	case "inspect", "cancel", "logs":
		j, herr := s.find(segs[0], segs[1])
		if herr != nil {
			writeJSON(w, herr.status, map[string]string{"error": herr.message})
			return
		}
		switch route {
		case "inspect":
			writeJSON(w, http.StatusOK, j.answer())
		case "cancel":
			s.cancel(j)
			w.WriteHeader(http.StatusOK)
		default:
			s.streamLogs(w, req, j)
		}
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "Not Found"})
	}
}

// jobsRoute names the route of a request and returns the unescaped segments after /api/jobs/.
func jobsRoute(req *http.Request) (string, []string) {
	rest, ok := strings.CutPrefix(req.URL.EscapedPath(), "/api/jobs/")
	if !ok {
		return "other", nil
	}
	segs := strings.Split(rest, "/")
	for i, seg := range segs {
		u, err := url.PathUnescape(seg)
		if err != nil || u == "" {
			return "other", nil
		}
		segs[i] = u
	}
	get, post := req.Method == http.MethodGet, req.Method == http.MethodPost
	switch {
	case len(segs) == 1 && segs[0] == "hardware" && get:
		return "hardware", segs
	case len(segs) == 1 && post:
		return "create", segs
	case len(segs) == 1 && get:
		return "list", segs
	case len(segs) == 2 && get:
		return "inspect", segs
	case len(segs) == 3 && segs[2] == "cancel" && post:
		return "cancel", segs
	case len(segs) == 3 && segs[2] == "logs" && get:
		return "logs", segs
	}
	return "other", nil
}

// admit counts the request and refuses it when a rate limit is set or its token is wrong.
func (s *JobsServer) admit(w http.ResponseWriter, req *http.Request, route string) *hubError {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[route]++
	if s.rateLimited > 0 {
		s.rateLimited--
		if s.retryAfter != "" {
			w.Header().Set("Retry-After", s.retryAfter)
		}
		return &hubError{http.StatusTooManyRequests, "", "rate limited by hubtest"}
	}
	if s.token != "" && req.Header.Get("Authorization") != "Bearer "+s.token {
		return &hubError{http.StatusUnauthorized, "", "Invalid credentials in Authorization header"}
	}
	return nil
}

// find returns a Job of namespace, or a 404.
func (s *JobsServer) find(namespace, id string) (*fakeJob, *hubError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil || j.namespace != namespace {
		return nil, &hubError{http.StatusNotFound, "", "Job not found"}
	}
	return j, nil
}

// labelPart is what the Hub allows in a label's key or value.
var labelPart = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// validate refuses a spec the Hub would refuse, with its reason.
func (spec ReceivedSpec) validate() string {
	switch {
	case (spec.DockerImage == "") == (spec.SpaceID == ""):
		return "one of dockerImage and spaceId is required"
	case len(spec.Command) == 0 || spec.Command[0] == "":
		return "command is required"
	case spec.TimeoutSeconds < 0:
		return "timeoutSeconds must not be negative"
	case !slices.ContainsFunc(jobHardware, func(h hardware) bool { return h.Name == spec.Flavor }):
		return "unknown flavor " + spec.Flavor
	}
	for k, v := range spec.Labels {
		if !labelPart.MatchString(k) || !labelPart.MatchString(v) {
			return "invalid label " + k + "=" + v
		}
	}
	for _, v := range spec.Volumes {
		if !slices.Contains([]string{"bucket", "model", "dataset", "space"}, v.Type) || v.Source == "" ||
			!strings.HasPrefix(v.MountPath, "/") {
			return "invalid volume"
		}
	}
	return ""
}

// create answers POST /api/jobs/{namespace}.
func (s *JobsServer) create(w http.ResponseWriter, req *http.Request, namespace string) {
	var spec ReceivedSpec
	if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 1<<20)).Decode(&spec); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON body: " + err.Error()})
		return
	}
	if spec.Flavor == "" {
		spec.Flavor = "cpu-basic"
	}
	if reason := spec.validate(); reason != "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": reason})
		return
	}
	var raw [12]byte
	_, _ = rand.Read(raw[:])
	j := &fakeJob{id: hex.EncodeToString(raw[:]), namespace: namespace, spec: spec, created: time.Now().UTC(),
		stage: "SCHEDULING", changed: make(chan struct{})}
	s.mu.Lock()
	s.jobs[j.id] = j
	s.order = append(s.order, j.id)
	s.created++
	hold := s.hold
	fail := s.createFails > 0
	if fail {
		s.createFails--
	}
	s.mu.Unlock()
	answer := j.answer()
	if !hold {
		s.start(j)
	}
	if fail {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "Internal Error (hubtest)"})
		return
	}
	writeJSON(w, http.StatusOK, answer)
}

// list answers GET /api/jobs/{namespace}[?label=k=v...&stage=...], by creation, in pages.
func (s *JobsServer) list(w http.ResponseWriter, req *http.Request, namespace string) {
	q := req.URL.Query()
	s.mu.Lock()
	size := s.pageSize
	candidates := make([]*fakeJob, 0, len(s.order))
	for _, id := range s.order {
		if j := s.jobs[id]; j.namespace == namespace {
			candidates = append(candidates, j)
		}
	}
	s.mu.Unlock()
	var list []jobJSON
	for _, j := range candidates {
		a := j.answer()
		if matches(a, q["label"], q["stage"]) {
			list = append(list, a)
		}
	}
	p, herr := pageOf(size, "http://"+req.Host, req, list)
	if herr != nil {
		writeJSON(w, herr.status, map[string]string{"error": herr.message})
		return
	}
	if p.next != "" {
		w.Header().Set("Link", "<"+p.next+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, p.items)
}

// matches reports whether a Job has every label ("key=value") and one of the stages, when any.
func matches(a jobJSON, labels, stages []string) bool {
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if got, ok := a.Labels[k]; !ok || got != v {
			return false
		}
	}
	return len(stages) == 0 || slices.Contains(stages, a.Status.Stage)
}

// hardware is one entry of GET /api/jobs/hardware.
type hardware struct {
	Name             string  `json:"name"`
	PrettyName       string  `json:"prettyName"`
	CPU              string  `json:"cpu"`
	RAM              string  `json:"ram"`
	UnitCostMicroUSD int64   `json:"unitCostMicroUSD"`
	UnitCostUSD      float64 `json:"unitCostUSD"`
	UnitLabel        string  `json:"unitLabel"`
}

// jobHardware are the flavors the stand-in offers: the names are huggingface_hub's (SpaceHardware, and the
// Jobs-only CPU and H200 flavors); the prices per minute are the Hub's published hourly prices divided by 60 at
// the time of writing, for tests only, not a reference.
var jobHardware = func() []hardware {
	perHour := []struct {
		name, pretty, cpu, ram string
		usd                    float64
	}{
		{"cpu-basic", "CPU Basic", "2 vCPU", "16 GB", 0.01},
		{"cpu-upgrade", "CPU Upgrade", "8 vCPU", "32 GB", 0.03},
		{"cpu-performance", "CPU Performance", "32 vCPU", "256 GB", 0.50},
		{"cpu-xl", "CPU XL", "16 vCPU", "124 GB", 1.00},
		{"t4-small", "Nvidia T4 - small", "4 vCPU", "15 GB", 0.40},
		{"t4-medium", "Nvidia T4 - medium", "8 vCPU", "30 GB", 0.60},
		{"l4x1", "1x Nvidia L4", "8 vCPU", "30 GB", 0.80},
		{"l4x4", "4x Nvidia L4", "48 vCPU", "186 GB", 3.80},
		{"l40sx1", "1x Nvidia L40S", "8 vCPU", "62 GB", 1.80},
		{"l40sx4", "4x Nvidia L40S", "48 vCPU", "382 GB", 8.30},
		{"l40sx8", "8x Nvidia L40S", "192 vCPU", "1534 GB", 23.50},
		{"a10g-small", "Nvidia A10G - small", "4 vCPU", "15 GB", 1.00},
		{"a10g-large", "Nvidia A10G - large", "12 vCPU", "46 GB", 1.50},
		{"a10g-largex2", "2x Nvidia A10G - large", "24 vCPU", "92 GB", 3.00},
		{"a10g-largex4", "4x Nvidia A10G - large", "48 vCPU", "184 GB", 5.00},
		{"a100-large", "Nvidia A100 - large", "12 vCPU", "142 GB", 2.50},
		{"a100x4", "4x Nvidia A100", "48 vCPU", "568 GB", 10.00},
		{"a100x8", "8x Nvidia A100", "96 vCPU", "1136 GB", 20.00},
		{"h200", "1x Nvidia H200", "23 vCPU", "256 GB", 5.00},
		{"h200x2", "2x Nvidia H200", "46 vCPU", "512 GB", 10.00},
		{"h200x4", "4x Nvidia H200", "92 vCPU", "1024 GB", 20.00},
		{"h200x8", "8x Nvidia H200", "184 vCPU", "2048 GB", 40.00},
	}
	out := make([]hardware, 0, len(perHour))
	for _, h := range perHour {
		micro := int64(h.usd*1e6/60 + 0.5)
		out = append(out, hardware{Name: h.name, PrettyName: h.pretty, CPU: h.cpu, RAM: h.ram,
			UnitCostMicroUSD: micro, UnitCostUSD: float64(micro) / 1e6, UnitLabel: "minute"})
	}
	return out
}()
