// Command orchestrator runs training commands when datasets on the Hugging Face Hub get new commits.
//
// Usage:
//
//	orchestrator serve [flags]    run the webhook server, the status pages and the workers
//	orchestrator migrate [flags]  apply the database schema and exit
//	orchestrator healthcheck      exit 0 when the local server is ready (for container health checks)
//	orchestrator runs ...         list, show, retry and cancel runs on a running server
//	orchestrator mappings ...     list, show, add and disable mappings on a running server
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/retrainhq/orchestrator/jobs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `orchestrator runs training commands when datasets on the Hugging Face Hub get new commits.

Usage:
  orchestrator serve [flags]     run the webhook server, status pages and workers
  orchestrator migrate [flags]   apply the database schema and exit
  orchestrator healthcheck       exit 0 when the server on ORCHESTRATOR_ADDR is ready
  orchestrator runs <cmd>        list, show, retry and cancel runs on a running server
  orchestrator mappings <cmd>    list, show, add and disable mappings on a running server
  orchestrator help              show this text

Run "orchestrator <command> -h" for the flags of a command. runs and mappings talk to the server at
ORCHESTRATOR_URL (default http://127.0.0.1:8080) with the admin token in ORCHESTRATOR_ADMIN_TOKEN.
`

// run executes one subcommand and returns the process exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = runServe(ctx, args[1:], getenv, stderr)
	case "migrate":
		err = runMigrate(ctx, args[1:], getenv, stderr)
	case "healthcheck":
		err = runHealthcheck(ctx, args[1:], getenv, stderr)
	case "runs":
		err = runRuns(ctx, args[1:], getenv, stdout, stderr)
	case "mappings":
		err = runMappings(ctx, args[1:], getenv, stdout, stderr)
	case jobs.WatchdogCommand: // hidden: started by a worker for each of its commands
		return jobs.RunWatchdogMain(args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "orchestrator: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if err == errUsage {
			return 2
		}
		fmt.Fprintf(stderr, "orchestrator: %v\n", err)
		return 1
	}
	return 0
}
