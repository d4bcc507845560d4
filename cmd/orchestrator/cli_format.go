package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/retrainhq/orchestrator/web/api"
)

// factWriter writes "key: value" lines with the values aligned, and "-" for an empty value.
type factWriter struct {
	tw *tabwriter.Writer
}

// newFactWriter returns a factWriter writing to w; call flush when done.
func newFactWriter(w io.Writer) *factWriter {
	return &factWriter{tw: tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)}
}

// line writes one fact.
func (f *factWriter) line(key, value string) {
	if value == "" {
		value = "-"
	}
	fmt.Fprintf(f.tw, "%s:\t%s\n", key, value)
}

// flush writes the lines out, aligned.
func (f *factWriter) flush() error { return f.tw.Flush() }

// shortRevision returns the first 12 characters of a commit, enough to recognise it in a table.
func shortRevision(rev string) string {
	if len(rev) > revisionShortLen {
		return rev[:revisionShortLen]
	}
	return rev
}

// formatTime writes t in RFC 3339 in UTC, and the zero time as "".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// formatTimePtr is formatTime for an optional time.
func formatTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return formatTime(*t)
}

// formatID writes an optional ID, "" when absent.
func formatID(id *int64) string {
	if id == nil {
		return ""
	}
	return strconv.FormatInt(*id, 10)
}

// formatExitCode writes an optional exit code, "" when absent.
func formatExitCode(code *int) string {
	if code == nil {
		return ""
	}
	return strconv.Itoa(*code)
}

// yesNo writes a boolean for people.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// shortDuration drops the zero minutes and seconds of a Go duration: "2h0m0s" becomes "2h", "1h30m0s" "1h30m".
func shortDuration(s string) string {
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// executorFacts writes a mapping's executor and, for hf-jobs, its settings (secrets by name) and cost: the
// answer of show carries the cost, the other answers do not.
func executorFacts(facts *factWriter, m *api.Mapping, cost string) {
	facts.line("executor", string(m.Executor))
	if h := m.HFJobs; h != nil {
		image := h.Image
		if h.Space != "" {
			image = "space " + h.Space
		}
		labels := make([]string, 0, len(h.Labels))
		for k, v := range h.Labels {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		facts.line("hf_jobs", fmt.Sprintf("%s, %s, %s", h.Namespace, image, h.Flavor))
		facts.line("hf_jobs.secrets", strings.Join(h.Secrets, ", "))
		facts.line("hf_jobs.mount_dataset", h.MountDataset)
		facts.line("hf_jobs.labels", strings.Join(labels, ", "))
	}
	if cost != "" && (m.HFJobs != nil || cost != api.Dollars(0)) {
		facts.line("cost", cost)
	}
}

// printExecutions writes the Jobs of a run's attempts, one line each, and whether the current one waits for
// its hardware.
func printExecutions(w io.Writer, d *api.RunDetail) {
	if d.WaitingForHardware {
		fmt.Fprintln(w, "\nwaiting for hardware")
	}
	if len(d.Executions) == 0 {
		return
	}
	fmt.Fprintln(w, "\njobs:")
	for _, e := range d.Executions {
		fmt.Fprintf(w, "  %d: %s %s/%s %s, waited %s, ran %s, %s\n", e.Attempt, e.Stage, e.Namespace, e.ExternalID,
			e.Flavor, time.Duration(e.WaitingSeconds)*time.Second, time.Duration(e.RunningSeconds)*time.Second, e.Cost)
		if e.URL != "" {
			fmt.Fprintf(w, "     url: %s\n", e.URL)
		}
		if e.Message != "" {
			fmt.Fprintf(w, "     message: %s\n", e.Message)
		}
	}
}
