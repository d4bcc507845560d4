package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// KillGraceDefault is the time between SIGTERM and SIGKILL of a command's
// process group when Command.KillGrace is zero.
const KillGraceDefault = 10 * time.Second

// drainFloor is the least time given to the output copy to read what is left
// in the pipe once every process of the group has been killed.
const drainFloor = 100 * time.Millisecond

// ErrEmptyArgv is the StartErr of a Command without a program to run.
var ErrEmptyArgv = errors.New("empty argv")

// Command describes one execution of a mapping's training command.
type Command struct {
	// Argv is the program and its arguments. Argv[0] is looked up on the PATH
	// of Env, or on the process PATH when Env has none, like exec.Command
	// does. The command is never run through a shell.
	Argv []string
	// Dir is the working directory; empty means the current directory.
	Dir string
	// Env is the complete environment as "KEY=value" entries. A nil Env
	// means the environment of the current process, as with exec.Cmd.
	Env []string
	// Timeout bounds the run time; 0 means no timeout.
	Timeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL of the process group
	// when the command is stopped; 0 means KillGraceDefault. It also bounds
	// how long output is drained after the command's process has exited.
	KillGrace time.Duration
	// Output receives stdout and stderr, interleaved through one pipe so
	// their order is preserved; nil discards them. Write is never called
	// concurrently nor after RunCommand returns, and it must return
	// eventually: a slow writer slows the command down. After a Write error
	// the rest of the output is read and discarded.
	Output io.Writer
	// OnStart, when set, is called with the command's pid, the id of its process group, once it runs. The
	// function it returns is called once that process has exited and the rest of its group has been killed, but
	// before the process is reaped, so that the group's id is not reused while what OnStart started may still
	// signal it.
	OnStart func(pgid int) (stop func())
}

// Result is what became of a Command.
type Result struct {
	// ExitCode is the exit status; -1 when the process was killed by a
	// signal or never started.
	ExitCode int
	// Signal names the signal that killed the process, e.g. "SIGTERM" or
	// "SIGKILL"; empty when it exited by itself or never started.
	Signal string
	// TimedOut reports that the Timeout elapsed and the group was stopped.
	TimedOut bool
	// Timeout is the Command's Timeout, for describing a TimedOut result.
	Timeout time.Duration
	// Cancelled reports that ctx was done before the command exited and the
	// group was stopped, or before it could be started. It is not set when
	// TimedOut is.
	Cancelled bool
	// StartErr is why the command could not be started (not found, bad
	// directory, permission, empty argv).
	StartErr error
	// Started is when the command was started.
	Started time.Time
	// Finished is when RunCommand was done with it.
	Finished time.Time
}

// Succeeded reports whether the command ran and exited 0 without timing out
// or being cancelled.
func (r Result) Succeeded() bool {
	return r.StartErr == nil && !r.TimedOut && !r.Cancelled && r.Signal == "" && r.ExitCode == 0
}

// Describe returns a short human text such as "exit code 3",
// "killed by SIGKILL after timeout of 2s", "cancelled" or
// "could not start: ...".
func (r Result) Describe() string {
	switch {
	case r.Cancelled:
		return "cancelled"
	case r.StartErr != nil:
		return "could not start: " + r.StartErr.Error()
	case r.TimedOut && r.Signal != "":
		return fmt.Sprintf("killed by %s after timeout of %s", r.Signal, r.Timeout)
	case r.TimedOut:
		return fmt.Sprintf("exit code %d after timeout of %s", r.ExitCode, r.Timeout)
	case r.Signal != "":
		return "killed by " + r.Signal
	default:
		return fmt.Sprintf("exit code %d", r.ExitCode)
	}
}

// RunCommand runs c to completion and reports what happened. It never panics
// on bad input (empty Argv is a StartErr).
//
// The command runs in its own process group. When the Timeout elapses or ctx
// is done, the group gets SIGTERM and, if the command's process has not
// exited KillGrace later, SIGKILL. Once that process has exited, for whatever
// reason, the rest of its group is killed with SIGKILL, so workers it forked
// do not outlive the run. Output still held open by processes that left the
// group is drained for at most KillGrace.
func RunCommand(ctx context.Context, c Command) Result {
	res := runCommand(ctx, c)
	res.Finished = time.Now()
	return res
}

