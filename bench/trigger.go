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
	"time"
)

// trigger measures the time from the webhook's 2xx answer to the first instruction of the run's command
// (benchproc stamp records the clock as it starts), for deliveries sent one at a time with pauses between them
// and for bursts sent at once, beside the time to fork/exec the same command directly. The workers must run.
func (b *bench) trigger(ctx context.Context) error {
	if err := b.env.startWorkers(ctx); err != nil {
		return err
	}
	s := b.sizes
	b.logf("trigger latency: %d deliveries one at a time", s.TriggerSpread)
	var spread Latencies
	spreadStamps := map[int64]time.Time{}
	for range s.TriggerSpread {
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
		// A pause of 5 to 25 ms: deliveries arrive now and then, not back to back.
		if err := sleep(ctx, time.Duration(5+rand.IntN(20))*time.Millisecond); err != nil {
			return err
		}
	}

	b.logf("trigger latency: %d bursts of %d deliveries", s.TriggerBursts, s.TriggerBurstSize)
	var bursts Latencies
	burstStamps := map[int64]time.Time{}
	for range s.TriggerBursts {
		lat, err := b.triggerBurst(ctx, s.TriggerBurstSize, burstStamps)
		if err != nil {
			return err
		}
		bursts = append(bursts, lat...)
	}
	for key, stamps := range map[string]map[int64]time.Time{"trigger_spread_breakdown": spreadStamps, "trigger_burst_breakdown": burstStamps} {
		breakdown, err := b.triggerBreakdown(ctx, stamps)
		if err != nil {
			return err
		}
		b.report.detail(key, breakdown)
	}

	b.logf("trigger latency: %d direct fork/execs of the same command", s.TriggerSpread)
	var direct Latencies
	for i := range s.TriggerSpread {
		id := "direct-" + strconv.Itoa(i)
		cmd := exec.CommandContext(ctx, b.env.helper, "stamp", b.env.stampDir)
		cmd.Env = append(os.Environ(), "RUN_ID="+id)
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("run benchproc directly: %w", err)
		}
		started, err := b.waitStamp(ctx, id)
		if err != nil {
			return err
		}
		direct = append(direct, started.Sub(t0))
	}

	b.logf("trigger latency: %d bursts of %d direct fork/execs, %d at once", s.TriggerBursts, s.TriggerBurstSize, b.env.workers)
	var directBursts Latencies
	for i := range s.TriggerBursts {
		lat, err := b.directBurst(ctx, fmt.Sprintf("burst-%d-", i), s.TriggerBurstSize, b.env.workers)
		if err != nil {
			return err
		}
		directBursts = append(directBursts, lat...)
	}

	spreadLimit, burstLimit := direct.figure(), directBursts.figure()
	for _, r := range []struct {
		name      string
		lat       Latencies
		limitName string
		limit     *Figure
	}{
		{"trigger latency, spread out", spread, "fork/exec of the same command", &spreadLimit},
		{fmt.Sprintf("trigger latency, bursts of %d", s.TriggerBurstSize), bursts,
			fmt.Sprintf("the same burst fork/exec'd directly, %d at once", b.env.workers), &burstLimit},
	} {
		row := Row{Name: r.name, Ours: r.lat.figure(), LimitName: r.limitName, Limit: r.limit,
			Target: "p50 < 5 ms, p99 < 25 ms"}
		row.Met = ptr(*row.Ours.P50Ms < 5 && *row.Ours.P99Ms < 25)
		b.report.add(row)
	}
	return nil
}

// directBurst runs n commands directly, c at a time as the workers would, and returns the latency of each
// from the burst's start to its first instruction: the queueing a burst meets on this machine without the
// orchestrator.
func (b *bench) directBurst(ctx context.Context, prefix string, n, c int) (Latencies, error) {
	t0 := time.Now()
	err := concurrently(ctx, n, c, func(i int) error {
		cmd := exec.CommandContext(ctx, b.env.helper, "stamp", b.env.stampDir)
		cmd.Env = append(os.Environ(), "RUN_ID="+prefix+strconv.Itoa(i))
		if err := cmd.Run(); err != nil {
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
