package hubtest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/hub/hubtest"
)

const token = "hf_jobs_token"

var auth = []string{"Authorization", "Bearer " + token, "Content-Type", "application/json"}

// jobAnswer is a Job as huggingface_hub's JobInfo reads it.
type jobAnswer struct {
	ID          string            `json:"id"`
	CreatedAt   string            `json:"createdAt"`
	DockerImage string            `json:"dockerImage"`
	Command     []string          `json:"command"`
	Arguments   []string          `json:"arguments"`
	Environment map[string]string `json:"environment"`
	Secrets     map[string]any    `json:"secrets"`
	Flavor      string            `json:"flavor"`
	Labels      map[string]string `json:"labels"`
	Status      struct {
		Stage   string  `json:"stage"`
		Message *string `json:"message"`
	} `json:"status"`
	Owner struct {
		ID, Name, Type string
	} `json:"owner"`
}

func createJob(t *testing.T, srv *hubtest.JobsServer, body string) jobAnswer {
	t.Helper()
	return jobOf(t, do(t, http.MethodPost, srv.URL()+"/api/jobs/acme", body, auth...))
}

func inspect(t *testing.T, srv *hubtest.JobsServer, id string) jobAnswer {
	t.Helper()
	return jobOf(t, get(t, srv.URL()+"/api/jobs/acme/"+id, auth...))
}

// jobOf decodes a 200 answer holding a Job.
func jobOf(t *testing.T, a answer) jobAnswer {
	t.Helper()
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	var j jobAnswer
	a.decode(t, &j)
	return j
}

