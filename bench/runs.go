package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivertype"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// runThroughput queues a backlog of runs of `true` while the workers are stopped, starts them, and measures
// runs completed per second, beside fork/exec of `true` from Go at the same concurrency.
func (b *bench) runThroughput(ctx context.Context) error {
	n := b.sizes.Backlog
	b.logf("run throughput: queueing %d runs of true", n)
	if err := b.queueBacklog(ctx, n); err != nil {
		return err
	}
	// The limit is taken in two halves, one before the backlog drains and one after, and pooled, so that a
	// change in the machine's load during the drain falls on both sides.
	b.logf("run throughput: fork/exec of true, %d at once, first half", b.env.workers)
	cpuL := b.env.cpu()
	limitBefore, err := forkExecRate(ctx, n/2, b.env.workers)
	if err != nil {
		return err
	}
	limitCPU := b.env.cpu().sub(cpuL)
	b.logf("run throughput: starting %d workers", b.env.workers)
	cpu0 := b.env.cpu()
	b.env.trips.start()
	if err := b.env.startWorkers(ctx); err != nil {
		return err
	}
	mappingID := b.env.mappings[mappingBacklog]
	// Wait for the backlog to drain, for at most BacklogTimeLimit, and not longer than a minute without
	// progress.
	started, lastDone, lastProgress := time.Now(), 0, time.Now()
	drained := false
	for {
		// Only the runs still to finish are counted, through the index of active runs: the poll must not take
		// CPU from the runs it measures.
		_, open, err := b.env.runStatuses(ctx, `mapping_id = $1 AND status IN ('queued', 'retrying', 'running')`, mappingID)
		if err != nil {
			return err
		}
		done := n - open
		if done == n {
			drained = true
			break
		}
		if done > lastDone {
			lastDone, lastProgress = done, time.Now()
		}
		if time.Since(lastProgress) > time.Minute || time.Since(started) > b.sizes.BacklogTimeLimit {
			break
		}
		// The figure comes from the times the database recorded, so polling more often would only take CPU
		// from the runs being measured.
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	elapsed := time.Since(started)
	b.report.detail("run_cpu_per_run", b.env.cpu().sub(cpu0).perOp(max(lastDone, 1)))
	b.report.detail("run_statements_per_run", b.env.trips.stop(max(lastDone, 1)))
	note := ""
	if !drained {
		note = fmt.Sprintf("the backlog did not drain: %d of %d runs finished in %s", lastDone, n, elapsed.Round(time.Second))
		b.logf("run throughput: %s; withdrawing the rest", note)
		if err := b.withdrawBacklog(ctx, mappingID); err != nil {
			return err
		}
	}

	// From the first command's start to the last run's end, as the database recorded them.
	var succeeded, failed int
	var window float64
	if err := b.env.observer.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE r.status = 'succeeded'), count(*) FILTER (WHERE r.status = 'failed'),
			coalesce(extract(epoch FROM max(r.finished_at) - min(a.started_at))::float8, 0)
		FROM runs r JOIN run_attempts a ON a.run_id = r.id
		WHERE r.mapping_id = $1 AND r.status IN ('succeeded', 'failed')`, mappingID).Scan(&succeeded, &failed, &window); err != nil {
		return fmt.Errorf("read run times: %w", err)
	}
	if failed > 0 {
		return fmt.Errorf("run throughput: %d runs of true failed", failed)
	}
	if succeeded == 0 || window <= 0 {
		return fmt.Errorf("run throughput: no run finished (%s)", note)
	}

	// Where a worker's time goes: from River's fetch of a job to the attempt's start (reading the run, marking
	// it running), and the attempt itself (the command and recording its end).
	fetchToStart, attempt, err := b.workerCycle(ctx, mappingID)
	if err != nil {
		return err
	}
	b.report.detail("run_worker_cycle", map[string]float64{
		"cycle_ms":                  float64(b.env.workers) * window / float64(succeeded) * 1000,
		"fetch_to_attempt_start_ms": fetchToStart,
		"attempt_ms":                attempt,
	})

	b.logf("run throughput: fork/exec of true, %d at once, second half", b.env.workers)
	cpu1 := b.env.cpu()
	limitAfter, err := forkExecRate(ctx, n-n/2, b.env.workers)
	if err != nil {
		return err
	}
	b.report.detail("run_cpu_per_fork_exec", limitCPU.add(b.env.cpu().sub(cpu1)).perOp(n))
	b.report.detail("run_limit_halves", map[string]float64{"before": limitBefore.Value, "after": limitAfter.Value})
	limit := pooledRate(limitBefore, limitAfter)
	row := Row{
		Name:      fmt.Sprintf("run throughput, backlog %d", n),
		Ours:      Figure{Value: float64(succeeded) / window, Unit: "runs/s", N: succeeded},
		LimitName: fmt.Sprintf("fork/exec of true, %d at once", b.env.workers),
		Limit:     &limit,
		Target:    "≥ 0.6× limit",
		Note:      note,
	}
	row.Met = ptr(row.Ours.Value >= 0.6*limit.Value)
	b.report.add(row)
	return nil
}

// workerCycle returns the mean time, in ms, from River's fetch of a run's job (the job's attempted_at, read
// through River's API) to the start of its first attempt, and the mean first attempt, over the mapping's runs.
func (b *bench) workerCycle(ctx context.Context, mappingID int64) (fetchToStart, attempt float64, err error) {
	rows, err := b.env.observer.Query(ctx, `SELECT r.job_id, a.started_at, a.finished_at
		FROM runs r JOIN run_attempts a ON a.run_id = r.id AND a.attempt = 1
		WHERE r.mapping_id = $1 AND r.job_id IS NOT NULL AND a.finished_at IS NOT NULL`, mappingID)
	if err != nil {
		return 0, 0, fmt.Errorf("read run times: %w", err)
	}
	type times struct{ started, finished time.Time }
	byJob := map[int64]times{}
	var ids []int64
	for rows.Next() {
		var id int64
		var t times
		if err := rows.Scan(&id, &t.started, &t.finished); err != nil {
			return 0, 0, fmt.Errorf("read run times: %w", err)
		}
		byJob[id] = t
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("read run times: %w", err)
	}
	jobs, err := jobsByID(ctx, b.env.view, ids)
	if err != nil {
		return 0, 0, fmt.Errorf("read run times: %w", err)
	}
	var toStart, attempts time.Duration
	n := 0
	for id, t := range byJob {
		j, ok := jobs[id]
		if !ok || j.AttemptedAt == nil {
			continue
		}
		toStart, attempts, n = toStart+t.started.Sub(*j.AttemptedAt), attempts+t.finished.Sub(t.started), n+1
	}
	if n == 0 {
		return 0, 0, errors.New("read run times: no run with its job's fetch time")
	}
	return ms(toStart / time.Duration(n)), ms(attempts / time.Duration(n)), nil
}

// withdrawBacklog takes the backlog's runs that have not started out of the queue, marks them cancelled, and
// waits for the running ones to end.
func (b *bench) withdrawBacklog(ctx context.Context, mappingID int64) error {
	rows, err := b.env.observer.Query(ctx, `SELECT job_id FROM runs
		WHERE mapping_id = $1 AND status IN ('queued', 'retrying') AND job_id IS NOT NULL`, mappingID)
	if err != nil {
		return fmt.Errorf("withdraw backlog: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("withdraw backlog: %w", err)
	}
	if _, err := jobsDeleteByID(ctx, b.env.view, ids,
		rivertype.JobStateAvailable, rivertype.JobStateScheduled, rivertype.JobStateRetryable); err != nil {
		return fmt.Errorf("withdraw backlog: %w", err)
	}
	if err := b.env.exec(ctx, `UPDATE runs SET status = 'cancelled', error = 'withdrawn by the benchmark',
		finished_at = now(), updated_at = now() WHERE mapping_id = $1 AND status IN ('queued', 'retrying')`, mappingID); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, open, err := b.env.runStatuses(ctx, `mapping_id = $1`, mappingID)
		if err != nil || open == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("withdraw backlog: %d runs still running after a minute", open)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// queueBacklog records n deliveries for the backlog mapping through the store, 8 at a time.
func (b *bench) queueBacklog(ctx context.Context, n int) error {
	return concurrently(ctx, n, 8, func(int) error {
		d, err := orchestrator.ParseDelivery(webhookBody(datasetBacklog, "", b.env.shas.next()))
		if err == nil {
			_, err = b.env.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d, RemoteAddr: "127.0.0.1"})
		}
		if err != nil {
			return fmt.Errorf("queue backlog: %w", err)
		}
		return nil
	})
}

// pooledRate returns the rate of the operations of rates together: all of them over all of their time.
func pooledRate(rates ...Figure) Figure {
	var n int
	var seconds float64
	for _, r := range rates {
		n += r.N
		seconds += float64(r.N) / r.Value
	}
	return Figure{Value: float64(n) / seconds, Unit: rates[0].Unit, N: n}
}

// forkExecRate runs `true` n times from c goroutines, each in its own process group as the workers start
// commands, and returns the rate.
func forkExecRate(ctx context.Context, n, c int) (Figure, error) {
	path, err := exec.LookPath("true")
	if err != nil {
		return Figure{}, fmt.Errorf("look up true: %w", err)
	}
	start := time.Now()
	err = concurrently(ctx, n, c, func(int) error {
		cmd := exec.Command(path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("run true: %w", err)
		}
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		return Figure{}, err
	}
	return Figure{Value: float64(n) / elapsed.Seconds(), Unit: "execs/s", N: n}, nil
}
