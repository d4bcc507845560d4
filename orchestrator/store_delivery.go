package orchestrator

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeliveryInsertParams is a delivery to record.
type DeliveryInsertParams struct {
	Delivery   *Delivery
	Source     DeliverySource // DeliverySourceWebhook when empty
	RemoteAddr string
	Secret     string // which webhook secret matched: SecretCurrent (when empty) or SecretPrevious
}

// Webhook secrets a delivery may have been authenticated with.
const (
	SecretCurrent  = "current"  // HUGGINGFACE_WEBHOOK_SECRET
	SecretPrevious = "previous" // HUGGINGFACE_WEBHOOK_SECRET_PREVIOUS, accepted during a rotation
)

// DeliveryInsertResult is what recording a delivery did.
type DeliveryInsertResult struct {
	DeliveryID int64
	ReceivedAt time.Time
	RunIDs     []int64    // the runs created for this delivery, in decision order
	Decisions  []Decision // one per (mapping, ref), or one for the whole delivery

	stopRunning []int64
}

// DeliveryInsert records a delivery, its refs and a decision per (mapping, ref), and creates and enqueues a run
// for every decision that triggers, all in one transaction: after it returns nil everything is durable, and
// after an error nothing is. A (mapping, repo, ref, revision) that already has a webhook run is recorded as a
// duplicate of it and enqueues nothing, which makes retried and replayed deliveries harmless, also when they
// arrive at once. Every database error is CodeUnavailable: the sender should try again.
func (s *Store) DeliveryInsert(ctx context.Context, p DeliveryInsertParams) (*DeliveryInsertResult, error) {
	res, err := s.deliveryInsert(ctx, p)
	if err != nil {
		return nil, WrapError(CodeUnavailable, err, "database unavailable, try again")
	}
	return res, nil
}

func (s *Store) deliveryInsert(ctx context.Context, p DeliveryInsertParams) (*DeliveryInsertResult, error) {
	it := &ingestItem{ctx: ctx, p: p, done: make(chan struct{})}
	s.submit(it)
	if it.err != nil {
		return nil, it.err
	}
	res := it.res
	// With cancel_running, older running runs are stopped in whichever process runs them. The delivery is
	// recorded already; a failure here leaves those runs to finish, which is logged by the caller's queue.
	for _, jobID := range res.stopRunning {
		_ = s.queue.Cancel(context.WithoutCancel(ctx), jobID)
	}
	if res.RunIDs == nil {
		res.RunIDs = []int64{}
	}
	return res, nil
}

// schedule is what scheduleRun decided for a new run.
type schedule struct {
	notBefore *time.Time // the end of its quiet period, enforced when a worker picks it up
	stopJobs  []int64    // jobs of running runs to stop after commit (cancel_running)
}

// scheduleRun applies the mapping's trigger settings to a new run at delivery time. With a quiet period, the
// run may start once the burst has been quiet for that long, but no later than max_wait after the burst's first
// revision (the oldest waiting webhook run of the same ref). With cancel_running, older running runs of the ref
// are asked to stop. It costs no round trip with the default settings.
func (s *Store) scheduleRun(ctx context.Context, tx pgx.Tx, dec *Decision) (schedule, error) {
	m := dec.mapping
	var sched schedule
	if m.QuietPeriod > 0 {
		err := tx.QueryRow(ctx, `
			WITH burst AS (
				SELECT least(now(), (SELECT min(coalesce(burst_started_at, created_at)) FROM runs
					WHERE mapping_id = $2 AND ref = $3 AND id < $1 AND status = `+sqlStatus(RunQueued)+` AND trigger = 'webhook')) AS started
			)
			UPDATE runs SET burst_started_at = burst.started,
				not_before = least(now() + $4 * interval '1 millisecond', burst.started + $5 * interval '1 millisecond')
			FROM burst WHERE runs.id = $1
			RETURNING runs.not_before`,
			dec.RunID, dec.MappingID, dec.Ref, m.QuietPeriod.Milliseconds(), m.MaxWait.Milliseconds(),
		).Scan(&sched.notBefore)
		if err != nil {
			return sched, fmt.Errorf("schedule run: %w", err)
		}
	}
	if m.OnNewRevision == OnNewRevisionCancelRunning {
		rows, err := tx.Query(ctx, stopEarlierSQL, dec.RunID, dec.MappingID, dec.Ref)
		if err != nil {
			return sched, fmt.Errorf("stop older runs: %w", err)
		}
		jobIDs, err := pgx.CollectRows(rows, pgx.RowTo[*int64])
		if err != nil {
			return sched, fmt.Errorf("stop older runs: %w", err)
		}
		for _, id := range jobIDs {
			if id != nil {
				sched.stopJobs = append(sched.stopJobs, *id)
			}
		}
	}
	return sched, nil
}

