package hubtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// fakeJob is one Job of a JobsServer. Its fields after spec are guarded by mu.
type fakeJob struct {
	id, namespace string
	spec          ReceivedSpec
	created       time.Time

	mu       sync.Mutex
	stage    string
	message  string
	started  bool   // its process was started, or it was canceled before
	pid      int    // of the process and its group
	ending   string // why the process group was killed: "CANCELED", "DELETED" or "timeout"
	lines    []logLine
	finished bool          // the log has its last line
	changed  chan struct{} // closed and replaced on every change
}

// logLine is one line of a Job's log.
type logLine struct {
	data string
	at   time.Time
}

// jobJSON is a Job in the answers, as huggingface_hub's JobInfo reads it.
type jobJSON struct {
	ID          string            `json:"id"`
	CreatedAt   string            `json:"createdAt"`
	DockerImage string            `json:"dockerImage,omitempty"`
	SpaceID     string            `json:"spaceId,omitempty"`
	Command     []string          `json:"command"`
	Arguments   []string          `json:"arguments"`
	Environment map[string]string `json:"environment"`
	Secrets     map[string]any    `json:"secrets"`
	Flavor      string            `json:"flavor"`
	Labels      map[string]string `json:"labels,omitempty"`
	Volumes     []ReceivedVolume  `json:"volumes,omitempty"`
	Status      struct {
		Stage   string  `json:"stage"`
		Message *string `json:"message"`
	} `json:"status"`
	Owner struct {
		ID   string `json:"id"`
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"owner"`
}

// answer returns the Job as the Hub shows it: its secrets by name only.
func (j *fakeJob) answer() jobJSON {
	a := jobJSON{ID: j.id, CreatedAt: j.created.Format("2006-01-02T15:04:05.000Z07:00"), DockerImage: j.spec.DockerImage,
		SpaceID: j.spec.SpaceID, Command: j.spec.Command, Arguments: j.spec.Arguments, Environment: j.spec.Environment,
		Secrets: map[string]any{}, Flavor: j.spec.Flavor, Labels: j.spec.Labels, Volumes: j.spec.Volumes}
	if a.Arguments == nil {
		a.Arguments = []string{}
	}
	if a.Environment == nil {
		a.Environment = map[string]string{}
	}
	for name := range j.spec.Secrets {
		a.Secrets[name] = nil
	}
	a.Owner.ID, a.Owner.Name, a.Owner.Type = fmt.Sprintf("%024x", len(j.namespace)), j.namespace, "user"
	j.mu.Lock()
	defer j.mu.Unlock()
	a.Status.Stage = j.stage
	if j.message != "" {
		msg := j.message
		a.Status.Message = &msg
	}
	return a
}

func (j *fakeJob) record() JobRecord {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := JobRecord{ID: j.id, Namespace: j.namespace, Spec: j.spec, Stage: j.stage, Message: j.message, PID: j.pid}
	for _, l := range j.lines {
		r.Lines = append(r.Lines, l.data)
	}
	return r
}

// notify wakes the log streams; j.mu is held.
func (j *fakeJob) notify() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// end sets the terminal stage; j.mu is held.
func (j *fakeJob) end(stage, message string) {
	j.stage, j.message, j.finished = stage, message, true
	j.notify()
}

// kill kills the Job's process group, if it runs.
func (j *fakeJob) kill() {
	j.mu.Lock()
	pid := j.pid
	done := j.finished
	j.mu.Unlock()
	if pid > 0 && !done {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// cancel cancels a Job: one held in SCHEDULING ends at once, a running one when its process group is dead.
// Cancelling a Job that has ended changes nothing.
func (s *JobsServer) cancel(j *fakeJob) {
	j.mu.Lock()
	switch {
	case j.finished || j.ending != "":
	case !j.started:
		j.started = true
		j.end("CANCELED", "")
	default:
		j.ending = "CANCELED"
		if j.pid > 0 {
			_ = syscall.Kill(-j.pid, syscall.SIGKILL)
		}
	}
	j.mu.Unlock()
}

// Delete deletes the Job id as someone on the Hub may: one held in SCHEDULING ends DELETED at once, a running
// one when its process group is dead. Deleting a Job that has ended changes nothing.
func (s *JobsServer) Delete(id string) {
	s.mu.Lock()
	j := s.jobs[id]
	s.mu.Unlock()
	if j == nil {
		return
	}
	j.mu.Lock()
	switch {
	case j.finished || j.ending != "":
	case !j.started:
		j.started = true
		j.end("DELETED", "")
	default:
		j.ending = "DELETED"
		if j.pid > 0 {
			_ = syscall.Kill(-j.pid, syscall.SIGKILL)
		}
	}
	j.mu.Unlock()
}

// start runs the Job's command, unless it was started (or canceled) already.
func (s *JobsServer) start(j *fakeJob) {
	j.mu.Lock()
	if j.started {
		j.mu.Unlock()
		return
	}
	j.started = true
	j.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(j)
	}()
}

// run runs the Job's command to its end and sets the Job's last stage.
func (s *JobsServer) run(j *fakeJob) {
	dir := filepath.Join(s.dir, j.id)
	r, w, err := os.Pipe()
	if err == nil {
		err = os.Mkdir(dir, 0o700)
	}
	if err != nil {
		j.mu.Lock()
		j.end("ERROR", "hubtest: "+err.Error())
		j.mu.Unlock()
		return
	}
	defer r.Close()
	args := append(append([]string{}, j.spec.Command[1:]...), j.spec.Arguments...)
	cmd := exec.Command(j.spec.Command[0], args...)
	cmd.Dir = dir
	// A container's environment: the Job's own, not the test's (PATH aside, to find the command).
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	for _, m := range []map[string]string{j.spec.Environment, j.spec.Secrets} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			cmd.Env = append(cmd.Env, k+"="+m[k])
		}
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	j.mu.Lock()
	if j.ending != "" || isClosed(s.done) { // canceled, or the test ended, before the start
		j.end("CANCELED", "")
		j.mu.Unlock()
		_ = w.Close()
		return
	}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		j.end("ERROR", "hubtest: start the command: "+err.Error())
		j.mu.Unlock()
		return
	}
	j.pid, j.stage = cmd.Process.Pid, "RUNNING"
	j.lines = append(j.lines, logLine{fmt.Sprintf("===== Job started at %s =====", time.Now().UTC().Format("2006-01-02 15:04:05")), time.Now().UTC()})
	j.notify()
	j.mu.Unlock()

	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			j.mu.Lock()
			j.lines = append(j.lines, logLine{sc.Text(), time.Now().UTC()})
			j.notify()
			j.mu.Unlock()
		}
	}()
	timeout := JobTimeoutDefault
	if j.spec.TimeoutSeconds > 0 {
		timeout = time.Duration(j.spec.TimeoutSeconds) * time.Second
	}
	pid := cmd.Process.Pid
	timer := time.AfterFunc(timeout, func() {
		j.mu.Lock()
		if j.ending == "" {
			j.ending = "timeout"
		}
		j.mu.Unlock()
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	})
	waitErr := cmd.Wait()
	timer.Stop()
	// The container ends with its main process: whatever else of the group still runs goes with it, and the
	// pipe's last writer with them.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-read

	j.mu.Lock()
	defer j.mu.Unlock()
	var exitErr *exec.ExitError
	switch {
	case j.ending == "CANCELED", j.ending == "DELETED":
		j.end(j.ending, "")
	case j.ending == "timeout":
		j.end("ERROR", "Job timeout")
	case isClosed(s.done):
		j.end("ERROR", "hubtest: the test ended")
	case waitErr == nil:
		j.end("COMPLETED", "")
	case errors.As(waitErr, &exitErr) && exitErr.ExitCode() >= 0:
		j.end("ERROR", fmt.Sprintf("exit code %d", exitErr.ExitCode()))
	default:
		j.end("ERROR", waitErr.Error())
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// streamLogs answers GET .../logs: every line of the Job from the first, as server-sent events, then the new
// ones as they come, with keep-alive comments while it is silent; the stream ends once the Job has ended and
// its last line was sent (unless KeepLogStreamsOpen).
func (s *JobsServer) streamLogs(w http.ResponseWriter, req *http.Request, j *fakeJob) {
	rc := http.NewResponseController(w)
	s.mu.Lock()
	keepAlive, keepOpen := s.keepAlive, s.keepOpen
	dropAfter := -1
	if s.drops > 0 {
		s.drops--
		dropAfter = s.dropAfter
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	ticker := time.NewTicker(keepAlive)
	defer ticker.Stop()
	sent := 0
	for {
		j.mu.Lock()
		pending := append([]logLine(nil), j.lines[min(sent, len(j.lines)):]...)
		finished, changed := j.finished, j.changed
		j.mu.Unlock()
		for _, l := range pending {
			if sent == dropAfter {
				drop(rc)
				return
			}
			body, _ := json.Marshal(map[string]string{"data": l.data, "timestamp": l.at.Format(time.RFC3339Nano)})
			if _, err := fmt.Fprintf(w, "data: %s\n\n", body); err != nil {
				return
			}
			sent++
		}
		if len(pending) > 0 {
			if rc.Flush() != nil {
				return
			}
			ticker.Reset(keepAlive)
		}
		if finished { // every line, taken with finished, was sent
			if sent == dropAfter {
				drop(rc)
				return
			}
			if !keepOpen {
				return
			}
			select {
			case <-req.Context().Done():
			case <-s.done:
			}
			return
		}
		select {
		case <-changed:
		case <-ticker.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-req.Context().Done():
			return
		case <-s.done:
			return
		}
	}
}

// drop closes the connection of a streamed answer without ending it, as a broken stream does.
func drop(rc *http.ResponseController) {
	_ = rc.Flush()
	if conn, _, err := rc.Hijack(); err == nil {
		_ = conn.Close()
	}
}
