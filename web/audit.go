package web

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// auditWriteTimeout bounds the write of one audit entry, which goes on after a client has gone.
const auditWriteTimeout = 5 * time.Second

// auditNote is what a handler adds to its audit entry: the target when the path does not name it, and what
// changed.
type auditNote struct {
	target, detail string
}

type auditNoteKey struct{}

// noteAudit sets the target (when not empty) and the detail of the audit entry of r's request.
func noteAudit(r *http.Request, target, detail string) {
	if note, ok := r.Context().Value(auditNoteKey{}).(*auditNote); ok {
		note.target = cmp.Or(target, note.target)
		note.detail = detail
	}
}

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// auditMethods maps how a request authenticated to its name in the audit trail.
var auditMethods = map[authMethod]orchestrator.AuditAuth{
	authNone: orchestrator.AuditAuthNone, authBearer: orchestrator.AuditAuthBearer,
	authBasic: orchestrator.AuditAuthBasic, authSession: orchestrator.AuditAuthSession,
}

// audited records every request h handles in the audit trail: its action, target (the run or mapping the path
// names, or what h notes), outcome and status, the client's address and how it authenticated. An entry that
// cannot be written is logged; it never changes the answer.
func (s *Server) audited(action orchestrator.AuditAction, h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		note := &auditNote{target: cmp.Or(chi.URLParam(r, "id"), chi.URLParam(r, "name"))}
		r = r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, note))
		method := auditMethods[s.auth.identify(r)]
		rec := &statusRecorder{ResponseWriter: w}
		err := h(rec, r)
		status := cmp.Or(rec.status, http.StatusOK)
		if err != nil {
			status = statusOf(err)
			note.detail = orchestrator.ErrorMessage(err)
		}
		e := orchestrator.AuditEntry{Action: action, Target: note.target, Outcome: orchestrator.AuditOutcomeOf(status),
			Status: status, Client: s.clientAddr(r), Auth: method, Detail: note.detail}
		if e.Outcome != orchestrator.AuditOK && e.Detail == "" {
			e.Detail = http.StatusText(status)
		}
		if action == orchestrator.AuditLogin && e.Outcome == orchestrator.AuditOK {
			e.Auth = orchestrator.AuditAuthSession // the session the login made
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditWriteTimeout)
		defer cancel()
		if recErr := s.store.AuditRecord(ctx, e); recErr != nil {
			s.logger.ErrorContext(r.Context(), "audit entry not recorded", "action", action, "target", e.Target,
				"outcome", e.Outcome, "client", e.Client, "error", recErr)
		}
		return err
	}
}

// notifyChanges says how the notify targets of a mapping change from old to new, by their URLs' hosts (a
// URL's path may be a secret): "notify targets added: a.example; removed: b.example; changed: c.example".
func notifyChanges(old, new []orchestrator.NotifyTarget) string {
	byURL := func(ts []orchestrator.NotifyTarget) map[string]orchestrator.NotifyTarget {
		m := make(map[string]orchestrator.NotifyTarget, len(ts))
		for _, t := range ts {
			m[t.URL] = t
		}
		return m
	}
	before, after := byURL(old), byURL(new)
	var added, removed, changed []string
	for u, t := range after {
		if o, ok := before[u]; !ok {
			added = append(added, urlHost(u))
		} else if o.Format != t.Format || o.SecretEnv != t.SecretEnv || !slices.Equal(o.On, t.On) {
			changed = append(changed, urlHost(u))
		}
	}
	for u := range before {
		if _, ok := after[u]; !ok {
			removed = append(removed, urlHost(u))
		}
	}
	var parts []string
	for _, p := range []struct {
		what  string
		hosts []string
	}{{"added", added}, {"removed", removed}, {"changed", changed}} {
		if len(p.hosts) > 0 {
			slices.Sort(p.hosts)
			parts = append(parts, p.what+": "+strings.Join(p.hosts, ", "))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "notify targets " + strings.Join(parts, "; ")
}

func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	return u.Host
}

// auditList reads the filters and page of the audit trail from the query string and lists its entries.
func (s *Server) auditList(r *http.Request) (orchestrator.AuditListParams, []orchestrator.AuditEntry, error) {
	q := r.URL.Query()
	p := orchestrator.AuditListParams{Action: orchestrator.AuditAction(q.Get("action")), Target: q.Get("target")}
	if p.Action != "" && !p.Action.Valid() {
		return p, nil, orchestrator.Errorf(orchestrator.CodeInvalid, "action %q is not one of %s", p.Action,
			orchestrator.Names(orchestrator.AuditActions))
	}
	var err error
	if p.Limit, err = intParam(q.Get("limit"), "limit"); err != nil {
		return p, nil, err
	}
	before, err := intParam(q.Get("before"), "before")
	if err != nil {
		return p, nil, err
	}
	p.BeforeID = int64(before)
	entries, err := s.store.AuditList(r.Context(), p)
	return p, entries, err
}

// handleAPIAuditList answers GET /api/v1/audit.
func (s *Server) handleAPIAuditList(w http.ResponseWriter, r *http.Request) error {
	p, entries, err := s.auditList(r)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []orchestrator.AuditEntry{}
	}
	list := api.AuditList{Entries: entries}
	if len(entries) == p.PageSize() {
		list.NextBefore = &entries[len(entries)-1].ID
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

type auditPage struct {
	basePage
	Filter    orchestrator.AuditListParams
	Actions   []orchestrator.AuditAction
	Entries   []orchestrator.AuditEntry
	NewestURL string
	OlderURL  string
	Paged     bool
}

// handleAuditList renders /audit: the audit trail, newest first, filtered, a page at a time.
func (s *Server) handleAuditList(w http.ResponseWriter, r *http.Request) error {
	p, entries, err := s.auditList(r)
	if err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"action": string(p.Action), "target": p.Target} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	page := auditPage{basePage: s.base(r, "Audit trail"), Filter: p, Actions: orchestrator.AuditActions,
		Entries: entries, NewestURL: "/audit?" + q.Encode(), Paged: p.BeforeID != 0}
	if len(entries) == p.PageSize() {
		q.Set("before", strconv.FormatInt(entries[len(entries)-1].ID, 10))
		page.OlderURL = "/audit?" + q.Encode()
	}
	return s.render(w, http.StatusOK, "audit.html", page)
}
