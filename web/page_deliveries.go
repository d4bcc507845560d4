package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/retrainhq/orchestrator/orchestrator"
)

type deliveryListPage struct {
	basePage
	Deliveries []orchestrator.DeliveryRecord
	OlderURL   string
	Paged      bool
}

// handleDeliveryList renders /deliveries: every delivery with its decisions and their reasons.
func (s *Server) handleDeliveryList(w http.ResponseWriter, r *http.Request) error {
	before, err := intParam(r.URL.Query().Get("before"), "before")
	if err != nil {
		return err
	}
	const pageSize = 50
	list, err := s.store.DeliveryList(r.Context(), orchestrator.DeliveryListParams{Limit: pageSize, BeforeID: int64(before)})
	if err != nil {
		return err
	}
	page := deliveryListPage{basePage: s.base(r, "Deliveries"), Deliveries: list, Paged: before != 0}
	if len(list) == pageSize {
		page.OlderURL = fmt.Sprintf("/deliveries?before=%d", list[len(list)-1].ID)
	}
	return s.render(w, http.StatusOK, "deliveries.html", page)
}

type deliveryPage struct {
	basePage
	Delivery *orchestrator.DeliveryWithPayload
	Payload  string
	// StoredBytes is the size of the payload kept; WholeMax the largest body always kept as received.
	StoredBytes, WholeMax int64
}

// handleDeliveryShow renders /deliveries/{id} with its payload, indented when it is JSON, and says when the
// payload is a shortened copy of the body received.
func (s *Server) handleDeliveryShow(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		return orchestrator.Errorf(orchestrator.CodeNotFound, "delivery %q not found", chi.URLParam(r, "id"))
	}
	d, err := s.store.DeliveryGetByID(r.Context(), id)
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	payload := string(d.Payload)
	if json.Indent(&pretty, d.Payload, "", "  ") == nil {
		payload = pretty.String()
	}
	return s.render(w, http.StatusOK, "delivery.html", deliveryPage{
		basePage: s.base(r, fmt.Sprintf("Delivery #%d", id)), Delivery: d, Payload: strings.ToValidUTF8(payload, "\uFFFD"),
		StoredBytes: int64(len(d.Payload)), WholeMax: orchestrator.PayloadWholeMax,
	})
}
