package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/deliverytest"
	"github.com/retrainhq/orchestrator/web"
)

// How TestWebhookBodySize sends a body.
const (
	sendWhole   = "whole"   // by net/http's client, with a Content-Length
	sendChunked = "chunked" // by net/http's client, without a Content-Length
	// sendStart and sendStartChunked write the headers (with or without a Content-Length) and only the first
	// sentBytes of the body over a connection of their own, then read the answer: one that comes is one given
	// without the rest of the body.
	sendStart        = "start"
	sendStartChunked = "start-chunked"
)

// sentBytes is how much of its body a sendStart request sends before it waits for the answer.
const sentBytes = 64 << 10

// sizeCase is one request of TestWebhookBodySize.
type sizeCase struct {
	name string
	body func() string
	// noSecret sends no X-Webhook-Secret.
	noSecret bool
	send     string

	wantStatus int
	wantError  string
	// For a 200: the runs it creates, its one decision's kind and reason, whether its payload is stored
	// shortened, and how many entries of updatedFiles the shortened payload counts.
	wantRuns      int
	wantDecision  string
	wantReason    string
	wantShortened bool
	wantFiles     int
}

// datasetPush is a dataset content update that the tickets mapping runs.
func datasetPush(n int) string {
	return `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"acme/support-tickets",` +
		`"id":"66a1f0c2b9e4d3a1f2c3d4e5","private":false},"updatedRefs":[{"ref":"refs/heads/main","oldSha":null,` +
		`"newSha":"` + hsha(n) + `"}],"webhook":{"id":"6650e8d1c2b3a4f5e6d7c8b9","version":3}}`
}

