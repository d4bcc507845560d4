package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// Targets of the ingest figures at c = 32.
const (
	ingestP99TargetMs  = 50.0 // p99 of a delivery's answer, with the workers running, duplicates or not
	ingestRatioTarget  = 0.25 // deliveries/s against pgbench's commits/s, with the workers running
	ingestTargetLevel  = 32   // the concurrency the targets are stated for
	databaseWebOnly    = "bench_web"
	ingestRowWorkers   = "ingest c=%d, workers running"
	ingestRowWebOnly   = "ingest c=%d, web only (--role web)"
	ingestRowDuplicate = "ingest c=%d, every revision sent twice at once, workers running"
)

// ingestCase is one way of sending deliveries from c connections, measured in rounds that take turns with
// pgbench's.
type ingestCase struct {
	name string
	c    int
	// op sends one operation: a delivery, or a delivery and its duplicate at once; it returns the latency of
	// each answer.
	op func(ctx context.Context) (Latencies, error)
	// after withdraws what a round queued, so that the next round, and pgbench's, start on an empty queue.
	after func(ctx context.Context) error
	// executed, when set, counts the runs the workers finished so far: the runs executed during a round.
	executed func(ctx context.Context) (int, error)
	// target sets the row's target and whether it was met.
	target func(row *Row)
}

// caseRounds is what the rounds of one case measured, with pgbench's rounds on either side of each.
type caseRounds struct {
	ours      loadResult
	cpu       cpuUse
	neighbour map[int]loadResult // pgbench's rounds beside ours, by their place in the sequence
	ratios    []float64          // each round's deliveries/s over the mean of its two neighbours' commits/s
	executed  int                // runs the workers finished during the rounds
	wal       walUse
	deadlocks int64 // deadlocks PostgreSQL detected in the cluster during the rounds
}

// ingest measures deliveries per second and the latency of their answers from several connections at once,
// each delivery a new revision that creates one run of `true`: with the workers running (the serve command's
// default role, all) at each level of IngestLevels; at the top level also by a web-only service (--role web)
// on a database of its own, and with every revision sent twice at once. Each round of ours sits between two
// rounds of pgbench at the same client count in the same cluster, and its ratio is taken against those two.
func (b *bench) ingest(ctx context.Context) error {
	if err := b.env.startWorkers(ctx); err != nil {
		return err
	}
	s := b.sizes
	webTrips := &roundTrips{}
	web, webURL, err := b.env.startWebOnly(ctx, webTrips)
	if err != nil {
		return err
	}
	defer func() { _ = web.Close(context.WithoutCancel(ctx)) }()
	webBase := "http://" + web.Addr()

	for _, c := range s.IngestLevels {
		cases := []ingestCase{b.workersCase(fmt.Sprintf(ingestRowWorkers, c), c)}
		if c == s.IngestLevels[len(s.IngestLevels)-1] {
			cases = append([]ingestCase{{
				name: fmt.Sprintf(ingestRowWebOnly, c), c: c,
				op: func(ctx context.Context) (Latencies, error) {
					t0 := time.Now()
					_, answered, err := deliver(ctx, b.env.client, webBase, datasetIngest, b.env.shas.next())
					return Latencies{answered.Sub(t0)}, err
				},
				after: func(ctx context.Context) error { return withdrawQueued(ctx, webURL) },
			}}, cases...)
			cases = append(cases, b.duplicateCase(c))
		}
		if err := b.interleave(ctx, PhaseIngest, c, cases); err != nil {
			return err
		}
	}

	// The statements of the webhook path, one delivery at a time, counted on the web-only service's pool: the
	// workers' statements are not among them.
	const counted = 50
	webTrips.start()
	for range counted {
		if _, _, err := deliver(ctx, b.env.client, webBase, datasetIngest, b.env.shas.next()); err != nil {
			return fmt.Errorf("count statements: %w", err)
		}
	}
	b.report.detail("webhook_statements_per_delivery", webTrips.stop(counted))
	// Withdrawing tens of thousands of runs leaves as many dead rows in the queue and in runs, which no
	// production database gets in one go. Vacuumed now, their cleanup does not land in the next phase's figures.
	// The whole database is vacuumed, River's tables with ours, rather than naming River's tables here.
	return b.env.exec(ctx, `VACUUM (ANALYZE)`)
}

// workersCase, the row name, sends a new revision per delivery to the orchestrator whose workers run the runs.
func (b *bench) workersCase(name string, c int) ingestCase {
	mappingID := b.env.mappings[mappingIngest]
	return ingestCase{
		name: name, c: c,
		op: func(ctx context.Context) (Latencies, error) {
			t0 := time.Now()
			_, answered, err := deliver(ctx, b.env.client, b.env.baseURL, datasetIngest, b.env.shas.next())
			return Latencies{answered.Sub(t0)}, err
		},
		after:    func(ctx context.Context) error { return b.withdrawBacklog(ctx, mappingID) },
		executed: func(ctx context.Context) (int, error) { return b.succeeded(ctx, mappingID) },
		target:   ingestTarget(true),
	}
}

