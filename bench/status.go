package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// statusPages loads StatusRows runs and as many deliveries (with their refs, decisions and attempts) straight
// into the tables, then measures the latency of each status page, beside a primary-key lookup through pgx. It
// also records the plans PostgreSQL chose for the pages' queries.
func (b *bench) statusPages(ctx context.Context) error {
	n := b.sizes.StatusRows
	// A mapping whose runs are all older than the rows loaded below, as a mapping that ran long ago, or was
	// disabled, has: at least one run of the backlog mapping.
	d, err := orchestrator.ParseDelivery(webhookBody(datasetBacklog, "", b.env.shas.next()))
	if err != nil {
		return fmt.Errorf("parse delivery: %w", err)
	}
	if _, err := b.env.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: d, RemoteAddr: "127.0.0.1"}); err != nil {
		return fmt.Errorf("record a delivery: %w", err)
	}
	b.logf("status pages: loading %d runs and %d deliveries", n, n)
	start := time.Now()
	first, last, err := b.loadStatusRows(ctx, n)
	if err != nil {
		return err
	}
	b.report.detail("status_load_seconds", time.Since(start).Seconds())
	b.report.detail("status_rows", n)

	var logRun int64
	if id, ok := b.report.Details["log_capture_run_id"].(int64); ok {
		logRun = id
	}
	randomRun := func() string { return fmt.Sprint(first + rand.Int64N(last-first+1)) }
	pages := []struct {
		name string
		path func() string
	}{
		{"/", func() string { return "/" }},
		{"/runs", func() string { return "/runs" }},
		{"/runs?status=failed", func() string { return "/runs?status=failed" }},
		{"/runs?mapping=…", func() string { return "/runs?mapping=" + statusMapping(rand.IntN(statusMappings)) }},
		{"/runs?mapping=… whose runs are older", func() string { return "/runs?mapping=" + mappingBacklog }},
		{"/runs/{id}", func() string { return "/runs/" + randomRun() }},
		{"/api/v1/runs", func() string { return "/api/v1/runs" }},
		{"/mappings/{name}", func() string { return "/mappings/" + statusMapping(rand.IntN(statusMappings)) }},
		{"/mappings/{name} whose runs are older", func() string { return "/mappings/" + mappingBacklog }},
		{"/deliveries", func() string { return "/deliveries" }},
	}
	if logRun != 0 {
		pages = append(pages, struct {
			name string
			path func() string
		}{fmt.Sprintf("/runs/{id} with %d MiB of output", b.sizes.LogBytes/mib), func() string { return fmt.Sprint("/runs/", logRun) }})
	}

	samples := b.sizes.StatusSamples
	b.logf("status pages: primary-key lookups")
	limit, err := b.primaryKeyLookups(ctx, first, last, samples)
	if err != nil {
		return err
	}
	for _, p := range pages {
		b.logf("status pages: %d requests of %s", samples, p.name)
		lat, err := b.getPages(ctx, p.path, samples)
		if err != nil {
			return err
		}
		row := Row{Name: fmt.Sprintf("status %s, %s runs", p.name, thousands(n)), Ours: lat.figure(),
			LimitName: "primary-key lookup through pgx", Limit: &limit, Target: "p99 < 50 ms"}
		row.Met = ptr(*row.Ours.P99Ms < 50)
		b.report.add(row)
	}

	b.logf("status pages: recording query plans")
	plans, err := b.explainStatusQueries(ctx)
	if err != nil {
		return err
	}
	b.report.Plans = append(b.report.Plans, plans...)
	return nil
}

