package jobs_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
)

const (
	shaC         = "5e7a9c1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c"
	notifySecret = "s3cret-for-receivers"
	publicURL    = "https://orchestrator.example.com"
)

// setupNotify is setup with a notification sender that retries after milliseconds and reads its secrets from
// env, and NOTIFY_SECRET_OPS in the base environment the commands start from.
func setupNotify(t *testing.T, env map[string]string, mappings ...orchestrator.Mapping) *testBundle {
	t.Helper()
	return setupWith(t, func(cfg *jobs.ClientConfig) {
		cfg.Worker.BaseEnv = append(cfg.Worker.BaseEnv, "NOTIFY_SECRET_OPS="+notifySecret)
		cfg.Notify = jobs.NotifyConfig{
			PublicURL: publicURL + "/", RetryBase: time.Millisecond, Timeout: 500 * time.Millisecond,
			Getenv: func(k string) string { return env[k] },
		}
	}, mappings...)
}

// receiver is an HTTP server that records the notifications it gets and answers each with the next status of
// its script (the last one repeats).
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []receivedRequest
	script   []int
}

type receivedRequest struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, script ...int) *receiver {
	t.Helper()
	r := &receiver{script: script}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.requests = append(r.requests, receivedRequest{header: req.Header.Clone(), body: body})
		status := r.script[min(len(r.requests), len(r.script))-1]
		r.mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "answer "+strconv.Itoa(status))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) received() []receivedRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedRequest(nil), r.requests...)
}

// waitNotification waits until the run has a notification in one of the states and returns it.
func (b *testBundle) waitNotification(t *testing.T, runID int64, timeout time.Duration, states ...orchestrator.NotificationState) orchestrator.Notification {
	t.Helper()
	var found orchestrator.Notification
	require.Eventually(t, func() bool {
		list, err := b.store.NotificationList(context.Background(), runID)
		require.NoError(t, err)
		for _, n := range list {
			for _, s := range states {
				if n.State == s {
					found = n
					return true
				}
			}
		}
		return false
	}, timeout, 10*time.Millisecond, "run %d has no notification in %v", runID, states)
	return found
}

