package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Figure is one measured quantity: a value in a unit and, for latencies, its median and 99th percentile (or,
// for a few repetitions, its 90th).
type Figure struct {
	Value float64  `json:"value"`
	Unit  string   `json:"unit"`
	P50Ms *float64 `json:"p50_ms,omitempty"`
	P90Ms *float64 `json:"p90_ms,omitempty"`
	P99Ms *float64 `json:"p99_ms,omitempty"`
	// N is the number of samples behind the percentiles, or of operations behind a rate.
	N int `json:"n,omitempty"`
}

// Row is one line of the table: a figure of the orchestrator, the limit measured beside it, and the target.
type Row struct {
	Name string `json:"name"`
	Ours Figure `json:"ours"`
	// LimitName says what the limit is, e.g. "fork/exec of true, 4 at once".
	LimitName string  `json:"limit_name,omitempty"`
	Limit     *Figure `json:"limit,omitempty"`
	// Ratio is Ours.Value / Limit.Value.
	Ratio  *float64 `json:"ratio,omitempty"`
	Target string   `json:"target,omitempty"`
	// Met is nil when the row has no target.
	Met  *bool  `json:"met,omitempty"`
	Note string `json:"note,omitempty"`
	// noRatio leaves Ratio unset: the row's figure is a difference from its limit, not a multiple of it.
	noRatio bool
}

// Plan is a query plan the status pages ran with, as PostgreSQL logged it.
type Plan struct {
	Name string `json:"name"`
	Plan string `json:"plan"`
}

// Report is the outcome of a benchmark run.
type Report struct {
	Mode      Mode           `json:"mode"`
	Commit    string         `json:"commit,omitempty"`
	Dirty     bool           `json:"uncommitted_changes"`
	GoVersion string         `json:"go_version"`
	Platform  string         `json:"platform"`
	CPUs      int            `json:"cpus"`
	Postgres  string         `json:"postgres,omitempty"`
	Workers   int            `json:"max_workers"`
	Started   time.Time      `json:"started"`
	Seconds   float64        `json:"seconds"`
	Rows      []Row          `json:"rows"`
	Details   map[string]any `json:"details,omitempty"`
	Plans     []Plan         `json:"plans,omitempty"`
}

// add appends a row, computing its ratio unless the row has one already or, as a share of a latency (ours less
// the limit), has none that means anything.
func (r *Report) add(row Row) {
	if row.Ratio == nil && !row.noRatio && row.Limit != nil && row.Limit.Value > 0 {
		ratio := row.Ours.Value / row.Limit.Value
		row.Ratio = &ratio
	}
	r.Rows = append(r.Rows, row)
}

// detail records a supplementary value under key.
func (r *Report) detail(key string, v any) {
	if r.Details == nil {
		r.Details = map[string]any{}
	}
	r.Details[key] = v
}

// Row returns the row named name, or nil.
func (r *Report) Row(name string) *Row {
	i := slices.IndexFunc(r.Rows, func(row Row) bool { return row.Name == name })
	if i < 0 {
		return nil
	}
	return &r.Rows[i]
}

// WriteJSON writes the report to path, indented.
func (r *Report) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// Table renders the rows as an aligned text table.
func (r *Report) Table() string {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "orchestrator benchmark, %s mode, %s, %d CPUs, %s, max workers %d",
		r.Mode, r.Platform, r.CPUs, r.GoVersion, r.Workers)
	if r.Commit != "" {
		fmt.Fprintf(&buf, ", commit %s", r.Commit)
		if r.Dirty {
			buf.WriteString(" plus uncommitted work")
		}
	}
	buf.WriteString("\n")
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tours\tlimit\tratio\ttarget\tmet")
	for _, row := range r.Rows {
		limit := "-"
		if row.Limit != nil {
			limit = row.Limit.String() + " (" + row.LimitName + ")"
		}
		ratio := "-"
		if row.Ratio != nil {
			ratio = formatRatio(*row.Ratio)
		}
		target := row.Target
		if target == "" {
			target = "-"
		}
		met := "-"
		if row.Met != nil {
			met = map[bool]string{true: "met", false: "MISSED"}[*row.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", row.Name, row.Ours.String(), limit, ratio, target, met)
	}
	_ = tw.Flush()
	met, missed := r.targets()
	fmt.Fprintf(&buf, "targets: %d met, %d missed", len(met), len(missed))
	if len(missed) > 0 {
		fmt.Fprintf(&buf, " (%s)", strings.Join(missed, "; "))
	}
	buf.WriteString("\n")
	return buf.String()
}

// targets returns the names of the rows whose target was met and of those whose target was missed.
func (r *Report) targets() (met, missed []string) {
	for _, row := range r.Rows {
		switch {
		case row.Met == nil:
		case *row.Met:
			met = append(met, row.Name)
		default:
			missed = append(missed, row.Name)
		}
	}
	return met, missed
}

// Markdown renders the rows as a Markdown table.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString("| figure | ours | limit measured beside it | ratio | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		limit, ratio, target, met := "—", "—", "—", "—"
		if row.Limit != nil {
			limit = row.Limit.String() + " (" + row.LimitName + ")"
		}
		if row.Ratio != nil {
			ratio = formatRatio(*row.Ratio)
		}
		if row.Target != "" {
			target = row.Target
		}
		if row.Met != nil {
			met = map[bool]string{true: "met", false: "**missed**"}[*row.Met]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", row.Name, row.Ours.String(), limit, ratio, target, met)
	}
	return b.String()
}

// String renders the figure, e.g. "512 deliveries/s, p50 1.9 ms, p99 4.2 ms".
func (f Figure) String() string {
	s := formatValue(f.Value) + " " + f.Unit
	if f.Unit == "ms" {
		s = formatMs(f.Value)
	}
	if f.P50Ms != nil && f.Unit != "ms" {
		s += ", p50 " + formatMs(*f.P50Ms)
	}
	if f.Unit == "ms" && (f.P90Ms != nil || f.P99Ms != nil) {
		s = "p50 " + s
	}
	if f.P90Ms != nil {
		s += ", p90 " + formatMs(*f.P90Ms)
	}
	if f.P99Ms != nil {
		s += ", p99 " + formatMs(*f.P99Ms)
	}
	return s
}

func formatValue(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func formatMs(ms float64) string {
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0f ms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f ms", ms)
	}
}

func formatRatio(r float64) string {
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

// Latencies is a sample of durations.
type Latencies []time.Duration

// Percentile returns the p-th percentile (0 < p ≤ 100) by the nearest-rank method, or 0 for an empty sample.
func (l Latencies) Percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// figure returns a latency figure: the median as its value, in ms, with p50 and p99.
func (l Latencies) figure() Figure {
	p50, p99 := ms(l.Percentile(50)), ms(l.Percentile(99))
	return Figure{Value: p50, Unit: "ms", P50Ms: &p50, P99Ms: &p99, N: len(l)}
}

// figure90 returns the latency figure of a few repetitions: the median as its value, in ms, with p50 and p90.
func (l Latencies) figure90() Figure {
	p50, p90 := ms(l.Percentile(50)), ms(l.Percentile(90))
	return Figure{Value: p50, Unit: "ms", P50Ms: &p50, P90Ms: &p90, N: len(l)}
}

// rate returns a throughput figure of n operations in d, with the percentiles of l.
func rate(n int, d time.Duration, unit string, l Latencies) Figure {
	f := Figure{Value: float64(n) / d.Seconds(), Unit: unit, N: n}
	if len(l) > 0 {
		p50, p99 := ms(l.Percentile(50)), ms(l.Percentile(99))
		f.P50Ms, f.P99Ms = &p50, &p99
	}
	return f
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ptr[T any](v T) *T { return &v }
