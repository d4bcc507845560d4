package jobs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/logtest"
)

// runnerFailingWriter fails every write.
type runnerFailingWriter struct{}

func (runnerFailingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// runnerProcessGone reports whether pid no longer runs: it does not exist
// or is a zombie waiting for a parent that may never reap it.
func runnerProcessGone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	state := stat[i+2]
	return state == 'Z' || state == 'X'
}

// requireRunnerProcessGone fails unless pid is gone within 2 s.
func requireRunnerProcessGone(t *testing.T, pid int) {
	t.Helper()
	require.Eventually(t, func() bool { return runnerProcessGone(pid) }, 2*time.Second, 10*time.Millisecond,
		"process %d still runs", pid)
}

// readRunnerPID returns the pid written to path, waiting up to 2 s for it.
func readRunnerPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	}, 2*time.Second, 10*time.Millisecond, "no pid in %s", path)
	return pid
}

// writeRunnerScript writes an executable sh script named name into dir.
func writeRunnerScript(t *testing.T, dir, name, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755))
}

func TestRunCommand(t *testing.T) {
	t.Parallel()

	binDir := t.TempDir()
	writeRunnerScript(t, binDir, "runner-test-hello", "echo hello from PATH")
	workDir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	notDir := filepath.Join(workDir, "file")
	require.NoError(t, os.WriteFile(notDir, nil, 0o644))

	tests := []struct {
		name         string
		cmd          Command
		wantExit     int
		wantSignal   string
		wantOutput   string
		wantStartErr error
		wantDescribe string
	}{
		{
			name:         "exit zero",
			cmd:          Command{Argv: []string{"true"}},
			wantDescribe: "exit code 0",
		},
		{
			name:         "exit non-zero",
			cmd:          Command{Argv: []string{"false"}},
			wantExit:     1,
			wantDescribe: "exit code 1",
		},
		{
			name:         "exit three",
			cmd:          Command{Argv: []string{"sh", "-c", "exit 3"}},
			wantExit:     3,
			wantDescribe: "exit code 3",
		},
		{
			name:         "stdout and stderr interleaved in order",
			cmd:          Command{Argv: []string{"sh", "-c", "echo a; echo b >&2; echo c"}},
			wantOutput:   "a\nb\nc\n",
			wantDescribe: "exit code 0",
		},
		{
			name: "env and dir",
			cmd: Command{
				Argv: []string{"sh", "-c", `echo "$FOO"; pwd`},
				Env:  []string{"FOO=bar baz", "PATH=" + os.Getenv("PATH")},
				Dir:  workDir,
			},
			wantOutput:   "bar baz\n" + workDir + "\n",
			wantDescribe: "exit code 0",
		},
		{
			name: "program looked up on PATH of Env",
			cmd: Command{
				Argv: []string{"runner-test-hello"},
				Env:  []string{"PATH=/nonexistent:" + binDir},
			},
			wantOutput:   "hello from PATH\n",
			wantDescribe: "exit code 0",
		},
		{
			name: "process PATH not used when Env sets PATH",
			cmd: Command{
				Argv: []string{"true"},
				Env:  []string{"PATH=" + binDir},
			},
			wantExit:     -1,
			wantStartErr: exec.ErrNotFound,
			wantDescribe: "could not start: ",
		},
		{
			name:         "killed by a signal",
			cmd:          Command{Argv: []string{"sh", "-c", "kill -KILL $$"}},
			wantExit:     -1,
			wantSignal:   "SIGKILL",
			wantDescribe: "killed by SIGKILL",
		},
		{
			name:         "program not found",
			cmd:          Command{Argv: []string{"runner-test-no-such-program"}},
			wantExit:     -1,
			wantStartErr: exec.ErrNotFound,
			wantDescribe: "could not start: ",
		},
		{
			name:         "program not executable",
			cmd:          Command{Argv: []string{notDir}},
			wantExit:     -1,
			wantStartErr: fs.ErrPermission,
			wantDescribe: "could not start: ",
		},
		{
			name:         "dir does not exist",
			cmd:          Command{Argv: []string{"true"}, Dir: filepath.Join(workDir, "missing")},
			wantExit:     -1,
			wantStartErr: fs.ErrNotExist,
			wantDescribe: "could not start: working directory",
		},
		{
			name:         "dir is a file",
			cmd:          Command{Argv: []string{"true"}, Dir: notDir},
			wantExit:     -1,
			wantStartErr: syscall.ENOTDIR,
			wantDescribe: "could not start: working directory",
		},
		{
			name:         "nil argv",
			cmd:          Command{},
			wantExit:     -1,
			wantStartErr: ErrEmptyArgv,
			wantDescribe: "could not start: empty argv",
		},
		{
			name:         "empty program",
			cmd:          Command{Argv: []string{"", "x"}},
			wantExit:     -1,
			wantStartErr: ErrEmptyArgv,
			wantDescribe: "could not start: empty argv",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out logtest.Buffer
			c := tt.cmd
			c.Output = &out
			c.KillGrace = time.Second

			before := time.Now()
			res := RunCommand(t.Context(), c)

			require.Equal(t, tt.wantExit, res.ExitCode)
			require.Equal(t, tt.wantSignal, res.Signal)
			require.False(t, res.TimedOut)
			require.False(t, res.Cancelled)
			if tt.wantStartErr != nil {
				require.ErrorIs(t, res.StartErr, tt.wantStartErr)
			} else {
				require.NoError(t, res.StartErr)
			}
			require.Equal(t, tt.wantExit == 0 && tt.wantSignal == "" && tt.wantStartErr == nil, res.Succeeded())
			require.Equal(t, tt.wantOutput, out.String())
			require.True(t, strings.HasPrefix(res.Describe(), tt.wantDescribe), "Describe() = %q", res.Describe())
			require.False(t, res.Started.Before(before))
			require.False(t, res.Finished.Before(res.Started))
		})
	}
}

