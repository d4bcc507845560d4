package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// runsUsage is the help of "orchestrator runs".
var runsUsage = `orchestrator runs: list, inspect, retry and cancel runs on a running server.

Usage:
  orchestrator runs list [--mapping M] [--dataset D] [--status S] [--trigger T] [--limit N] [--before ID]
  orchestrator runs show ID        the run, its attempts and the end of its log
  orchestrator runs retry ID       queue a new run of a finished run's mapping and revision
  orchestrator runs cancel ID      cancel a waiting run, or stop a running run's command

--status is one of ` + orchestrator.RunStatusNames() + `; --trigger is ` + orchestrator.OneOf(orchestrator.Triggers) + `.
` + clientFlagsUsage

// runRuns runs "orchestrator runs <command>".
func runRuns(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	runs := &commandGroup{name: "runs", usage: runsUsage, subcommands: map[string]subcommand{
		"list": runsList, "show": runsShow, "retry": runsRetry, "cancel": runsCancel,
	}}
	return runs.run(ctx, args, getenv, stdout, stderr)
}

// runListFilters are the flags of "runs list" that become the query string.
var runListFilters = []string{"mapping", "dataset", "status", "trigger", "limit"}

// runsList runs "runs list": GET /api/v1/runs.
func runsList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("runs list", "orchestrator runs list [--mapping M] [--dataset D] [--status S] [--trigger T] [--limit N] [--before ID]", getenv, stderr)
	c.fs.String("mapping", "", "only runs of the mapping `NAME`")
	c.fs.String("dataset", "", "only runs of the `DATASET`, such as acme/support-tickets")
	c.fs.String("status", "", "only runs in `STATUS`: "+orchestrator.RunStatusNames())
	c.fs.String("trigger", "", "only runs started by `TRIGGER`: "+orchestrator.OneOf(orchestrator.Triggers))
	c.fs.Int("limit", 0, "at most `N` runs (server default 50, at most 500)")
	before := c.fs.Int64("before", 0, "only runs older than run `ID` (the next page)")
	client, err := c.noArguments(args)
	if err != nil {
		return err
	}
	q := url.Values{}
	for _, name := range runListFilters {
		if v := c.fs.Lookup(name).Value.String(); v != "" && v != "0" {
			q.Set(name, v)
		}
	}
	if *before > 0 {
		q.Set("before", strconv.FormatInt(*before, 10))
	}
	path := "/api/v1/runs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var list api.RunList
	if printed, err := c.get(ctx, client, path, &list, stdout); printed || err != nil {
		return err
	}
	if len(list.Runs) == 0 {
		fmt.Fprintln(stdout, "no runs")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tMAPPING\tDATASET\tREF\tREVISION\tATTEMPT\tCREATED")
	for _, r := range list.Runs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", r.ID, r.Status, r.Mapping, r.Dataset, r.Ref,
			shortRevision(r.Revision), r.Attempt, r.MaxAttempts, formatTime(r.CreatedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if list.NextBefore != nil {
		next := []string{"orchestrator", "runs", "list"}
		if c.serverSet {
			next = append(next, "--server", orchestrator.ShellQuote(c.server))
		}
		for _, name := range runListFilters {
			if v, ok := q[name]; ok {
				next = append(next, "--"+name, orchestrator.ShellQuote(v[0]))
			}
		}
		next = append(next, "--before", strconv.FormatInt(*list.NextBefore, 10))
		fmt.Fprintf(stdout, "more: %s\n", strings.Join(next, " "))
	}
	return nil
}

// runsShow runs "runs show ID": GET /api/v1/runs/{id}.
func runsShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("runs show", "orchestrator runs show ID", getenv, stderr)
	id, client, err := c.runArgument(args)
	if err != nil {
		return err
	}
	var d api.RunDetail
	if printed, err := c.get(ctx, client, fmt.Sprintf("/api/v1/runs/%d", id), &d, stdout); printed || err != nil {
		return err
	}
	return printRun(stdout, &d)
}