// verifySignature checks a request as a receiver would: HMAC-SHA256 of "<timestamp>.<body>" with the secret.
func verifySignature(secret string, r receivedRequest) bool {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(r.header.Get("X-Orchestrator-Timestamp") + "." + string(r.body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(want), []byte(r.header.Get("X-Orchestrator-Signature")))
}

func notifyTo(url string, format orchestrator.NotifyFormat, secretEnv string, on ...orchestrator.NotifyEvent) func(*orchestrator.Mapping) {
	return func(m *orchestrator.Mapping) {
		m.MaxAttempts = 1
		m.Notify = append(m.Notify, orchestrator.NotifyTarget{URL: url, Format: format, SecretEnv: secretEnv, On: on})
		*m = m.WithDefaults()
	}
}

func TestNotifyWorker(t *testing.T) {
	t.Parallel()
	env := map[string]string{"NOTIFY_SECRET_OPS": notifySecret}

	t.Run("SignedJSONDescribesTheRun", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, http.StatusOK)
		b := setupNotify(t, env, shMapping("signed", `echo "secret=${NOTIFY_SECRET_OPS:-unset}"; exit 3`,
			notifyTo(rcv.URL+"/hooks/orchestrator", "", "NOTIFY_SECRET_OPS")))
		runID := b.push(t, "acme/signed", "refs/heads/main", shaB)
		run := b.waitStatus(t, runID, 10*time.Second, orchestrator.RunFailed)
		require.Equal(t, "secret=unset\n", b.log(t, runID, 1), "the command never sees a notification secret")

		n := b.waitNotification(t, runID, 10*time.Second, orchestrator.NotificationDelivered)
		require.Equal(t, orchestrator.NotifyFailed, n.Event)
		require.Equal(t, 1, n.Attempts)
		require.Len(t, n.History, 1)
		require.Equal(t, http.StatusOK, *n.History[0].StatusCode)
		require.Equal(t, "answer 200", n.History[0].Response)
		require.NotNil(t, n.DeliveredAt)

		reqs := rcv.received()
		require.Len(t, reqs, 1)
		r := reqs[0]
		require.True(t, verifySignature(notifySecret, r), "signature %q", r.header.Get("X-Orchestrator-Signature"))
		require.False(t, verifySignature("wrong secret", r))
		ts, err := strconv.ParseInt(r.header.Get("X-Orchestrator-Timestamp"), 10, 64)
		require.NoError(t, err)
		require.WithinDuration(t, time.Now(), time.Unix(ts, 0), time.Minute)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		require.Equal(t, "failed", r.header.Get("X-Orchestrator-Event"))
		require.Equal(t, strconv.FormatInt(n.ID, 10), r.header.Get("X-Orchestrator-Delivery"))

		var body jobs.NotifyBody
		require.NoError(t, json.Unmarshal(r.body, &body))
		require.Equal(t, orchestrator.NotifyFailed, body.Event)
		require.Equal(t, jobs.NotifyRun{
			ID: runID, Mapping: "signed", Dataset: "acme/signed", Ref: "refs/heads/main", Revision: shaB,
			Status: orchestrator.RunFailed, Attempt: 1, ExitCode: run.ExitCode, Error: "exit code 3", Output: json.RawMessage("null"),
			StartedAt: body.Run.StartedAt, FinishedAt: body.Run.FinishedAt,
			URL: publicURL + "/runs/" + strconv.FormatInt(runID, 10),
		}, body.Run)
		require.WithinDuration(t, *run.FinishedAt, *body.Run.FinishedAt, time.Millisecond)
		require.WithinDuration(t, time.Now(), body.SentAt, time.Minute)
	})

	t.Run("FlakyReceiverGetsItOnTheThirdAttempt", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, http.StatusInternalServerError, http.StatusInternalServerError, http.StatusOK)
		b := setupNotify(t, env, shMapping("flaky", `exit 0`,
			notifyTo(rcv.URL, orchestrator.NotifyFormatJSON, "", orchestrator.NotifySucceeded)))
		runID := b.push(t, "acme/flaky", "refs/heads/main", shaB)
		b.waitStatus(t, runID, 10*time.Second, orchestrator.RunSucceeded)
		n := b.waitNotification(t, runID, 10*time.Second, orchestrator.NotificationDelivered)
		require.Equal(t, orchestrator.NotifySucceeded, n.Event)
		require.Equal(t, 3, n.Attempts)
		require.Len(t, n.History, 3)
		for i, code := range []int{500, 500, 200} {
			require.Equal(t, i+1, n.History[i].Attempt)
			require.Equal(t, code, *n.History[i].StatusCode)
		}
		require.Contains(t, n.History[0].Error, "answered 500 Internal Server Error")
		require.Empty(t, n.History[2].Error)
		require.Empty(t, n.LastError)
		reqs := rcv.received()
		require.Len(t, reqs, 3)
		for _, r := range reqs {
			require.Equal(t, strconv.FormatInt(n.ID, 10), r.header.Get("X-Orchestrator-Delivery"), "the same delivery each time")
			require.Empty(t, r.header.Get("X-Orchestrator-Signature"), "no secret, no signature")
		}
	})

	t.Run("GivesUpAfterMaxAttempts", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, http.StatusServiceUnavailable)
		b := setupNotify(t, env, shMapping("unavailable", `exit 1`, notifyTo(rcv.URL, "", "")))
		runID := b.push(t, "acme/unavailable", "refs/heads/main", shaB)
		n := b.waitNotification(t, runID, 30*time.Second, orchestrator.NotificationFailed)
		require.Equal(t, jobs.NotifyMaxAttempts, n.Attempts)
		require.Len(t, n.History, jobs.NotifyMaxAttempts)
		require.Contains(t, n.LastError, "answered 503")
		require.Len(t, rcv.received(), jobs.NotifyMaxAttempts)
	})

	t.Run("SlackFormat", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, http.StatusOK)
		b := setupNotify(t, env, shMapping("slacked", `exit 2`,
			notifyTo(rcv.URL+"/services/T0/B0/secret", orchestrator.NotifyFormatSlack, "")))
		runID := b.push(t, "acme/slacked", "refs/heads/main", shaB)
		n := b.waitNotification(t, runID, 10*time.Second, orchestrator.NotificationDelivered)
		require.Equal(t, rcv.URL+"/…", n.Target(), "the page shows scheme://host/… only")
		var body map[string]string
		require.NoError(t, json.Unmarshal(rcv.received()[0].body, &body))
		require.Equal(t, ":x: *slacked* failed: run #"+strconv.FormatInt(runID, 10)+" on acme/slacked@"+shaB[:12]+
			" (refs/heads/main): exit code 2 <"+publicURL+"/runs/"+strconv.FormatInt(runID, 10)+"|view run>", body["text"])
	})

	t.Run("MissingSecretFailsAtOnce", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, http.StatusOK)
		b := setupNotify(t, env, shMapping("nosecret", `exit 1`, notifyTo(rcv.URL, "", "NOTIFY_SECRET_MISSING")))
		runID := b.push(t, "acme/nosecret", "refs/heads/main", shaB)
		n := b.waitNotification(t, runID, 10*time.Second, orchestrator.NotificationFailed)
		require.Equal(t, "secret_env NOTIFY_SECRET_MISSING is not set in the sending process's environment", n.LastError)
		require.Len(t, n.History, 1)
		require.Nil(t, n.History[0].StatusCode)
		require.Empty(t, rcv.received(), "nothing unsigned is sent")
	})

	t.Run("RedirectIsNotFollowed", func(t *testing.T) {
		t.Parallel()
		elsewhere := newReceiver(t, http.StatusOK)
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL, http.StatusTemporaryRedirect)
		}))
		t.Cleanup(redirector.Close)
		b := setupNotify(t, env, shMapping("redirected", `exit 1`, notifyTo(redirector.URL, "", "NOTIFY_SECRET_OPS")))
		runID := b.push(t, "acme/redirected", "refs/heads/main", shaB)
		n := b.waitNotification(t, runID, 10*time.Second, orchestrator.NotificationPending, orchestrator.NotificationFailed)
		require.Eventually(t, func() bool {
			list, err := b.store.NotificationList(context.Background(), runID)
			require.NoError(t, err)
			n = list[0]
			return len(n.History) > 0
		}, 10*time.Second, 10*time.Millisecond)
		require.Equal(t, http.StatusTemporaryRedirect, *n.History[0].StatusCode)
		require.Contains(t, n.History[0].Error, "redirects are not followed")
		require.Empty(t, elsewhere.received())
	})
}