func TestRunCommandArgvNotShellInterpreted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "x")
	arg := "$(touch " + marker + "); echo pwned `touch " + marker + "` *"
	var out logtest.Buffer

	res := RunCommand(t.Context(), Command{Argv: []string{"printf", "%s", arg}, Dir: dir, Output: &out})

	require.True(t, res.Succeeded(), res.Describe())
	require.Equal(t, arg, out.String())
	require.NoFileExists(t, marker)
}

func TestRunCommandLargeOutput(t *testing.T) {
	t.Parallel()
	const size = 1 << 20 // Far more than a pipe holds.
	tests := []struct {
		name    string
		output  string
		wantLen int
	}{
		{name: "captured in full", output: "buffer", wantLen: size},
		{name: "writer fails", output: "failing"},
		{name: "discarded", output: "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Command{Argv: []string{"head", "-c", strconv.Itoa(size), "/dev/zero"}, Timeout: 5 * time.Second}
			var out logtest.Buffer
			switch tt.output {
			case "buffer":
				c.Output = &out
			case "failing":
				c.Output = runnerFailingWriter{}
			}

			res := RunCommand(t.Context(), c)

			require.True(t, res.Succeeded(), res.Describe())
			require.Len(t, out.String(), tt.wantLen)
		})
	}
}

func TestRunCommandStopsProcessGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		script       string
		timeout      time.Duration
		cancelAfter  time.Duration
		grace        time.Duration
		wantExit     int
		wantSignal   string
		wantTimedOut bool
		wantCancel   bool
		wantDescribe string
		minElapsed   time.Duration
		maxElapsed   time.Duration
	}{
		{
			name:         "timeout terminates the group",
			script:       `sleep 1000 & echo $! > "$PIDFILE"; sleep 1000`,
			timeout:      300 * time.Millisecond,
			grace:        200 * time.Millisecond,
			wantSignal:   "SIGTERM",
			wantTimedOut: true,
			wantExit:     -1,
			wantDescribe: "killed by SIGTERM after timeout of 300ms",
			minElapsed:   300 * time.Millisecond,
			maxElapsed:   1500 * time.Millisecond,
		},
		{
			name:         "timeout handled by the command",
			script:       `trap 'exit 143' TERM; sleep 1000 & echo $! > "$PIDFILE"; wait`,
			timeout:      200 * time.Millisecond,
			grace:        2 * time.Second,
			wantExit:     143,
			wantTimedOut: true,
			wantDescribe: "exit code 143 after timeout of 200ms",
			minElapsed:   200 * time.Millisecond,
			maxElapsed:   1500 * time.Millisecond,
		},
		{
			name:         "ignored SIGTERM is followed by SIGKILL",
			script:       `trap '' TERM; sleep 1000 & echo $! > "$PIDFILE"; wait`,
			timeout:      200 * time.Millisecond,
			grace:        200 * time.Millisecond,
			wantSignal:   "SIGKILL",
			wantTimedOut: true,
			wantExit:     -1,
			wantDescribe: "killed by SIGKILL after timeout of 200ms",
			minElapsed:   400 * time.Millisecond,
			maxElapsed:   2 * time.Second,
		},
		{
			name:         "cancel terminates the group",
			script:       `sleep 1000 & echo $! > "$PIDFILE"; sleep 1000`,
			timeout:      time.Minute,
			cancelAfter:  300 * time.Millisecond,
			grace:        2 * time.Second,
			wantSignal:   "SIGTERM",
			wantCancel:   true,
			wantExit:     -1,
			wantDescribe: "cancelled",
			minElapsed:   300 * time.Millisecond,
			maxElapsed:   1500 * time.Millisecond,
		},
		{
			name:         "cancel of a SIGTERM-ignoring command",
			script:       `trap '' TERM; sleep 1000 & echo $! > "$PIDFILE"; wait`,
			cancelAfter:  200 * time.Millisecond,
			grace:        200 * time.Millisecond,
			wantSignal:   "SIGKILL",
			wantCancel:   true,
			wantExit:     -1,
			wantDescribe: "cancelled",
			minElapsed:   400 * time.Millisecond,
			maxElapsed:   2 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pidFile := filepath.Join(t.TempDir(), "pid")
			ctx := t.Context()
			if tt.cancelAfter > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
				time.AfterFunc(tt.cancelAfter, cancel)
			}
			var out logtest.Buffer

			start := time.Now()
			res := RunCommand(ctx, Command{
				Argv:      []string{"sh", "-c", tt.script},
				Env:       []string{"PATH=" + os.Getenv("PATH"), "PIDFILE=" + pidFile},
				Timeout:   tt.timeout,
				KillGrace: tt.grace,
				Output:    &out,
			})
			elapsed := time.Since(start)

			require.NoError(t, res.StartErr)
			require.Equal(t, tt.wantTimedOut, res.TimedOut)
			require.Equal(t, tt.wantCancel, res.Cancelled)
			require.Equal(t, tt.wantSignal, res.Signal)
			require.Equal(t, tt.wantExit, res.ExitCode)
			require.False(t, res.Succeeded())
			require.Equal(t, tt.wantDescribe, res.Describe())
			require.GreaterOrEqual(t, elapsed, tt.minElapsed)
			require.Less(t, elapsed, tt.maxElapsed)
			requireRunnerProcessGone(t, readRunnerPID(t, pidFile))
		})
	}
}

func TestRunCommandPlainSleepCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	time.AfterFunc(200*time.Millisecond, cancel)

	start := time.Now()
	res := RunCommand(ctx, Command{Argv: []string{"sleep", "1000"}, Timeout: time.Minute, KillGrace: 5 * time.Second})

	require.Less(t, time.Since(start), 2*time.Second)
	require.True(t, res.Cancelled)
	require.False(t, res.TimedOut)
	require.Equal(t, "SIGTERM", res.Signal)
	require.Equal(t, -1, res.ExitCode)
	require.Equal(t, "cancelled", res.Describe())
}

func TestRunCommandAlreadyCancelled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	res := RunCommand(ctx, Command{Argv: []string{"touch", marker}})

	require.True(t, res.Cancelled)
	require.ErrorIs(t, res.StartErr, context.Canceled)
	require.Equal(t, -1, res.ExitCode)
	require.False(t, res.Succeeded())
	require.Equal(t, "cancelled", res.Describe())
	require.NoFileExists(t, marker)
}

