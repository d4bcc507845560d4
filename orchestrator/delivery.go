package orchestrator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Delivery sources.
const (
	DeliverySourceWebhook = "webhook" // posted by the Hub
)

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
	// a delivery that cannot trigger a run, larger than PayloadWholeMax (see shortenPayload). Zero when Raw is
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
	return d.Scope == "repo.content" || strings.HasPrefix(d.Scope, "repo.content.")
}

// MayTrigger reports whether the delivery is of the one kind that can trigger runs: a content update of a
// dataset. Decide ignores every other delivery as a whole, whatever the mappings.
func (d *Delivery) MayTrigger() bool {
	return d.IsContentUpdate() && d.RepoType == "dataset"
}

// wirePayload mirrors the fields we read from a webhook body. Pointers tell a missing field from an empty one;
// every other field is ignored, so new fields never break parsing.
type wirePayload struct {
	Event *struct {
		Scope  *string `json:"scope"`
		Action *string `json:"action"`
	} `json:"event"`
	Repo *struct {
		Type    *string `json:"type"`
		Name    *string `json:"name"`
		ID      *string `json:"id"`
		HeadSha *string `json:"headSha"`
	} `json:"repo"`
	UpdatedRefs []*struct {
		Ref    *string `json:"ref"`
		OldSha *string `json:"oldSha"`
		NewSha *string `json:"newSha"`
	} `json:"updatedRefs"`
	Webhook *struct {
		ID *string `json:"id"`
	} `json:"webhook"`
}

// ParseDelivery parses a webhook body leniently: unknown fields are ignored, but the body must be a JSON object
// with event.scope, event.action, repo.type and repo.name, and every field read must have the right type. Errors
// are *Error with CodeInvalid and a message that says what is wrong.
//
// Only the members it reads are decoded; the others (a bucket's updatedFiles, whatever the Hub adds) are
// stepped over, so parsing holds little beside the body, whatever its size. The Delivery refers to raw rather
// than copying it, except that a large body of a delivery that cannot trigger is replaced by a shortened copy
// (ShortenedFrom).
func ParseDelivery(raw []byte) (*Delivery, error) {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, Errorf(CodeInvalid, "invalid JSON: empty body")
	}
	if !utf8.Valid(trimmed) {
		return nil, Errorf(CodeInvalid, "invalid JSON: the body is not valid UTF-8")
	}
	if !json.Valid(trimmed) {
		return nil, Errorf(CodeInvalid, "invalid JSON: %s", jsonSyntaxError(trimmed))
	}
	if trimmed[0] != '{' {
		return nil, Errorf(CodeInvalid, "invalid payload: the body must be a JSON object")
	}

	w, err := decodeWire(trimmed)
	if err != nil {
		return nil, err
	}

	d := &Delivery{Raw: raw}
	var missing []string
	req := func(field string, v *string, dst *string) {
		if v == nil || *v == "" {
			missing = append(missing, field)
			return
		}
		*dst = *v
	}
	opt := func(v *string, dst *string) {
		if v != nil {
			*dst = *v
		}
	}
	if w.Event == nil {
		missing = append(missing, "event.scope", "event.action")
	} else {
		req("event.scope", w.Event.Scope, &d.Scope)
		req("event.action", w.Event.Action, &d.Action)
	}
	if w.Repo == nil {
		missing = append(missing, "repo.type", "repo.name")
	} else {
		req("repo.type", w.Repo.Type, &d.RepoType)
		req("repo.name", w.Repo.Name, &d.RepoName)
		opt(w.Repo.ID, &d.RepoID)
		opt(w.Repo.HeadSha, &d.HeadSha)
	}
	if w.Webhook != nil {
		opt(w.Webhook.ID, &d.WebhookID)
	}
	if len(missing) > 0 {
		return nil, Errorf(CodeInvalid, "invalid payload: missing %s", strings.Join(missing, ", "))
	}
	for i, r := range w.UpdatedRefs {
		if r == nil || r.Ref == nil || *r.Ref == "" {
			return nil, Errorf(CodeInvalid, "invalid payload: updatedRefs[%d].ref is missing", i)
		}
		u := RefUpdate{Ref: *r.Ref}
		opt(r.OldSha, &u.OldSha)
		opt(r.NewSha, &u.NewSha)
		d.Refs = append(d.Refs, u)
	}

	// PostgreSQL text cannot hold NUL; such a value is never legitimate in these fields.
	fields := map[string]string{
		"event.scope": d.Scope, "event.action": d.Action, "repo.type": d.RepoType, "repo.name": d.RepoName,
		"repo.id": d.RepoID, "repo.headSha": d.HeadSha, "webhook.id": d.WebhookID,
	}
	for i, r := range d.Refs {
		fields[fmt.Sprintf("updatedRefs[%d].ref", i)] = r.Ref
		fields[fmt.Sprintf("updatedRefs[%d].oldSha", i)] = r.OldSha
		fields[fmt.Sprintf("updatedRefs[%d].newSha", i)] = r.NewSha
	}
	// Names, refs and ids never hold control characters on the Hub; they would reach the console, the logs and
	// the commands' environment.
	for name, v := range fields {
		if strings.ContainsRune(v, 0) {
			return nil, Errorf(CodeInvalid, "invalid payload: %s contains a NUL character", name)
		}
		if i := strings.IndexFunc(v, unicode.IsControl); i >= 0 {
			return nil, Errorf(CodeInvalid, "invalid payload: %s contains a control character (%q)", name, v[i:i+1])
		}
	}
	if len(raw) > PayloadWholeMax && !d.MayTrigger() {
		d.Raw, d.ShortenedFrom = shortenPayload(trimmed), int64(len(raw))
	}
	return d, nil
}

