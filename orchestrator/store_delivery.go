package orchestrator

import (
	"context"
	"math"

	"github.com/jackc/pgx/v5"
)

// Reading deliveries, with their refs and decisions (store_ingest.go records them).

// DeliveryListParams selects deliveries, newest first.
type DeliveryListParams struct {
	Limit    int   // DeliveryListLimitDefault when 0
	BeforeID int64 // only deliveries with a smaller id (keyset pagination); 0 for the newest
}

// Limits of DeliveryList.
const (
	DeliveryListLimitDefault = 50
	DeliveryListLimitMax     = 500
)

// deliveryListSQL lists the deliveries before id $1, newest first, at most $2, each with its refs and its
// decisions as JSON arrays.
const deliveryListSQL = `
SELECT d.id, d.received_at, d.source, d.scope || '.' || d.action, d.repo_type, d.repo_name, d.repo_id,
	d.webhook_id, d.remote_addr, d.secret,
	coalesce((SELECT json_agg(json_build_object('ref', r.ref, 'old_sha', r.old_sha, 'new_sha', r.new_sha)
		ORDER BY r.position) FROM delivery_refs r WHERE r.delivery_id = d.id), '[]'),
	coalesce((SELECT json_agg(json_build_object('mapping', m.name, 'ref', x.ref, 'revision', x.new_sha,
		'decision', x.decision, 'reason', x.reason, 'run_id', x.run_id, 'run_status', r.status,
		'superseded_by', r.superseded_by) ORDER BY x.id)
		FROM decisions x LEFT JOIN mappings m ON m.id = x.mapping_id LEFT JOIN runs r ON r.id = x.run_id
		WHERE x.delivery_id = d.id), '[]')
FROM deliveries d
WHERE d.id < $1
ORDER BY d.id DESC
LIMIT $2`

// DeliveryList returns deliveries, newest first, with their refs and decisions.
func (s *Store) DeliveryList(ctx context.Context, p DeliveryListParams) ([]DeliveryRecord, error) {
	limit := clampLimit(p.Limit, DeliveryListLimitDefault, DeliveryListLimitMax)
	// A bound, never an optional one, so that any plan starts the walk of the primary key at the page.
	before := p.BeforeID
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := s.pool.Query(ctx, deliveryListSQL, before, limit)
	if err != nil {
		return nil, dbError(err, "list deliveries")
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeliveryRecord, error) {
		var r DeliveryRecord
		err := row.Scan(&r.ID, &r.ReceivedAt, &r.Source, &r.Event, &r.RepoType, &r.RepoName, &r.RepoID,
			&r.WebhookID, &r.RemoteAddr, &r.Secret, &r.Refs, &r.Decisions)
		return r, err
	})
	if err != nil {
		return nil, dbError(err, "list deliveries")
	}
	return list, nil
}

func clampLimit(limit, def, max int) int {
	if limit <= 0 {
		return def
	}
	return min(limit, max)
}

// DeliveryWithPayload is a stored delivery with its payload.
type DeliveryWithPayload struct {
	DeliveryRecord
	// Payload is the body as received, or a shortened copy of it when PayloadShortenedFrom is set.
	Payload []byte `json:"-"`
	// PayloadShortenedFrom is the size in bytes of the body received when Payload is a shortened copy of it (a
	// large delivery that cannot trigger a run); zero otherwise.
	PayloadShortenedFrom int64 `json:"payload_shortened_from,omitempty"`
}

// deliveryPayloadSQL reads the payload of a delivery, and the size of the body it shortens (0 for none).
const deliveryPayloadSQL = `SELECT payload, coalesce(payload_shortened_from, 0) FROM deliveries WHERE id = $1`

// DeliveryGetByID returns one delivery with its refs, decisions and payload, or an error with CodeNotFound.
func (s *Store) DeliveryGetByID(ctx context.Context, id int64) (*DeliveryWithPayload, error) {
	list, err := s.DeliveryList(ctx, DeliveryListParams{BeforeID: id + 1, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 || list[0].ID != id {
		return nil, Errorf(CodeNotFound, "delivery %d not found", id)
	}
	d := &DeliveryWithPayload{DeliveryRecord: list[0]}
	if err := s.pool.QueryRow(ctx, deliveryPayloadSQL, id).Scan(&d.Payload, &d.PayloadShortenedFrom); err != nil {
		return nil, dbError(err, "get delivery payload")
	}
	return d, nil
}
