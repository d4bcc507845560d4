package web

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Handler returns every route of the server, with its middleware.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID)
	r.Use(s.logRequests)
	r.Use(s.recoverPanics)
	r.Use(securityHeaders)

	r.NotFound(s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return orchestrator.Errorf(orchestrator.CodeNotFound, "Not found")
	}))
	r.MethodNotAllowed(s.handle(func(w http.ResponseWriter, req *http.Request) error {
		w.Header().Set("Allow", allowedMethods(r, req.URL.Path))
		return errMethodNotAllowed
	}))

	// Always open: health checks, the webhook (it has its own secret), static files and the login form.
	r.Get("/healthz", s.handleHealth)
	r.Get("/health", s.handleHealth)
	r.Get("/readyz", s.handleReady)
	r.Method(http.MethodPost, "/webhooks/huggingface", s.traceWebhook(s.handle(s.handleWebhook)))
	r.Handle("/static/*", staticHandler())
	r.Get("/login", s.handle(s.handleLoginForm))
	r.Post("/login", s.handle(s.audited(orchestrator.AuditLogin, s.handleLogin)))
	r.Post("/logout", s.handle(s.handleLogout))

	// Reading: open unless ORCHESTRATOR_PROTECT_READS is set.
	r.Group(func(r chi.Router) {
		r.Use(s.requireRead)
		r.Get("/", s.handle(s.handleHome))
		r.Get("/runs", s.handle(s.handleRunList))
		r.Get("/runs/{id}", s.handle(s.handleRunShow))
		r.Get("/deliveries", s.handle(s.handleDeliveryList))
		r.Get("/deliveries/{id}", s.handle(s.handleDeliveryShow))
		r.Get("/mappings/new", s.handle(s.handleMappingNew))
		r.Get("/mappings/{name}", s.handle(s.handleMappingShow))

		r.Get("/api/v1/runs", s.handle(s.handleAPIRunList))
		r.Get("/api/v1/runs/{id}", s.handle(s.handleAPIRunShow))
		r.Get("/api/v1/deliveries", s.handle(s.handleAPIDeliveryList))
		r.Get("/api/v1/mappings", s.handle(s.handleAPIMappingList))
		r.Get("/api/v1/mappings/{name}", s.handle(s.handleAPIMappingShow))
		r.Handle("/metrics", s.metrics.handler())
	})

	// Changing state: the admin token, and a CSRF token from browsers.
	r.Group(func(r chi.Router) {
		r.Use(s.requireAdmin)
		r.Post("/runs/{id}/retry", s.handle(s.audited(orchestrator.AuditRunRetry, s.handleRunRetryForm)))
		r.Post("/runs/{id}/cancel", s.handle(s.audited(orchestrator.AuditRunCancel, s.handleRunCancelForm)))
		r.Post("/mappings", s.handle(s.audited(orchestrator.AuditMappingCreate, s.handleMappingCreateForm)))
		r.Post("/mappings/{name}", s.handle(s.audited(orchestrator.AuditMappingUpdate, s.handleMappingUpdateForm)))
		r.Post("/mappings/{name}/disable", s.handle(s.audited(orchestrator.AuditMappingDisable, s.handleMappingDisableForm)))
		r.Post("/mappings/{name}/run", s.handle(s.audited(orchestrator.AuditMappingRunLatest, s.handleMappingRunForm)))

		r.Post("/api/v1/runs/{id}/retry", s.handle(s.audited(orchestrator.AuditRunRetry, s.handleAPIRunRetry)))
		r.Post("/api/v1/runs/{id}/cancel", s.handle(s.audited(orchestrator.AuditRunCancel, s.handleAPIRunCancel)))
		r.Post("/api/v1/mappings", s.handle(s.audited(orchestrator.AuditMappingCreate, s.handleAPIMappingCreate)))
		r.Put("/api/v1/mappings/{name}", s.handle(s.audited(orchestrator.AuditMappingUpdate, s.handleAPIMappingUpdate)))
		r.Delete("/api/v1/mappings/{name}", s.handle(s.audited(orchestrator.AuditMappingDisable, s.handleAPIMappingDisable)))
		r.Post("/api/v1/mappings/{name}/run", s.handle(s.audited(orchestrator.AuditMappingRunLatest, s.handleAPIMappingRun)))
		r.Post("/api/v1/mappings/{name}/check", s.handle(s.handleAPIMappingCheck))

		r.Get("/audit", s.handle(s.handleAuditList))
		r.Get("/api/v1/audit", s.handle(s.handleAPIAuditList))

		if s.riverUI != nil {
			r.With(riverUIHeaders).Mount("/riverui", s.riverUI)
		}
	})
	return r
}

// HealthHandler returns only the health checks and the metrics, for a process that runs commands and serves
// no pages.
func (s *Server) HealthHandler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.recoverPanics)
	r.NotFound(s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return orchestrator.Errorf(orchestrator.CodeNotFound, "Not found: this process runs commands only (role worker)")
	}))
	r.Get("/healthz", s.handleHealth)
	r.Get("/health", s.handleHealth)
	r.Get("/readyz", s.handleReady)
	r.With(s.requireRead).Handle("/metrics", s.metrics.handler())
	return r
}

// allowedMethods lists the methods routes answers for path, for the Allow header of a 405.
func allowedMethods(routes chi.Routes, path string) string {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if routes.Match(chi.NewRouteContext(), m, path) {
			allowed = append(allowed, m)
		}
	}
	return strings.Join(allowed, ", ")
}
