package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/retrainhq/orchestrator/jobs"
)

// Options configures a benchmark run.
type Options struct {
	// Mode selects the sizes; ModeShort when empty.
	Mode Mode
	// Phases selects what to measure; every phase when nil.
	Phases map[string]bool
	// Workers is the number of commands run at once, the serve command's --max-workers;
	// jobs.MaxWorkersDefault when 0.
	Workers int
	// ProfileDir, when set, receives a CPU profile of each phase, named after it (ingest.pprof, ...).
	ProfileDir string
	// Logf receives progress lines; nothing is logged when nil.
	Logf func(format string, args ...any)
	// TB is the test the benchmark runs in, which the files phase needs for its stand-in Hub (its git
	// repositories live in the test's temporary directories).
	TB testing.TB
}

// bench is one benchmark run in progress.
type bench struct {
	sizes  Sizes
	env    *env
	report *Report
	logf   func(format string, args ...any)
	tb     testing.TB
}

// Run measures every selected figure and returns the report. It starts and stops everything it needs.
func Run(ctx context.Context, opts Options) (_ *Report, err error) {
	if opts.Mode == "" {
		opts.Mode = ModeShort
	}
	if opts.Phases == nil {
		opts.Phases, _ = ParsePhases("")
	}
	if opts.Workers <= 0 {
		opts.Workers = jobs.MaxWorkersDefault
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	sizes, err := SizesFor(opts.Mode)
	if err != nil {
		return nil, err
	}
	report := &Report{
		Mode: opts.Mode, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		CPUs: runtime.NumCPU(), Workers: opts.Workers, Started: time.Now().UTC().Truncate(time.Second),
	}
	report.Commit, report.Dirty = gitState(ctx)
	report.detail("load_average_at_start", loadAverage())

	e, err := newEnv(ctx, sizes, opts.Workers, opts.Logf)
	if err != nil {
		return nil, err
	}
	defer func() {
		if closeErr := e.close(context.WithoutCancel(ctx)); closeErr != nil {
			err = errors.Join(err, closeErr)
		}
	}()
	if err := e.startStack(ctx); err != nil {
		return nil, err
	}
	var version string
	if err := e.observer.QueryRow(ctx, `SHOW server_version`).Scan(&version); err == nil {
		report.Postgres = "PostgreSQL " + strings.Fields(version)[0]
	}

	b := &bench{sizes: sizes, env: e, report: report, logf: opts.Logf, tb: opts.TB}
	// The order matters: the backlog needs the workers stopped, so it comes first, the other phases start them;
	// the status pages show the run of the log capture; the history phase reuses the status pages' rows; the
	// files phase runs a service of its own beside the stack; the footprint runs once the in-process stack is
	// stopped.
	phases := []struct {
		name string
		run  func(context.Context) error
	}{
		{PhaseRuns, b.runThroughput},
		{PhaseIngest, b.ingest},
		{PhaseTrigger, b.trigger},
		{PhaseLog, b.logCapture},
		{PhaseStatus, b.statusPages},
		{PhaseHistory, b.history},
		{PhaseFiles, b.files},
		{PhaseFootprint, func(ctx context.Context) error {
			if err := e.stopStack(ctx); err != nil {
				return err
			}
			return b.footprint(ctx)
		}},
	}
	for _, p := range phases {
		if !opts.Phases[p.name] {
			continue
		}
		stopProfile, err := startProfile(opts.ProfileDir, p.name, opts.Logf)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		err = p.run(ctx)
		stopProfile()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		report.detail("phase_seconds_"+p.name, time.Since(start).Seconds())
	}
	report.Seconds = time.Since(report.Started).Seconds()
	report.detail("load_average_at_end", loadAverage())
	return report, nil
}

// startProfile starts a CPU profile of one phase into dir, when dir is set. When the process is profiled
// already (go test -cpuprofile), it says so and profiles nothing.
func startProfile(dir, phase string, logf func(string, ...any)) (func(), error) {
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create profile directory: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, phase+".pprof"))
	if err != nil {
		return nil, fmt.Errorf("create profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		logf("no profile of %s: %v", phase, err)
		return func() {}, nil
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// loadAverage returns the 1, 5 and 15 minute load averages of the machine, which tell whether something else
// competed for it; empty when they cannot be read.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

// gitState returns the short commit of the working tree and whether it has uncommitted changes; empty when
// git cannot tell.
func gitState(ctx context.Context) (string, bool) {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "", false
	}
	status, err := exec.CommandContext(ctx, "git", "status", "--porcelain").Output()
	return strings.TrimSpace(string(out)), err == nil && len(strings.TrimSpace(string(status))) > 0
}
