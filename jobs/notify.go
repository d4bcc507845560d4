package jobs

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Defaults of the notification sender.
const (
	// NotifyTimeoutDefault bounds one delivery attempt: connecting, sending and reading the answer.
	NotifyTimeoutDefault = 10 * time.Second
	// NotifyMaxAttempts is how many times a notification is tried before it is given up as failed.
	NotifyMaxAttempts = 10
	// NotifyRetryBaseDefault is the wait after the first failed attempt; it doubles after each one.
	NotifyRetryBaseDefault = 5 * time.Second
	// NotifyRetryMax caps the wait between two attempts.
	NotifyRetryMax = 10 * time.Minute
	// NotifyMaxWorkersDefault is how many notifications one process sends at once.
	NotifyMaxWorkersDefault = 8
	// notifyResponseMax is how much of a target's answer is kept with the attempt.
	notifyResponseMax = 4 << 10
)

// Headers of a notification request.
const (
	HeaderEvent     = "X-Orchestrator-Event"
	HeaderDelivery  = "X-Orchestrator-Delivery"
	HeaderTimestamp = "X-Orchestrator-Timestamp"
	HeaderSignature = "X-Orchestrator-Signature"
)

// NotifyArgs is the River job of one notification; the notifications row holds the rest.
type NotifyArgs struct {
	NotificationID int64 `json:"notification_id"`
}

// Kind implements river.JobArgs.
func (NotifyArgs) Kind() string { return "notify" }

// InsertOpts puts the job on the notify queue with its attempts.
func (NotifyArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: orchestrator.QueueNotify, MaxAttempts: NotifyMaxAttempts}
}

