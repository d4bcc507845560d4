package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Targets of the orchestrator's share of the trigger latency: the latency less fork/exec of the same command
// measured in the same run.
const (
	triggerShareP50TargetMs   = 2.0  // spread-out deliveries, median
	triggerShareP99TargetMs   = 10.0 // spread-out deliveries, 99th percentile
	triggerBurstShareTargetMs = 20.0 // bursts: p99 above the burst's own fork/exec bound
)

// trigger measures the time from the webhook's 2xx answer to the first instruction of the run's command
// (benchproc stamp records the clock as it starts), for deliveries sent one at a time with pauses between them
// and for bursts sent at once, and, taken in turn with them, the time to fork/exec the same command directly:
// one direct start after each delivery, and after each burst the same burst started directly, as many at once
// as there are workers. The orchestrator's share is the latency less that bound. The workers must run.
func (b *bench) trigger(ctx context.Context) error {
	if err := b.env.startWorkers(ctx); err != nil {
		return err
	}
	s := b.sizes
	b.logf("trigger latency: %d deliveries one at a time, each followed by a direct fork/exec", s.TriggerSpread)
	var spread, direct Latencies
	spreadStamps := map[int64]time.Time{}
	for i := range s.TriggerSpread {
		runID, answered, err := deliver(ctx, b.env.client, b.env.baseURL, datasetTrigger, b.env.shas.next())
		if err != nil {
			return fmt.Errorf("trigger latency: %w", err)
		}
		started, err := b.waitStamp(ctx, strconv.FormatInt(runID, 10))
		if err != nil {
			return err
		}
		spread = append(spread, started.Sub(answered))
		spreadStamps[runID] = started
		if err := b.env.waitRunsFinished(ctx, []int64{runID}, time.Minute); err != nil {
			return err
		}
		d, err := b.directStart(ctx, "direct-"+strconv.Itoa(i))
		if err != nil {
			return err
		}
		direct = append(direct, d)
		// A pause of 5 to 25 ms: deliveries arrive now and then, not back to back.
		if err := sleep(ctx, time.Duration(5+rand.IntN(20))*time.Millisecond); err != nil {
			return err
		}
	}

	b.logf("trigger latency: %d bursts of %d deliveries, each followed by the same burst fork/exec'd directly, %d at once",
		s.TriggerBursts, s.TriggerBurstSize, b.env.workers)
	var bursts, directBursts Latencies
	burstStamps := map[int64]time.Time{}
	var burstShares []float64
	for i := range s.TriggerBursts {
		lat, err := b.triggerBurst(ctx, s.TriggerBurstSize, burstStamps)
		if err != nil {
			return err
		}
		bound, err := b.directBurst(ctx, fmt.Sprintf("burst-%d-", i), s.TriggerBurstSize, b.env.workers)
		if err != nil {
			return err
		}
		bursts, directBursts = append(bursts, lat...), append(directBursts, bound...)
		burstShares = append(burstShares, *share(lat, bound).P99Ms)
	}
	b.report.detail("trigger_burst_p99_share_of_each_burst_ms", burstShares)
	for key, stamps := range map[string]map[int64]time.Time{"trigger_spread_breakdown": spreadStamps, "trigger_burst_breakdown": burstStamps} {
		breakdown, err := b.triggerBreakdown(ctx, stamps)
		if err != nil {
			return err
		}
		b.report.detail(key, breakdown)
	}

	spreadBound, burstBound := direct.figure(), directBursts.figure()
	spreadName := "fork/exec of the same command, one after each delivery"
	burstName := fmt.Sprintf("the same burst fork/exec'd directly, %d at once, after each burst", b.env.workers)
	burst := fmt.Sprintf("bursts of %d", s.TriggerBurstSize)

	b.report.add(Row{Name: "trigger latency, spread out", Ours: spread.figure(), LimitName: spreadName, Limit: &spreadBound})
	spreadShare := Row{Name: "trigger, our share (latency − fork/exec), spread out", Ours: share(spread, direct),
		LimitName: spreadName, Limit: &spreadBound, noRatio: true,
		Target: fmt.Sprintf("p50 ≤ %.0f ms, p99 ≤ %.0f ms", triggerShareP50TargetMs, triggerShareP99TargetMs)}
	spreadShare.Met = ptr(*spreadShare.Ours.P50Ms <= triggerShareP50TargetMs && *spreadShare.Ours.P99Ms <= triggerShareP99TargetMs)
	b.report.add(spreadShare)

	b.report.add(Row{Name: "trigger latency, " + burst, Ours: bursts.figure(), LimitName: burstName, Limit: &burstBound})
	burstShare := Row{Name: "trigger, our share (latency − fork/exec bound), " + burst, Ours: share(bursts, directBursts),
		LimitName: burstName, Limit: &burstBound, noRatio: true,
		Target: fmt.Sprintf("p99 ≤ bound + %.0f ms", triggerBurstShareTargetMs)}
	burstShare.Met = ptr(*burstShare.Ours.P99Ms <= triggerBurstShareTargetMs)
	b.report.add(burstShare)
	return nil
}

// startDirect starts benchproc stamp as the workers start a command, in a process group of its own, with
// RUN_ID set to id.
func (b *bench) startDirect(ctx context.Context, id string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, b.env.helper, "stamp", b.env.stampDir)
	cmd.Env = append(os.Environ(), "RUN_ID="+id)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// directStart fork/execs benchproc stamp and returns the time from the fork to its first instruction.