// TestWebhookBodySize posts large deliveries, authenticated or not, to a server with the default body limit
// (16 MiB), each from its own loopback address, and checks the answer and the rows written: every
// authenticated delivery up to the limit is answered 200 and recorded with its decision, a large one that
// cannot trigger with a shortened payload; a larger one is 413, an unauthenticated one 401 before its body is
// read, bad JSON 400, and those write nothing.
func TestWebhookBodySize(t *testing.T) {
	t.Parallel()
	require.Equal(t, int64(16<<20), int64(web.MaxBodyBytesDefault), "the default body limit")
	const limit = web.MaxBodyBytesDefault
	b := setupWithOpts(t, setupOpts{maxBody: -1, mappings: []orchestrator.Mapping{ticketsMapping()}})
	tooLarge := fmt.Sprintf("body larger than %d bytes", limit)
	notDataset := func(kind string) string { return kind + " repo, not a dataset" }

	cases := []sizeCase{
		{name: "SmallBucket", body: func() string { return string(deliverytest.Bucket(4)) }, send: sendWhole,
			wantStatus: 200, wantDecision: "ignored", wantReason: notDataset("bucket")},
		{name: "Bucket10000Files", body: func() string { return string(deliverytest.Bucket(10000)) }, send: sendWhole,
			wantStatus: 200, wantDecision: "ignored", wantReason: notDataset("bucket"), wantShortened: true, wantFiles: 10000},
		{name: "Bucket10000FilesChunked", body: func() string { return string(deliverytest.Bucket(10000)) }, send: sendChunked,
			wantStatus: 200, wantDecision: "ignored", wantReason: notDataset("bucket"), wantShortened: true, wantFiles: 10000},
		{name: "Bucket15.9MiB", body: func() string { return string(deliverytest.BucketOfSize(limit - limit/160)) }, send: sendWhole,
			wantStatus: 200, wantDecision: "ignored", wantReason: notDataset("bucket"), wantShortened: true, wantFiles: -1},
		{name: "BucketExactlyTheLimit", body: func() string { return string(deliverytest.BucketOfSize(limit)) }, send: sendWhole,
			wantStatus: 200, wantDecision: "ignored", wantReason: notDataset("bucket"), wantShortened: true, wantFiles: -1},
		{name: "ModelPushPadded", send: sendWhole,
			body:       func() string { return padTo(seedBody("repo.content", "update", ""), 6<<20) },
			wantStatus: 200, wantDecision: "ignored", wantReason: notDataset("model"), wantShortened: true},
		// A dataset's content update triggers whatever it carries besides, and is kept whole.
		{name: "DatasetPushPadded", body: func() string { return padTo(datasetPush(1), 4<<20) }, send: sendWhole,
			wantStatus: 200, wantRuns: 1, wantDecision: "queued"},

		{name: "BucketLimitPlusOneAnnounced", body: func() string { return string(deliverytest.BucketOfSize(limit + 1)) }, send: sendStart,
			wantStatus: 413, wantError: tooLarge},
		{name: "BucketLimitPlusOneChunked", body: func() string { return string(deliverytest.BucketOfSize(limit + 1)) }, send: sendChunked,
			wantStatus: 413, wantError: tooLarge},
		{name: "Unauthenticated20MiB", body: func() string { return string(deliverytest.BucketOfSize(20 << 20)) }, noSecret: true,
			send: sendStart, wantStatus: 401, wantError: "missing or wrong webhook secret"},
		{name: "Unauthenticated20MiBChunked", body: func() string { return string(deliverytest.BucketOfSize(20 << 20)) }, noSecret: true,
			send: sendStartChunked, wantStatus: 401, wantError: "missing or wrong webhook secret"},
		{name: "TruncatedBucket", body: func() string { return string(deliverytest.BucketOfSize(10 << 20)[:10<<20-3]) }, send: sendWhole,
			wantStatus: 400, wantError: "invalid JSON"},
		{name: "DatasetPushWrongType", send: sendWhole,
			body: func() string {
				return padTo(edit(datasetPush(2), `"private":false`, `"private":false,"name":7`), 8<<20)
			},
			wantStatus: 400, wantError: `field "repo.name" must be a string, not number`},
	}
	for i, tc := range cases {
		from := net.IPv4(127, 0, 1, byte(10+i))
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := tc.body()
			status, header, resp := sendSized(t, b, from, tc, body)
			require.Equal(t, tc.wantStatus, status, "answer: %v", resp)
			require.Contains(t, header.Get("Content-Type"), "application/json")
			rows := rowsFrom(t, b, from.String())
			if tc.wantStatus != 200 {
				require.Equal(t, map[string]any{"error": resp["error"]}, resp, "an error answer is {\"error\": ...}")
				require.Contains(t, resp["error"], tc.wantError)
				require.Equal(t, hostileRows{}, rows, "a refused request writes nothing")
				return
			}
			require.Equal(t, true, resp["received"])
			require.Len(t, resp["runs"], tc.wantRuns)
			id := int64(resp["delivery_id"].(float64))
			require.Equal(t, []string{tc.wantDecision}, stored(t, b, `SELECT decision FROM decisions WHERE delivery_id = $1`, id))
			if tc.wantReason != "" {
				require.Equal(t, []string{tc.wantReason}, stored(t, b, `SELECT reason FROM decisions WHERE delivery_id = $1`, id))
			}
			require.Equal(t, hostileRows{Deliveries: 1, Refs: tc.wantRuns, Decisions: 1, Runs: tc.wantRuns, Jobs: tc.wantRuns}, rows)
			checkStoredPayload(t, b, id, body, tc)
		})
	}
}

// sendSized sends body as tc says, from the address from, and returns the answer.
func sendSized(t *testing.T, b *testBundle, from net.IP, tc sizeCase, body string) (int, http.Header, map[string]any) {
	t.Helper()
	header := http.Header{"Content-Type": {"application/json"}}
	if !tc.noSecret {
		header.Set("X-Webhook-Secret", testSecret)
	}
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}, Timeout: 5 * time.Second}
	var res *http.Response
	switch tc.send {
	case sendWhole, sendChunked:
		var r io.Reader = strings.NewReader(body)
		if tc.send == sendChunked {
			r = struct{ io.Reader }{r} // of unknown length: sent chunked
		}
		req, err := http.NewRequest(http.MethodPost, b.server.URL+"/webhooks/huggingface", r)
		require.NoError(t, err)
		req.Header = header
		if tc.send == sendChunked {
			require.Zero(t, req.ContentLength, "of unknown length: sent chunked")
		}
		transport := &http.Transport{DialContext: dialer.DialContext}
		t.Cleanup(transport.CloseIdleConnections)
		res, err = (&http.Client{Transport: transport, Timeout: 2 * time.Minute}).Do(req)
		require.NoError(t, err)
	case sendStart, sendStartChunked:
		res = sendStartOnly(t, dialer, b.server.URL, header, body, tc.send == sendStartChunked)
	default:
		t.Fatalf("unknown send %q", tc.send)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, json.Unmarshal(data, &v), "the answer is a JSON object: %.300s", data)
	return res.StatusCode, res.Header, v
}

