package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditAction is what an audited request did.
type AuditAction string

// Audit actions.
const (
	AuditRunRetry         AuditAction = "run.retry"          // a run was retried (target: the run's id)
	AuditRunCancel        AuditAction = "run.cancel"         // a run was cancelled (target: the run's id)
	AuditMappingRunLatest AuditAction = "mapping.run_latest" // a mapping ran on its newest revision (target: its name)
	AuditMappingCreate    AuditAction = "mapping.create"     // a mapping was registered (target: its name)
	AuditMappingUpdate    AuditAction = "mapping.update"     // a mapping's settings, notify targets included, changed
	AuditMappingDisable   AuditAction = "mapping.disable"    // a mapping was disabled (target: its name)
	AuditLogin            AuditAction = "login"              // the login form was sent
)

// AuditActions lists every audit action.
var AuditActions = []AuditAction{AuditRunRetry, AuditRunCancel, AuditMappingRunLatest, AuditMappingCreate,
	AuditMappingUpdate, AuditMappingDisable, AuditLogin}

// Valid reports whether a is an audit action.
func (a AuditAction) Valid() bool { return slices.Contains(AuditActions, a) }

// AuditOutcome is how an audited request ended.
type AuditOutcome string

// Audit outcomes.
const (
	AuditOK      AuditOutcome = "ok"      // done
	AuditRefused AuditOutcome = "refused" // refused for the caller's reason (a 4xx status): not found, conflict, invalid, wrong token
	AuditFailed  AuditOutcome = "failed"  // failed on the server's side (a 5xx status)
)

// AuditOutcomes lists every audit outcome.
var AuditOutcomes = []AuditOutcome{AuditOK, AuditRefused, AuditFailed}

// AuditOutcomeOf returns the outcome of a request answered with an HTTP status.
func AuditOutcomeOf(status int) AuditOutcome {
	switch {
	case status >= 500:
		return AuditFailed
	case status >= 400:
		return AuditRefused
	}
	return AuditOK
}

// AuditAuth is how the caller of an audited request proved it holds the admin token.
type AuditAuth string

// Audit authentication methods.
const (
	AuditAuthSession AuditAuth = "session" // the login form's session cookie (a successful login makes one)
	AuditAuthBearer  AuditAuth = "bearer"  // Authorization: Bearer
	AuditAuthBasic   AuditAuth = "basic"   // HTTP Basic
	AuditAuthNone    AuditAuth = "none"    // no valid credentials (a failed login)
)

// AuditAuths lists every audit authentication method.
var AuditAuths = []AuditAuth{AuditAuthSession, AuditAuthBearer, AuditAuthBasic, AuditAuthNone}

// AuditEntry is one row of the audit trail. It never holds a token or a secret.
type AuditEntry struct {
	ID      int64        `json:"id"`
	At      time.Time    `json:"at"`
	Action  AuditAction  `json:"action"`
	Target  string       `json:"target"` // a run's id, a mapping's name; empty for a login
	Outcome AuditOutcome `json:"outcome"`
	Status  int          `json:"status"` // the HTTP status answered
	Client  string       `json:"client"` // the client's address
	Auth    AuditAuth    `json:"auth"`
	Detail  string       `json:"detail"` // what changed, or why it was refused
}

// AuditRecord adds e to the audit trail; its ID and At are set by the database.
func (s *Store) AuditRecord(ctx context.Context, e AuditEntry) error {
	switch {
	case !e.Action.Valid():
		return Errorf(CodeInvalid, "audit action must be %s, not %q", OneOf(AuditActions), e.Action)
	case !slices.Contains(AuditOutcomes, e.Outcome):
		return Errorf(CodeInvalid, "audit outcome must be %s, not %q", OneOf(AuditOutcomes), e.Outcome)
	case !slices.Contains(AuditAuths, e.Auth):
		return Errorf(CodeInvalid, "audit auth must be %s, not %q", OneOf(AuditAuths), e.Auth)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO audit_log (action, target, outcome, status, client, auth, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, e.Action, e.Target, e.Outcome, max(e.Status, 0), e.Client, e.Auth, e.Detail)
	return dbError(err, "record audit entry")
}

// AuditListParams selects audit entries, newest first. Empty filters match everything.
type AuditListParams struct {
	Action   AuditAction
	Target   string
	BeforeID int64 // only entries with a smaller id (keyset pagination); 0 for the newest
	Limit    int   // AuditListLimitDefault when 0
}

// Limits of AuditList.
const (
	AuditListLimitDefault = 50
	AuditListLimitMax     = 500
)

// PageSize returns the number of entries a full page of AuditList holds for p.
func (p AuditListParams) PageSize() int {
	return clampLimit(p.Limit, AuditListLimitDefault, AuditListLimitMax)
}

// auditListSQL returns the statement of AuditList and its arguments. As in RunList, each filter is written as
// a range and the rows are ordered by the filtered columns then id, so that only the index of those columns can
// serve the order and the scan stops after a page, whatever the statistics say.
func auditListSQL(p AuditListParams) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var order []string
	for _, f := range []struct{ value, column string }{{p.Target, "target"}, {string(p.Action), "action"}} {
		if f.value == "" {
			continue
		}
		v := arg(f.value)
		where = append(where, f.column+" >= "+v+" AND "+f.column+" <= "+v)
		order = append(order, f.column)
	}
	if p.BeforeID > 0 {
		where = append(where, "id < "+arg(p.BeforeID))
	}
	sql := `SELECT id, at, action, target, outcome, status, client, auth, detail FROM audit_log`
	if len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	sql += ` ORDER BY ` + strings.Join(append(order, "id DESC"), ", ") + ` LIMIT ` + arg(p.PageSize())
	return sql, args
}

// AuditList returns the audit entries matching p, newest first.
func (s *Store) AuditList(ctx context.Context, p AuditListParams) ([]AuditEntry, error) {
	if p.Action != "" && !p.Action.Valid() {
		return nil, Errorf(CodeInvalid, "action must be %s, not %q", OneOf(AuditActions), p.Action)
	}
	sql, args := auditListSQL(p)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbError(err, "list audit entries")
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := row.Scan(&e.ID, &e.At, &e.Action, &e.Target, &e.Outcome, &e.Status, &e.Client, &e.Auth, &e.Detail)
		return e, err
	})
	if err != nil {
		return nil, dbError(err, "list audit entries")
	}
	return entries, nil
}

// AuditRetentionDefault is how long the serve command keeps audit entries (ORCHESTRATOR_AUDIT_RETENTION).
const AuditRetentionDefault = 90 * 24 * time.Hour

// AuditPrune deletes the audit entries older than olderThan and returns how many it deleted. A retention of 0
// or less keeps everything.
func (s *Store) AuditPrune(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan <= 0 {
		return 0, nil
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM audit_log WHERE at < now() - make_interval(secs => $1)`, olderThan.Seconds())
	if err != nil {
		return 0, dbError(err, "prune audit entries")
	}
	return tag.RowsAffected(), nil
}