// TestNotifyReceiverDownDoesNotBlockRuns checks that a target that refuses connections, or accepts them and
// never answers, delays neither the run's completion nor the next run, while its attempts are recorded.
func TestNotifyReceiverDownDoesNotBlockRuns(t *testing.T) {
	t.Parallel()

	hanging := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hanging:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hanging); hang.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	downURL := "http://" + ln.Addr().String() + "/hook"
	require.NoError(t, ln.Close())

	cases := []struct {
		name, url, wantErr string
	}{
		{"Refused", downURL, "connection refused"},
		{"NeverAnswers", hang.URL, "Client.Timeout exceeded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupNotify(t, nil, shMapping("down", `exit 0`, notifyTo(tc.url, "", "", orchestrator.NotifySucceeded)))
			first := b.push(t, "acme/down", "refs/heads/main", shaB)
			run := b.waitStatus(t, first, 10*time.Second, orchestrator.RunSucceeded)
			require.Less(t, run.FinishedAt.Sub(*run.StartedAt), 5*time.Second)
			second := b.push(t, "acme/down", "refs/heads/main", shaC)
			b.waitStatus(t, second, 10*time.Second, orchestrator.RunSucceeded)

			require.Eventually(t, func() bool {
				list, err := b.store.NotificationList(context.Background(), first)
				require.NoError(t, err)
				return len(list) == 1 && len(list[0].History) >= 2
			}, 20*time.Second, 20*time.Millisecond, "attempts are recorded and retried")
			list, err := b.store.NotificationList(context.Background(), first)
			require.NoError(t, err)
			a := list[0].History[0]
			require.Nil(t, a.StatusCode)
			require.Contains(t, a.Error, tc.wantErr)
			require.Contains(t, a.Error, "POST http://127.0.0.1:", "the error names the host")
			require.NotContains(t, a.Error, "/hook", "never the full URL")
		})
	}
}

func TestSlackText(t *testing.T) {
	t.Parallel()
	exit := 1
	run := &orchestrator.Run{ID: 7, Mapping: "clf", Dataset: "acme/data", Ref: "refs/heads/main", Revision: shaB,
		Status: orchestrator.RunFailed, ExitCode: &exit}
	cases := []struct {
		name   string
		event  orchestrator.NotifyEvent
		status orchestrator.RunStatus
		err    string
		url    string
		want   string
	}{
		{"FailedWithExitCode", orchestrator.NotifyFailed, orchestrator.RunFailed, "", "",
			":x: *clf* failed: run #7 on acme/data@8d2f4a6c8e0b (refs/heads/main): exit code 1"},
		{"ErrorEscaped", orchestrator.NotifyFailed, orchestrator.RunFailed, "bad <input> & more", "",
			":x: *clf* failed: run #7 on acme/data@8d2f4a6c8e0b (refs/heads/main): bad &lt;input&gt; &amp; more"},
		{"RecoveredWithLink", orchestrator.NotifyRecovered, orchestrator.RunSucceeded, "", "https://o.example.com/runs/7",
			":white_check_mark: *clf* recovered: run #7 on acme/data@8d2f4a6c8e0b (refs/heads/main) <https://o.example.com/runs/7|view run>"},
		{"Succeeded", orchestrator.NotifySucceeded, orchestrator.RunSucceeded, "", "",
			":white_check_mark: *clf* succeeded: run #7 on acme/data@8d2f4a6c8e0b (refs/heads/main)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := *run
			r.Status, r.Error = tc.status, tc.err
			require.Equal(t, tc.want, jobs.SlackText(tc.event, &r, tc.url))
		})
	}
}
