package hub

// The Hugging Face Jobs API, as huggingface_hub's run_job, inspect_job, list_jobs, cancel_job, fetch_job_logs and
// list_jobs_hardware call it (src/huggingface_hub/hf_api.py, _jobs_api.py, _space_api.py).
//
// Read from that source: the routes; the body of a create (dockerImage or spaceId, command, arguments: [],
// environment, flavor defaulting to cpu-basic, secrets, timeoutSeconds, labels and volumes only when set, a volume
// as {type, source, mountPath, revision, readOnly}); a Job's answer (id, createdAt, flavor, labels, volumes,
// status {stage, message}, owner {id, name, type}); its page, {endpoint}/jobs/{owner.name}/{id}; the log lines,
// each "data: {"data": ..., "timestamp": ...}", the first a "===== Job started" banner, with ": keep-alive"
// comments every 30 s; the hardware entries (name, prettyName, unitCostMicroUSD, unitCostUSD, unitLabel).
//
// Inferred, not read there: that the Hub filters a listing by repeated label=key=value parameters and pages it
// with Link rel="next" as its other listings (ListJobs also filters what it gets, so a Hub that ignores the
// parameters never makes it return a Job without the labels); that an answer's "secrets" holds the names as the
// keys of an object whose values are not the secrets (a list of names is read too); that a cancel of a Job that
// has ended answers 2xx.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// JobStage is the stage of a Job as the Hub reports it (status.stage).
type JobStage string

// The stages of a Job. The Hub may report others (UPDATING has been seen): they are not terminal.
const (
	JobScheduling JobStage = "SCHEDULING"
	JobRunning    JobStage = "RUNNING"
	JobCompleted  JobStage = "COMPLETED"
	JobCanceled   JobStage = "CANCELED"
	JobError      JobStage = "ERROR"
	JobDeleted    JobStage = "DELETED"
)

// Terminal reports whether a Job at this stage has ended: COMPLETED, CANCELED, ERROR or DELETED. Unknown stages
// are not terminal.
func (s JobStage) Terminal() bool {
	switch s {
	case JobCompleted, JobCanceled, JobError, JobDeleted:
		return true
	}
	return false
}

// JobFlavorDefault is the flavor a Job runs on when its spec names none, as run_job sends it.
const JobFlavorDefault = "cpu-basic"

// JobLogIdleDefault is how long JobLogs waits without a byte of the stream (the Hub sends a keep-alive every
// 30 s) before it gives up on it: huggingface_hub reads the stream with a 120 s timeout.
const JobLogIdleDefault = 120 * time.Second

// ErrJobNotCreated is wrapped by RunJob's error when the Job surely was not created: the request never left, or
// the Hub refused it (a 4xx other than 408 and 429).
var ErrJobNotCreated = errors.New("the Job was not created")

// JobVolume is a repository or bucket mounted in a Job's container, e.g. {Type: "dataset", Source: "org/name",
// MountPath: "/data", Revision: "<sha>", ReadOnly: true}.
type JobVolume struct {
	Type      string `json:"type"`
	Source    string `json:"source"`
	MountPath string `json:"mountPath"`
	Revision  string `json:"revision,omitempty"`
	ReadOnly  bool   `json:"readOnly"`
}

// JobSpec is what RunJob asks the Hub to run.
type JobSpec struct {
	// DockerImage (e.g. "python:3.12") or SpaceID (e.g. "org/space", whose image is used): exactly one.
	DockerImage, SpaceID string
	// Command is the program and its arguments; not empty.
	Command []string
	// Environment holds the Job's environment variables, shown back by the Hub.
	Environment map[string]string
	// Secrets are environment variables the Hub keeps encrypted and shows back by name only. Their values are
	// sent in this request and nowhere else.
	Secrets map[string]string
	// Flavor is the hardware, e.g. "a10g-small"; JobFlavorDefault when empty.
	Flavor string
	// TimeoutSeconds bounds the Job's run; 0 leaves the Hub's default (30 minutes).
	TimeoutSeconds int
	// Labels are sent as given; ListJobs finds Jobs by them.
	Labels map[string]string
	// Volumes are mounted in the container.
	Volumes []JobVolume
}

// JobStatus is where a Job is: its stage and the Hub's message, e.g. {JobError, "Job timeout"}.
type JobStatus struct {
	Stage   JobStage
	Message string
}

