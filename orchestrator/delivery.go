package orchestrator

import (
	"bytes"
	"errors"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator/hub"
)

// DeliverySource says who recorded a delivery.
type DeliverySource string

// Delivery sources.
const (
	// DeliverySourceWebhook is a delivery posted by the Hub.
	DeliverySourceWebhook DeliverySource = "webhook"
	// DeliverySourceReconcile marks the deliveries that catch-up records when the Hub has a revision the
	// webhooks did not bring.
	DeliverySourceReconcile DeliverySource = "reconcile"
)

// DeliverySources lists every delivery source.
var DeliverySources = []DeliverySource{DeliverySourceWebhook, DeliverySourceReconcile}

// Secret says which webhook secret authenticated a delivery.
type Secret string

// Webhook secrets a delivery may have been authenticated with.
const (
	SecretCurrent  Secret = "current"  // HUGGINGFACE_WEBHOOK_SECRET
	SecretPrevious Secret = "previous" // HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS, accepted during a rotation
)

// Secrets lists every webhook secret.
var Secrets = []Secret{SecretCurrent, SecretPrevious}

// Delivery is a parsed Hugging Face webhook body: the few fields the orchestrator reads, and the body to keep.
type Delivery struct {
	Scope     string
	Action    string
	RepoType  string
	RepoName  string
	RepoID    string
	HeadSha   string
	WebhookID string
	Refs      []RefUpdate
	// Raw is the body as it is stored: the bytes received, or a shortened copy of them when ShortenedFrom is
	// set.
	Raw []byte
	// ShortenedFrom is the size in bytes of the body received when Raw is a shortened copy of it: the body of
	// a delivery that cannot trigger a run, larger than PayloadWholeMax (see hub.ShortenPayload). Zero when Raw is
	// the body as received.
	ShortenedFrom int64
}

// RefUpdate is one entry of a delivery's updatedRefs. OldSha is empty for a created ref, NewSha for a deleted one.
type RefUpdate struct {
	Ref    string `json:"ref"`
	OldSha string `json:"old_sha,omitempty"`
	NewSha string `json:"new_sha,omitempty"`
}

// Event returns "<scope>.<action>", e.g. "repo.content.update".
func (d *Delivery) Event() string { return d.Scope + "." + d.Action }

// IsContentUpdate reports whether the delivery announces new commits, branches or tags: the scope repo.content
// or a narrowed scope below it (repo.content.x), which is an update of the broader scope.
func (d *Delivery) IsContentUpdate() bool {
	return d.Scope == hub.ScopeRepoContent || strings.HasPrefix(d.Scope, hub.ScopeRepoContent+".")
}

// MayTrigger reports whether the delivery is of the one kind that can trigger runs: a content update of a
// dataset. Decide ignores every other delivery as a whole, whatever the mappings.
func (d *Delivery) MayTrigger() bool {
	return d.IsContentUpdate() && d.RepoType == hub.RepoTypeDataset
}

// ParseDelivery parses a webhook body leniently, as hub.ParsePayload does: unknown fields are ignored, but the
// body must be a JSON object with event.scope, event.action, repo.type and repo.name, and every field read must
// have the right type. Errors are *Error with CodeInvalid and a message that says what is wrong.
//
// The Delivery refers to raw rather than copying it, except that a body larger than PayloadWholeMax of a
// delivery that cannot trigger is replaced by a shortened copy (ShortenedFrom).
func ParseDelivery(raw []byte) (*Delivery, error) {
	p, err := hub.ParsePayload(raw)
	if err != nil {
		if pe, ok := errors.AsType[*hub.PayloadError](err); ok {
			return nil, &Error{Code: CodeInvalid, Message: pe.Message, Err: pe.Err}
		}
		return nil, WrapError(CodeInvalid, err, "invalid payload")
	}
	d := &Delivery{
		Scope: *p.Event.Scope, Action: *p.Event.Action,
		RepoType: *p.Repo.Type, RepoName: *p.Repo.Name, RepoID: hub.Value(p.Repo.ID), HeadSha: hub.Value(p.Repo.HeadSha),
		Raw: raw,
	}
	if p.Webhook != nil {
		d.WebhookID = hub.Value(p.Webhook.ID)
	}
	for _, r := range p.UpdatedRefs {
		d.Refs = append(d.Refs, RefUpdate{Ref: *r.Ref, OldSha: hub.Value(r.OldSha), NewSha: hub.Value(r.NewSha)})
	}
	if len(raw) > PayloadWholeMax && !d.MayTrigger() {
		d.Raw, d.ShortenedFrom = hub.ShortenPayload(bytes.TrimLeft(raw, " \t\r\n"), PayloadWholeMax), int64(len(raw))
	}
	return d, nil
}

// DeliveryRecord is a stored delivery with the decisions taken for it.
type DeliveryRecord struct {
	ID         int64          `json:"id"`
	ReceivedAt time.Time      `json:"received_at"`
	Source     DeliverySource `json:"source"`
	Event      string         `json:"event"`
	RepoType   string         `json:"repo_type"`
	RepoName   string         `json:"repo_name"`
	RepoID     string         `json:"repo_id"`
	WebhookID  string         `json:"webhook_id"`
	RemoteAddr string         `json:"remote_addr"`
	Secret     Secret         `json:"secret"`
	Refs       []RefUpdate    `json:"refs"`
	Decisions  []Decision     `json:"decisions"`
}
