package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// Defaults of TestSoak; SOAK_DURATION and SOAK_SENDERS override them, e.g.
// SOAK_DURATION=60s SOAK_SENDERS=32 go test -run TestSoak ./cmd/orchestrator/
const (
	soakDurationDefault = 5 * time.Second
	soakSendersDefault  = 16
	soakDataset         = "acme/soak"
)

// startWithMappings starts the whole orchestrator in-process on a random port, on a fresh schema, with the given
// mappings file, and stops it when the test ends.
func startWithMappings(t *testing.T, mappingsYAML string) *service.Service {
	t.Helper()
	url, _ := dbtest.NewSchema(t)
	cfgPath := writeConfig(t, t.TempDir(), mappingsYAML)
	return startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: cfgPath, DatabaseURL: url, WebhookSecret: e2eSecret,
		MaxWorkers: 4, KillGrace: time.Second, MaxBodyBytes: 1 << 20,
		HeartbeatInterval: 10 * time.Second, OrphanAfter: time.Minute, Logger: errorLogger()})
}

// envOr reads a test setting from the environment.
func envOr[T any](t *testing.T, name string, def T, parse func(string) (T, error)) T {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	got, err := parse(v)
	require.NoError(t, err, "%s=%q", name, v)
	return got
}

// randomSha returns a random, well-formed commit id.
func randomSha() string {
	var b [20]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// soakKind is what a soak request is.
type soakKind int

const (
	soakUnique    soakKind = iota // a new revision
	soakDuplicate                 // a revision already acknowledged
	soakBadJSON                   // a body that is not JSON
	soakBadSecret                 // the wrong secret
)

// soakAnswer is the part of a webhook answer the soak test looks at.
type soakAnswer struct {
	Runs      []int64 `json:"runs"`
	Decisions []struct {
		Decision string `json:"decision"`
		RunID    int64  `json:"run_id"`
	} `json:"decisions"`
	Error string `json:"error"`
}

// soakStats is what the senders saw.
type soakStats struct {
	mu        sync.Mutex
	byStatus  map[int]int
	byKind    map[soakKind]int
	latencies []time.Duration
	acked     []string           // revisions acknowledged with 200 as new, in order
	runOf     map[string]int64   // their runs
	problems  []string           // answers that were not what their kind expects
	errors    map[string]int     // transport errors
	dupRuns   map[string][]int64 // run ids duplicates pointed at
}

// TestSoak posts a mix of new, duplicate and invalid deliveries from concurrent senders to the whole service for
// a while, then checks the database against the answers: every 200 is a delivery row, every new revision
// acknowledged has exactly one run and it succeeded, nothing answered 5xx.
func TestSoak(t *testing.T) {
	t.Parallel()
	duration := envOr(t, "SOAK_DURATION", soakDurationDefault, time.ParseDuration)
	senders := envOr(t, "SOAK_SENDERS", soakSendersDefault, strconv.Atoi)
	require.Positive(t, senders)

	m := startWithMappings(t, `
mappings:
  - name: soak
    dataset: `+soakDataset+`
    command: ["true"]
    timeout: 1m
    concurrency: 4          # as many runs at once as there are workers
    on_new_revision: queue  # every revision gets its run: none is superseded by a newer one
`)
	base := "http://" + m.Addr()
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: senders, MaxIdleConnsPerHost: senders, MaxConnsPerHost: senders,
			IdleConnTimeout: time.Minute, DisableCompression: true,
		},
	}
	t.Cleanup(client.CloseIdleConnections)

	st := &soakStats{byStatus: map[int]int{}, byKind: map[soakKind]int{}, runOf: map[string]int64{},
		errors: map[string]int{}, dupRuns: map[string][]int64{}}
	send := func(kind soakKind, sha string) {
		body, secret := push(soakDataset, sha), e2eSecret
		switch kind {
		case soakBadJSON:
			body = body[:len(body)/2]
		case soakBadSecret:
			secret = "not-the-secret"
		}
		req, err := http.NewRequest(http.MethodPost, base+"/webhooks/huggingface", strings.NewReader(body))
		if err != nil {
			panic(err)
		}
		req.Header.Set("X-Webhook-Secret", secret)
		start := time.Now()
		resp, err := client.Do(req)
		var data []byte
		if err == nil {
			data, err = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
		}
		took := time.Since(start)

		st.mu.Lock()
		defer st.mu.Unlock()
		st.byKind[kind]++
		if err != nil {
			st.errors[err.Error()]++
			return
		}
		st.byStatus[resp.StatusCode]++
		st.latencies = append(st.latencies, took)
		var a soakAnswer
		if jerr := json.Unmarshal(data, &a); jerr != nil {
			st.problems = append(st.problems, fmt.Sprintf("kind %d: not JSON (%v): %.200s", kind, jerr, data))
			return
		}
		bad := func(format string, args ...any) {
			st.problems = append(st.problems, fmt.Sprintf("kind %d, status %d: ", kind, resp.StatusCode)+fmt.Sprintf(format, args...)+
				fmt.Sprintf(": %.300s", data))
		}
		switch kind {
		case soakUnique:
			if resp.StatusCode != http.StatusOK || len(a.Runs) != 1 || a.Decisions[0].Decision != "queued" {
				bad("a new revision is one queued run")
				return
			}
			st.acked = append(st.acked, sha)
			st.runOf[sha] = a.Runs[0]
		case soakDuplicate:
			if resp.StatusCode != http.StatusOK || len(a.Runs) != 0 || a.Decisions[0].Decision != "duplicate" {
				bad("a known revision is a duplicate")
				return
			}
			st.dupRuns[sha] = append(st.dupRuns[sha], a.Decisions[0].RunID)
		case soakBadJSON:
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(a.Error, "invalid JSON") {
				bad("a truncated body is 400 invalid JSON")
			}
		case soakBadSecret:
			if resp.StatusCode != http.StatusUnauthorized {
				bad("a wrong secret is 401")
			}
		}
	}

	start := time.Now()
	deadline := start.Add(duration)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				kind, sha := soakUnique, ""
				switch p := mrand.IntN(100); {
				case p < 60:
				case p < 85:
					kind = soakDuplicate
				case p < 93:
					kind = soakBadJSON
				default:
					kind = soakBadSecret
				}
				if kind == soakDuplicate {
					st.mu.Lock()
					if len(st.acked) > 0 {
						sha = st.acked[mrand.IntN(len(st.acked))]
					} else {
						kind = soakUnique // nothing acknowledged yet to duplicate
					}
					st.mu.Unlock()
				}
				if sha == "" {
					sha = randomSha()
				}
				send(kind, sha)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	slices.Sort(st.latencies)
	require.NotEmpty(t, st.latencies, "no answer at all")
	pct := func(p float64) time.Duration { return st.latencies[int(p*float64(len(st.latencies)-1))] }
	t.Logf("%d senders for %s: %d requests, answers by status %v, kinds %v (unique, duplicate, bad JSON, bad secret)",
		senders, elapsed.Round(time.Millisecond), len(st.latencies), st.byStatus,
		[]int{st.byKind[soakUnique], st.byKind[soakDuplicate], st.byKind[soakBadJSON], st.byKind[soakBadSecret]})
	t.Logf("held %.0f deliveries/s (200s), %.0f requests/s; latency p50 %s, p99 %s, max %s",
		float64(st.byStatus[http.StatusOK])/elapsed.Seconds(), float64(len(st.latencies))/elapsed.Seconds(),
		pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), st.latencies[len(st.latencies)-1].Round(10*time.Microsecond))

	require.Empty(t, st.errors, "transport errors")
	require.Empty(t, st.problems, "unexpected answers")
	for status := range st.byStatus {
		require.Less(t, status, 500, "answers by status: %v", st.byStatus)
	}
	require.NotEmpty(t, st.acked)
	require.Positive(t, st.byKind[soakDuplicate])
	for sha, runs := range st.dupRuns {
		for _, id := range runs {
			require.Equal(t, st.runOf[sha], id, "a duplicate points at the run of the revision")
		}
	}

	// Wait, bounded, for the runs to finish: at least 20 runs/s on four workers running `true`.
	ctx := context.Background()
	pool := m.Pool()
	waitFor := 30*time.Second + time.Duration(len(st.acked))*50*time.Millisecond
	for {
		var pending int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM runs
			WHERE status NOT IN ('succeeded', 'failed', 'cancelled', 'superseded')`).Scan(&pending))
		if pending == 0 {
			break
		}
		if waited := time.Since(start) - elapsed; waited > waitFor {
			t.Fatalf("%d of %d runs still unfinished %s after the senders stopped (%.1f runs/s)", pending, len(st.acked),
				waited.Round(time.Second), float64(len(st.acked)-pending)/time.Since(start).Seconds())
		}
		time.Sleep(50 * time.Millisecond)
	}
	drained := time.Since(start) - elapsed
	t.Logf("%d runs finished %s after the senders stopped (%.1f runs/s from the first delivery)",
		len(st.acked), drained.Round(time.Millisecond), float64(len(st.acked))/time.Since(start).Seconds())

	count := func(sql string) int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, sql).Scan(&n))
		return n
	}
	require.Equal(t, st.byStatus[http.StatusOK], count(`SELECT count(*) FROM deliveries`), "one delivery row per 200")
	var revisions []string
	rows, err := pool.Query(ctx, `SELECT revision FROM runs ORDER BY id`)
	require.NoError(t, err)
	for rows.Next() {
		var r string
		require.NoError(t, rows.Scan(&r))
		revisions = append(revisions, r)
	}
	require.NoError(t, rows.Err())
	acked := slices.Clone(st.acked)
	slices.Sort(acked)
	slices.Sort(revisions)
	require.Equal(t, acked, revisions, "exactly one run per revision acknowledged as new")
	require.Equal(t, 0, count(`SELECT count(*) FROM (SELECT 1 FROM runs GROUP BY mapping_id, revision HAVING count(*) > 1) AS d`),
		"no (mapping, revision) has two runs")
	require.Equal(t, 0, count(`SELECT count(*) FROM runs WHERE status <> 'succeeded' OR attempt <> 1`),
		"every run succeeded at its first attempt")
}

// TestSoakBacklog queues a backlog of revisions for one mapping that runs every revision, and checks that the
// workers drain it at the pace of the command: a run waiting for a slot of its mapping must not leave a worker
// idle while a slot is free. `true` takes a few milliseconds, so 100 runs fit in a few seconds even under -race.
func TestSoakBacklog(t *testing.T) {
	t.Parallel()
	const runs = 100
	cases := []struct {
		name        string
		concurrency int
		within      time.Duration
	}{
		// Liveness, not speed (the benchmark measures that): the bound is generous for a loaded CI machine
		// running the race detector.
		{name: "Concurrency1", concurrency: 1, within: 150 * time.Second},
		{name: "Concurrency4", concurrency: 4, within: 150 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := startWithMappings(t, fmt.Sprintf(`
mappings:
  - name: backlog
    dataset: acme/backlog
    command: ["true"]
    concurrency: %d
    on_new_revision: queue
`, tc.concurrency))
			base := "http://" + m.Addr()

			ctx := context.Background()
			start := time.Now()
			for range runs {
				res := postDelivery(t, base, push("acme/backlog", randomSha()))
				require.Len(t, res["runs"], 1)
			}
			posted := time.Since(start)

			var pending int
			for {
				require.NoError(t, m.Pool().QueryRow(ctx, `SELECT count(*) FROM runs
					WHERE status NOT IN ('succeeded', 'failed', 'cancelled', 'superseded')`).Scan(&pending))
				if pending == 0 || time.Since(start) > tc.within {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			took := time.Since(start)
			var snoozes int
			for _, job := range jobList(t, m.Pool(), river.NewJobListParams()) {
				var metadata struct {
					Snoozes int `json:"snoozes"`
				}
				require.NoError(t, json.Unmarshal(job.Metadata, &metadata))
				snoozes += metadata.Snoozes
			}
			t.Logf("concurrency %d: %d deliveries posted in %s; %d of %d runs finished after %s (%.1f runs/s), %d snoozes",
				tc.concurrency, runs, posted.Round(time.Millisecond), runs-pending, runs, took.Round(time.Millisecond),
				float64(runs-pending)/took.Seconds(), snoozes)
			require.Zero(t, pending, "runs still unfinished %s after the first delivery", tc.within)
			var succeeded int
			require.NoError(t, m.Pool().QueryRow(ctx, `SELECT count(*) FROM runs WHERE status = 'succeeded'`).Scan(&succeeded))
			require.Equal(t, runs, succeeded)
		})
	}
}
