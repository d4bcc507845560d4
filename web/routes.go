package web

import (
	"net/http"

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
	r.MethodNotAllowed(s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return errMethodNotAllowed
	}))

	r.Get("/healthz", s.handleHealth)
	r.Get("/health", s.handleHealth)
	r.Get("/readyz", s.handleReady)

	r.Post("/webhooks/huggingface", s.handle(s.handleWebhook))

	r.Route("/api/v1", func(r chi.Router) {
		r.Get("/runs", s.handle(s.handleAPIRunList))
		r.Get("/runs/{id}", s.handle(s.handleAPIRunShow))
		r.Get("/deliveries", s.handle(s.handleAPIDeliveryList))
		r.Get("/mappings", s.handle(s.handleAPIMappingList))
	})

	r.Get("/", s.handle(s.handleHome))
	r.Handle("/static/*", staticHandler())
	return r
}
