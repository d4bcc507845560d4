package api

import "github.com/retrainhq/orchestrator/orchestrator"

// DeliveryList is the answer of GET /api/v1/deliveries: a page of deliveries, newest first, each with its refs
// and the decisions taken for it.
type DeliveryList struct {
	Deliveries []orchestrator.DeliveryRecord `json:"deliveries"`
}