// duplicateCase sends each new revision twice at once, from c/2 pairs of connections: c requests in flight.
// Exactly one run per revision must come of each pair.
func (b *bench) duplicateCase(c int) ingestCase {
	cs := b.workersCase(fmt.Sprintf(ingestRowDuplicate, c), c)
	cs.c = max(1, c/2)
	cs.op = func(ctx context.Context) (Latencies, error) {
		sha := b.env.shas.next()
		var wg sync.WaitGroup
		lat := make(Latencies, 2)
		runs := make([][]int64, 2)
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				var answered time.Time
				runs[i], answered, errs[i] = deliverAny(ctx, b.env.client, b.env.baseURL, datasetIngest, "", sha)
				lat[i] = answered.Sub(t0)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
		if ids := slices.Compact(slices.Sorted(slices.Values(append(runs[0], runs[1]...)))); len(ids) != 1 {
			return nil, fmt.Errorf("a revision sent twice at once created runs %v, want exactly one", ids)
		}
		return lat, nil
	}
	cs.target = ingestTarget(false)
	return cs
}

// ingestTarget returns the target setter of a row at the target level: p99 under ingestP99TargetMs, and, when
// withRatio, at least ingestRatioTarget of pgbench.
func ingestTarget(withRatio bool) func(row *Row) {
	return func(row *Row) {
		p99 := *row.Ours.P99Ms < ingestP99TargetMs
		row.Target = fmt.Sprintf("p99 < %.0f ms", ingestP99TargetMs)
		if !withRatio {
			row.Met = &p99
			return
		}
		row.Target += fmt.Sprintf(", ≥ %.2f× pgbench", ingestRatioTarget)
		row.Met = ptr(p99 && row.Ratio != nil && *row.Ratio >= ingestRatioTarget)
	}
}

