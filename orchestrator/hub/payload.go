package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The body of a webhook of the Hub, as the orchestrator reads and writes it. The Hub sends more than the
// members below (repo.url, repo.owner, discussion, a bucket's updatedFiles, whatever it adds later): they are
// stepped over when parsing and never written.

// Values of a webhook body that the orchestrator compares.
const (
	// ScopeRepoContent is the scope of a delivery that announces new commits, branches or tags. A narrowed
	// scope below it (repo.content.x) is an update of the same kind.
	ScopeRepoContent = "repo.content"
	// ActionUpdate is the action of a content update.
	ActionUpdate = "update"
	// RepoTypeDataset is the repo type of a dataset; the others are model, space and bucket.
	RepoTypeDataset = "dataset"
)

// Payload is a webhook body. Its fields are pointers so that a missing (or null) member is told from an empty
// one; encoded, a nil optional member is left out.
type Payload struct {
	Event       *Event        `json:"event"`
	Repo        *Repo         `json:"repo"`
	UpdatedRefs []*UpdatedRef `json:"updatedRefs,omitempty"`
	Webhook     *Webhook      `json:"webhook,omitempty"`
}

// Event is what happened: scope and action, e.g. repo.content and update.
type Event struct {
	Scope  *string `json:"scope"`
	Action *string `json:"action"`
}

// Repo is the repository the event is about.
type Repo struct {
	// Type is dataset, model, space or bucket.
	Type *string `json:"type"`
	// Name is "owner/name".
	Name *string `json:"name"`
	// ID is the Hub's id of the repository, which stays the same when it is renamed.
	ID *string `json:"id,omitempty"`
	// HeadSha is the commit the main branch points at.
	HeadSha *string `json:"headSha,omitempty"`
}

// UpdatedRef is one entry of updatedRefs: a ref that moved, was created (OldSha null) or was deleted (NewSha
// null).
type UpdatedRef struct {
	Ref    *string `json:"ref"`
	OldSha *string `json:"oldSha"`
	NewSha *string `json:"newSha"`
}

// Webhook is the webhook that sent the delivery.
type Webhook struct {
	ID *string `json:"id,omitempty"`
}

// DatasetUpdate returns the body of a content update of a dataset, as the Hub sends one when commits land on
// refs: event repo.content update, the dataset's name and id (left out when empty), and the refs.
func DatasetUpdate(name, id string, refs ...*UpdatedRef) Payload {
	return Payload{
		Event:       &Event{Scope: new(ScopeRepoContent), Action: new(ActionUpdate)},
		Repo:        &Repo{Type: new(RepoTypeDataset), Name: &name, ID: nonEmpty(id)},
		UpdatedRefs: refs,
	}
}

