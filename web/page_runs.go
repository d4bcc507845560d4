package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

type runListPage struct {
	basePage
	Filter    orchestrator.RunListParams
	Statuses  []orchestrator.RunStatus
	Triggers  []orchestrator.Trigger
	Mappings  []orchestrator.Mapping
	Runs      []orchestrator.Run
	NewestURL string
	OlderURL  string
	Paged     bool
}

// handleRunList renders /runs: every run, newest first, filtered, a page at a time (keyset pagination).
func (s *Server) handleRunList(w http.ResponseWriter, r *http.Request) error {
	p, runs, err := s.runList(r)
	if err != nil {
		return err
	}
	mappings, err := s.store.MappingList(r.Context())
	if err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"mapping": p.Mapping, "dataset": p.Dataset, "status": string(p.Status), "trigger": string(p.Trigger)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	page := runListPage{
		basePage: s.base(r, "Runs"), Filter: p, Statuses: orchestrator.RunStatuses, Triggers: orchestrator.Triggers,
		Mappings: mappings, Runs: runs,
		NewestURL: "/runs?" + q.Encode(), Paged: p.BeforeID != 0,
	}
	if len(runs) == p.PageSize() {
		q.Set("before", strconv.FormatInt(runs[len(runs)-1].ID, 10))
		page.OlderURL = "/runs?" + q.Encode()
	}
	return s.render(w, http.StatusOK, "runs.html", page)
}

type runPage struct {
	basePage
	Run        *api.RunDetail
	Attempt    int // the attempt whose log is shown
	LogTail    string
	LogOmitted int64
	Retries    []orchestrator.Run
}

// handleRunShow renders /runs/{id}: everything about one run, with the log of its latest attempt (or of
// ?attempt=N). The page updates itself while the run is not finished (static/run.js); without JavaScript a
// reload shows the same.
func (s *Server) handleRunShow(w http.ResponseWriter, r *http.Request) error {
	d, err := s.runDetail(r)
	if err != nil {
		return err
	}
	page := runPage{basePage: s.base(r, fmt.Sprintf("Run #%d", d.ID)), Run: d, LogTail: d.Log, LogOmitted: d.LogOmittedBytes}
	if len(d.Attempts) > 0 {
		page.Attempt = d.Attempts[len(d.Attempts)-1].Number
	}
	if a := r.URL.Query().Get("attempt"); a != "" {
		n, err := strconv.Atoi(a)
		if err != nil || n < 1 || n > page.Attempt {
			return orchestrator.Errorf(orchestrator.CodeNotFound, "run %d has no attempt %q", d.ID, a)
		}
		log, omitted, err := s.store.RunLogTail(r.Context(), d.ID, n, logTailBytes)
		if err != nil {
			return err
		}
		page.Attempt, page.LogTail, page.LogOmitted = n, string(log), omitted
	}
	if page.Retries, err = s.store.RunListRetries(r.Context(), d.ID); err != nil {
		return err
	}
	return s.render(w, http.StatusOK, "run.html", page)
}

// handleRunRetryForm handles the Retry button: a new run, then its page.
func (s *Server) handleRunRetryForm(w http.ResponseWriter, r *http.Request) error {
	run, err := s.runRetry(r)
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/runs/%d", run.ID), http.StatusSeeOther)
	return nil
}

// handleRunCancelForm handles the Cancel button, then shows the run again.
func (s *Server) handleRunCancelForm(w http.ResponseWriter, r *http.Request) error {
	run, err := s.runCancel(r)
	if err != nil {
		return err
	}
	http.Redirect(w, r, fmt.Sprintf("/runs/%d", run.ID), http.StatusSeeOther)
	return nil
}