// sendStartOnly writes a request with the headers and the first sentBytes of body, and reads the answer
// without sending more. The server must answer without the rest of the body, and close the connection
// rather than wait for it.
func sendStartOnly(t *testing.T, dialer *net.Dialer, base string, header http.Header, body string, chunked bool) *http.Response {
	t.Helper()
	u, err := url.Parse(base)
	require.NoError(t, err)
	conn, err := dialer.Dial("tcp", u.Host)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(time.Minute)))

	var head bytes.Buffer
	fmt.Fprintf(&head, "POST /webhooks/huggingface HTTP/1.1\r\nHost: %s\r\n", u.Host)
	if chunked {
		head.WriteString("Transfer-Encoding: chunked\r\n")
	} else {
		fmt.Fprintf(&head, "Content-Length: %d\r\n", len(body))
	}
	require.NoError(t, header.Write(&head))
	head.WriteString("\r\n")
	if chunked {
		fmt.Fprintf(&head, "%x\r\n%s\r\n", sentBytes, body[:sentBytes])
	} else {
		head.WriteString(body[:sentBytes])
	}
	_, err = conn.Write(head.Bytes())
	require.NoError(t, err)

	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "an answer, with %d of the body's %d bytes sent", sentBytes, len(body))
	require.True(t, res.Close, "Connection: close: the connection is not kept for the rest of the body")
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	res.Body = io.NopCloser(bytes.NewReader(data))
	if !chunked {
		// Nothing more is read: the server closes the connection instead of waiting for the rest.
		n, err := br.Read(make([]byte, 1))
		require.Zero(t, n)
		require.ErrorIs(t, err, io.EOF, "the server closes the connection")
	}
	return res
}

// checkStoredPayload checks what the delivery id keeps of body: body itself, or for a large delivery that
// cannot trigger a shortened copy that says so, and shows it on its page.
func checkStoredPayload(t *testing.T, b *testBundle, id int64, body string, tc sizeCase) {
	t.Helper()
	var payload []byte
	var shortenedFrom *int64
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`SELECT payload, payload_shortened_from FROM deliveries WHERE id = $1`, id).Scan(&payload, &shortenedFrom))
	if !tc.wantShortened {
		require.Nil(t, shortenedFrom)
		require.True(t, string(payload) == body, "the payload is the body as received")
		if len(body) < 1<<20 {
			p := b.getPage(t, fmt.Sprintf("/deliveries/%d", id), nil)
			require.Equal(t, http.StatusOK, p.status)
			require.Empty(t, find(p.root, byID("payload-shortened")))
			require.Contains(t, text(p.one(t, byID("payload-whole"))), "As received")
		}
		return
	}
	require.NotNil(t, shortenedFrom)
	require.Equal(t, int64(len(body)), *shortenedFrom, "the size received is recorded")
	require.LessOrEqual(t, len(payload), orchestrator.PayloadWholeMax)
	var kept map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(payload, &kept), "the shortened payload is JSON: %.300s", payload)
	var whole map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &whole))
	for _, k := range []string{"event", "repo"} {
		require.JSONEq(t, string(whole[k]), string(kept[k]), "%s is kept", k)
	}
	if tc.wantFiles != 0 {
		var files struct {
			Omitted string            `json:"omitted"`
			Entries int               `json:"entries"`
			Bytes   int               `json:"bytes"`
			First   []json.RawMessage `json:"first"`
		}
		require.NoError(t, json.Unmarshal(kept["updatedFiles"], &files), "updatedFiles: %.300s", kept["updatedFiles"])
		require.Equal(t, "array", files.Omitted)
		if tc.wantFiles > 0 {
			require.Equal(t, tc.wantFiles, files.Entries)
		}
		require.Equal(t, len(whole["updatedFiles"]), files.Bytes)
		var entries []json.RawMessage
		require.NoError(t, json.Unmarshal(whole["updatedFiles"], &entries))
		require.Equal(t, len(entries), files.Entries)
		require.NotEmpty(t, files.First)
		require.Equal(t, entries[:len(files.First)], files.First, "the first files are kept as received")
	}

	p := b.getPage(t, fmt.Sprintf("/deliveries/%d", id), nil)
	require.Equal(t, http.StatusOK, p.status)
	notice := text(p.one(t, byID("payload-shortened")))
	require.Contains(t, notice, "cannot trigger a run")
	require.Equal(t, fmt.Sprintf("%d bytes", len(body)), attr(p.one(t, byID("payload-received")), "title"))
	require.Contains(t, text(p.one(t, byTag("pre"))), `"omitted"`)
}

