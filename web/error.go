package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

var errMethodNotAllowed = errors.New("method not allowed")

// statusOf maps an error to its HTTP status. This is the one place where that happens.
func statusOf(err error) int {
	if errors.Is(err, errMethodNotAllowed) {
		return http.StatusMethodNotAllowed
	}
	switch orchestrator.ErrorCode(err) {
	case codeForbidden:
		return http.StatusForbidden
	case codeTooManyRequests:
		return http.StatusTooManyRequests
	case orchestrator.CodeInvalid:
		return http.StatusBadRequest
	case orchestrator.CodeUnauthorized:
		return http.StatusUnauthorized
	case orchestrator.CodeNotFound:
		return http.StatusNotFound
	case orchestrator.CodeConflict:
		return http.StatusConflict
	case orchestrator.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case orchestrator.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError answers a request with err: JSON {"error": "..."} for the API and the webhook, a small HTML page
// for the status pages. Server-side errors are logged in full; the caller sees only a safe message.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	msg := orchestrator.ErrorMessage(err)
	switch status {
	case http.StatusMethodNotAllowed:
		msg = "method not allowed"
	case http.StatusForbidden, http.StatusTooManyRequests:
		var e *orchestrator.Error
		if errors.As(err, &e) {
			msg = e.Message
		}
	}
	if status >= 500 {
		s.logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path,
			"status", status, "error", err)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	if wantsHTML(r) {
		s.renderError(w, r, status, msg)
		return
	}
	writeJSON(w, status, api.Error{Message: msg})
}

// wantsHTML reports whether r is a browser asking for a page rather than an API or webhook call.
func wantsHTML(r *http.Request) bool {
	if strings.HasPrefix(r.URL.Path, "/api/") || strings.HasPrefix(r.URL.Path, "/webhooks/") {
		return false
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// writeJSON writes v as JSON with the given status. v is encoded before anything is written, so an encoding
// failure is still a clean 500.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}
