package bench

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// commitPayload is the 1 KiB JSON document of the commit limit: about the size of a Hub delivery.
var commitPayload = func() string {
	const head = `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/bench"},"pad":"`
	return head + strings.Repeat("x", 1024-len(head)-2) + `"}`
}()

// ingest measures valid deliveries per second, each creating one run, at each concurrency, beside single-row
// 1 KiB JSONB inserts with a commit each through pgx at the same concurrency. The two sides take turns for
// IngestRounds rounds and each is pooled over its rounds, so that a change in the machine's load over the level
// falls on both. The workers are not started, so that the figure is the webhook path alone; the runs it queues
// are withdrawn afterwards.
func (b *bench) ingest(ctx context.Context) error {
	if err := b.env.exec(ctx, `CREATE TABLE IF NOT EXISTS bench_commit (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)`); err != nil {
		return err
	}
	s := b.sizes
	for _, c := range s.IngestLevels {
		var ours, limit loadResult
		var oursCPU, limitCPU cpuUse
		for round := range s.IngestRounds {
			b.logf("ingest at c=%d, round %d of %d: %s of deliveries", c, round+1, s.IngestRounds, s.IngestWarmup+s.IngestDuration)
			cpu0 := b.env.cpu()
			res := closedLoop(ctx, c, s.IngestWarmup, s.IngestDuration, func(ctx context.Context) error {
				_, _, err := deliver(ctx, b.env.client, b.env.baseURL, datasetIngest, b.env.shas.next())
				return err
			})
			if err := res.check(fmt.Sprintf("ingest at c=%d", c)); err != nil {
				return err
			}
			cpu1 := b.env.cpu()
			b.logf("ingest at c=%d, round %d of %d: %s of single-row commits", c, round+1, s.IngestRounds, s.IngestWarmup+s.IngestDuration)
			lim, err := commitLimit(ctx, b.env.cluster.URL(), c, s)
			if err != nil {
				return err
			}
			cpu2 := b.env.cpu()
			ours, limit = ours.merge(res), limit.merge(lim)
			oursCPU, limitCPU = oursCPU.add(cpu1.sub(cpu0)), limitCPU.add(cpu2.sub(cpu1))
		}
		// CPU per operation over warm-up and window alike: the operations of both are about s.IngestWarmup
		// longer than the window's.
		scale := func(n int) int {
			return int(float64(n) * (s.IngestWarmup + s.IngestDuration).Seconds() / s.IngestDuration.Seconds())
		}
		b.report.detail(fmt.Sprintf("ingest_c%d_cpu_per_delivery", c), oursCPU.perOp(scale(ours.ops)))
		b.report.detail(fmt.Sprintf("ingest_c%d_cpu_per_commit", c), limitCPU.perOp(scale(limit.ops)))
		row := Row{
			Name:      fmt.Sprintf("ingest c=%d", c),
			Ours:      rate(ours.ops, ours.window, "deliveries/s", ours.lat),
			LimitName: "1 KiB JSONB insert + commit",
			Limit:     ptr(rate(limit.ops, limit.window, "commits/s", limit.lat)),
		}
		switch c {
		case 8:
			row.Target = "p99 < 10 ms"
			row.Met = ptr(*row.Ours.P99Ms < 10)
		case 32:
			row.Target = "≥ 0.5× limit"
			row.Met = ptr(row.Ours.Value >= 0.5*row.Limit.Value)
		}
		b.report.add(row)
	}
	// The statements of the webhook path, one delivery at a time.
	const counted = 50
	b.env.trips.start()
	for range counted {
		if _, _, err := deliver(ctx, b.env.client, b.env.baseURL, datasetIngest, b.env.shas.next()); err != nil {
			return fmt.Errorf("count statements: %w", err)
		}
	}
	b.report.detail("webhook_statements_per_delivery", b.env.trips.stop(counted))

	// Withdraw the runs the deliveries queued, so that the workers start on an empty queue.
	if _, err := jobsDelete(ctx, b.env.view,
		river.NewJobDeleteManyParams().Queues(orchestrator.QueueDefault).States(rivertype.JobStateAvailable)); err != nil {
		return fmt.Errorf("withdraw queued runs: %w", err)
	}
	if err := b.env.exec(ctx, `UPDATE runs SET status = 'cancelled', error = 'withdrawn by the benchmark',
		finished_at = now(), updated_at = now() WHERE status = 'queued'`); err != nil {
		return err
	}
	// Withdrawing tens of thousands of runs at once leaves as many dead rows in the queue and in runs, which no
	// production database gets in one go. Vacuumed now, their cleanup does not land in the next phase's figures.
	// The whole database is vacuumed, River's tables with ours, rather than naming River's tables here.
	return b.env.exec(ctx, `VACUUM (ANALYZE)`)
}

// commitLimit inserts 1 KiB JSONB rows, one per transaction, from c connections.
func commitLimit(ctx context.Context, url string, c int, s Sizes) (loadResult, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return loadResult{}, fmt.Errorf("parse database URL: %w", err)
	}
	cfg.MaxConns, cfg.MinConns = int32(c), int32(c)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return loadResult{}, fmt.Errorf("connect for the commit limit: %w", err)
	}
	defer pool.Close()
	res := closedLoop(ctx, c, s.IngestWarmup, s.IngestDuration, func(ctx context.Context) error {
		_, err := pool.Exec(ctx, `INSERT INTO bench_commit (payload) VALUES ($1)`, commitPayload)
		return err
	})
	return res, res.check(fmt.Sprintf("commit limit at c=%d", c))
}