// loadStatusRows inserts n deliveries, each with one ref, one run (succeeded; one in 19 failed, one in 97
// cancelled) of one of the status mappings, its attempt and its decision, with generate_series, then analyzes the
// tables. It returns the first and last run id it created.
func (b *bench) loadStatusRows(ctx context.Context, n int) (int64, int64, error) {
	ids := make([]int64, statusMappings)
	for i := range ids {
		ids[i] = b.env.mappings[statusMapping(i)]
	}
	tx, err := b.env.observer.Begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("begin load: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Revision i is md5(i) and 8 more hex digits: 40 characters, unique per row.
	const sha = `md5(i::text) || substr(md5('r' || i::text), 1, 8)`
	var lo, hi, count int64
	if err := tx.QueryRow(ctx, `
		WITH d AS (
			INSERT INTO deliveries (received_at, source, scope, action, repo_type, repo_name, repo_id, remote_addr, payload)
			SELECT now() - make_interval(secs => ($1 - i) * 30), 'webhook', 'repo.content', 'update', 'dataset',
				'acme/status-' || lpad((i % $2)::text, 2, '0'), 'status-repo-' || (i % $2), '127.0.0.1',
				convert_to('{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/status-'
					|| lpad((i % $2)::text, 2, '0') || '","id":"status-repo-' || (i % $2)
					|| '"},"updatedRefs":[{"ref":"refs/heads/main","oldSha":null,"newSha":"' || `+sha+` || '"}]}', 'UTF8')
			FROM generate_series(1, $1) AS i
			ORDER BY i
			RETURNING id
		)
		SELECT min(id), max(id), count(*) FROM d`, n, statusMappings).Scan(&lo, &hi, &count); err != nil {
		return 0, 0, fmt.Errorf("load deliveries: %w", err)
	}
	if hi-lo+1 != count {
		return 0, 0, fmt.Errorf("load deliveries: ids %d to %d are not consecutive for %d rows", lo, hi, count)
	}
	steps := []struct{ what, sql string }{
		{"refs", `INSERT INTO delivery_refs (delivery_id, position, ref, old_sha, new_sha)
			SELECT d.id, 0, 'refs/heads/main', NULL, ` + strings.ReplaceAll(sha, "i::text", "(d.id - $1 + 1)::text") + `
			FROM deliveries d WHERE d.id BETWEEN $1 AND $2`},
		{"runs", `INSERT INTO runs (mapping_id, dataset, repo_id, ref, revision, trigger, delivery_id, status, attempt,
				max_attempts, exit_code, error, created_at, started_at, finished_at, updated_at)
			SELECT ($3::bigint[])[1 + i % $4], 'acme/status-' || lpad((i % $4)::text, 2, '0'), 'status-repo-' || (i % $4),
				'refs/heads/main', ` + sha + `, 'webhook', d.id,
				CASE WHEN i % 19 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'cancelled' ELSE 'succeeded' END, 1, 1,
				CASE WHEN i % 19 = 0 THEN 1 WHEN i % 97 = 0 THEN NULL ELSE 0 END,
				CASE WHEN i % 19 = 0 THEN 'exit code 1' WHEN i % 97 = 0 THEN 'cancelled by an operator' ELSE '' END,
				d.received_at, d.received_at + interval '1 second', d.received_at + interval '20 minutes',
				d.received_at + interval '20 minutes'
			FROM (SELECT id, received_at, id - $1 + 1 AS i FROM deliveries WHERE id BETWEEN $1 AND $2) d
			ORDER BY d.id`},
		{"attempts", `INSERT INTO run_attempts (run_id, attempt, argv, status, exit_code, error, started_at, finished_at)
			SELECT id, 1, ARRAY['true'], status, exit_code, error, started_at, finished_at
			FROM runs WHERE delivery_id BETWEEN $1 AND $2`},
		{"decisions", `INSERT INTO decisions (delivery_id, mapping_id, ref, new_sha, decision, reason, run_id)
			SELECT delivery_id, mapping_id, ref, revision, 'queued', '', id
			FROM runs WHERE delivery_id BETWEEN $1 AND $2 ORDER BY id`},
	}
	for _, s := range steps {
		args := []any{lo, hi}
		if s.what == "runs" {
			args = append(args, ids, statusMappings)
		}
		if _, err := tx.Exec(ctx, s.sql, args...); err != nil {
			return 0, 0, fmt.Errorf("load %s: %w", s.what, err)
		}
	}
	var first, last int64
	if err := tx.QueryRow(ctx, `SELECT min(id), max(id) FROM runs WHERE delivery_id BETWEEN $1 AND $2`,
		lo, hi).Scan(&first, &last); err != nil {
		return 0, 0, fmt.Errorf("read loaded runs: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, fmt.Errorf("commit load: %w", err)
	}
	if err := b.env.exec(ctx, `ANALYZE deliveries, delivery_refs, runs, run_attempts, decisions`); err != nil {
		return 0, 0, err
	}
	return first, last, nil
}

// pageTimeLimit bounds the time spent measuring one page: a slow page gets fewer samples.
const pageTimeLimit = time.Minute

// getPages requests path() n times, one after the other, after a few unmeasured requests, or for at most
// pageTimeLimit.
func (b *bench) getPages(ctx context.Context, path func() string, n int) (Latencies, error) {
	var lat Latencies
	deadline := time.Now().Add(pageTimeLimit)
	for i := -5; i < n && time.Now().Before(deadline); i++ {
		p := path()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.env.baseURL+p, nil)
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		t0 := time.Now()
		resp, err := b.env.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", p, err)
		}
		size, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		if resp.StatusCode != http.StatusOK || size == 0 {
			return nil, fmt.Errorf("get %s: %s with %d bytes", p, resp.Status, size)
		}
		if i >= 0 {
			lat = append(lat, d)
		}
	}
	return lat, nil
}

