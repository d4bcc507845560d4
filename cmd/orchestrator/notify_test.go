package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/orchestrator/logtest"
	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// TestNotifyEndToEnd runs the whole orchestrator with a mapping that notifies a receiver: a failed run is
// reported with a verifiable signature and a link under ORCHESTRATOR_PUBLIC_URL, the attempt shows in the run
// API and in the metrics, and a target whose secret variable is unset is warned about at start.
func TestNotifyEndToEnd(t *testing.T) {
	t.Parallel()
	type received struct {
		header http.Header
		body   []byte
	}
	got := make(chan received, 4)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{r.Header.Clone(), body}
	}))
	t.Cleanup(rcv.Close)

	url, _ := dbtest.NewSchema(t)
	cfg := writeConfig(t, t.TempDir(), `
mappings:
  - name: bad
    dataset: acme/bad
    command: ["false"]
    max_attempts: 1
    notify:
      - url: `+rcv.URL+`/hook
        secret_env: E2E_NOTIFY_SECRET
      - url: https://hooks.example.com/never
        on: [succeeded]
        secret_env: E2E_NOTIFY_UNSET
`)
	env := map[string]string{"E2E_NOTIFY_SECRET": "receiver-secret"}
	logs := &logtest.Buffer{}
	svc := startService(t, service.Config{Addr: "127.0.0.1:0", ConfigPath: cfg, DatabaseURL: url, WebhookSecret: e2eSecret,
		PublicURL: "https://orchestrator.example.com",
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Getenv:    func(k string) string { return env[k] }})
	require.Contains(t, logs.String(), "names secret_env E2E_NOTIFY_UNSET, which is not set")
	require.NotContains(t, logs.String(), "/never", "the warning shows the target as scheme://host/… only")
	base := "http://" + svc.Addr()

	delivery := postDelivery(t, base, push("acme/bad", randomRevision()))
	runID := int64(delivery["runs"].([]any)[0].(float64))
	waitRun(t, base, runID, "failed")

	var r received
	select {
	case r = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no notification arrived")
	}
	mac := hmac.New(sha256.New, []byte("receiver-secret"))
	mac.Write([]byte(r.header.Get("X-Orchestrator-Timestamp") + "." + string(r.body)))
	require.Equal(t, "sha256="+hex.EncodeToString(mac.Sum(nil)), r.header.Get("X-Orchestrator-Signature"))
	var body struct {
		Event string `json:"event"`
		Run   struct {
			ID  int64  `json:"id"`
			URL string `json:"url"`
		} `json:"run"`
	}
	require.NoError(t, json.Unmarshal(r.body, &body))
	require.Equal(t, "failed", body.Event)
	require.Equal(t, runID, body.Run.ID)
	require.Equal(t, fmt.Sprintf("https://orchestrator.example.com/runs/%d", runID), body.Run.URL)

	require.Eventually(t, func() bool {
		resp, err := http.Get(fmt.Sprintf("%s/api/v1/runs/%d", base, runID))
		require.NoError(t, err)
		defer resp.Body.Close()
		var run struct {
			Notifications []struct {
				State  string `json:"state"`
				Target string `json:"target"`
			} `json:"notifications"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&run))
		return len(run.Notifications) == 1 && run.Notifications[0].State == "delivered" &&
			run.Notifications[0].Target == rcv.URL+"/…"
	}, 10*time.Second, 20*time.Millisecond)

	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(metrics), `orchestrator_notifications_total{event="failed",outcome="delivered"} 1`)
	require.Empty(t, got, "one notification: the other target listens for successes only")
	require.False(t, strings.Contains(logs.String(), "receiver-secret"), "the secret is never logged")
}

func TestPublicURLConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		value, wantErr string
	}{
		{"", ""},
		{"https://orchestrator.example.com", ""},
		{"http://10.0.0.5:8080/orchestrator", ""},
		{"orchestrator.example.com", "ORCHESTRATOR_PUBLIC_URL"},
		{"ftp://orchestrator.example.com", "must be an http or https URL"},
		{"https://orchestrator.example.com/?x=1", "without query"},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseServe(nil, map[string]string{"ORCHESTRATOR_PUBLIC_URL": tc.value})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.value, cfg.PublicURL)
		})
	}
}
