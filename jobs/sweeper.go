package jobs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// MarkerEnv is the environment variable that every process of an attempt inherits (unless it clears its
// environment): "<instance id>:<run id>:<attempt>". The sweeper finds leftover processes by it.
const MarkerEnv = "ORCHESTRATOR_ATTEMPT_MARKER"

// Processes knows which attempts this orchestrator process is running, and marks their commands.
type Processes struct {
	instance string

	mu     sync.Mutex
	active map[orchestrator.AttemptKey]int
}

// NewProcesses returns the process registry of an orchestrator whose database has the given instance id.
func NewProcesses(instance string) *Processes {
	return &Processes{instance: instance, active: map[orchestrator.AttemptKey]int{}}
}

// marker returns the MarkerEnv entry of an attempt.
func (p *Processes) marker(k orchestrator.AttemptKey) string {
	return fmt.Sprintf("%s=%s:%d:%d", MarkerEnv, p.instance, k.RunID, k.Attempt)
}

// start records that this process runs attempt k, until the returned function is called.
func (p *Processes) start(k orchestrator.AttemptKey) (done func()) {
	p.mu.Lock()
	p.active[k]++
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		if p.active[k]--; p.active[k] <= 0 {
			delete(p.active, k)
		}
		p.mu.Unlock()
	}
}

func (p *Processes) isActive(k orchestrator.AttemptKey) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active[k] > 0
}

// Sweeper kills processes on this machine that belong to attempts no process should be running any more: the
// commands of an orchestrator that was killed (its direct child gets SIGKILL from the kernel, but a command's own
// children survive) or of an attempt the reaper closed. It runs in every orchestrator process, since processes
// can only be found on their own machine.
type Sweeper struct {
	// Store says which attempts are abandoned.
	Store *orchestrator.Store
	// Processes is this orchestrator's registry; its attempts are never swept.
	Processes *Processes
	// Silence is how old an attempt's heartbeat must be before its processes count as leftovers. It must stay
	// below the reaper's OrphanAfter, so leftovers die before their run is handed to another worker.
	Silence time.Duration
	// Logger receives a line per process killed.
	Logger *slog.Logger
	// ProcDir is the proc filesystem; "/proc" when empty.
	ProcDir string
}

// SweepOnce looks at every process it may read once, and kills the leftovers. It returns their pids.
func (s *Sweeper) SweepOnce(ctx context.Context) ([]int, error) {
	procDir := s.ProcDir
	if procDir == "" {
		procDir = "/proc"
	}
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, nil // no proc filesystem: nothing to sweep here
	}
	prefix := []byte(MarkerEnv + "=" + s.Processes.instance + ":")
	self := os.Getpid()
	pids := map[orchestrator.AttemptKey][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(procDir, e.Name(), "environ"))
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, kv := range bytes.Split(environ, []byte{0}) {
			rest, ok := bytes.CutPrefix(kv, prefix)
			if !ok {
				continue
			}
			run, attempt, ok := strings.Cut(string(rest), ":")
			runID, err1 := strconv.ParseInt(run, 10, 64)
			n, err2 := strconv.Atoi(attempt)
			if ok && err1 == nil && err2 == nil {
				k := orchestrator.AttemptKey{RunID: runID, Attempt: n}
				if !s.Processes.isActive(k) {
					pids[k] = append(pids[k], pid)
				}
			}
			break
		}
	}
	if len(pids) == 0 {
		return nil, nil
	}
	keys := make([]orchestrator.AttemptKey, 0, len(pids))
	for k := range pids {
		keys = append(keys, k)
	}
	abandoned, err := s.Store.AttemptsAbandoned(ctx, keys, s.Silence)
	if err != nil {
		return nil, err
	}
	var killed []int
	for k := range abandoned {
		if s.Processes.isActive(k) { // started meanwhile by this process
			continue
		}
		for _, pid := range pids[k] {
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				killed = append(killed, pid)
				s.Logger.WarnContext(ctx, "killed a leftover process of an abandoned attempt",
					"pid", pid, "run_id", k.RunID, "attempt", k.Attempt)
			}
		}
	}
	return killed, nil
}

// Run sweeps every interval until ctx is done.
func (s *Sweeper) Run(ctx context.Context, interval time.Duration) {
	every(ctx, interval, s.Logger, "could not sweep leftover processes", func(ctx context.Context) error {
		_, err := s.SweepOnce(ctx)
		return err
	})
}
