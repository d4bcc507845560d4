package web

import (
	"net/http"
	"strconv"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// logTailBytes is how much of the end of a run's log the run endpoints return.
const logTailBytes = 64 << 10

// runList reads the filters and page of a run list from the query string, and returns the runs they select.
func (s *Server) runList(r *http.Request) (orchestrator.RunListParams, []orchestrator.Run, error) {
	p, err := runListParams(r)
	if err != nil {
		return p, nil, err
	}
	runs, err := s.store.RunList(r.Context(), p)
	return p, runs, err
}

// runListParams reads the filters and page of a run list from the query string.
func runListParams(r *http.Request) (orchestrator.RunListParams, error) {
	q := r.URL.Query()
	p := orchestrator.RunListParams{Dataset: q.Get("dataset"), Mapping: q.Get("mapping"), Trigger: orchestrator.Trigger(q.Get("trigger"))}
	if p.Trigger != "" && !p.Trigger.Valid() {
		return p, orchestrator.Errorf(orchestrator.CodeInvalid, "trigger %q is not one of %s", p.Trigger, orchestrator.Names(orchestrator.Triggers))
	}
	if st := q.Get("status"); st != "" {
		p.Status = orchestrator.RunStatus(st)
		if !p.Status.Valid() {
			return p, orchestrator.Errorf(orchestrator.CodeInvalid,
				"status %q is not one of %s", st, orchestrator.RunStatusNames())
		}
	}
	var err error
	if p.Limit, err = intParam(q.Get("limit"), "limit"); err != nil {
		return p, err
	}
	before, err := intParam(q.Get("before"), "before")
	p.BeforeID = int64(before)
	return p, err
}

func intParam(v, name string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, orchestrator.Errorf(orchestrator.CodeInvalid, "%s must be a non-negative whole number, not %q", name, v)
	}
	return n, nil
}

// handleAPIRunList answers GET /api/v1/runs.
func (s *Server) handleAPIRunList(w http.ResponseWriter, r *http.Request) error {
	p, runs, err := s.runList(r)
	if err != nil {
		return err
	}
	if runs == nil {
		runs = []orchestrator.Run{}
	}
	list := api.RunList{Runs: runs}
	if len(runs) == p.PageSize() {
		list.NextBefore = &runs[len(runs)-1].ID
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// runDetail returns the run that r names with its attempts, the end of its latest attempt's log and its
// notifications, for its page and the API.
func (s *Server) runDetail(r *http.Request) (*api.RunDetail, error) {
	id, err := runIDParam(r)
	if err != nil {
		return nil, err
	}
	run, err := s.store.RunGetByID(r.Context(), id)
	if err != nil {
		return nil, err
	}
	attempts, err := s.store.RunAttemptList(r.Context(), id)
	if err != nil {
		return nil, err
	}
	notifications, err := s.store.NotificationList(r.Context(), id)
	if err != nil {
		return nil, err
	}
	files, err := s.store.RunFilesGet(r.Context(), id)
	if err != nil {
		return nil, err
	}
	executions, err := s.store.RunExecutions(r.Context(), id)
	if err != nil {
		return nil, err
	}
	d := &api.RunDetail{Run: *run, Attempts: attempts, Notifications: make([]api.Notification, len(notifications)),
		Files: files, Executions: api.NewExecutions(executions, time.Now())}
	for _, e := range d.Executions {
		if e.Attempt == run.Attempt && !run.Status.Finished() && e.WaitingForHardware {
			d.WaitingForHardware = true
		}
	}
	if d.Attempts == nil {
		d.Attempts = []orchestrator.Attempt{}
	}
	for i := range notifications {
		d.Notifications[i] = api.NewNotification(&notifications[i])
	}
	if len(attempts) > 0 {
		log, omitted, err := s.store.RunLogTail(r.Context(), id, attempts[len(attempts)-1].Number, logTailBytes)
		if err != nil {
			return nil, err
		}
		d.Log, d.LogOmittedBytes = string(log), omitted
	}
	return d, nil
}

// handleAPIRunShow answers GET /api/v1/runs/{id}.
func (s *Server) handleAPIRunShow(w http.ResponseWriter, r *http.Request) error {
	d, err := s.runDetail(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// handleAPIDeliveryList answers GET /api/v1/deliveries.
func (s *Server) handleAPIDeliveryList(w http.ResponseWriter, r *http.Request) error {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit")
	if err != nil {
		return err
	}
	before, err := intParam(r.URL.Query().Get("before"), "before")
	if err != nil {
		return err
	}
	list, err := s.store.DeliveryList(r.Context(), orchestrator.DeliveryListParams{Limit: limit, BeforeID: int64(before)})
	if err != nil {
		return err
	}
	if list == nil {
		list = []orchestrator.DeliveryRecord{}
	}
	writeJSON(w, http.StatusOK, api.DeliveryList{Deliveries: list})
	return nil
}

// handleAPIMappingList answers GET /api/v1/mappings.
func (s *Server) handleAPIMappingList(w http.ResponseWriter, r *http.Request) error {
	mappings, err := s.store.MappingList(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.NewMappingList(mappings))
	return nil
}
