package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// TestTwoProcessesSameDeliveries runs two orchestrators on one database and sends every delivery to both at
// once, several times (the Hub's retries behind a load balancer): each (mapping, ref, revision) runs exactly
// once, and the runs are spread over both processes' workers.
func TestTwoProcessesSameDeliveries(t *testing.T) {
	t.Parallel()
	url, _ := dbtest.NewSchema(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, `
mappings:
  - name: a
    dataset: acme/shared
    command: ["true"]
    on_new_revision: queue
    concurrency: 8
  - name: b
    dataset: acme/*
    command: ["true"]
    on_new_revision: queue
    concurrency: 8
`)
	var bases []string
	for range 2 {
		svc := startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: cfg, DatabaseURL: url, WebhookSecret: e2eSecret,
			MaxBodyBytes: 1 << 20, MaxWorkers: 4, KillGrace: time.Second,
			HeartbeatInterval: time.Second, OrphanAfter: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		bases = append(bases, "http://"+svc.Addr())
	}

	const revisions, copies = 40, 3
	shas := make([]string, revisions)
	for i := range shas {
		shas[i] = randomRevision()
	}
	// 32 senders at most, and a 503 is retried after a pause, as the Hub does: what is checked is that every
	// delivery ends acknowledged and that retries and copies never double a run.
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	retried := 0
	slots := make(chan struct{}, 32)
	for _, sha := range shas {
		for c := range copies {
			for _, base := range bases {
				wg.Add(1)
				go func() {
					defer wg.Done()
					slots <- struct{}{}
					defer func() { <-slots }()
					for try := 0; ; try++ {
						req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/huggingface", strings.NewReader(push("acme/shared", sha)))
						req.Header.Set("X-Webhook-Secret", e2eSecret)
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							t.Errorf("copy %d: %v", c, err)
							return
						}
						resp.Body.Close()
						if resp.StatusCode == http.StatusServiceUnavailable && try < 10 {
							mu.Lock()
							retried++
							mu.Unlock()
							time.Sleep(200 * time.Millisecond)
							continue
						}
						mu.Lock()
						statuses[resp.StatusCode]++
						mu.Unlock()
						return
					}
				}()
			}
		}
	}
	wg.Wait()
	require.Equal(t, map[int]int{200: revisions * copies * 2}, statuses, "after %d retries of a 503", retried)
	t.Logf("%d deliveries acknowledged, %d answered 503 first and retried", revisions*copies*2, retried)

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	require.Eventually(t, func() bool {
		var unfinished int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM runs WHERE status <> 'succeeded'`).Scan(&unfinished))
		return unfinished == 0
	}, 30*time.Second, 50*time.Millisecond)

	var runs, distinct, attempts, workers int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT (mapping_id, ref, revision)) FROM runs`).Scan(&runs, &distinct))
	require.Equal(t, 2*revisions, runs, "one run per mapping and revision")
	require.Equal(t, runs, distinct)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM run_attempts`).Scan(&attempts))
	require.Equal(t, runs, attempts, "each run executed once")
	attemptedBy := map[string]bool{}
	for _, job := range jobList(t, pool, river.NewJobListParams().Kinds(jobs.RetrainArgs{}.Kind())) {
		if len(job.AttemptedBy) > 0 {
			attemptedBy[job.AttemptedBy[0]] = true
		}
	}
	workers = len(attemptedBy)
	require.Equal(t, 2, workers, "both processes ran some")
	var duplicates int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM decisions WHERE decision = 'duplicate'`).Scan(&duplicates))
	require.Equal(t, 2*revisions*(copies*2-1), duplicates)
}
