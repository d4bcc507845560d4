package web_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/jobs/jobstest"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/web"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

const testSecret = "test_huggingface_webhook_secret_1234567890"

type testBundle struct {
	pool   *pgxpool.Pool
	store  *orchestrator.Store
	river  *river.Client[pgx.Tx] // not started: queued runs stay queued
	server *httptest.Server
}

// setup serves the web handler on a fresh, migrated schema with the given mappings.
func setup(t *testing.T, mappings ...orchestrator.Mapping) *testBundle {
	t.Helper()
	return setupWithOpts(t, setupOpts{mappings: mappings})
}

// setupOpts configures setupWithOpts.
type setupOpts struct {
	adminToken string
	// adminTokenPrevious is accepted beside adminToken, as during a rotation.
	adminTokenPrevious string
	protectReads       bool
	mappings           []orchestrator.Mapping
	// maxBody is the webhook body limit: 64 KiB when 0, the server's default (web.MaxBodyBytesDefault) when
	// negative.
	maxBody int64
	// trustedProxies are believed about the client's address (each try of a test as a client of its own).
	trustedProxies []netip.Prefix
	// lookupEnv is the server's environment for the secrets of hf-jobs mappings; an empty one when nil.
	lookupEnv func(string) (string, bool)
}

func setupWithPool(t *testing.T, pool *pgxpool.Pool, mappings ...orchestrator.Mapping) *testBundle {
	t.Helper()
	return setupServer(t, pool, setupOpts{mappings: mappings})
}

// setupWithOpts serves the web handler on a fresh, migrated schema.
func setupWithOpts(t testing.TB, opts setupOpts) *testBundle {
	t.Helper()
	pool, _ := dbtest.NewMigratedPool(t)
	return setupServer(t, pool, opts)
}

func setupServer(t testing.TB, pool *pgxpool.Pool, opts setupOpts) *testBundle {
	t.Helper()
	mappings := opts.mappings
	store := orchestrator.NewStore(pool)
	client := jobstest.NewClient(t, pool, store, jobs.ClientConfig{Logger: quietLogger})
	if len(mappings) > 0 {
		_, err := store.MappingSync(context.Background(), mappings)
		require.NoError(t, err)
	}
	maxBody := opts.maxBody
	switch {
	case maxBody == 0:
		maxBody = 64 << 10
	case maxBody < 0:
		maxBody = 0
	}
	lookupEnv := opts.lookupEnv
	if lookupEnv == nil {
		lookupEnv = noEnv
	}
	srv, err := web.New(web.Config{Store: store, WebhookSecret: testSecret, MaxBodyBytes: maxBody,
		AdminToken: opts.adminToken, AdminTokenPrevious: opts.adminTokenPrevious, ProtectReads: opts.protectReads,
		TrustedProxies: opts.trustedProxies, Logger: quietLogger, LookupEnv: lookupEnv})
	require.NoError(t, err)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &testBundle{pool: pool, store: store, river: client, server: ts}
}

// noEnv is an environment without variables.
func noEnv(string) (string, bool) { return "", false }

func ticketsMapping() orchestrator.Mapping {
	return orchestrator.Mapping{
		Name: "tickets", Dataset: "acme/support-tickets", Command: []string{"true"}, Enabled: true,
	}.WithDefaults()
}

func fixture(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "deliveries", name))
	require.NoError(t, err)
	return string(data)
}

// request sends a request and returns the status, the headers and the body decoded as JSON (nil when the body
// is not JSON).
func (b *testBundle) request(t *testing.T, method, path, body string, header map[string]string) (int, http.Header, map[string]any) {
	t.Helper()
	status, respHeader, data := b.rawRequest(t, method, path, body, header)
	var v map[string]any
	if json.Unmarshal(data, &v) != nil {
		v = nil
	}
	return status, respHeader, v
}

// rawRequest sends a request and returns the status, the headers and the body as it came.
func (b *testBundle) rawRequest(t *testing.T, method, path, body string, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, b.server.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, data
}

// jobCount counts the jobs that params selects, through River's API.
func (b *testBundle) jobCount(t *testing.T, params *river.JobListParams) int {
	t.Helper()
	const page = 1000
	params = params.First(page)
	n := 0
	for {
		res, err := b.river.JobList(context.Background(), params)
		require.NoError(t, err)
		n += len(res.Jobs)
		if len(res.Jobs) < page {
			return n
		}
		params = params.After(res.LastCursor)
	}
}

func (b *testBundle) count(t *testing.T, sql string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), sql).Scan(&n))
	return n
}