// NewUpdatedRef returns an entry of updatedRefs. An empty oldSha (a created ref) or newSha (a deleted ref) is
// null, as the Hub sends it.
func NewUpdatedRef(ref, oldSha, newSha string) *UpdatedRef {
	return &UpdatedRef{Ref: &ref, OldSha: nonEmpty(oldSha), NewSha: nonEmpty(newSha)}
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Value returns *s, or "" when s is nil: the value of an optional member.
func Value(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// PayloadError says what is wrong with a webhook body, in a message fit for its sender, with the error of
// decoding it when there is one.
type PayloadError struct {
	Message string
	Err     error
}

// Error implements the error interface.
func (e *PayloadError) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the error of decoding the body, if any.
func (e *PayloadError) Unwrap() error { return e.Err }

func payloadErrorf(format string, args ...any) *PayloadError {
	return &PayloadError{Message: fmt.Sprintf(format, args...)}
}

// ParsePayload parses a webhook body leniently: unknown members are ignored, but the body must be a JSON object
// with event.scope, event.action, repo.type and repo.name, every updatedRefs entry must have a ref, and every
// member read must have the right type and hold no control character. In the Payload returned those members
// are never nil. Errors are *PayloadError, with a message that says what is wrong.
//
// Only the members it reads are decoded; the others are stepped over, so parsing holds little beside the body,
// whatever its size.
func ParsePayload(raw []byte) (*Payload, error) {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, payloadErrorf("invalid JSON: empty body")
	}
	if !utf8.Valid(trimmed) {
		return nil, payloadErrorf("invalid JSON: the body is not valid UTF-8")
	}
	if !json.Valid(trimmed) {
		return nil, payloadErrorf("invalid JSON: %s", jsonSyntaxError(trimmed))
	}
	if trimmed[0] != '{' {
		return nil, payloadErrorf("invalid payload: the body must be a JSON object")
	}

	p, err := decodePayload(trimmed)
	if err != nil {
		return nil, err
	}

	var missing []string
	req := func(field string, v *string) {
		if v == nil || *v == "" {
			missing = append(missing, field)
		}
	}
	if p.Event == nil {
		missing = append(missing, "event.scope", "event.action")
	} else {
		req("event.scope", p.Event.Scope)
		req("event.action", p.Event.Action)
	}
	if p.Repo == nil {
		missing = append(missing, "repo.type", "repo.name")
	} else {
		req("repo.type", p.Repo.Type)
		req("repo.name", p.Repo.Name)
	}
	if len(missing) > 0 {
		return nil, payloadErrorf("invalid payload: missing %s", strings.Join(missing, ", "))
	}
	for i, r := range p.UpdatedRefs {
		if r == nil || r.Ref == nil || *r.Ref == "" {
			return nil, payloadErrorf("invalid payload: updatedRefs[%d].ref is missing", i)
		}
	}

	// PostgreSQL text cannot hold NUL; such a value is never legitimate in these fields.
	fields := map[string]string{
		"event.scope": *p.Event.Scope, "event.action": *p.Event.Action, "repo.type": *p.Repo.Type,
		"repo.name": *p.Repo.Name, "repo.id": Value(p.Repo.ID), "repo.headSha": Value(p.Repo.HeadSha),
	}
	if p.Webhook != nil {
		fields["webhook.id"] = Value(p.Webhook.ID)
	}
	for i, r := range p.UpdatedRefs {
		fields[fmt.Sprintf("updatedRefs[%d].ref", i)] = *r.Ref
		fields[fmt.Sprintf("updatedRefs[%d].oldSha", i)] = Value(r.OldSha)
		fields[fmt.Sprintf("updatedRefs[%d].newSha", i)] = Value(r.NewSha)
	}
	// Names, refs and ids never hold control characters on the Hub; they would reach the console, the logs and
	// the commands' environment.
	for name, v := range fields {
		if strings.ContainsRune(v, 0) {
			return nil, payloadErrorf("invalid payload: %s contains a NUL character", name)
		}
		if i := strings.IndexFunc(v, unicode.IsControl); i >= 0 {
			return nil, payloadErrorf("invalid payload: %s contains a control character (%q)", name, v[i:i+1])
		}
	}
	return &p, nil
}

// decodePayload decodes the members of obj, a valid JSON object, that Payload reads, as json.Unmarshal would
// decode the whole object into it (names matched without regard to case, a repeated member decoded again into
// the same value, the first type error returned), but without walking the members it does not read.
func decodePayload(obj []byte) (Payload, error) {
	var p Payload
	var err error
	eachMember(obj, func(key, value []byte) bool {
		name := memberName(key)
		var field string
		var dst any
		switch {
		case bytes.EqualFold(name, []byte("event")):
			field, dst = "event", &p.Event
		case bytes.EqualFold(name, []byte("repo")):
			field, dst = "repo", &p.Repo
		case bytes.EqualFold(name, []byte("updatedRefs")):
			field, dst = "updatedRefs", &p.UpdatedRefs
		case bytes.EqualFold(name, []byte("webhook")):
			field, dst = "webhook", &p.Webhook
		default:
			return true
		}
		if e := json.Unmarshal(value, dst); e != nil {
			err = decodeError(field, e)
			return false
		}
		return true
	})
	return p, err
}

// decodeError turns an error of decoding the top-level member named member (the whole body when empty) into a
// *PayloadError that names the field at fault.
func decodeError(member string, err error) error {
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
		return payloadErrorf("invalid payload: field %q must be %s, not %s",
			field, jsonTypeName(typeErr.Type), typeErr.Value)
	}
	return &PayloadError{Message: "invalid payload", Err: err}
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
