package orchestrator

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// NotifyEvent is a transition of a run that a notify target may ask to hear about.
type NotifyEvent string

// Notify events.
const (
	// NotifyFailed fires when a run ends failed.
	NotifyFailed NotifyEvent = "failed"
	// NotifySucceeded fires when a run ends succeeded.
	NotifySucceeded NotifyEvent = "succeeded"
	// NotifyRecovered fires when a run succeeds and the previous finished run of the same mapping and ref failed.
	NotifyRecovered NotifyEvent = "recovered"
)

// NotifyEvents lists every notify event.
var NotifyEvents = []NotifyEvent{NotifyFailed, NotifySucceeded, NotifyRecovered}

// NotifyFormat is the shape of a notification's body.
type NotifyFormat string

// Formats of a notification's body.
const (
	// NotifyFormatJSON posts a JSON document describing the run, signed when the target has a secret.
	NotifyFormatJSON NotifyFormat = "json"
	// NotifyFormatSlack posts {"text": "..."} as a Slack-compatible incoming webhook expects.
	NotifyFormatSlack NotifyFormat = "slack"
)

// NotifyFormats lists every notification format.
var NotifyFormats = []NotifyFormat{NotifyFormatJSON, NotifyFormatSlack}

// NotifyTargetError says what is wrong with one of a mapping's notify targets: Index is its position in the
// mapping's list, from 0. Validation and ResolveNotifyURLs return it inside an *Error with CodeInvalid, whose
// message is this error's: "notify[2]: url must not be empty".
type NotifyTargetError struct {
	Index int
	Err   error
}

// Error implements the error interface.
func (e *NotifyTargetError) Error() string { return fmt.Sprintf("notify[%d]: %s", e.Index, e.Err) }

// Unwrap returns what is wrong with the target.
func (e *NotifyTargetError) Unwrap() error { return e.Err }

// notifyTargetError returns the invalid-request error for target i of a mapping, whose fault is err.
func notifyTargetError(i int, err error) *Error {
	return &Error{Code: CodeInvalid, Err: &NotifyTargetError{Index: i, Err: err}}
}

// Limits of a mapping's notify targets.
const (
	// NotifyTargetsMax is the most notify targets a mapping may have.
	NotifyTargetsMax = 10
	// NotifyURLMaxLen is the longest target URL accepted.
	NotifyURLMaxLen = 2048
)

// NotifyOnDefault is what a target hears about when it does not say: failures, and the success that ends them.
var NotifyOnDefault = []NotifyEvent{NotifyFailed, NotifyRecovered}

// NotifyTarget is where a mapping's run notifications go. The secret that signs them is never stored: SecretEnv
// names the environment variable of the sending process that holds it.
type NotifyTarget struct {
	URL       string        `json:"url" yaml:"url"`
	Format    NotifyFormat  `json:"format" yaml:"format"`
	On        []NotifyEvent `json:"on" yaml:"on"`
	SecretEnv string        `json:"secret_env,omitempty" yaml:"secret_env"`
}

// withDefaults returns t with an empty format and event list replaced by their defaults.
func (t NotifyTarget) withDefaults() NotifyTarget {
	t.URL = strings.TrimSpace(t.URL)
	if t.Format == "" {
		t.Format = NotifyFormatJSON
	}
	if len(t.On) == 0 {
		t.On = slices.Clone(NotifyOnDefault)
	} else {
		t.On = slices.Clone(t.On)
	}
	return t
}

// validate checks one target, with its defaults applied.
func (t NotifyTarget) validate() error {
	if t.URL == "" {
		return fmt.Errorf("url must not be empty")
	}
	if len(t.URL) > NotifyURLMaxLen {
		return fmt.Errorf("url must be at most %d characters", NotifyURLMaxLen)
	}
	u, err := url.Parse(t.URL)
	if err != nil {
		return fmt.Errorf("url is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "" {
		return fmt.Errorf("url scheme %q must be http or https", u.Scheme)
	}
	if u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("url must be an absolute http or https URL, such as https://hooks.example.com/orchestrator")
	}
	if strings.Contains(t.URL, redactedMore) {
		return fmt.Errorf("url contains '…', as the shortened form shown for a target does: give the full URL")
	}
	if !slices.Contains(NotifyFormats, t.Format) {
		return fmt.Errorf("format %q must be %s", t.Format, OneOf(NotifyFormats))
	}
	seen := map[NotifyEvent]bool{}
	for _, e := range t.On {
		if !slices.Contains(NotifyEvents, e) {
			return fmt.Errorf("event %q in on must be %s", e, OneOf(NotifyEvents))
		}
		if seen[e] {
			return fmt.Errorf("event %q is listed twice in on", e)
		}
		seen[e] = true
	}
	if t.SecretEnv != "" && !envNameRE.MatchString(t.SecretEnv) {
		return fmt.Errorf("secret_env %q must be the name of an environment variable: letters, digits and '_', not starting with a digit", t.SecretEnv)
	}
	return nil
}

// Wants reports whether the target asked for event.
func (t NotifyTarget) Wants(event NotifyEvent) bool { return slices.Contains(t.On, event) }

