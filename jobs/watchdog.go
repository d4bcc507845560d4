package jobs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A worker that is frozen (SIGSTOP, a paused VM) cannot fire its own fence. A command that has run for a
// heartbeat interval is therefore also watched by a process of its own, which the worker tells the fence's
// deadline after each renewal of the lease, over a pipe: when the deadline passes without a renewal, the watchdog
// stops the command's process group as the fence would (SIGTERM, then SIGKILL after the grace). It does not
// depend on the worker running, only on the watchdog's machine. It is started after the first renewal, not with
// the command, so that short commands cost no second process.

// WatchdogCommand is the hidden subcommand of the orchestrator binary that runs a command's watchdog, started as
// `orchestrator WatchdogCommand <pgid> <grace>`; see RunWatchdog.
const WatchdogCommand = "__watchdog"

// Exit codes of RunWatchdog.
const (
	WatchdogStopped = 0 // the worker ended the watch
	WatchdogFired   = 3 // the deadline passed: the group was stopped
	watchdogUsage   = 2
)

// watchdogLag is how much later than the worker's own fence the watchdog fires, so that a worker that runs
// stops its command itself. It is well within FenceAllowance, so the watchdog's SIGKILL too comes before the
// lease expires at the database.
const watchdogLag = FenceAllowance / 4

// watchdogPoll is how often the watchdog compares both clocks with its deadline.
const watchdogPoll = 50 * time.Millisecond

// RunWatchdog watches the process group pgid on behalf of the worker that started it, reading from in: each line
// is the number of milliseconds until the deadline, from now; "stop" ends the watch. When the deadline passes
// before another line comes, the group gets SIGTERM, and SIGKILL after grace (sooner when "stop" comes). When in
// ends without "stop" (the worker died), the deadline still holds: what is left of the command dies when the
// lease would have let another worker start the run, even if no orchestrator comes back on this machine. The
// deadline is checked on the monotonic clock and on the wall clock, whichever passes first, since a resumed VM
// may not count its pause on the former. It returns one of the Watchdog exit codes and writes what it did to log.
// What reads in stops once in ends, also after RunWatchdog returned.
func RunWatchdog(in io.Reader, pgid int, grace time.Duration, log io.Writer) int {
	lines := make(chan string)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(lines)
		scanner := bufio.NewScanner(in)
		for scanner.Scan() {
			select {
			case lines <- strings.TrimSpace(scanner.Text()):
			case <-done:
				return
			}
		}
	}()
	var deadline, wallDeadline time.Time
	expired := func() bool {
		return !deadline.IsZero() && (!time.Now().Before(deadline) || !time.Now().Round(0).Before(wallDeadline))
	}
	tick := time.NewTicker(watchdogPoll)
	defer tick.Stop()
	for !expired() {
		select {
		case line, ok := <-lines:
			switch {
			case !ok && deadline.IsZero():
				return WatchdogStopped
			case !ok:
				lines = nil // the worker went away: wait for the deadline
				continue
			case line == "stop":
				return WatchdogStopped
			}
			ms, err := strconv.ParseInt(line, 10, 64)
			if err != nil {
				fmt.Fprintf(log, "watchdog: bad line %q\n", line)
				continue
			}
			deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
			wallDeadline = deadline.Round(0)
		case <-tick.C:
		}
	}
	fmt.Fprintf(log, "watchdog: the lease was not renewed in time; stopping process group %d\n", pgid)
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	kill := time.NewTimer(grace)
	defer kill.Stop()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				lines = nil // the worker went away: the grace runs out
				continue
			}
			if line != "stop" {
				continue
			}
			return WatchdogFired
		case <-kill.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			return WatchdogFired
		}
	}
}

