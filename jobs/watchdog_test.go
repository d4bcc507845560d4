package jobs

import (
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/logtest"
)

// TestRunWatchdog watches real process groups: a deadline that passes without a renewal stops the group
// (SIGTERM, then SIGKILL after the grace), a renewal pushes it back, "stop" ends the watch and leaves the group
// alone, the deadline holds when the worker goes away, and without a first deadline nothing fires.
func TestRunWatchdog(t *testing.T) {
	t.Parallel()
	const grace = 300 * time.Millisecond
	tests := []struct {
		name       string
		ignoreTerm bool
		// feed writes to the watchdog, then returns: a line per renewal, "stop", or closing w.
		feed     func(w io.WriteCloser)
		want     int
		killed   bool
		earliest time.Duration // the group is not stopped before this, from the last line
		latest   time.Duration // and is gone by this
	}{
		{name: "SilenceStopsTheGroup", feed: func(w io.WriteCloser) {
			fmt.Fprintln(w, 400)
			time.Sleep(300 * time.Millisecond)
			fmt.Fprintln(w, 400) // a renewal: the first deadline passes unnoticed
		}, want: WatchdogFired, killed: true, earliest: 400 * time.Millisecond, latest: 400*time.Millisecond + time.Second},
		{name: "SIGKILLAfterTheGrace", ignoreTerm: true, feed: func(w io.WriteCloser) { fmt.Fprintln(w, 200) },
			want: WatchdogFired, killed: true, earliest: 200*time.Millisecond + grace, latest: 200*time.Millisecond + grace + time.Second},
		{name: "StopLeavesTheGroup", feed: func(w io.WriteCloser) {
			fmt.Fprintln(w, 300)
			fmt.Fprintln(w, "stop")
		}, want: WatchdogStopped},
		{name: "WorkerGoneStillFences", feed: func(w io.WriteCloser) {
			fmt.Fprintln(w, 400)
			_ = w.Close()
		}, want: WatchdogFired, killed: true, earliest: 400 * time.Millisecond, latest: 400*time.Millisecond + time.Second},
		{name: "NothingFiresBeforeTheFirstDeadline", feed: func(w io.WriteCloser) {
			time.Sleep(500 * time.Millisecond)
			fmt.Fprintln(w, "stop")
		}, want: WatchdogStopped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			script := `sleep 600 & wait`
			if tt.ignoreTerm {
				script = `trap '' TERM; while :; do sleep 0.05; done`
			}
			cmd := exec.Command("sh", "-c", script)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			require.NoError(t, cmd.Start())
			pgid := cmd.Process.Pid
			exited := make(chan time.Time, 1)
			go func() {
				_ = awaitExit(pgid) // left unreaped, so the group's id stays ours
				exited <- time.Now()
			}()
			t.Cleanup(func() {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				_ = cmd.Wait()
			})

			r, w := io.Pipe()
			t.Cleanup(func() { _ = w.Close() }) // the watchdog's reader ends with its input
			log := &logtest.Buffer{}
			code := make(chan int, 1)
			go func() { code <- RunWatchdog(r, pgid, grace, log) }()
			tt.feed(w)
			last := time.Now()

			if !tt.killed {
				require.Equal(t, tt.want, <-code, "log: %s", log)
				select {
				case <-exited:
					t.Fatal("the watchdog stopped a group it should have left alone")
				case <-time.After(200 * time.Millisecond):
				}
				return
			}
			select {
			case at := <-exited:
				after := at.Sub(last)
				require.GreaterOrEqual(t, after, tt.earliest, "stopped too soon")
				require.LessOrEqual(t, after, tt.latest, "stopped too late")
			case <-time.After(tt.latest + 5*time.Second):
				t.Fatalf("the group still runs; log: %s", log)
			}
			_ = w.Close() // the worker sees the exit and ends the watch
			require.Equal(t, tt.want, <-code, "log: %s", log)
			require.NoError(t, syscall.Kill(-pgid, 0), "the leader is a zombie until it is reaped: the group's id is still ours")
		})
	}
}