// interleave measures cases of the phase at concurrency c for IngestRounds rounds each, in the sequence pgbench, first
// case, pgbench, second case, pgbench, … pgbench, and adds a row per case: its pooled rate and latencies, the
// pooled pgbench rounds beside its own, and the median of its rounds' ratios.
func (b *bench) interleave(ctx context.Context, phase string, c int, cases []ingestCase) error {
	s := b.sizes
	pg, err := newPgbench(b.env.dir, b.env.cluster.URL())
	if err != nil {
		return err
	}
	if err := b.env.exec(ctx, commitTable); err != nil {
		return err
	}
	var limits []loadResult
	var limitCPU cpuUse
	var limitWAL walUse
	pgRound := func() error {
		b.logf("%s at c=%d: pgbench round %d, %s", phase, c, len(limits)+1, s.IngestWarmup+s.IngestDuration)
		cpu0 := b.env.cpu()
		wal0, err := b.env.wal(ctx)
		if err != nil {
			return err
		}
		res, err := pg.round(ctx, c, s.IngestWarmup, s.IngestDuration)
		if err != nil {
			return err
		}
		limitCPU = limitCPU.add(b.env.cpu().sub(cpu0))
		wal1, err := b.env.wal(ctx)
		if err != nil {
			return err
		}
		limitWAL = limitWAL.add(wal1.sub(wal0))
		limits = append(limits, res)
		return nil
	}
	if err := pgRound(); err != nil {
		return err
	}
	got := make([]caseRounds, len(cases))
	for round := range s.IngestRounds {
		for i, cs := range cases {
			b.logf("%s, round %d of %d: %s of deliveries", cs.name, round+1, s.IngestRounds, s.IngestWarmup+s.IngestDuration)
			var before int
			if cs.executed != nil {
				if before, err = cs.executed(ctx); err != nil {
					return err
				}
			}
			cpu0 := b.env.cpu()
			wal0, err := b.env.wal(ctx)
			if err != nil {
				return err
			}
			dead0, err := b.env.deadlocks(ctx)
			if err != nil {
				return err
			}
			res := closedLoopMulti(ctx, cs.c, s.IngestWarmup, s.IngestDuration, cs.op)
			cpu := b.env.cpu().sub(cpu0)
			wal1, err := b.env.wal(ctx)
			if err != nil {
				return err
			}
			if err := res.check(cs.name); err != nil {
				return err
			}
			dead1, err := b.env.deadlocks(ctx)
			if err != nil {
				return err
			}
			got[i].deadlocks += dead1 - dead0
			if cs.executed != nil {
				after, err := cs.executed(ctx)
				if err != nil {
					return err
				}
				got[i].executed += after - before
			}
			if err := cs.after(ctx); err != nil {
				return err
			}
			if err := pgRound(); err != nil {
				return err
			}
			prev, next := len(limits)-2, len(limits)-1
			r := &got[i]
			r.ours, r.cpu, r.wal = r.ours.merge(res), r.cpu.add(cpu), r.wal.add(wal1.sub(wal0))
			if r.neighbour == nil {
				r.neighbour = map[int]loadResult{}
			}
			r.neighbour[prev], r.neighbour[next] = limits[prev], limits[next]
			r.ratios = append(r.ratios, neighbourRatio(res.rate(), limits[prev].rate(), limits[next].rate()))
		}
	}
	commits := 0
	for _, l := range limits {
		commits += l.ops
	}
	b.report.detail(fmt.Sprintf("%s_pgbench_c%d_cpu_per_commit", phase, c), limitCPU.perOp(scaleToRound(commits, s)))
	b.report.detail(fmt.Sprintf("%s_pgbench_c%d_commits_per_s_of_each_round", phase, c), rates(limits))
	b.report.detail(fmt.Sprintf("%s_pgbench_c%d_wal_per_commit", phase, c), limitWAL.perOp(scaleToRound(commits, s)))
	for i, cs := range cases {
		r := got[i]
		var lim loadResult
		for _, k := range slices.Sorted(maps.Keys(r.neighbour)) {
			lim = lim.merge(r.neighbour[k])
		}
		row := Row{
			Name:      cs.name,
			Ours:      rate(r.ours.ops, r.ours.window, "deliveries/s", r.ours.lat),
			LimitName: fmt.Sprintf("pgbench -c %d -j %d, 1 KiB JSONB row per commit, rounds beside ours", c, min(2, c)),
			Limit:     ptr(rate(lim.ops, lim.window, "commits/s", lim.lat)),
			Ratio:     ptr(median(r.ratios)),
		}
		if len(r.ratios) > 1 {
			row.Note = fmt.Sprintf("median of %d rounds' ratios, %s to %s", len(r.ratios),
				formatRatio(slices.Min(r.ratios)), formatRatio(slices.Max(r.ratios)))
		}
		if cs.target != nil && c == ingestTargetLevel {
			cs.target(&row)
		}
		b.report.add(row)
		key := detailKey(row.Name)
		b.report.detail(key+"_cpu_per_delivery", r.cpu.perOp(scaleToRound(r.ours.ops, s)))
		b.report.detail(key+"_ratio_of_each_round", r.ratios)
		b.report.detail(key+"_wal_per_delivery", r.wal.perOp(scaleToRound(r.ours.ops, s)))
		b.report.detail(key+"_deadlocks", r.deadlocks)
		if cs.executed != nil {
			b.report.detail(key+"_runs_executed_per_s", float64(r.executed)/(s.IngestWarmup+s.IngestDuration).Seconds()/float64(s.IngestRounds))
		}
	}
	return nil
}

// scaleToRound turns n operations counted in the measured windows into those of the warm-up and window
// together, which the CPU time covers: the operations of both are about IngestWarmup longer than the window's.
func scaleToRound(n int, s Sizes) int {
	return int(float64(n) * (s.IngestWarmup + s.IngestDuration).Seconds() / s.IngestDuration.Seconds())
}

// succeeded counts the runs of the mapping that succeeded.
func (b *bench) succeeded(ctx context.Context, mappingID int64) (int, error) {
	var n int
	if err := b.env.observer.QueryRow(ctx, `SELECT count(*) FROM runs WHERE mapping_id = $1 AND status = 'succeeded'`,
		mappingID).Scan(&n); err != nil {
		return 0, fmt.Errorf("count succeeded runs: %w", err)
	}
	return n, nil
}

// startWebOnly starts a web-only orchestrator (--role web) on a database of its own in the same cluster, with
// the benchmark's mappings and trips counting its pool's statements, and returns it and its database's URL. Its
// runs are never executed: no process serves its queue.
func (e *env) startWebOnly(ctx context.Context, trips *roundTrips) (*service.Service, string, error) {
	dbURL, err := e.createDatabase(ctx, databaseWebOnly)
	if err != nil {
		return nil, "", err
	}
	cfg := e.serviceConfig(dbURL, service.RoleWeb)
	cfg.PoolTracer = trips
	svc, err := service.New(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("configure the web-only orchestrator: %w", err)
	}
	if err := svc.Run(ctx); err != nil {
		_ = svc.Close(context.WithoutCancel(ctx))
		return nil, "", fmt.Errorf("start the web-only orchestrator: %w", err)
	}
	if _, err := svc.Store().MappingSync(ctx, e.benchMappings()); err != nil {
		_ = svc.Close(context.WithoutCancel(ctx))
		return nil, "", fmt.Errorf("register the web-only mappings: %w", err)
	}
	return svc, dbURL, nil
}