// Job is a Job as the Hub reports it.
type Job struct {
	ID string
	// Namespace is the user or organisation that owns the Job (owner.name).
	Namespace string
	// CreatedAt is zero when the Hub did not say.
	CreatedAt   time.Time
	Flavor      string
	Status      JobStatus
	Labels      map[string]string
	Environment map[string]string
	// SecretNames are the names of the Job's secrets, sorted: the Hub never shows their values.
	SecretNames []string
	Volumes     []JobVolume
	// URL is the Job's page on the Hub: {endpoint}/jobs/{namespace}/{id}.
	URL string
}

// JobLogEvent is one event of a Job's log stream: a line of its output, or a keep-alive.
type JobLogEvent struct {
	// Line is the line, without its end; empty for a keep-alive.
	Line string
	// Time is the Hub's timestamp of the line; zero for a keep-alive or when the Hub sent none readable.
	Time time.Time
	// KeepAlive marks a comment of the stream (": keep-alive"): the Hub is there, the Job printed nothing.
	KeepAlive bool
}

// JobHardware is a flavor Jobs can run on and its price, e.g. {"cpu-basic", "CPU Basic", 167, 0.000167,
// "minute"}.
type JobHardware struct {
	Name, PrettyName string
	// UnitCostMicroUSD is the price of one UnitLabel (a minute) in millionths of a dollar.
	UnitCostMicroUSD int64
	UnitCostUSD      float64
	UnitLabel        string
}

