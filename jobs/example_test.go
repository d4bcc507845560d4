package jobs_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/jobs"
)

func ExampleRunCommand() {
	var out strings.Builder
	res := jobs.RunCommand(context.Background(), jobs.Command{
		// Argv is never run through a shell: "$DATASET_REVISION" reaches echo as it is written.
		Argv:    []string{"echo", "training on", "$DATASET_REVISION"},
		Timeout: time.Minute,
		Output:  &out,
	})
	fmt.Print(out.String())
	fmt.Println(res.Succeeded(), res.Describe())

	res = jobs.RunCommand(context.Background(), jobs.Command{Argv: []string{"sh", "-c", "exit 3"}})
	fmt.Println(res.Succeeded(), res.Describe())

	res = jobs.RunCommand(context.Background(), jobs.Command{Argv: []string{"no-such-trainer"}})
	fmt.Println(res.Succeeded(), res.Describe())
	// Output:
	// training on $DATASET_REVISION
	// true exit code 0
	// false exit code 3
	// false could not start: look up program: exec: "no-such-trainer": executable file not found in $PATH
}

// A command that outlives its timeout is stopped with its whole process group: SIGTERM, then SIGKILL after
// the grace if it is still there.
func ExampleRunCommand_timeout() {
	res := jobs.RunCommand(context.Background(), jobs.Command{
		Argv:      []string{"sh", "-c", "sleep 60 & sleep 60"},
		Timeout:   100 * time.Millisecond,
		KillGrace: time.Second,
	})
	fmt.Println(res.TimedOut, res.Describe())
	// Output:
	// true killed by SIGTERM after timeout of 100ms
}