// primaryKeyLookups reads n random runs by id through pgx.
func (b *bench) primaryKeyLookups(ctx context.Context, first, last int64, n int) (Figure, error) {
	var lat Latencies
	for i := -5; i < n; i++ {
		var status string
		t0 := time.Now()
		if err := b.env.observer.QueryRow(ctx, `SELECT status FROM runs WHERE id = $1`,
			first+rand.Int64N(last-first+1)).Scan(&status); err != nil {
			return Figure{}, fmt.Errorf("primary-key lookup: %w", err)
		}
		if i >= 0 {
			lat = append(lat, time.Since(t0))
		}
	}
	return lat.figure(), nil
}

// explainStatusQueries calls the store's list queries of the status pages through a pool whose sessions have
// auto_explain send each plan, with actual times, back as a notice. Each query runs seven times and the last
// plan is kept: by then PostgreSQL has decided between custom and generic plans for the prepared statement, as
// it has on the server's long-lived connections.
func (b *bench) explainStatusQueries(ctx context.Context) ([]Plan, error) {
	cfg, err := pgxpool.ParseConfig(b.env.cluster.URL())
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	var mu sync.Mutex
	var last string
	cfg.MaxConns = 1
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if strings.Contains(n.Message, "Query Text:") {
			mu.Lock()
			last = n.Message
			mu.Unlock()
		}
	}
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		for _, sql := range []string{
			`LOAD 'auto_explain'`,
			`SET auto_explain.log_min_duration = 0`,
			`SET auto_explain.log_analyze = on`,
			`SET auto_explain.log_buffers = on`,
			`SET auto_explain.log_level = notice`,
		} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				return fmt.Errorf("%s: %w", sql, err)
			}
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect for plans: %w", err)
	}
	defer pool.Close()
	store := orchestrator.NewStore(pool)

	var before int64
	if err := b.env.observer.QueryRow(ctx, `SELECT id FROM runs ORDER BY id DESC OFFSET 5000 LIMIT 1`).Scan(&before); err != nil {
		return nil, fmt.Errorf("pick a page boundary: %w", err)
	}
	queries := []struct {
		name string
		call func() error
	}{
		{"RunList, no filter (/runs, /api/v1/runs)", func() error {
			_, err := store.RunList(ctx, orchestrator.RunListParams{})
			return err
		}},
		{"RunList, status=failed", func() error {
			_, err := store.RunList(ctx, orchestrator.RunListParams{Status: orchestrator.RunFailed})
			return err
		}},
		{"RunList, status=running (none)", func() error {
			_, err := store.RunList(ctx, orchestrator.RunListParams{Status: orchestrator.RunRunning})
			return err
		}},
		{"RunList, mapping=" + statusMapping(3), func() error {
			_, err := store.RunList(ctx, orchestrator.RunListParams{Mapping: statusMapping(3)})
			return err
		}},
		{"RunList, mapping=" + mappingBacklog + " (runs older than the loaded rows)", func() error {
			_, err := store.RunList(ctx, orchestrator.RunListParams{Mapping: mappingBacklog})
			return err
		}},
		{"RunList, dataset=" + statusDataset(3), func() error {
			_, err := store.RunList(ctx, orchestrator.RunListParams{Dataset: statusDataset(3)})
			return err
		}},
		{"RunList, trigger=manual (none)", func() error {
			_, err := store.RunList(ctx, orchestrator.RunListParams{Trigger: orchestrator.TriggerManual})
			return err
		}},
		{"RunList, page 101 (before=id)", func() error {
			_, err := store.RunList(ctx, orchestrator.RunListParams{BeforeID: before})
			return err
		}},
		{"MappingSummaryList (/)", func() error {
			_, err := store.MappingSummaryList(ctx)
			return err
		}},
		{"DeliveryList, limit 10 (/)", func() error {
			_, err := store.DeliveryList(ctx, orchestrator.DeliveryListParams{Limit: 10})
			return err
		}},
	}
	var plans []Plan
	for _, q := range queries {
		for range 7 {
			if err := q.call(); err != nil {
				return nil, fmt.Errorf("%s: %w", q.name, err)
			}
		}
		mu.Lock()
		plans = append(plans, Plan{Name: q.name, Plan: last})
		last = ""
		mu.Unlock()
	}
	return plans, nil
}

// thousands renders n with thin separators: 1,000,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
