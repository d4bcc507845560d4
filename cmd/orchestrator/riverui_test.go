package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// TestRiverUIBehindToken checks that River's own UI is mounted under /riverui/ and answers only with the admin
// token.
func TestRiverUIBehindToken(t *testing.T) {
	t.Parallel()
	url, _ := dbtest.NewSchema(t)
	svc := startService(t, service.Config{Addr: "127.0.0.1:0", DatabaseURL: url, WebhookSecret: "s", AdminToken: "ui-token",
		MaxBodyBytes: 1 << 20, MaxWorkers: 1, KillGrace: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	base := "http://" + svc.Addr()

	get := func(path string, auth func(*http.Request)) (int, string, http.Header) {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		require.NoError(t, err)
		if auth != nil {
			auth(req)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body), resp.Header
	}

	status, _, _ := get("/riverui/", nil)
	require.Equal(t, http.StatusUnauthorized, status)
	status, _, _ = get("/riverui/", func(r *http.Request) { r.SetBasicAuth("admin", "wrong") })
	require.Equal(t, http.StatusUnauthorized, status)

	status, body, header := get("/riverui/", func(r *http.Request) { r.SetBasicAuth("admin", "ui-token") })
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, strings.ToLower(body), "<html")
	require.Contains(t, header.Get("Content-Security-Policy"), "'unsafe-inline'", "River's UI gets its own policy")

	status, body, _ = get("/riverui/api/queues", func(r *http.Request) { r.Header.Set("Authorization", "Bearer ui-token") })
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, `"runs"`, "the runs queue is listed")
}