// RunWatchdogMain runs the watchdog subcommand with its arguments (pgid, grace), on standard input and error.
func RunWatchdogMain(args []string) int {
	if len(args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: orchestrator %s <pgid> <grace>\n", WatchdogCommand)
		return watchdogUsage
	}
	pgid, err := strconv.Atoi(args[0])
	grace, gerr := time.ParseDuration(args[1])
	if err != nil || gerr != nil || pgid <= 1 || grace <= 0 {
		fmt.Fprintf(os.Stderr, "orchestrator %s: bad arguments %q\n", WatchdogCommand, args)
		return watchdogUsage
	}
	// Its standard error is the worker's, which may be a pipe that closes with the worker: a write must fail
	// there, not end the watchdog.
	signal.Ignore(syscall.SIGPIPE)
	return RunWatchdog(os.Stdin, pgid, grace, os.Stderr)
}

// watchdog is the worker's end of a command's watchdog: the command's process group, once it runs, and the
// watchdog process, once the lease was first renewed. Its methods are safe for concurrent use, and for a nil
// watchdog (none configured), which does nothing.
type watchdog struct {
	argv   []string // the program that runs RunWatchdogMain
	grace  time.Duration
	logger *slog.Logger

	mu      sync.Mutex
	pgid    int // 0 until the command runs
	stopped bool
	proc    *exec.Cmd
	pipe    io.WriteCloser
	code    int // the watchdog's exit code, once stopped
}

// newWatchdog returns the watchdog of one command, or nil when the worker has none configured.
func (w *RetrainWorker) newWatchdog(logger *slog.Logger) *watchdog {
	if len(w.cfg.Watchdog) == 0 {
		return nil
	}
	return &watchdog{argv: w.cfg.Watchdog, grace: w.cfg.KillGrace, logger: logger}
}

// onStart is the Command.OnStart of the watched command, nil for a nil watchdog.
func (g *watchdog) onStart() func(pgid int) (stop func()) {
	if g == nil {
		return nil
	}
	return func(pgid int) func() {
		g.mu.Lock()
		g.pgid = pgid
		g.mu.Unlock()
		return g.stop
	}
}

// renewed tells the watchdog, starting it the first time, that the fence's deadline is now deadline.
func (g *watchdog) renewed(deadline time.Time) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped || g.pgid == 0 {
		return
	}
	if g.proc == nil {
		if err := g.startLocked(); err != nil {
			g.logger.Warn("could not start the command's watchdog; the worker alone fences it", "error", err)
			g.stopped = true
			return
		}
	}
	ms := max(time.Until(deadline)+watchdogLag, 0).Milliseconds()
	if _, err := fmt.Fprintf(g.pipe, "%d\n", ms); err != nil {
		g.logger.Warn("could not renew the command's watchdog", "error", err)
	}
}

func (g *watchdog) startLocked() error {
	args := append(g.argv[1:len(g.argv):len(g.argv)], strconv.Itoa(g.pgid), g.grace.String())
	proc := exec.Command(g.argv[0], args...)
	// Its own group, out of reach of the signals to the command's; no marker, so that no sweeper takes it for
	// the command's; and no death signal: when the worker dies, the watchdog kills the command.
	proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	proc.Env = []string{}
	proc.Stderr = os.Stderr
	pipe, err := proc.StdinPipe()
	if err != nil {
		return fmt.Errorf("watchdog pipe: %w", err)
	}
	if err := proc.Start(); err != nil {
		return fmt.Errorf("start watchdog: %w", err)
	}
	g.proc, g.pipe = proc, pipe
	return nil
}

// stop ends the watch and waits for the watchdog to exit. RunCommand calls it once the command's process has
// exited, before reaping it, so that the group's id is not reused while the watchdog may signal it.
func (g *watchdog) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	if g.proc == nil {
		return
	}
	_, _ = io.WriteString(g.pipe, "stop\n")
	_ = g.pipe.Close()
	done := make(chan error, 1)
	go func() { done <- g.proc.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			g.code = exit.ExitCode()
		}
	case <-time.After(g.grace + 2*time.Second):
		_ = g.proc.Process.Kill()
		<-done
		g.code = -1
	}
	if g.code != WatchdogStopped {
		g.logger.Warn("the command's watchdog stopped the command: the lease was not renewed in time", "exit_code", g.code)
	}
}

// fired reports whether the watchdog stopped the command.
func (g *watchdog) fired() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.code == WatchdogFired
}