// TestWebhookLargeBodyMemory measures what receiving a 16 MiB bucket delivery allocates, client and server
// together: about the body once, which the server reads into one buffer and parses in place, keeping a
// shortened copy. It does not call t.Parallel: the allocation counters are the whole process's, so it runs
// while the parallel tests wait.
func TestWebhookLargeBodyMemory(t *testing.T) {
	b := setupWithOpts(t, setupOpts{maxBody: -1})
	body := deliverytest.BucketOfSize(web.MaxBodyBytesDefault)
	post := func() {
		req, err := http.NewRequest(http.MethodPost, b.server.URL+"/webhooks/huggingface", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("X-Webhook-Secret", testSecret)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		data, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		require.Equal(t, http.StatusOK, res.StatusCode, "%s", data)
	}
	post() // connections and prepared statements are set up once
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	post()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d-byte bucket delivery: %d bytes allocated (%.2f times the body), in %d allocations",
		len(body), allocated, float64(allocated)/float64(len(body)), after.Mallocs-before.Mallocs)
	require.Less(t, allocated, uint64(len(body))+2<<20, "the body is held once, not copied")
}

// heapSampler records the largest heap (live and not yet collected objects) seen while it runs.
type heapSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func heapNow() uint64 {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for {
			h.peak = max(h.peak, heapNow())
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) finish() uint64 {
	close(h.stop)
	h.done.Wait()
	return max(h.peak, heapNow())
}

// BenchmarkWebhookLargeBody posts bucket deliveries of the Hub's largest file list and of the body limit, and a
// dataset push of the limit (kept whole), to a real server on a real PostgreSQL. B/op is everything the request
// allocates, client side included; peak-heap-MiB is the largest heap seen above the one before the request,
// after a collection.
func BenchmarkWebhookLargeBody(b *testing.B) {
	bundle := setupWithOpts(b, setupOpts{maxBody: 16 << 20, mappings: []orchestrator.Mapping{ticketsMapping()}})
	for _, bc := range []struct {
		name string
		body string
	}{
		{"Bucket10000Files", string(deliverytest.Bucket(10000))},
		{"Bucket16MiB", string(deliverytest.BucketOfSize(16 << 20))},
		{"DatasetPush16MiB", padTo(datasetPush(1), 16<<20)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var peak uint64
			for b.Loop() {
				b.StopTimer()
				runtime.GC()
				before := heapNow()
				sampler := startHeapSampler()
				b.StartTimer()
				req, err := http.NewRequest(http.MethodPost, bundle.server.URL+"/webhooks/huggingface", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				req.Header.Set("X-Webhook-Secret", testSecret)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				answer, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d: %s", resp.StatusCode, answer)
				}
				b.StopTimer()
				if p := sampler.finish(); p > before {
					peak = max(peak, p-before)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}
