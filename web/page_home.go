package web

import (
	"net/http"

	"github.com/retrainhq/orchestrator/orchestrator"
)

type homePage struct {
	basePage
	Mappings   []orchestrator.MappingSummary
	Runs       []orchestrator.Run
	Deliveries []orchestrator.DeliveryRecord
}

// handleHome renders the dashboard: a row per mapping with its latest run and history, the recent runs, and
// the recent deliveries.
func (s *Server) handleHome(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	mappings, err := s.store.MappingSummaryList(ctx)
	if err != nil {
		return err
	}
	runs, err := s.store.RunList(ctx, orchestrator.RunListParams{Limit: 20})
	if err != nil {
		return err
	}
	deliveries, err := s.store.DeliveryList(ctx, orchestrator.DeliveryListParams{Limit: 10})
	if err != nil {
		return err
	}
	return s.render(w, http.StatusOK, "home.html", homePage{
		basePage: s.base(r, "Dashboard"), Mappings: mappings, Runs: runs, Deliveries: deliveries,
	})
}
