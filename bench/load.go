package bench

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// shaGen hands out revisions never seen before: a random prefix of this run, then a counter.
type shaGen struct {
	prefix string
	n      atomic.Uint64
}

func newShaGen() *shaGen {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &shaGen{prefix: hex.EncodeToString(b[:])}
}

// next returns a new 40-character lowercase hexadecimal revision.
func (g *shaGen) next() string { return fmt.Sprintf("%s%024x", g.prefix, g.n.Add(1)) }

// webhookBody returns a Hub delivery announcing that the main branch of the dataset repo moved from oldSha (null
// when empty: a created branch) to sha. It is spelt out rather than encoded from hub.Payload so that the load
// generator, whose CPU the figures count, costs as little as it can; TestWebhookBody checks that it is the bytes
// hub.DatasetUpdate encodes.
func webhookBody(repo, oldSha, sha string) []byte {
	old := "null"
	if oldSha != "" {
		old = `"` + oldSha + `"`
	}
	return []byte(`{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"` + repo +
		`","id":"66a1f0c2b9e4d3a1f2c3d4e5"},"updatedRefs":[{"ref":"refs/heads/main","oldSha":` + old + `,"newSha":"` + sha + `"}]}`)
}

// deliver posts a delivery of a new revision of repo to the server at baseURL, and returns the run it created
// and when the answer was complete. Anything but a 200 that created exactly one run is an error.
func deliver(ctx context.Context, client *http.Client, baseURL, repo, sha string) (int64, time.Time, error) {
	return deliverMove(ctx, client, baseURL, repo, "", sha)
}

// deliverMove is deliver for a main branch that moved from oldSha to sha.
func deliverMove(ctx context.Context, client *http.Client, baseURL, repo, oldSha, sha string) (int64, time.Time, error) {
	runs, answered, err := deliverAny(ctx, client, baseURL, repo, oldSha, sha)
	if err != nil {
		return 0, answered, err
	}
	if len(runs) != 1 {
		return 0, answered, fmt.Errorf("delivery of %s created %d runs, want 1", sha, len(runs))
	}
	return runs[0], answered, nil
}

// deliverAny posts a delivery as deliverMove does and returns the runs its answer names, none for a duplicate.
// Anything but a 200 is an error.
func deliverAny(ctx context.Context, client *http.Client, baseURL, repo, oldSha, sha string) ([]int64, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/webhooks/huggingface",
		bytes.NewReader(webhookBody(repo, oldSha, sha)))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Secret", webhookSecret)
	resp, err := client.Do(req)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("post delivery: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	answered := time.Now()
	if err != nil {
		return nil, answered, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, answered, fmt.Errorf("delivery answered %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var answer struct {
		Runs []int64 `json:"runs"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, answered, fmt.Errorf("decode answer: %w", err)
	}
	return answer.Runs, answered, nil
}

// concurrently calls op with 0 to n-1, from c goroutines at once, and returns the first error. After an error,
// or once ctx is done, no further call starts.
func concurrently(ctx context.Context, n, c int, op func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					once.Do(func() { firstErr = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// loadResult is what a closed-loop load measured.
type loadResult struct {
	ops      int           // operations that succeeded within the measured window
	errs     int           // operations that failed within it
	firstErr error         // the first failure
	window   time.Duration // the measured window
	lat      Latencies     // latency of each successful operation
}

// closedLoop runs op from c goroutines, each starting the next operation when the previous one is done, for
// warmup and then for window. Only operations started within the window are counted.
func closedLoop(ctx context.Context, c int, warmup, window time.Duration, op func(ctx context.Context) error) loadResult {
	return closedLoopMulti(ctx, c, warmup, window, func(ctx context.Context) (Latencies, error) {
		t0 := time.Now()
		if err := op(ctx); err != nil {
			return nil, err
		}
		return Latencies{time.Since(t0)}, nil
	})
}

// closedLoopMulti is closedLoop for operations that each make several requests at once (a delivery and its
// duplicate): op returns the latency of each request it made, and each counts as an operation.
func closedLoopMulti(ctx context.Context, c int, warmup, window time.Duration, op func(ctx context.Context) (Latencies, error)) loadResult {
	start := time.Now()
	from, until := start.Add(warmup), start.Add(warmup+window)
	var mu sync.Mutex
	res := loadResult{window: window}
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat Latencies
			errs := 0
			var firstErr error
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(until) {
					break
				}
				l, err := op(ctx)
				if t0.Before(from) {
					continue
				}
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				lat = append(lat, l...)
			}
			mu.Lock()
			defer mu.Unlock()
			res.ops += len(lat)
			res.errs += errs
			res.lat = append(res.lat, lat...)
			if res.firstErr == nil {
				res.firstErr = firstErr
			}
		}()
	}
	wg.Wait()
	return res
}

// merge returns the results of r and other as one load: their operations, windows and latencies together.
func (r loadResult) merge(other loadResult) loadResult {
	r.ops += other.ops
	r.errs += other.errs
	r.firstErr = cmp.Or(r.firstErr, other.firstErr)
	r.window += other.window
	r.lat = append(r.lat, other.lat...)
	return r
}

// check returns an error when the load failed more than rarely, or did nothing.
func (r loadResult) check(what string) error {
	if r.ops > 0 && r.errs*100 <= r.ops {
		return nil
	}
	if r.firstErr == nil {
		return fmt.Errorf("%s: no operation completed", what)
	}
	return fmt.Errorf("%s: %d operations succeeded, %d failed; first failure: %w", what, r.ops, r.errs, r.firstErr)
}