func TestRunCommandLeftoverProcesses(t *testing.T) {
	t.Parallel()
	const (
		// awaitPIDFile makes a script wait until a child has written its pid.
		awaitPIDFile = `while [ ! -s "$PIDFILE" ]; do sleep 0.01; done`
	)
	tests := []struct {
		name       string
		script     string
		grace      time.Duration
		wantOutput string
		maxElapsed time.Duration
		wantKilled bool
	}{
		{
			name:       "forked child holding output is killed",
			script:     `sleep 1000 & echo $! > "$PIDFILE"; echo done`,
			grace:      3 * time.Second,
			wantOutput: "done\n",
			maxElapsed: time.Second,
			wantKilled: true,
		},
		{
			name:       "daemonized child holding output is killed",
			script:     `(sleep 1000 & echo $! > "$PIDFILE") & ` + awaitPIDFile + `; echo done`,
			grace:      3 * time.Second,
			wantOutput: "done\n",
			maxElapsed: time.Second,
			wantKilled: true,
		},
		{
			// A process in a session of its own is out of the group's
			// reach; the pipe it holds is given up after the grace.
			name:       "child escaping the group does not block",
			script:     `setsid sh -c 'echo $$ > "$PIDFILE"; exec sleep 1000' & ` + awaitPIDFile + `; echo done`,
			grace:      500 * time.Millisecond,
			wantOutput: "done\n",
			maxElapsed: 1500 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pidFile := filepath.Join(t.TempDir(), "pid")
			var out logtest.Buffer

			start := time.Now()
			res := RunCommand(t.Context(), Command{
				Argv:      []string{"sh", "-c", tt.script},
				Env:       []string{"PATH=" + os.Getenv("PATH"), "PIDFILE=" + pidFile},
				KillGrace: tt.grace,
				Output:    &out,
			})
			elapsed := time.Since(start)

			pid := readRunnerPID(t, pidFile)
			if !tt.wantKilled {
				t.Cleanup(func() {
					if !runnerProcessGone(pid) {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				})
			}
			require.True(t, res.Succeeded(), res.Describe())
			require.Equal(t, tt.wantOutput, out.String())
			require.Less(t, elapsed, tt.maxElapsed)
			if tt.wantKilled {
				requireRunnerProcessGone(t, pid)
			} else {
				require.False(t, runnerProcessGone(pid), "escaped process %d should still run", pid)
			}
		})
	}
}

func TestResultDescribe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		res  Result
		want string
	}{
		{name: "success", res: Result{}, want: "exit code 0"},
		{name: "exit code", res: Result{ExitCode: 3}, want: "exit code 3"},
		{name: "signal", res: Result{ExitCode: -1, Signal: "SIGSEGV"}, want: "killed by SIGSEGV"},
		{
			name: "timeout",
			res:  Result{ExitCode: -1, Signal: "SIGKILL", TimedOut: true, Timeout: 2 * time.Second},
			want: "killed by SIGKILL after timeout of 2s",
		},
		{
			name: "timeout handled by the command",
			res:  Result{ExitCode: 143, TimedOut: true, Timeout: time.Minute},
			want: "exit code 143 after timeout of 1m0s",
		},
		{name: "cancelled", res: Result{ExitCode: -1, Signal: "SIGTERM", Cancelled: true}, want: "cancelled"},
		{
			name: "cancelled before start",
			res:  Result{ExitCode: -1, Cancelled: true, StartErr: context.Canceled},
			want: "cancelled",
		},
		{
			name: "start error",
			res:  Result{ExitCode: -1, StartErr: errors.New("no such file")},
			want: "could not start: no such file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.res.Describe())
		})
	}
}

func TestResultSucceeded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		res  Result
		want bool
	}{
		{name: "exit zero", res: Result{}, want: true},
		{name: "exit non-zero", res: Result{ExitCode: 1}},
		{name: "signal", res: Result{ExitCode: -1, Signal: "SIGKILL"}},
		{name: "timed out", res: Result{TimedOut: true}},
		{name: "cancelled", res: Result{Cancelled: true}},
		{name: "not started", res: Result{ExitCode: -1, StartErr: ErrEmptyArgv}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.res.Succeeded())
		})
	}
}