// EventFor returns the event a run that ended with status fires for this target, if any. recovered says
// whether the previous finished run of the same mapping and ref failed. A recovery fires recovered for a
// target that asked for it and succeeded otherwise (when asked for): one event per target at most.
func (t NotifyTarget) EventFor(status RunStatus, recovered bool) (NotifyEvent, bool) {
	switch status {
	case RunFailed:
		return NotifyFailed, t.Wants(NotifyFailed)
	case RunSucceeded:
		if recovered && t.Wants(NotifyRecovered) {
			return NotifyRecovered, true
		}
		return NotifySucceeded, t.Wants(NotifySucceeded)
	}
	return "", false
}

// Redacted returns the target with its URL shortened to scheme://host/…, for showing: a Slack URL carries its
// own secret in its path.
func (t NotifyTarget) Redacted() NotifyTarget {
	t.URL = RedactURL(t.URL)
	return t
}

// RedactURL returns scheme://host of a URL, with "/…" when it has more: path, query or fragment. Credentials
// in the URL are dropped. What cannot be parsed becomes "…".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "…"
	}
	out := u.Scheme + "://" + u.Host
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		out += "/" + redactedMore
	}
	return out
}

// redactedMore stands for the part of a URL that RedactURL leaves out.
const redactedMore = "…"

// ResolveNotifyURL returns the URL a target sent as raw means, given the targets the mapping has now. A client
// that reads a mapping sees each target's URL shortened by RedactURL; when raw is such a shortened form of the
// URL of exactly one existing target, that full URL is returned, so that sending back what was shown keeps the
// target where it was. Any other URL is returned as sent, trimmed, unless it contains '…' (a shortened form that
// matches no target) or is the shortened form of several different URLs: then the full URL is needed, and the
// error, with CodeInvalid, says so.
func ResolveNotifyURL(raw string, existing []NotifyTarget) (string, error) {
	raw = strings.TrimSpace(raw)
	var matches []string
	for _, t := range existing {
		if t.URL != raw && RedactURL(t.URL) == raw && !slices.Contains(matches, t.URL) {
			matches = append(matches, t.URL)
		}
	}
	switch {
	case len(matches) == 1:
		return matches[0], nil
	case len(matches) > 1:
		return "", Errorf(CodeInvalid, "url %q is the shortened form of %d different target URLs of the mapping: send the full URL",
			RedactURL(raw), len(matches))
	case strings.Contains(raw, redactedMore):
		return "", Errorf(CodeInvalid, "url %q is a shortened URL, as shown for a target, and no target of the mapping has it: send the full URL",
			RedactURL(raw))
	}
	return raw, nil
}

// ResolveNotifyURLs returns a copy of targets with each URL resolved by ResolveNotifyURL against existing. The
// error names the first target whose URL cannot be resolved.
func ResolveNotifyURLs(targets, existing []NotifyTarget) ([]NotifyTarget, error) {
	if targets == nil {
		return nil, nil
	}
	out := make([]NotifyTarget, len(targets))
	for i, t := range targets {
		resolved, err := ResolveNotifyURL(t.URL, existing)
		if err != nil {
			return nil, notifyTargetError(i, err)
		}
		t.URL = resolved
		out[i] = t
	}
	return out, nil
}

// MissingNotifySecrets returns a warning for each notify target of the mappings whose secret_env is not set in
// the environment that getenv reads: their notifications would fail.
func MissingNotifySecrets(mappings []Mapping, getenv func(string) string) []string {
	var out []string
	for _, m := range mappings {
		for i, t := range m.Notify {
			if t.SecretEnv != "" && getenv(t.SecretEnv) == "" {
				out = append(out, fmt.Sprintf("mapping %q: notify[%d] (%s) names secret_env %s, which is not set: its notifications will fail",
					m.Name, i, RedactURL(t.URL), t.SecretEnv))
			}
		}
	}
	return out
}

// NotificationState is where a notification stands.
type NotificationState string

// Notification states.
const (
	NotificationPending   NotificationState = "pending"   // not delivered yet; another attempt is scheduled
	NotificationDelivered NotificationState = "delivered" // the target answered 2xx
	NotificationFailed    NotificationState = "failed"    // every attempt failed, or it cannot be sent at all
)

// NotificationStates lists every notification state.
var NotificationStates = []NotificationState{NotificationPending, NotificationDelivered, NotificationFailed}

// Notification is one message to a notify target about a run's transition, with its delivery attempts.
type Notification struct {
	ID     int64
	RunID  int64
	Event  NotifyEvent
	Format NotifyFormat
	// URL is the full target URL; it is never shown (Target is), since a Slack URL is a secret.
	URL         string
	SecretEnv   string
	State       NotificationState
	Attempts    int
	LastError   string
	CreatedAt   time.Time
	DeliveredAt *time.Time
	History     []NotificationAttempt
}

// Target returns the target URL shortened to scheme://host/….
func (n Notification) Target() string { return RedactURL(n.URL) }

// NotificationAttempt is one try to deliver a notification.
type NotificationAttempt struct {
	Attempt    int       `json:"attempt"`
	StartedAt  time.Time `json:"started_at"`
	DurationMS int       `json:"duration_ms"`
	// StatusCode is the HTTP status the target answered, nil when no answer came.
	StatusCode *int   `json:"status_code"`
	Error      string `json:"error"`
	Response   string `json:"response"`
}