func runCommand(ctx context.Context, c Command) Result {
	res := Result{ExitCode: -1, Timeout: c.Timeout, Started: time.Now()}
	if ctx == nil {
		ctx = context.Background()
	}
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		res.StartErr = ErrEmptyArgv
		return res
	}
	if err := context.Cause(ctx); err != nil {
		res.Cancelled = true
		res.StartErr = fmt.Errorf("not started: %w", err)
		return res
	}
	grace := c.KillGrace
	if grace <= 0 {
		grace = KillGraceDefault
	}

	cmd, err := buildCmd(c)
	if err != nil {
		res.StartErr = err
		return res
	}

	var outR, outW *os.File
	if c.Output != nil {
		if outR, outW, err = os.Pipe(); err != nil {
			res.StartErr = fmt.Errorf("output pipe: %w", err)
			return res
		}
		defer outR.Close()
		// A larger pipe than the default 64 KiB lets a chatty command write on while the output is stored, with
		// fewer wake-ups on both sides. The size is a hint: where it is refused, the default stays.
		// (Fd would put the pipe in blocking mode, where closing it no longer ends a read: drainOutput needs
		// that when a leftover grandchild holds the pipe open.)
		if raw, err := outR.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, outputPipeSize) })
		}
		// The same *os.File for both streams: the child gets one pipe as
		// fd 1 and fd 2, and exec runs no copying goroutine of its own.
		cmd.Stdout, cmd.Stderr = outW, outW
	}
	err = cmd.Start()
	if outW != nil {
		_ = outW.Close() // The child holds its own copy.
	}
	if err != nil {
		res.StartErr = fmt.Errorf("start process: %w", err)
		return res
	}
	res.Started = time.Now()
	var copyDone chan struct{}
	if outR != nil {
		copyDone = make(chan struct{})
		go copyOutput(c.Output, outR, copyDone)
	}
	pid := cmd.Process.Pid
	onExit := func() {}
	if c.OnStart != nil {
		onExit = c.OnStart(pid)
	}

	runCtx := ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}

	// exited is closed once the process has exited. Normally it is left
	// unreaped (a zombie), so its pid, which is also the process group ID,
	// cannot be reused while the group is signalled.
	exited := make(chan struct{})
	reaped := false
	go func() {
		defer close(exited)
		if err := awaitExit(pid); err != nil {
			// Waiting without reaping failed: let exec reap it.
			reaped = true
			_ = cmd.Wait()
		}
	}()

	var stopped time.Time
	select {
	case <-exited:
	case <-runCtx.Done():
		select {
		case <-exited:
			// It exited by itself just as the context ended.
		default:
			stopped = time.Now()
			if ctx.Err() != nil {
				res.Cancelled = true
			} else {
				res.TimedOut = true
			}
			stopGroup(pid, exited, grace)
		}
	}
	// The process has exited: nothing of its group may stay behind.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	onExit()
	if !reaped {
		// A non-zero exit, a signal or exec.ErrWaitDelay are not failures
		// of the run itself: the outcome is read from ProcessState below.
		_ = cmd.Wait()
	}

	if copyDone != nil {
		drainOutput(outR, copyDone, stopped, grace)
	}

	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = signalName(ws.Signal())
		} else {
			res.ExitCode = ps.ExitCode()
		}
	}
	return res
}

// buildCmd returns the exec.Cmd for c, resolving Argv[0] on the PATH of
// c.Env when it sets one, and checking c.Dir.
func buildCmd(c Command) (*exec.Cmd, error) {
	name := c.Argv[0]
	if pathEnv, ok := envPath(c.Env); ok && !strings.Contains(name, "/") {
		p, err := lookPathIn(name, pathEnv)
		if err != nil {
			return nil, fmt.Errorf("look up program: %w", err)
		}
		name = p
	}
	cmd := exec.Command(name, c.Argv[1:]...)
	if cmd.Err != nil {
		return nil, fmt.Errorf("look up program: %w", cmd.Err)
	}
	if c.Dir != "" {
		fi, err := os.Stat(c.Dir)
		if err != nil {
			return nil, fmt.Errorf("working directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("working directory %s: %w", c.Dir, syscall.ENOTDIR)
		}
	}
	cmd.Args[0] = c.Argv[0]
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	// Its own process group, so that a stop reaches every process of the command; and SIGKILL when the
	// orchestrator dies, so that a crashed orchestrator does not leave it running while the run is handed to
	// another worker. (The kernel sends it when the thread that started the child ends; the Go runtime keeps
	// its threads for the life of the process.) Grandchildren are found by the sweeper instead.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// envPath returns the value of the last PATH entry of env, the one a child
// process sees.
func envPath(env []string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			return v, true
		}
	}
	return "", false
}

// lookPathIn searches the directories of pathEnv for an executable named
// file, like exec.LookPath does with the process PATH.
func lookPathIn(file, pathEnv string) (string, error) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + file
		if _, err := exec.LookPath(p); err != nil {
			continue
		}
		if !filepath.IsAbs(p) {
			return "", &exec.Error{Name: file, Err: exec.ErrDot}
		}
		return filepath.Clean(p), nil
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}

// stopGroup sends SIGTERM to the process group pid and, if its leader has
// not exited after grace, SIGKILL. It returns once the leader has exited.
func stopGroup(pid int, exited <-chan struct{}, grace time.Duration) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	kill := time.NewTimer(grace)
	defer kill.Stop()
	select {
	case <-exited:
	case <-kill.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
}

// awaitExit blocks until the process pid has exited, leaving it unreaped.
func awaitExit(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// drainOutput waits for the output copy to reach the end of the pipe. A
// process that left the group may hold the pipe open, so the wait is bounded
// by grace from when the command was stopped, or from now, and then the pipe
// is closed.
func drainOutput(r *os.File, done <-chan struct{}, stopped time.Time, grace time.Duration) {
	start := stopped
	if start.IsZero() {
		start = time.Now()
	}
	wait := time.Until(start.Add(grace))
	if wait < drainFloor {
		wait = drainFloor
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		_ = r.Close()
		<-done
	}
}

// Sizes of the output pipe of a command and of the reads from it.
const (
	outputPipeSize = 1 << 20
	outputReadSize = 256 << 10
)

// outputBuffers holds the read buffers of copyOutput: one per stream of a running command, reused, since a fresh
// 256 KiB per stream would be most of what a short run allocates and keep the collector busy.
var outputBuffers = sync.Pool{New: func() any { return new([outputReadSize]byte) }}

// copyOutput copies r to w until r fails or reaches its end. After a write
// error it keeps reading, so the command never blocks on a full pipe.
func copyOutput(w io.Writer, r io.Reader, done chan<- struct{}) {
	defer close(done)
	array := outputBuffers.Get().(*[outputReadSize]byte)
	defer outputBuffers.Put(array)
	buf := array[:]
	var writeErr error
	for {
		n, err := r.Read(buf)
		if n > 0 && writeErr == nil {
			_, writeErr = w.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// signalName returns the conventional name of sig, such as "SIGKILL".
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(sig))
}