// jobSpecBody is the body of POST /api/jobs/{namespace}.
type jobSpecBody struct {
	DockerImage    string            `json:"dockerImage,omitempty"`
	SpaceID        string            `json:"spaceId,omitempty"`
	Command        []string          `json:"command"`
	Arguments      []string          `json:"arguments"`
	Environment    map[string]string `json:"environment"`
	Secrets        map[string]string `json:"secrets,omitempty"`
	Flavor         string            `json:"flavor"`
	TimeoutSeconds int               `json:"timeoutSeconds,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Volumes        []JobVolume       `json:"volumes,omitempty"`
}

// jobAnswer is a Job in the Hub's answers.
type jobAnswer struct {
	ID          string            `json:"id"`
	CreatedAt   string            `json:"createdAt"`
	Flavor      string            `json:"flavor"`
	Labels      map[string]string `json:"labels"`
	Environment map[string]string `json:"environment"`
	Secrets     json.RawMessage   `json:"secrets"`
	Volumes     []JobVolume       `json:"volumes"`
	Status      *struct {
		Stage   string  `json:"stage"`
		Message *string `json:"message"`
	} `json:"status"`
	Owner *struct {
		Name string `json:"name"`
	} `json:"owner"`
}

// job returns the answer as a Job, or an error naming what the Hub left out.
func (c *Client) job(a jobAnswer) (*Job, error) {
	switch {
	case a.ID == "":
		return nil, errors.New("a Job of the answer has no id")
	case a.Status == nil || a.Status.Stage == "":
		return nil, fmt.Errorf("job %s: the answer has no status.stage", a.ID)
	case a.Owner == nil || a.Owner.Name == "":
		return nil, fmt.Errorf("job %s: the answer has no owner.name", a.ID)
	}
	j := &Job{ID: a.ID, Namespace: a.Owner.Name, Flavor: a.Flavor, Labels: a.Labels, Environment: a.Environment,
		Volumes: a.Volumes, Status: JobStatus{Stage: JobStage(a.Status.Stage)},
		URL: c.endpoint + "/jobs/" + url.PathEscape(a.Owner.Name) + "/" + url.PathEscape(a.ID)}
	if a.Status.Message != nil {
		j.Status.Message = *a.Status.Message
	}
	if a.CreatedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, a.CreatedAt)
		if err != nil {
			return nil, fmt.Errorf("job %s: createdAt: %w", a.ID, err)
		}
		j.CreatedAt = t
	}
	names, err := secretNames(a.Secrets)
	if err != nil {
		return nil, fmt.Errorf("job %s: secrets: %w", a.ID, err)
	}
	j.SecretNames = names
	return j, nil
}

// secretNames reads the names of a Job's secrets: the keys of an object, or a list of names.
func secretNames(raw json.RawMessage) ([]string, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	var byName map[string]json.RawMessage
	if err := json.Unmarshal(raw, &byName); err == nil {
		names := make([]string, 0, len(byName))
		for name := range byName {
			names = append(names, name)
		}
		slices.Sort(names)
		return names, nil
	}
	var names []string
	if err := json.Unmarshal(raw, &names); err != nil {
		return nil, errors.New("neither an object nor a list of names")
	}
	slices.Sort(names)
	return names, nil
}

// jobsURL returns {endpoint}/api/jobs/{namespace}[/{id}[/{suffix}]], each part one escaped segment.
func (c *Client) jobsURL(namespace string, parts ...string) (string, error) {
	for _, p := range append([]string{namespace}, parts...) {
		if p == "" || p == "." || p == ".." || strings.Contains(p, "/") {
			return "", fmt.Errorf("jobs: %q is not a namespace or a Job id", p)
		}
	}
	u := c.endpoint + "/api/jobs/" + escapeSegment(namespace)
	for _, p := range parts {
		u += "/" + escapeSegment(p)
	}
	return u, nil
}

func (s JobSpec) validate() error {
	switch {
	case (s.DockerImage == "") == (s.SpaceID == ""):
		return errors.New("a Job needs a Docker image or a Space, not both")
	case len(s.Command) == 0 || s.Command[0] == "":
		return errors.New("a Job needs a command")
	case s.TimeoutSeconds < 0:
		return fmt.Errorf("timeout of %d seconds: want 0 (the Hub's default) or more", s.TimeoutSeconds)
	}
	for _, v := range s.Volumes {
		if v.Type == "" || v.Source == "" || !strings.HasPrefix(v.MountPath, "/") {
			return fmt.Errorf("volume %+v: want a type, a source and an absolute mountPath", v)
		}
	}
	return nil
}

// RunJob asks the Hub to run spec in namespace (POST {endpoint}/api/jobs/{namespace}) and returns the Job as the
// Hub answered it. The request is sent once, never retried: the API has no idempotency key. When it fails, the
// error wraps ErrJobNotCreated if the Job surely was not created (an invalid spec, a request that never left,
// a 4xx other than 408 and 429), and JobMayExist(err) is true otherwise (a timeout, a 5xx, an unreadable
// answer): find the Job by its labels (ListJobs) before creating another.
func (c *Client) RunJob(ctx context.Context, namespace string, spec JobSpec) (*Job, error) {
	rawURL, err := c.jobsURL(namespace)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJobNotCreated, err)
	}
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJobNotCreated, err)
	}
	env := spec.Environment
	if env == nil {
		env = map[string]string{}
	}
	body, err := json.Marshal(jobSpecBody{DockerImage: spec.DockerImage, SpaceID: spec.SpaceID, Command: spec.Command,
		Arguments: []string{}, Environment: env, Secrets: spec.Secrets,
		Flavor: cmp.Or(spec.Flavor, JobFlavorDefault), TimeoutSeconds: spec.TimeoutSeconds, Labels: spec.Labels,
		Volumes: spec.Volumes})
	if err != nil {
		return nil, fmt.Errorf("%w: encode the spec: %w", ErrJobNotCreated, err)
	}
	answer, _, err := c.sendOK(ctx, "the Jobs of "+namespace, http.MethodPost, rawURL, body)
	if err != nil {
		if notCreated(err) {
			return nil, fmt.Errorf("%w: %w", ErrJobNotCreated, err)
		}
		return nil, fmt.Errorf("the Job may have been created: %w", err)
	}
	var a jobAnswer
	if err := json.Unmarshal(answer, &a); err != nil {
		return nil, fmt.Errorf("POST %s: the Job may have been created: decode the answer: %w", redact(rawURL), err)
	}
	j, err := c.job(a)
	if err != nil {
		return nil, fmt.Errorf("POST %s: the Job may have been created: %w", redact(rawURL), err)
	}
	return j, nil
}

// notCreated reports whether a failed create surely created nothing: the Hub refused it, or it never left.
func notCreated(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status/100 == 4 && se.Status != http.StatusRequestTimeout && se.Status != http.StatusTooManyRequests
	}
	var dnsErr *net.DNSError
	var opErr *net.OpError
	return errors.As(err, &dnsErr) || (errors.As(err, &opErr) && opErr.Op == "dial")
}

// JobMayExist reports whether a failed RunJob may have created the Job anyway: any error that does not wrap
// ErrJobNotCreated.
func JobMayExist(err error) bool { return err != nil && !errors.Is(err, ErrJobNotCreated) }

// IsAuthError reports whether err carries a 401 or 403 answer of the Hub: a missing, wrong or insufficient token,
// which retrying will not mend.
func IsAuthError(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden)
}

// InspectJob returns a Job (GET {endpoint}/api/jobs/{namespace}/{id}), retried as ListTree's requests are (a 429
// after its Retry-After, a 5xx or no answer 3 times in all). A 404 is returned at once as a *StatusError.
func (c *Client) InspectJob(ctx context.Context, namespace, id string) (*Job, error) {
	rawURL, err := c.jobsURL(namespace, id)
	if err != nil {
		return nil, err
	}
	body, _, err := c.jobsRetrying(ctx, namespace, http.MethodGet, rawURL)
	if err != nil {
		return nil, err
	}
	var a jobAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("GET %s: decode the answer: %w", redact(rawURL), err)
	}
	return c.job(a)
}

// ListJobs returns the Jobs of namespace that carry every one of labels (GET {endpoint}/api/jobs/{namespace} with
// one label=key=value parameter per label, in key order), following Link rel="next" pages, each request retried as
// InspectJob's. The Jobs the Hub lists without all of labels are left out.
func (c *Client) ListJobs(ctx context.Context, namespace string, labels map[string]string) ([]Job, error) {
	rawURL, err := c.jobsURL(namespace)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if k == "" || strings.Contains(k, "=") {
			return nil, fmt.Errorf("label key %q: want a non-empty key without =", k)
		}
		q.Add("label", k+"="+labels[k])
	}
	if len(q) > 0 {
		rawURL += "?" + q.Encode()
	}
	get := func(u string) ([]byte, http.Header, error) { return c.jobsRetrying(ctx, namespace, http.MethodGet, u) }
	var jobs []Job
	err = eachPageOf(c, get, rawURL, func(where string, items []jobAnswer) (bool, error) {
		for _, a := range items {
			j, err := c.job(a)
			if err != nil {
				return false, fmt.Errorf("%s: %w", where, err)
			}
			if hasLabels(j.Labels, labels) {
				jobs = append(jobs, *j)
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return jobs, nil
}

// hasLabels reports whether have holds every label of want.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// CancelJob asks the Hub to cancel a Job (POST {endpoint}/api/jobs/{namespace}/{id}/cancel), retried as
// InspectJob's requests are. Cancelling a Job that has ended changes nothing, so it is safe to repeat.
func (c *Client) CancelJob(ctx context.Context, namespace, id string) error {
	rawURL, err := c.jobsURL(namespace, id, "cancel")
	if err != nil {
		return err
	}
	_, _, err = c.jobsRetrying(ctx, namespace, http.MethodPost, rawURL)
	return err
}

// JobHardware lists the flavors Jobs can run on with their prices (GET {endpoint}/api/jobs/hardware), retried
// as InspectJob's request is.
func (c *Client) JobHardware(ctx context.Context) ([]JobHardware, error) {
	rawURL := c.endpoint + "/api/jobs/hardware"
	body, _, err := retrying(ctx, func() ([]byte, http.Header, error) {
		return c.sendOK(ctx, "the Jobs hardware", http.MethodGet, rawURL, nil)
	})
	if err != nil {
		return nil, err
	}
	var entries []struct {
		Name             string  `json:"name"`
		PrettyName       string  `json:"prettyName"`
		UnitCostMicroUSD int64   `json:"unitCostMicroUSD"`
		UnitCostUSD      float64 `json:"unitCostUSD"`
		UnitLabel        string  `json:"unitLabel"`
	}
	if err := json.Unmarshal(body, &entries); err != nil {
		return nil, fmt.Errorf("GET %s: decode the answer: %w", redact(rawURL), err)
	}
	hw := make([]JobHardware, 0, len(entries))
	for _, e := range entries {
		if e.Name == "" {
			return nil, fmt.Errorf("GET %s: a flavor of the answer has no name", redact(rawURL))
		}
		hw = append(hw, JobHardware(e))
	}
	return hw, nil
}

// jobsRetrying sends a request about the Jobs of namespace until it is answered 2xx, as getRetrying does.
func (c *Client) jobsRetrying(ctx context.Context, namespace, method, rawURL string) ([]byte, http.Header, error) {
	return retrying(ctx, func() ([]byte, http.Header, error) {
		return c.sendOK(ctx, "the Jobs of "+namespace, method, rawURL, nil)
	})
}

// WithLogIdle returns a copy of c whose JobLogs gives up on a stream silent for d (JobLogIdleDefault until then).
func (c *Client) WithLogIdle(d time.Duration) *Client {
	cp := *c
	cp.logIdle = d
	return &cp
}

// errLogIdle ends a log stream that stayed silent too long.
var errLogIdle = errors.New("the log stream was silent for too long")

// logLineLimit bounds one line of a log stream.
const logLineLimit = 1 << 20

// JobLogs opens one server-sent-events connection to a Job's logs (GET {endpoint}/api/jobs/{namespace}/{id}/logs)
// and calls fn for every event in order: each line ("data: {"data": <line>, "timestamp": <RFC 3339>}"), the
// "===== Job started" banner included (the caller decides what to do with it), and each comment (": keep-alive")
// as a KeepAlive event. It returns nil when the Hub ends the stream, and an error when the stream breaks, stays
// silent (not even a keep-alive) for the client's log idle time, is not answered 200, when ctx ends, or when fn
// fails (its error wrapped). It does not reconnect: the Hub replays a Job's log from its first line on every
// connection, so a caller that reconnects skips the lines it has seen. The end of the stream says nothing of the
// Job's end: ask InspectJob.
func (c *Client) JobLogs(ctx context.Context, namespace, id string, fn func(JobLogEvent) error) error {
	rawURL, err := c.jobsURL(namespace, id, "logs")
	if err != nil {
		return err
	}
	idle := cmp.Or(c.logIdle, JobLogIdleDefault)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(idle, func() { cancel(errLogIdle) })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fmt.Errorf("job %s: %w", id, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", userAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// The stream lasts as long as the Job: no overall timeout, the watchdog and ctx bound it.
	stream := &http.Client{Transport: c.http.Transport}
	where := "GET " + redact(rawURL)
	resp, err := stream.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", where, logCause(ctx, err))
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %w", where, statusError(resp))
	}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := readLine(r)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: the stream broke: %w", where, logCause(ctx, err))
		}
		watchdog.Reset(idle)
		ev, ok, err := parseLogLine(line)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if !ok {
			continue
		}
		if err := fn(ev); err != nil {
			return fmt.Errorf("job %s: log event: %w", id, err)
		}
	}
}

// logCause returns err, or why ctx ended when it did (the idle watchdog, or the caller).
func logCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	return err
}

// readLine reads one line of at most logLineLimit bytes, without its "\n" or "\r\n". A last line without an end
// is returned with io.EOF left for the next call; io.EOF alone means the stream ended cleanly.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := r.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > logLineLimit {
			return "", fmt.Errorf("a line longer than %d bytes", logLineLimit)
		}
		switch {
		case err == nil:
			return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(b) > 0:
			return string(b), nil
		}
		return "", err
	}
}

// parseLogLine reads one line of the stream: an event, or ok false for a blank line or a field other than data.
// A data line is read as huggingface_hub reads it: JSON when it starts with "{", skipped otherwise.
func parseLogLine(line string) (JobLogEvent, bool, error) {
	if strings.HasPrefix(line, ":") {
		return JobLogEvent{KeepAlive: true}, true, nil
	}
	data, ok := strings.CutPrefix(line, "data:")
	if !ok {
		return JobLogEvent{}, false, nil // blank, event:, id:, retry:
	}
	data = strings.TrimPrefix(data, " ")
	if !strings.HasPrefix(data, "{") {
		return JobLogEvent{}, false, nil
	}
	var ev struct {
		Data      *string `json:"data"`
		Timestamp string  `json:"timestamp"`
	}
	if err := json.Unmarshal([]byte(data), &ev); err != nil {
		return JobLogEvent{}, false, fmt.Errorf("a log event is not JSON: %w", err)
	}
	if ev.Data == nil {
		return JobLogEvent{}, false, errors.New(`a log event has no "data"`)
	}
	out := JobLogEvent{Line: *ev.Data}
	if t, err := time.Parse(time.RFC3339Nano, ev.Timestamp); err == nil {
		out.Time = t
	}
	return out, true, nil
}
