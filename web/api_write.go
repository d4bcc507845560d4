package web

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// maxAPIBody bounds the JSON body of an API request.
const maxAPIBody = 64 << 10

// specMapping converts a mapping's settings sent to the API or the form to a Mapping, with surrounding spaces
// dropped, which the configuration file keeps. Its validation is the store's.
func specMapping(spec orchestrator.MappingSpec) (orchestrator.Mapping, error) {
	spec.Name, spec.Dataset, spec.Workdir = strings.TrimSpace(spec.Name), strings.TrimSpace(spec.Dataset), strings.TrimSpace(spec.Workdir)
	spec.OnNewRevision = orchestrator.NewRevisionPolicy(strings.TrimSpace(string(spec.OnNewRevision)))
	spec.Queue = strings.TrimSpace(spec.Queue)
	return spec.Mapping()
}

// decodeJSON reads a bounded JSON body into v, refusing unknown fields so that a typo is an error, not a
// silently ignored setting.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooLarge):
			return orchestrator.Errorf(orchestrator.CodeTooLarge, "body larger than %d bytes", maxAPIBody)
		case errors.As(err, &typeErr):
			return orchestrator.Errorf(orchestrator.CodeInvalid, "field %q has the wrong type (%s)", typeErr.Field, typeErr.Value)
		case errors.Is(err, io.EOF):
			return orchestrator.Errorf(orchestrator.CodeInvalid, "empty body: send a JSON object")
		}
		return orchestrator.WrapError(orchestrator.CodeInvalid, err, "invalid JSON body")
	}
	if dec.More() {
		return orchestrator.Errorf(orchestrator.CodeInvalid, "invalid JSON body: more than one value")
	}
	return nil
}

func runIDParam(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, orchestrator.Errorf(orchestrator.CodeNotFound, "run %q not found", chi.URLParam(r, "id"))
	}
	return id, nil
}

// runRetry retries the run the path names, for the API and the Retry button alike.
func (s *Server) runRetry(r *http.Request) (*orchestrator.Run, error) {
	id, err := runIDParam(r)
	if err != nil {
		return nil, err
	}
	run, err := s.store.RunRetry(r.Context(), id)
	if err == nil {
		noteAudit(r, "", fmt.Sprintf("new run %d", run.ID))
	}
	return run, err
}

// runCancel cancels the run the path names, for the API and the Cancel button alike.
func (s *Server) runCancel(r *http.Request) (*orchestrator.Run, error) {
	id, err := runIDParam(r)
	if err != nil {
		return nil, err
	}
	run, err := s.store.RunCancel(r.Context(), id)
	if err == nil {
		noteAudit(r, "", "run is "+string(run.Status))
	}
	return run, err
}

// handleAPIRunRetry answers POST /api/v1/runs/{id}/retry with the new run.
func (s *Server) handleAPIRunRetry(w http.ResponseWriter, r *http.Request) error {
	run, err := s.runRetry(r)
	if err != nil {
		return err
	}
	w.Header().Set("Location", fmt.Sprintf("/api/v1/runs/%d", run.ID))
	writeJSON(w, http.StatusCreated, api.RunResult{Run: *run})
	return nil
}

// handleAPIRunCancel answers POST /api/v1/runs/{id}/cancel: 200 when the run is cancelled, 202 when its
// command is being stopped.
func (s *Server) handleAPIRunCancel(w http.ResponseWriter, r *http.Request) error {
	run, err := s.runCancel(r)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if !run.Status.Finished() {
		status = http.StatusAccepted
	}
	writeJSON(w, status, api.RunResult{Run: *run})
	return nil
}