// printRun writes a run as "key: value" lines, its attempts, and the end of its log.
func printRun(w io.Writer, d *api.RunDetail) error {
	facts := newFactWriter(w)
	facts.line("id", strconv.FormatInt(d.ID, 10))
	facts.line("status", string(d.Status))
	facts.line("mapping", d.Mapping)
	facts.line("dataset", d.Dataset)
	facts.line("ref", d.Ref)
	facts.line("revision", d.Revision)
	facts.line("old_revision", d.OldRevision)
	facts.line("trigger", string(d.Trigger))
	facts.line("retry_of", formatID(d.RetryOf))
	facts.line("delivery_id", formatID(d.DeliveryID))
	facts.line("attempt", fmt.Sprintf("%d/%d", d.Attempt, d.MaxAttempts))
	facts.line("exit_code", formatExitCode(d.ExitCode))
	facts.line("signal", d.Signal)
	facts.line("error", d.Error)
	facts.line("created", formatTime(d.CreatedAt))
	facts.line("started", formatTimePtr(d.StartedAt))
	facts.line("finished", formatTimePtr(d.FinishedAt))
	if d.CancelRequestedAt != nil {
		facts.line("cancel_requested", formatTimePtr(d.CancelRequestedAt))
	}
	if err := facts.flush(); err != nil {
		return err
	}
	printExecutions(w, d)
	if len(d.Attempts) == 0 {
		_, err := fmt.Fprintln(w, "\nno attempts yet")
		return err
	}
	fmt.Fprintln(w, "\nattempts:")
	for _, a := range d.Attempts {
		result := string(a.Status)
		if a.ExitCode != nil {
			result += fmt.Sprintf(", exit %d", *a.ExitCode)
		}
		if a.Signal != "" {
			result += ", signal " + a.Signal
		}
		result += fmt.Sprintf(", %d log bytes", a.LogBytes)
		if a.LogDropped > 0 {
			result += fmt.Sprintf(" (%d dropped)", a.LogDropped)
		}
		fmt.Fprintf(w, "  %d: %s, %s to %s\n", a.Number, result, formatTime(a.StartedAt), formatTimePtr(a.FinishedAt))
		fmt.Fprintf(w, "     argv: %s\n", orchestrator.ShellJoin(a.Argv))
		if a.Error != "" {
			fmt.Fprintf(w, "     error: %s\n", a.Error)
		}
	}
	header := fmt.Sprintf("last %d bytes", len(d.Log))
	if d.LogOmittedBytes > 0 {
		header += fmt.Sprintf(", %d earlier bytes not shown", d.LogOmittedBytes)
	}
	fmt.Fprintf(w, "\n--- log (%s) ---\n", header)
	_, err := io.WriteString(w, d.Log)
	if err == nil && d.Log != "" && !strings.HasSuffix(d.Log, "\n") {
		_, err = io.WriteString(w, "\n")
	}
	return err
}

// runsRetry runs "runs retry ID": POST /api/v1/runs/{id}/retry.
func runsRetry(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("runs retry", "orchestrator runs retry ID", getenv, stderr)
	id, client, err := c.runArgument(args)
	if err != nil {
		return err
	}
	var res api.RunResult
	if _, printed, err := c.call(ctx, client, http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/retry", id), nil, &res, stdout); printed || err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "run %d queued (retry of %d)\n", res.Run.ID, id)
	return err
}

// runsCancel runs "runs cancel ID": POST /api/v1/runs/{id}/cancel.
func runsCancel(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("runs cancel", "orchestrator runs cancel ID", getenv, stderr)
	id, client, err := c.runArgument(args)
	if err != nil {
		return err
	}
	var res api.RunResult
	status, printed, err := c.call(ctx, client, http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/cancel", id), nil, &res, stdout)
	if printed || err != nil {
		return err
	}
	if status == http.StatusAccepted {
		_, err = fmt.Fprintf(stdout, "run %d: cancel requested, stopping its command\n", id)
		return err
	}
	_, err = fmt.Fprintf(stdout, "run %d cancelled\n", id)
	return err
}
