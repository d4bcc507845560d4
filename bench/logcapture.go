package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

const mib = 1 << 20

// logCapture measures how fast a run's output is captured: a command writing LogBytes to stdout, from its
// attempt's start to its end as recorded in the database, beside the same command writing to /dev/null.
func (b *bench) logCapture(ctx context.Context) error {
	if err := b.env.startWorkers(ctx); err != nil {
		return err
	}
	n := b.sizes.LogBytes
	// The limit is taken in two halves, one before the run and one after, and pooled, so that a change in the
	// machine's load during the run falls on both sides.
	b.logf("log capture: the same command writing %d MiB to /dev/null", n/2/mib)
	limitBefore, err := devNullRate(ctx, b.env.helper, n/2)
	if err != nil {
		return err
	}
	b.logf("log capture: a run writing %d MiB", n/mib)
	runID, _, err := deliver(ctx, b.env.client, b.env.baseURL, datasetLog, b.env.shas.next())
	if err != nil {
		return fmt.Errorf("log capture: %w", err)
	}
	if err := b.env.waitRunsFinished(ctx, []int64{runID}, 30*time.Minute); err != nil {
		return err
	}
	got, err := readCapture(ctx, b.env.observer, runID)
	if err != nil {
		return err
	}
	if got.logBytes != n {
		return fmt.Errorf("log capture: the attempt counted %d bytes of output, want %d", got.logBytes, n)
	}
	b.report.detail("log_capture_run_id", runID)
	b.report.detail("log_capture_kept_bytes", got.kept)
	b.report.detail("log_capture_dropped_bytes", got.dropped)

	b.logf("log capture: the same command writing %d MiB to /dev/null", (n-n/2)/mib)
	limitAfter, err := devNullRate(ctx, b.env.helper, n-n/2)
	if err != nil {
		return err
	}
	b.report.detail("log_limit_halves", map[string]float64{"before": limitBefore.Value, "after": limitAfter.Value})
	limit := pooledRate(limitBefore, limitAfter)
	row := Row{
		Name:      fmt.Sprintf("log capture, %d MiB", n/mib),
		Ours:      Figure{Value: float64(n) / mib / got.seconds, Unit: "MiB/s"},
		LimitName: "same command to /dev/null",
		Limit:     &limit,
		Target:    "≥ 0.5× limit",
	}
	row.Met = ptr(row.Ours.Value >= 0.5*limit.Value)
	b.report.add(row)
	return nil
}

// capture is what the database recorded of a run's output.
type capture struct {
	status            string
	seconds           float64 // from the attempt's start to its end
	logBytes          int64   // bytes the command wrote
	kept, dropped     int64
	started, finished time.Time
}

// readCapture reads the first attempt of a run and how much of its output is stored.
func readCapture(ctx context.Context, pool *pgxpool.Pool, runID int64) (capture, error) {
	var c capture
	err := pool.QueryRow(ctx, `
		SELECT r.status, a.started_at, a.finished_at, a.log_bytes, a.log_dropped,
			(SELECT coalesce(sum(length(l.data)), 0) FROM run_logs l WHERE l.run_id = a.run_id AND l.attempt = a.attempt)
		FROM runs r JOIN run_attempts a ON a.run_id = r.id AND a.attempt = 1
		WHERE r.id = $1`, runID).Scan(&c.status, &c.started, &c.finished, &c.logBytes, &c.dropped, &c.kept)
	if err != nil {
		return c, fmt.Errorf("read attempt of run %d: %w", runID, err)
	}
	if c.status != "succeeded" {
		return c, fmt.Errorf("log capture: run %d %s", runID, c.status)
	}
	c.seconds = c.finished.Sub(c.started).Seconds()
	return c, nil
}

// devNullRate runs benchproc spew n with its output on /dev/null and returns the rate it wrote at.
func devNullRate(ctx context.Context, helper string, n int64) (Figure, error) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return Figure{}, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	cmd := exec.CommandContext(ctx, helper, "spew", strconv.FormatInt(n, 10))
	cmd.Stdout = null
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return Figure{}, fmt.Errorf("run benchproc spew: %w", err)
	}
	return Figure{Value: float64(n) / mib / time.Since(start).Seconds(), Unit: "MiB/s", N: int(n / mib)}, nil
}
