package web

import (
	"net/http"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

type homePage struct {
	basePage
	Mappings   []orchestrator.MappingSummary
	Runs       []orchestrator.Run
	Deliveries []orchestrator.DeliveryRecord
	// Reconcile is the catch-up status of every dataset; ReconcileInterval is 0 when catch-up is off.
	Reconcile         []orchestrator.ReconcileStatus
	ReconcileInterval time.Duration
	// ReconcileLast is when the Hub last answered for any dataset; HubDownSince, set when it answers for none,
	// is since when: the latest start of their failures.
	ReconcileLast *time.Time
	HubDownSince  *time.Time
}

// handleHome renders the dashboard: a row per mapping with its latest run and history, how catch-up with the
// Hub fares per dataset, the recent runs, and the recent deliveries.
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
	page := homePage{
		basePage: s.base(r, "Dashboard"), Mappings: mappings, Runs: runs, Deliveries: deliveries,
		ReconcileInterval: s.reconcileEvery,
	}
	if page.Reconcile, err = s.store.ReconcileStatusList(ctx); err != nil {
		return err
	}
	page.ReconcileLast, page.HubDownSince = reconcileSummary(page.Reconcile)
	return s.render(w, http.StatusOK, "home.html", page)
}

// reconcileSummary returns when the Hub last answered for any dataset, and, when it is failing for every
// dataset it is asked about, since when it fails for all of them.
func reconcileSummary(list []orchestrator.ReconcileStatus) (last, downSince *time.Time) {
	asked, failing := 0, 0
	for _, st := range list {
		if st.LastOKAt != nil && (last == nil || st.LastOKAt.After(*last)) {
			last = st.LastOKAt
		}
		if st.Note != "" && !st.Failing() {
			continue
		}
		asked++
		if st.Failing() {
			failing++
			// The Hub fails for all of them since the last one started failing.
			if downSince == nil || st.FailingSince.After(*downSince) {
				downSince = st.FailingSince
			}
		}
	}
	if asked == 0 || failing < asked {
		downSince = nil
	}
	return last, downSince
}
