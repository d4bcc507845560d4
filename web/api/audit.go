package api

import "github.com/retrainhq/orchestrator/orchestrator"

// AuditList is the answer of GET /api/v1/audit: a page of the audit trail, newest first. NextBefore, set when
// the page is full, is the before of the next page.
type AuditList struct {
	NextBefore *int64                    `json:"next_before,omitempty"`
	Entries    []orchestrator.AuditEntry `json:"entries"`
}