// stopEarlierSQL asks the running runs of a new run's ref whose revisions come before the new one in the ref's
// recorded history to stop for it (cancel_running). It walks the history back from the new revision, only
// while a run of the ref is running, and stops at the first running one: a run the history does not place
// before the new one (a delivery between them never came) is left running.
var stopEarlierSQL = `
WITH RECURSIVE earlier(revision, old_revision, status, depth) AS (
	SELECT n.revision, n.old_revision, n.status, 0 FROM runs n
	WHERE n.id = $1 AND EXISTS (SELECT 1 FROM runs x WHERE x.mapping_id = $2 AND x.ref = $3
		AND x.status = ` + sqlStatus(RunRunning) + ` AND x.trigger = 'webhook')
	UNION ALL
	SELECT p.revision, p.old_revision, p.status, e.depth + 1 FROM earlier e, LATERAL (
		SELECT p.revision, p.old_revision, p.status FROM runs p
		WHERE p.mapping_id = $2 AND p.ref = $3 AND p.revision = e.old_revision AND p.trigger = 'webhook'
			AND p.repo_id = (SELECT repo_id FROM runs WHERE id = $1) LIMIT 1) p
	WHERE (e.depth = 0 OR e.status <> ` + sqlStatus(RunRunning) + `) AND e.depth < ` + fmt.Sprint(historyDepthMax) + `
)
UPDATE runs SET superseded_by = $1, cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
FROM earlier e
WHERE e.depth > 0 AND e.status = ` + sqlStatus(RunRunning) + ` AND runs.mapping_id = $2 AND runs.ref = $3
	AND runs.revision = e.revision AND runs.status = ` + sqlStatus(RunRunning) + ` AND runs.trigger = 'webhook'
	AND runs.repo_id = (SELECT repo_id FROM runs WHERE id = $1)
RETURNING runs.job_id`

// markBaselines turns the queued decisions of a catch-up delivery whose (mapping, ref) has no recorded
// revision yet into baseline decisions, unless the mapping sets run_on_baseline: a new mapping must not start
// an expensive run by surprise.
func (s *Store) markBaselines(ctx context.Context, tx pgx.Tx, decisions []Decision) error {
	for i := range decisions {
		dec := &decisions[i]
		if dec.Decision != DecisionQueued || dec.mapping.RunOnBaseline {
			continue
		}
		var seen bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM decisions WHERE mapping_id = $1 AND ref = $2
			AND new_sha IS NOT NULL AND decision IN ('queued', 'duplicate', 'baseline'))`, dec.MappingID, dec.Ref).Scan(&seen); err != nil {
			return fmt.Errorf("look for a recorded revision: %w", err)
		}
		if !seen {
			dec.Decision = DecisionBaseline
			dec.Reason = "first revision seen for this ref: recorded as the baseline, not run (run_on_baseline is off)"
		}
	}
	return nil
}

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

// DeliveryList returns deliveries, newest first, with their refs and decisions.
func (s *Store) DeliveryList(ctx context.Context, p DeliveryListParams) ([]DeliveryRecord, error) {
	limit := clampLimit(p.Limit, DeliveryListLimitDefault, DeliveryListLimitMax)
	// A bound, never an optional one, so that any plan starts the walk of the primary key at the page.
	before := p.BeforeID
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := s.pool.Query(ctx, `
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
		LIMIT $2`, before, limit)
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
	if err := s.pool.QueryRow(ctx, `SELECT payload, coalesce(payload_shortened_from, 0) FROM deliveries WHERE id = $1`,
		id).Scan(&d.Payload, &d.PayloadShortenedFrom); err != nil {
		return nil, dbError(err, "get delivery payload")
	}
	return d, nil
}