// decodeWire decodes the members of obj, a valid JSON object, that wirePayload reads, as json.Unmarshal would
// decode the whole object into it (names matched without regard to case, a repeated member decoded again into
// the same value, the first type error returned), but without walking the members it does not read.
func decodeWire(obj []byte) (wirePayload, error) {
	var w wirePayload
	var err error
	eachMember(obj, func(key, value []byte) bool {
		name := memberName(key)
		var field string
		var dst any
		switch {
		case bytes.EqualFold(name, []byte("event")):
			field, dst = "event", &w.Event
		case bytes.EqualFold(name, []byte("repo")):
			field, dst = "repo", &w.Repo
		case bytes.EqualFold(name, []byte("updatedRefs")):
			field, dst = "updatedRefs", &w.UpdatedRefs
		case bytes.EqualFold(name, []byte("webhook")):
			field, dst = "webhook", &w.Webhook
		default:
			return true
		}
		if e := json.Unmarshal(value, dst); e != nil {
			err = wireError(field, e)
			return false
		}
		return true
	})
	return w, err
}

// wireError turns an error of decoding the top-level member named member (the whole body when empty) into an
// *Error that names the field at fault.
func wireError(member string, err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field := typeErr.Field
		switch {
		case member == "":
		case field == "":
			field = member
		default:
			field = member + "." + field
		}
		return Errorf(CodeInvalid, "invalid payload: field %q must be %s, not %s",
			field, jsonTypeName(typeErr.Type), typeErr.Value)
	}
	return WrapError(CodeInvalid, err, "invalid payload")
}

// jsonSyntaxError describes where a body stops being JSON.
func jsonSyntaxError(data []byte) string {
	var v any
	err := json.Unmarshal(data, &v)
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return fmt.Sprintf("%s (at byte %d)", syntaxErr.Error(), syntaxErr.Offset)
	}
	if err != nil {
		return err.Error()
	}
	return "malformed"
}

func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice:
		return "an array"
	}
	return t.Kind().String()
}

// DeliveryRecord is a stored delivery with the decisions taken for it.
type DeliveryRecord struct {
	ID         int64       `json:"id"`
	ReceivedAt time.Time   `json:"received_at"`
	Source     string      `json:"source"`
	Event      string      `json:"event"`
	RepoType   string      `json:"repo_type"`
	RepoName   string      `json:"repo_name"`
	RepoID     string      `json:"repo_id"`
	WebhookID  string      `json:"webhook_id"`
	RemoteAddr string      `json:"remote_addr"`
	Secret     string      `json:"secret"`
	Refs       []RefUpdate `json:"refs"`
	Decisions  []Decision  `json:"decisions"`
}