// handleAPIMappingShow answers GET /api/v1/mappings/{name}.
func (s *Server) handleAPIMappingShow(w http.ResponseWriter, r *http.Request) error {
	m, err := s.store.MappingGetByName(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	cost, err := s.store.MappingCost(r.Context(), m.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.NewMappingCost(m, cost))
	return nil
}

// checkSecrets refuses a mapping whose hf_jobs secrets are not in this process's environment: its Jobs could
// not be given them.
func (s *Server) checkSecrets(m *orchestrator.Mapping) error {
	if missing := m.MissingSecrets(s.lookupEnv); len(missing) > 0 {
		return orchestrator.Errorf(orchestrator.CodeInvalid, "hf_jobs.secrets %s not set in the orchestrator's environment: set them where the orchestrator runs, then try again",
			strings.Join(missing, ", "))
	}
	return nil
}

// handleAPIMappingCreate answers POST /api/v1/mappings.
func (s *Server) handleAPIMappingCreate(w http.ResponseWriter, r *http.Request) error {
	var spec orchestrator.MappingSpec
	if err := decodeJSON(w, r, &spec); err != nil {
		return err
	}
	noteAudit(r, strings.TrimSpace(spec.Name), "")
	m, err := specMapping(spec)
	if err != nil {
		return err
	}
	// A new mapping has no targets yet: a shortened URL copied from another mapping cannot be resolved.
	if m.Notify, err = orchestrator.ResolveNotifyURLs(m.Notify, nil); err != nil {
		return err
	}
	if err := s.checkSecrets(&m); err != nil {
		return err
	}
	created, err := s.store.MappingCreate(r.Context(), m)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/mappings/"+created.Name)
	writeJSON(w, http.StatusCreated, api.MappingResult{Mapping: api.NewMapping(created)})
	return nil
}

// handleAPIMappingUpdate answers PUT /api/v1/mappings/{name}: the body replaces the mapping's settings.
func (s *Server) handleAPIMappingUpdate(w http.ResponseWriter, r *http.Request) error {
	var spec orchestrator.MappingSpec
	if err := decodeJSON(w, r, &spec); err != nil {
		return err
	}
	name := chi.URLParam(r, "name")
	if spec.Name != "" && spec.Name != name {
		return orchestrator.Errorf(orchestrator.CodeInvalid, "name %q in the body differs from %q in the path; a mapping cannot be renamed", spec.Name, name)
	}
	spec.Name = name
	m, err := specMapping(spec)
	if err != nil {
		return err
	}
	// A body read from GET carries the targets' URLs shortened: those keep the URLs they stand for.
	current, err := s.store.MappingGetByName(r.Context(), name)
	if err != nil {
		return err
	}
	if m.Notify, err = orchestrator.ResolveNotifyURLs(m.Notify, current.Notify); err != nil {
		return err
	}
	noteAudit(r, "", notifyChanges(current.Notify, m.Notify))
	if err := s.checkSecrets(&m); err != nil {
		return err
	}
	updated, err := s.store.MappingUpdate(r.Context(), m)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.MappingResult{Mapping: api.NewMapping(updated)})
	return nil
}

// handleAPIMappingDisable answers DELETE /api/v1/mappings/{name}: the mapping is disabled, its runs stay.
func (s *Server) handleAPIMappingDisable(w http.ResponseWriter, r *http.Request) error {
	m, err := s.store.MappingDisable(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.MappingResult{Mapping: api.NewMapping(m)})
	return nil
}

// handleAPIMappingRun answers POST /api/v1/mappings/{name}/run with a new run on the newest recorded revision.
func (s *Server) handleAPIMappingRun(w http.ResponseWriter, r *http.Request) error {
	run, err := s.store.RunOnLatest(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	noteAudit(r, "", fmt.Sprintf("new run %d", run.ID))
	w.Header().Set("Location", fmt.Sprintf("/api/v1/runs/%d", run.ID))
	writeJSON(w, http.StatusCreated, api.RunResult{Run: *run})
	return nil
}

// handleAPIMappingCheck answers POST /api/v1/mappings/{name}/check: would the commit trigger the mapping, and
// why, by the files it changed. It asks the Hub and queues nothing.
func (s *Server) handleAPIMappingCheck(w http.ResponseWriter, r *http.Request) error {
	var req api.MappingCheckRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	m, err := s.store.MappingGetByName(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	if s.files == nil {
		return orchestrator.Errorf(orchestrator.CodeUnavailable, "this process does not ask the Hub about files")
	}
	req.Revision, req.OldRevision = strings.TrimSpace(req.Revision), strings.TrimSpace(req.OldRevision)
	dataset := cmp.Or(strings.TrimSpace(req.Dataset), m.Dataset)
	if strings.ContainsAny(dataset, "*?[") {
		return orchestrator.Errorf(orchestrator.CodeInvalid, "mapping %q watches the datasets %q: name one with \"dataset\"", m.Name, m.Dataset)
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.filesTimeout)
	defer cancel()
	check, err := s.files.CheckMapping(ctx, m, dataset, req.Revision, req.OldRevision)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.MappingCheck{Mapping: m.Name, Dataset: dataset, Revision: req.Revision,
		OldRevision: check.OldRevision, Trigger: check.Trigger(), Files: check.Files})
	return nil
}