func (b *bench) directStart(ctx context.Context, id string) (time.Duration, error) {
	cmd := b.startDirect(ctx, id)
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("run benchproc directly: %w", err)
	}
	started, err := b.waitStamp(ctx, id)
	if err != nil {
		return 0, err
	}
	return started.Sub(t0), nil
}

// directBurst runs n commands directly, c at a time as the workers would, and returns the latency of each
// from the burst's start to its first instruction: the queueing a burst meets on this machine without the
// orchestrator.
func (b *bench) directBurst(ctx context.Context, prefix string, n, c int) (Latencies, error) {
	t0 := time.Now()
	err := concurrently(ctx, n, c, func(i int) error {
		if err := b.startDirect(ctx, prefix+strconv.Itoa(i)).Run(); err != nil {
			return fmt.Errorf("run benchproc directly: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	lat := make(Latencies, 0, n)
	for i := range n {
		started, err := b.waitStamp(ctx, prefix+strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		lat = append(lat, started.Sub(t0))
	}
	return lat, sleep(ctx, 100*time.Millisecond)
}

// triggerBurst sends n deliveries at once and returns the latency of each from its answer to its command's start.
// It records when each command started in stamps.
func (b *bench) triggerBurst(ctx context.Context, n int, stamps map[int64]time.Time) (Latencies, error) {
	type sent struct {
		runID    int64
		answered time.Time
		err      error
	}
	results := make([]sent, n)
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			r := &results[i]
			r.runID, r.answered, r.err = deliver(ctx, b.env.client, b.env.baseURL, datasetTrigger, b.env.shas.next())
		}()
	}
	close(release)
	wg.Wait()
	var lat Latencies
	ids := make([]int64, 0, n)
	for _, r := range results {
		if r.err != nil {
			return nil, fmt.Errorf("trigger burst: %w", r.err)
		}
		started, err := b.waitStamp(ctx, strconv.FormatInt(r.runID, 10))
		if err != nil {
			return nil, err
		}
		lat = append(lat, started.Sub(r.answered))
		ids = append(ids, r.runID)
		stamps[r.runID] = started
	}
	// Let the queue drain before the next burst.
	if err := b.env.waitRunsFinished(ctx, ids, time.Minute); err != nil {
		return nil, err
	}
	return lat, sleep(ctx, 100*time.Millisecond)
}

// triggerBreakdown splits the way from a delivery's transaction to its command's start, by the times the
// database recorded: the job's insert (in the delivery's transaction), River's fetch of it (attempted_at, read
// through River's API), the attempt's start (after the worker read the run and marked it running), and the
// command's first instruction.
// It returns the median and 99th percentile of each segment, in ms.
func (b *bench) triggerBreakdown(ctx context.Context, stamps map[int64]time.Time) (map[string]any, error) {
	ids := make([]int64, 0, len(stamps))
	for id := range stamps {
		ids = append(ids, id)
	}
	rows, err := b.env.observer.Query(ctx, `
		SELECT r.id, r.job_id, a.started_at
		FROM runs r JOIN run_attempts a ON a.run_id = r.id AND a.attempt = 1
		WHERE r.id = ANY($1) AND r.job_id IS NOT NULL`, ids)
	if err != nil {
		return nil, fmt.Errorf("read run times: %w", err)
	}
	type runTimes struct {
		runID   int64
		started time.Time
	}
	byJob := map[int64]runTimes{}
	var jobIDs []int64
	for rows.Next() {
		var runID, jobID int64
		var started time.Time
		if err := rows.Scan(&runID, &jobID, &started); err != nil {
			return nil, fmt.Errorf("read run times: %w", err)
		}
		byJob[jobID] = runTimes{runID, started}
		jobIDs = append(jobIDs, jobID)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read run times: %w", err)
	}
	jobs, err := jobsByID(ctx, b.env.view, jobIDs)
	if err != nil {
		return nil, fmt.Errorf("read run times: %w", err)
	}
	var queued, prepared, exec Latencies
	for jobID, r := range byJob {
		j, ok := jobs[jobID]
		if !ok || j.AttemptedAt == nil {
			continue
		}
		queued = append(queued, j.AttemptedAt.Sub(j.CreatedAt))
		prepared = append(prepared, r.started.Sub(*j.AttemptedAt))
		exec = append(exec, stamps[r.runID].Sub(r.started))
	}
	segment := func(l Latencies) map[string]float64 {
		return map[string]float64{"p50_ms": ms(l.Percentile(50)), "p99_ms": ms(l.Percentile(99))}
	}
	return map[string]any{
		"job_insert_to_fetch":      segment(queued),
		"fetch_to_attempt_start":   segment(prepared),
		"attempt_start_to_command": segment(exec),
		"runs":                     len(queued),
	}, nil
}

// waitStamp waits for benchproc stamp to have written the file id, and returns the time it recorded.
func (b *bench) waitStamp(ctx context.Context, id string) (time.Time, error) {
	path := filepath.Join(b.env.stampDir, id)
	deadline := time.Now().Add(time.Minute)
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			ns, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("read stamp %s: %w", path, err)
			}
			return time.Unix(0, ns), nil
		}
		if !os.IsNotExist(err) {
			return time.Time{}, fmt.Errorf("read stamp: %w", err)
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the command of run %s did not start within a minute", id)
		}
		if err := sleep(ctx, time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// sleep waits for d, or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
