package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/migrations"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

const testSecret = "service-test-secret"

// quietLogger drops the service's log lines.
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// testBundle is a service on a fresh schema, closed when the test ends.
type testBundle struct {
	svc  *service.Service
	base string
}

// setup builds a service on a fresh schema from cfg, with what every test needs filled in, and runs it.
func setup(t *testing.T, cfg service.Config) *testBundle {
	t.Helper()
	cfg.DatabaseURL, _ = dbtest.NewSchema(t)
	cfg.Addr = "127.0.0.1:0"
	cfg.WebhookSecret = testSecret
	cfg.KillGrace = time.Second
	cfg.Logger = quietLogger
	svc, err := service.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, svc.Close(ctx))
	})
	require.NoError(t, svc.Run(context.Background()))
	return &testBundle{svc: svc, base: "http://" + svc.Addr()}
}

// get answers the status of GET path.
func (b *testBundle) get(t *testing.T, path string) int {
	t.Helper()
	resp, err := http.Get(b.base + path)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode
}

// deliver posts a push of a new commit to dataset and returns the id of the run it started.
func (b *testBundle) deliver(t *testing.T, dataset string) int64 {
	t.Helper()
	body := `{"event":{"scope":"repo.content","action":"update"},"repo":{"type":"dataset","name":"` + dataset +
		`","headSha":"` + strings.Repeat("a", 40) + `"},"updatedRefs":[{"ref":"refs/heads/main","newSha":"` +
		strings.Repeat("a", 40) + `"}]}`
	req, err := http.NewRequest(http.MethodPost, b.base+"/webhooks/huggingface", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("X-Webhook-Secret", testSecret)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var answer struct {
		Runs []int64 `json:"runs"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, answer.Runs, 1)
	return answer.Runs[0]
}

// status returns the status of run id as the API shows it.
func (b *testBundle) status(t *testing.T, id int64) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s/api/v1/runs/%d", b.base, id))
	require.NoError(t, err)
	defer resp.Body.Close()
	var run struct {
		Status string `json:"status"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&run))
	return run.Status
}

// mapping is a mapping that runs `true` on every commit to dataset.
func mapping(name, dataset string) orchestrator.Mapping {
	return orchestrator.Mapping{Name: name, Dataset: dataset, Command: []string{"true"}, Enabled: true,
		Source: orchestrator.SourceFile}.WithDefaults()
}

// TestServiceRoles checks what each role serves.
func TestServiceRoles(t *testing.T) {
	t.Parallel()
	cases := []struct {
		role                 service.Role
		pages, ready, metric int
	}{
		{role: service.RoleAll, pages: http.StatusOK, ready: http.StatusOK, metric: http.StatusOK},
		{role: service.RoleWeb, pages: http.StatusOK, ready: http.StatusOK, metric: http.StatusOK},
		{role: service.RoleWorker, pages: http.StatusNotFound, ready: http.StatusOK, metric: http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(string(tc.role), func(t *testing.T) {
			t.Parallel()
			b := setup(t, service.Config{Role: tc.role})
			require.Equal(t, tc.pages, b.get(t, "/"))
			require.Equal(t, tc.ready, b.get(t, "/readyz"))
			require.Equal(t, tc.metric, b.get(t, "/metrics"))
			require.Equal(t, tc.role, b.svc.Config().Role)
		})
	}
}

// TestServiceDeferWorkers checks that with DeferWorkers a delivery's run waits in the queue until StartWorkers.
func TestServiceDeferWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, service.Config{DeferWorkers: true})
	_, err := b.svc.Store().MappingSync(ctx, []orchestrator.Mapping{mapping("deferred", "acme/deferred")})
	require.NoError(t, err)

	id := b.deliver(t, "acme/deferred")
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, "queued", b.status(t, id), "no worker runs before StartWorkers")

	require.NoError(t, b.svc.StartWorkers(ctx))
	require.NoError(t, b.svc.StartWorkers(ctx), "a second call does nothing")
	require.Eventually(t, func() bool { return b.status(t, id) == "succeeded" }, 20*time.Second, 20*time.Millisecond)
}

// countingTracer counts the statements it sees.
type countingTracer struct{ n atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestServicePoolTracer checks that the tracer given sees the service's statements.
func TestServicePoolTracer(t *testing.T) {
	t.Parallel()
	tracer := &countingTracer{}
	b := setup(t, service.Config{PoolTracer: tracer, DeferWorkers: true})
	before := tracer.n.Load()
	require.Positive(t, before, "the schema and the start went through the pool")
	require.Equal(t, http.StatusOK, b.get(t, "/readyz"))
	require.Greater(t, tracer.n.Load(), before, "the readiness check went through the pool")
}

// TestServiceRunRefusesWithoutSecret checks that Run refuses to start without a webhook secret, having started
// nothing.
func TestServiceRunRefusesWithoutSecret(t *testing.T) {
	t.Parallel()
	url, _ := dbtest.NewSchema(t)
	svc, err := service.New(service.Config{DatabaseURL: url, Addr: "127.0.0.1:0", Logger: quietLogger})
	require.NoError(t, err)
	require.EqualError(t, svc.Run(context.Background()), "no webhook secret configured")
	require.Empty(t, svc.Addr())
	require.Nil(t, svc.Pool())
	require.NoError(t, svc.Close(context.Background()))
}

// TestServiceNewRefusesBadConfig checks that New checks its Config.
func TestServiceNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	_, err := service.New(service.Config{Role: "leader", DatabaseURL: "postgres://localhost/x"})
	require.ErrorContains(t, err, `--role must be all, web or worker, not "leader"`)
}

// TestServiceMigrate checks that Migrate brings a fresh schema up to date and Close releases the pool.
func TestServiceMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, _ := dbtest.NewSchema(t)
	svc, err := service.New(service.Config{DatabaseURL: url, Logger: quietLogger})
	require.NoError(t, err)
	require.NoError(t, svc.Migrate(ctx))
	require.NoError(t, migrations.Check(ctx, svc.Pool()))
	require.NoError(t, svc.Close(ctx))
	require.Nil(t, svc.Pool())
}
