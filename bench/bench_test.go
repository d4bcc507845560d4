package bench

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var (
	flagMode    = flag.String("bench.mode", "", "short or full (default: $BENCH_MODE, else short)")
	flagOut     = flag.String("bench.out", "", "where to write the JSON report (default: $BENCH_OUT, else orchestrator-bench-<mode>.json in the temporary directory)")
	flagPhases  = flag.String("bench.phases", "", "comma-separated phases to run (default: $BENCH_PHASES, else all)")
	flagWorkers = flag.Int("bench.workers", 0, "commands run at once (default: $BENCH_WORKERS, else the serve default)")
	flagProfile = flag.String("bench.profiles", "", "directory for a CPU profile per phase (default: $BENCH_PROFILE_DIR)")
)

// TestBench runs the benchmark, prints its table and writes its JSON report. It runs the short mode unless
// BENCH_MODE=full, and a smaller one still in race-enabled builds. It checks only that every figure was
// produced and is positive: the figures depend on the machine, and the targets are reported, not asserted.
func TestBench(t *testing.T) {
	mode := Mode(cmp.Or(*flagMode, os.Getenv("BENCH_MODE"), string(ModeShort)))
	if RaceEnabled && mode == ModeShort {
		mode = ModeSmoke
		t.Log("race detector on: running the smoke sizes; the figures mean nothing")
	}
	phases, err := ParsePhases(cmp.Or(*flagPhases, os.Getenv("BENCH_PHASES")))
	if err != nil {
		t.Fatal(err)
	}
	workers := *flagWorkers
	if v := os.Getenv("BENCH_WORKERS"); workers == 0 && v != "" {
		if workers, err = strconv.Atoi(v); err != nil {
			t.Fatalf("BENCH_WORKERS: %v", err)
		}
	}
	out := cmp.Or(*flagOut, os.Getenv("BENCH_OUT"), filepath.Join(os.TempDir(), "orchestrator-bench-"+string(mode)+".json"))

	report, err := Run(t.Context(), Options{
		Mode: mode, Phases: phases, Workers: workers,
		ProfileDir: cmp.Or(*flagProfile, os.Getenv("BENCH_PROFILE_DIR")),
		Logf:       t.Logf, TB: t,
	})
	if err != nil {
		t.Fatal(err)
	}
	table := report.Table()
	t.Log("\n" + table)
	fmt.Print(table)
	if err := report.WriteJSON(out); err != nil {
		t.Fatal(err)
	}
	// The same table in Markdown beside it, as docs/BENCHMARKS.md shows it.
	if err := os.WriteFile(strings.TrimSuffix(out, ".json")+".md", []byte(report.Markdown()), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("report written to %s\n", out)

	if len(report.Rows) == 0 {
		t.Fatal("no figure was produced")
	}
	for _, row := range report.Rows {
		// A share of a latency (ours less its bound) may be at or below zero; every other figure is positive.
		if !(row.Ours.Value > 0) && !row.noRatio {
			t.Errorf("%s: figure %v is not positive", row.Name, row.Ours.Value)
		}
		if row.Limit != nil && !(row.Limit.Value > 0) {
			t.Errorf("%s: limit %v is not positive", row.Name, row.Limit.Value)
		}
	}
	sizes, err := SizesFor(mode)
	if err != nil {
		t.Fatal(err)
	}
	// Ingest: one row per level with the workers running, and at the top level web-only and with duplicates.
	want := map[string]int{PhaseIngest: len(sizes.IngestLevels) + 2, PhaseRuns: 1, PhaseTrigger: 4, PhaseLog: 1,
		PhaseStatus: 11, PhaseHistory: 1, PhaseFootprint: 6,
		PhaseFiles: 3*len(sizes.FilesCounts) + 2}
	total := 0
	for p, n := range want {
		if phases[p] {
			total += n
		}
	}
	if phases[PhaseStatus] && !phases[PhaseLog] {
		total-- // the page of the log-capture run
	}
	if len(report.Rows) != total {
		t.Errorf("%d figures produced, want %d", len(report.Rows), total)
	}
}