// NotifyConfig configures the NotifyWorker.
type NotifyConfig struct {
	// PublicURL is the address the console is reached at, such as https://orchestrator.example.com; when set,
	// notifications link to the run's page.
	PublicURL string
	// Timeout bounds one attempt. Defaults to NotifyTimeoutDefault.
	Timeout time.Duration
	// RetryBase is the wait after the first failed attempt, doubled after each further one up to
	// NotifyRetryMax. Defaults to NotifyRetryBaseDefault.
	RetryBase time.Duration
	// MaxWorkers is how many notifications this process sends at once. Defaults to NotifyMaxWorkersDefault.
	MaxWorkers int
	// Getenv reads the secrets named by the targets' secret_env. Defaults to os.Getenv.
	Getenv func(string) string
	// Metrics, when set, counts attempts by event and outcome.
	Metrics *Metrics
	// Logger receives the sender's log lines.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c NotifyConfig) WithDefaults() NotifyConfig {
	if c.Timeout <= 0 {
		c.Timeout = NotifyTimeoutDefault
	}
	if c.RetryBase <= 0 {
		c.RetryBase = NotifyRetryBaseDefault
	}
	if c.MaxWorkers <= 0 {
		c.MaxWorkers = NotifyMaxWorkersDefault
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	return c
}

// NotifyWorker sends a notification to its target and records each attempt.
type NotifyWorker struct {
	river.WorkerDefaults[NotifyArgs]
	store  *orchestrator.Store
	cfg    NotifyConfig
	client *http.Client
}

// NewNotifyWorker returns a worker that sends the notifications recorded in store.
func NewNotifyWorker(store *orchestrator.Store, cfg NotifyConfig) *NotifyWorker {
	cfg = cfg.WithDefaults()
	return &NotifyWorker{store: store, cfg: cfg, client: &http.Client{
		Timeout: cfg.Timeout,
		// A redirect is an answer like any other that is not 2xx: following it could send the run and its
		// signature to another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Timeout bounds a job: the attempt, plus time to record it.
func (w *NotifyWorker) Timeout(*river.Job[NotifyArgs]) time.Duration {
	return w.cfg.Timeout + 30*time.Second
}

// NextRetry waits RetryBase after the first failed attempt, doubling up to NotifyRetryMax.
func (w *NotifyWorker) NextRetry(job *river.Job[NotifyArgs]) time.Time {
	return time.Now().Add(w.retryDelay(job.Attempt))
}

func (w *NotifyWorker) retryDelay(attempt int) time.Duration {
	d := w.cfg.RetryBase
	for i := 1; i < attempt && d < NotifyRetryMax; i++ {
		d *= 2
	}
	return min(d, NotifyRetryMax)
}

// Work makes one attempt to deliver a notification. A failed attempt returns an error, so that River tries
// again later; the last one leaves the notification failed.
func (w *NotifyWorker) Work(ctx context.Context, job *river.Job[NotifyArgs]) error {
	logger := w.cfg.Logger.With("notification_id", job.Args.NotificationID, "attempt", job.Attempt)
	n, run, err := w.store.NotificationForSend(ctx, job.Args.NotificationID)
	if err != nil {
		if orchestrator.ErrorCode(err) == orchestrator.CodeNotFound {
			return river.JobCancel(err)
		}
		return err
	}
	if n.State != orchestrator.NotificationPending {
		return nil
	}
	started := time.Now()
	attempt := orchestrator.NotificationAttemptParams{NotificationID: n.ID, Attempt: job.Attempt, StartedAt: started}

	var secret string
	if n.SecretEnv != "" {
		if secret = w.cfg.Getenv(n.SecretEnv); secret == "" {
			// Retrying cannot help before the process is restarted with the variable set.
			attempt.Error = fmt.Sprintf("secret_env %s is not set in the sending process's environment", n.SecretEnv)
			attempt.State = orchestrator.NotificationFailed
			if err := w.record(ctx, attempt); err != nil {
				return err
			}
			w.cfg.Metrics.observeNotification(n.Event, notifyFailed)
			logger.WarnContext(ctx, "notification not sent", "target", n.Target(), "error", attempt.Error)
			return river.JobCancel(errors.New(attempt.Error))
		}
	}

	body, err := w.body(n, run)
	if err != nil {
		return river.JobCancel(fmt.Errorf("build notification: %w", err))
	}
	code, response, sendErr := w.send(ctx, n, body, secret)
	attempt.Duration, attempt.StatusCode, attempt.Response = time.Since(started), code, response
	outcome := notifyDelivered
	switch {
	case sendErr == nil:
		attempt.State = orchestrator.NotificationDelivered
	case job.Attempt >= job.MaxAttempts:
		attempt.State, attempt.Error, outcome = orchestrator.NotificationFailed, sendErr.Error(), notifyFailed
	default:
		attempt.State, attempt.Error, outcome = orchestrator.NotificationPending, sendErr.Error(), notifyRetry
	}
	if err := w.record(ctx, attempt); err != nil {
		return err
	}
	w.cfg.Metrics.observeNotification(n.Event, outcome)
	if sendErr != nil {
		logger.InfoContext(ctx, "notification attempt failed", "target", n.Target(), "event", n.Event,
			"outcome", outcome, "error", sendErr)
		return sendErr
	}
	logger.InfoContext(ctx, "notification delivered", "target", n.Target(), "event", n.Event, "run_id", n.RunID)
	return nil
}

// record stores an attempt, even when the job's context is done.
func (w *NotifyWorker) record(ctx context.Context, p orchestrator.NotificationAttemptParams) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return w.store.NotificationAttemptRecord(ctx, p)
}

// send posts body to the notification's target. It returns the status code when an answer came, the start of
// the answer, and an error unless the answer was 2xx. Errors never contain the full URL.
func (w *NotifyWorker) send(ctx context.Context, n *orchestrator.Notification, body []byte, secret string) (*int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(body))
	if err != nil {
		return nil, "", fmt.Errorf("build request to %s: invalid URL", n.Target())
	}
	timestamp := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "retrain-orchestrator")
	req.Header.Set(HeaderEvent, string(n.Event))
	req.Header.Set(HeaderDelivery, strconv.FormatInt(n.ID, 10))
	req.Header.Set(HeaderTimestamp, timestamp)
	if secret != "" {
		req.Header.Set(HeaderSignature, Sign(secret, timestamp, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // its message holds the URL, which may be a secret
		}
		return nil, "", fmt.Errorf("POST %s: %w", n.Target(), err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, notifyResponseMax))
	snippet := strings.ToValidUTF8(strings.ReplaceAll(string(data), "\x00", ""), "\uFFFD")
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return &code, snippet, nil
	case code >= 300 && code < 400:
		return &code, snippet, fmt.Errorf("%s answered %s; redirects are not followed", n.Target(), resp.Status)
	}
	return &code, snippet, fmt.Errorf("%s answered %s", n.Target(), resp.Status)
}

// Sign returns the X-Orchestrator-Signature of a notification: "sha256=" and the hex HMAC-SHA256, keyed with
// secret, of the timestamp, a dot and the body.
func Sign(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// NotifyRun is the run as a JSON notification describes it.
type NotifyRun struct {
	ID         int64                  `json:"id"`
	Mapping    string                 `json:"mapping"`
	Dataset    string                 `json:"dataset"`
	Ref        string                 `json:"ref"`
	Revision   string                 `json:"revision"`
	Status     orchestrator.RunStatus `json:"status"`
	Attempt    int                    `json:"attempt"`
	ExitCode   *int                   `json:"exit_code"`
	Error      string                 `json:"error"`
	Output     json.RawMessage        `json:"output"`
	StartedAt  *time.Time             `json:"started_at"`
	FinishedAt *time.Time             `json:"finished_at"`
	// URL is the run's page, when the orchestrator knows its public address.
	URL string `json:"url,omitempty"`
}

// NotifyBody is the body of a JSON notification.
type NotifyBody struct {
	Event  orchestrator.NotifyEvent `json:"event"`
	Run    NotifyRun                `json:"run"`
	SentAt time.Time                `json:"sent_at"`
}

// runURL returns the run's page, or "" without a public URL.
func (w *NotifyWorker) runURL(run *orchestrator.Run) string {
	if w.cfg.PublicURL == "" {
		return ""
	}
	return fmt.Sprintf("%s/runs/%d", w.cfg.PublicURL, run.ID)
}

// body returns the request body in the notification's format.
func (w *NotifyWorker) body(n *orchestrator.Notification, run *orchestrator.Run) ([]byte, error) {
	if n.Format == orchestrator.NotifyFormatSlack {
		return json.Marshal(map[string]string{"text": SlackText(n.Event, run, w.runURL(run))})
	}
	output := run.Output
	if len(output) == 0 {
		output = nil
	}
	return json.Marshal(NotifyBody{Event: n.Event, SentAt: time.Now().UTC(), Run: NotifyRun{
		ID: run.ID, Mapping: run.Mapping, Dataset: run.Dataset, Ref: run.Ref, Revision: run.Revision,
		Status: run.Status, Attempt: run.Attempt, ExitCode: run.ExitCode, Error: run.Error, Output: output,
		StartedAt: run.StartedAt, FinishedAt: run.FinishedAt, URL: w.runURL(run),
	}})
}

// slackEscaper escapes the characters Slack's message format reserves.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// SlackText returns the one-line message of a Slack notification: what happened, to which mapping, dataset,
// revision and ref, why it failed, and a link to the run when runURL is set.
func SlackText(event orchestrator.NotifyEvent, run *orchestrator.Run, runURL string) string {
	var b strings.Builder
	switch event {
	case orchestrator.NotifyFailed:
		b.WriteString(":x: ")
	default:
		b.WriteString(":white_check_mark: ")
	}
	fmt.Fprintf(&b, "*%s* ", slackEscaper.Replace(run.Mapping))
	switch event {
	case orchestrator.NotifyRecovered:
		b.WriteString("recovered: ")
	case orchestrator.NotifyFailed:
		b.WriteString("failed: ")
	default:
		b.WriteString("succeeded: ")
	}
	fmt.Fprintf(&b, "run #%d on %s@%s (%s)", run.ID, slackEscaper.Replace(run.Dataset), run.ShortRevision(),
		slackEscaper.Replace(run.Ref))
	if run.Status == orchestrator.RunFailed {
		reason := run.Error
		if reason == "" && run.ExitCode != nil {
			reason = fmt.Sprintf("exit code %d", *run.ExitCode)
		}
		if reason != "" {
			if len(reason) > 300 {
				reason = strings.ToValidUTF8(reason[:300], "") + "…"
			}
			fmt.Fprintf(&b, ": %s", slackEscaper.Replace(reason))
		}
	}
	if runURL != "" {
		fmt.Fprintf(&b, " <%s|view run>", runURL)
	}
	return b.String()
}