// waitEnded inspects a Job until its stage is terminal.
func waitEnded(t *testing.T, srv *hubtest.JobsServer, id string) jobAnswer {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // a hang guard
	for {
		j := inspect(t, srv, id)
		switch j.Status.Stage {
		case "COMPLETED", "CANCELED", "ERROR", "DELETED":
			return j
		}
		require.True(t, time.Now().Before(deadline), "job %s still %s", id, j.Status.Stage)
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJobsCreateAnswer(t *testing.T) {
	t.Parallel()
	srv := hubtest.NewJobsServer(t, token)
	j := createJob(t, srv, `{"dockerImage": "python:3.12", "command": ["sh", "-c", "echo $A $S"], "arguments": [],
		"environment": {"A": "a"}, "secrets": {"S": "s3cret"}, "flavor": "t4-small", "timeoutSeconds": 60,
		"labels": {"run": "1"}, "volumes": [{"type": "dataset", "source": "acme/d", "mountPath": "/data", "revision": "abc", "readOnly": true}]}`)
	require.Len(t, j.ID, 24)
	require.Equal(t, "acme", j.Owner.Name)
	require.Equal(t, "user", j.Owner.Type)
	require.Equal(t, "SCHEDULING", j.Status.Stage)
	require.Nil(t, j.Status.Message)
	require.Equal(t, map[string]any{"S": nil}, j.Secrets, "secrets by name only")
	require.Equal(t, "t4-small", j.Flavor)
	_, err := time.Parse(time.RFC3339Nano, j.CreatedAt)
	require.NoError(t, err)

	done := waitEnded(t, srv, j.ID)
	require.Equal(t, "COMPLETED", done.Status.Stage)
	rec, ok := srv.Job(j.ID)
	require.True(t, ok)
	require.Equal(t, []string{"a s3cret"}, rec.Lines[1:])
	require.Equal(t, "abc", rec.Spec.Volumes[0].Revision)
	require.Equal(t, "s3cret", rec.Spec.Secrets["S"])
	for _, path := range []string{"/api/jobs/acme/" + j.ID, "/api/jobs/acme"} {
		a := get(t, srv.URL()+path, auth...)
		require.NotContains(t, string(a.body), "s3cret", path)
	}
	require.Equal(t, 1, srv.JobsCreated())
	require.Equal(t, 1, srv.Requests("create"))
}

func TestJobsRefusals(t *testing.T) {
	t.Parallel()
	srv := hubtest.NewJobsServer(t, token)
	ok := createJob(t, srv, `{"dockerImage": "x", "command": ["true"]}`)
	require.Equal(t, "cpu-basic", ok.Flavor, "the default flavor")
	for _, tt := range []struct {
		name, method, path, body string
		headers                  []string
		want                     int
	}{
		{"no token", http.MethodGet, "/api/jobs/acme", "", nil, http.StatusUnauthorized},
		{"wrong token", http.MethodGet, "/api/jobs/acme", "", []string{"Authorization", "Bearer nope"}, http.StatusUnauthorized},
		{"unknown job", http.MethodGet, "/api/jobs/acme/ffff", "", auth, http.StatusNotFound},
		{"job of another namespace", http.MethodGet, "/api/jobs/other/" + ok.ID, "", auth, http.StatusNotFound},
		{"no image", http.MethodPost, "/api/jobs/acme", `{"command": ["true"]}`, auth, http.StatusBadRequest},
		{"no command", http.MethodPost, "/api/jobs/acme", `{"dockerImage": "x"}`, auth, http.StatusBadRequest},
		{"unknown flavor", http.MethodPost, "/api/jobs/acme", `{"dockerImage": "x", "command": ["true"], "flavor": "z"}`, auth, http.StatusBadRequest},
		{"bad label", http.MethodPost, "/api/jobs/acme", `{"dockerImage": "x", "command": ["true"], "labels": {"a b": "c"}}`, auth, http.StatusBadRequest},
		{"not JSON", http.MethodPost, "/api/jobs/acme", `{`, auth, http.StatusBadRequest},
		{"unknown route", http.MethodDelete, "/api/jobs/acme/" + ok.ID, "", auth, http.StatusNotFound},
	} {
		a := do(t, tt.method, srv.URL()+tt.path, tt.body, tt.headers...)
		require.Equal(t, tt.want, a.status, "%s: %s", tt.name, a.body)
	}
	require.Equal(t, 1, srv.JobsCreated())
}

func TestJobsListPagesAndFilters(t *testing.T) {
	t.Parallel()
	srv := hubtest.NewJobsServer(t, token)
	srv.HoldScheduling(true)
	srv.SetPageSize(2)
	var want []string
	for i := range 5 {
		j := createJob(t, srv, fmt.Sprintf(`{"dockerImage": "x", "command": ["true"], "labels": {"k": "%d", "all": "yes"}}`, i%2))
		if i%2 == 1 {
			want = append(want, j.ID)
		}
	}
	q := url.Values{"label": {"k=1", "all=yes"}}
	all, pages := listAll[jobAnswer](t, srv.URL()+"/api/jobs/acme?"+q.Encode(), auth...)
	var got []string
	for _, j := range all {
		got = append(got, j.ID)
	}
	require.Equal(t, want, got, "in creation order")
	require.Equal(t, 1, pages)
	all, pages = listAll[jobAnswer](t, srv.URL()+"/api/jobs/acme", auth...)
	require.Len(t, all, 5)
	require.Equal(t, 3, pages)
	running, _ := listAll[jobAnswer](t, srv.URL()+"/api/jobs/acme?stage=RUNNING", auth...)
	require.Empty(t, running, "every Job is held in SCHEDULING")
}

// readEvents reads a log stream until it ends, returning its raw lines.
func readEvents(ctx context.Context, t *testing.T, rawURL string, stop func(lines []string) bool) ([]string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
		if stop != nil && stop(lines) {
			return lines, nil
		}
	}
	return lines, sc.Err()
}

func TestJobsLogStreamFormat(t *testing.T) {
	t.Parallel()
	srv := hubtest.NewJobsServer(t, token)
	srv.SetKeepAlive(10 * time.Millisecond)
	flag := filepath.Join(t.TempDir(), "go")
	j := createJob(t, srv, fmt.Sprintf(`{"dockerImage": "x", "command": ["sh", "-c", "echo out; echo err >&2; while [ ! -e %s ]; do sleep 0.01; done"]}`, flag))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lines, err := readEvents(ctx, t, srv.URL()+"/api/jobs/acme/"+j.ID+"/logs", func(lines []string) bool {
		if n := len(lines); n > 0 && lines[n-1] == ": keep-alive" && strings.Count(strings.Join(lines, "\n"), "data: ") == 3 {
			require.NoError(t, os.WriteFile(flag, nil, 0o600))
		}
		return false
	})
	require.NoError(t, err, "the stream ends with the Job")
	var data []string
	for _, l := range lines {
		if l == ": keep-alive" {
			continue
		}
		payload, ok := strings.CutPrefix(l, "data: ")
		require.True(t, ok, l)
		var ev struct{ Data, Timestamp string }
		require.NoError(t, json.Unmarshal([]byte(payload), &ev))
		_, err := time.Parse(time.RFC3339Nano, ev.Timestamp)
		require.NoError(t, err)
		data = append(data, ev.Data)
	}
	require.Len(t, data, 3)
	require.True(t, strings.HasPrefix(data[0], "===== Job started at "), data[0])
	require.ElementsMatch(t, []string{"out", "err"}, data[1:])
	require.Contains(t, lines, ": keep-alive")

	// A second connection replays from the first line.
	again, err := readEvents(ctx, t, srv.URL()+"/api/jobs/acme/"+j.ID+"/logs", nil)
	require.NoError(t, err)
	require.Len(t, again, 3)
	require.Equal(t, 2, srv.Requests("logs"))
}

func TestJobsRateLimit(t *testing.T) {
	t.Parallel()
	srv := hubtest.NewJobsServer(t, "")
	srv.RateLimit(1, "7")
	a := get(t, srv.URL()+"/api/jobs/hardware")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.Equal(t, "7", a.header.Get("Retry-After"))
	a = get(t, srv.URL()+"/api/jobs/hardware")
	require.Equal(t, http.StatusOK, a.status)
	var hw []struct {
		Name             string  `json:"name"`
		UnitCostMicroUSD int64   `json:"unitCostMicroUSD"`
		UnitCostUSD      float64 `json:"unitCostUSD"`
		UnitLabel        string  `json:"unitLabel"`
	}
	a.decode(t, &hw)
	require.NotEmpty(t, hw)
	require.Equal(t, "cpu-basic", hw[0].Name)
	require.Equal(t, int64(167), hw[0].UnitCostMicroUSD)
	require.Equal(t, 2, srv.Requests("hardware"))
}

func TestJobsCreateFailsAfterCreating(t *testing.T) {
	t.Parallel()
	srv := hubtest.NewJobsServer(t, token)
	srv.FailCreates(1)
	a := do(t, http.MethodPost, srv.URL()+"/api/jobs/acme", `{"dockerImage": "x", "command": ["true"]}`, auth...)
	require.Equal(t, http.StatusInternalServerError, a.status)
	jobs := srv.Jobs()
	require.Len(t, jobs, 1)
	require.Equal(t, "COMPLETED", waitEnded(t, srv, jobs[0].ID).Status.Stage, "the Job runs all the same")
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func TestJobsCleanupKillsProcesses(t *testing.T) {
	t.Parallel()
	var pid int
	t.Run("job", func(t *testing.T) {
		srv := hubtest.NewJobsServer(t, token)
		j := createJob(t, srv, `{"dockerImage": "x", "command": ["sleep", "300"]}`)
		deadline := time.Now().Add(time.Minute)
		for pid == 0 {
			rec, _ := srv.Job(j.ID)
			pid = rec.PID
			require.True(t, time.Now().Before(deadline))
			time.Sleep(5 * time.Millisecond)
		}
		require.True(t, alive(pid))
	})
	require.NotZero(t, pid)
	require.False(t, alive(pid), "the Job's process outlived its test")
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH)
}
