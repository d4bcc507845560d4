package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeliveryInsertParams is a delivery to record.
type DeliveryInsertParams struct {
	Delivery   *Delivery
	Source     string // DeliverySourceWebhook when empty
	RemoteAddr string
	Secret     string // which webhook secret matched: SecretCurrent (when empty) or SecretPrevious
}

// DeliverySourceReconcile marks the deliveries that catch-up records when the Hub has a revision the webhooks
// did not bring.
const DeliverySourceReconcile = "reconcile"

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

type runKey struct {
	mappingID int64
	ref, sha  string
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
	d := p.Delivery
	source := p.Source
	if source == "" {
		source = DeliverySourceWebhook
	}
	secret := p.Secret
	if secret == "" {
		secret = SecretCurrent
	}

	// 1. Decide against the enabled mappings. Reading them outside the transaction is fine: a mapping
	// enabled a moment later would not have seen this delivery either.
	var mappings []Mapping
	if d.IsContentUpdate() && d.RepoType == "dataset" {
		var err error
		if mappings, err = s.MappingListEnabled(ctx); err != nil {
			return nil, err
		}
	}
	decisions := Decide(d, mappings)

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	// 2. The delivery and its refs, in one statement.
	refs, olds, news := make([]string, len(d.Refs)), make([]string, len(d.Refs)), make([]string, len(d.Refs))
	for i, r := range d.Refs {
		refs[i], olds[i], news[i] = r.Ref, r.OldSha, r.NewSha
	}
	res := &DeliveryInsertResult{Decisions: decisions}
	err = tx.QueryRow(ctx, `
		WITH d AS (
			INSERT INTO deliveries (source, scope, action, repo_type, repo_name, repo_id, webhook_id, remote_addr, payload, secret)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $13)
			RETURNING id, received_at
		), r AS (
			INSERT INTO delivery_refs (delivery_id, position, ref, old_sha, new_sha)
			SELECT d.id, u.ord - 1, u.ref, NULLIF(u.old_sha, ''), NULLIF(u.new_sha, '')
			FROM d, unnest($10::text[], $11::text[], $12::text[]) WITH ORDINALITY AS u(ref, old_sha, new_sha, ord)
		)
		SELECT id, received_at FROM d`,
		source, d.Scope, d.Action, d.RepoType, d.RepoName, d.RepoID, d.WebhookID, p.RemoteAddr, d.Raw,
		refs, olds, news, secret,
	).Scan(&res.DeliveryID, &res.ReceivedAt)
	if err != nil {
		return nil, fmt.Errorf("insert delivery: %w", err)
	}

	// 3. Catch-up's first sight of a ref records it as a baseline instead of running it, unless the mapping
	// asks for that run.
	if source == DeliverySourceReconcile {
		if err := s.markBaselines(ctx, tx, decisions); err != nil {
			return nil, err
		}
	}

	// 4. Runs for the triggering decisions: a conflict on the dedup index means the run exists already. A new
	// run waits out its mapping's quiet period; older runs of its ref that have not started give way to it when
	// a worker picks them up (RunAttemptStart), so deliveries of one dataset never wait for each other here.
	runIDs, created, err := s.insertRuns(ctx, tx, d, res.DeliveryID, decisions)
	if err != nil {
		return nil, err
	}
	var jobs []RunJob
	for i := range decisions {
		dec := &decisions[i]
		if dec.Decision != DecisionQueued {
			continue
		}
		key := runKey{dec.MappingID, dec.Ref, dec.NewSha}
		dec.RunID = runIDs[key]
		if !created[key] {
			dec.Decision = DecisionDuplicate
			dec.Reason = fmt.Sprintf("duplicate of run %d", dec.RunID)
			continue
		}
		delete(created, key) // the same ref listed twice in one delivery is one run
		res.RunIDs = append(res.RunIDs, dec.RunID)
		sched, err := s.scheduleRun(ctx, tx, dec)
		if err != nil {
			return nil, err
		}
		res.stopRunning = append(res.stopRunning, sched.stopJobs...)
		jobs = append(jobs, RunJob{RunID: dec.RunID, MaxAttempts: dec.mapping.MaxAttempts, Queue: dec.mapping.Queue})
	}

	// 4. The decisions, then the queue jobs, in the same transaction.
	n := len(decisions)
	mappingIDs, decRefs, shas, kinds, reasons, decRunIDs :=
		make([]*int64, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]*int64, n)
	for i, dec := range decisions {
		if dec.MappingID != 0 {
			mappingIDs[i] = &dec.MappingID
		}
		if dec.RunID != 0 {
			decRunIDs[i] = &dec.RunID
		}
		decRefs[i], shas[i], kinds[i], reasons[i] = dec.Ref, dec.NewSha, string(dec.Decision), dec.Reason
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO decisions (delivery_id, mapping_id, ref, new_sha, decision, reason, run_id)
		SELECT $1, u.mapping_id, u.ref, NULLIF(u.sha, ''), u.decision, u.reason, u.run_id
		FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
			AS u(mapping_id, ref, sha, decision, reason, run_id)`,
		res.DeliveryID, mappingIDs, decRefs, shas, kinds, reasons, decRunIDs); err != nil {
		return nil, fmt.Errorf("insert decisions: %w", err)
	}
	if err := s.enqueueTx(ctx, tx, jobs); err != nil {
		return nil, err
	}

	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
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
					WHERE mapping_id = $2 AND ref = $3 AND id < $1 AND status = 'queued' AND trigger = 'webhook')) AS started
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
		rows, err := tx.Query(ctx, `
			UPDATE runs SET superseded_by = $1, cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
			WHERE mapping_id = $2 AND ref = $3 AND id < $1 AND status = 'running' AND trigger = 'webhook'
			RETURNING job_id`, dec.RunID, dec.MappingID, dec.Ref)
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

// insertRuns creates the runs of the queued decisions that do not exist yet. It returns the run id of every
// queued (mapping, ref, revision), and which of them it created.
func (s *Store) insertRuns(ctx context.Context, tx pgx.Tx, d *Delivery, deliveryID int64, decisions []Decision) (map[runKey]int64, map[runKey]bool, error) {
	var mappingIDs []int64
	var refs, shas, olds []string
	var maxAttempts []int32
	for _, dec := range decisions {
		if dec.Decision != DecisionQueued {
			continue
		}
		mappingIDs = append(mappingIDs, dec.MappingID)
		refs = append(refs, dec.Ref)
		shas = append(shas, dec.NewSha)
		olds = append(olds, dec.OldSha)
		maxAttempts = append(maxAttempts, int32(dec.mapping.MaxAttempts))
	}
	ids := make(map[runKey]int64, len(mappingIDs))
	created := make(map[runKey]bool, len(mappingIDs))
	if len(mappingIDs) == 0 {
		return ids, created, nil
	}

	scanInto := func(rows pgx.Rows, isNew bool) error {
		defer rows.Close()
		for rows.Next() {
			var id int64
			var k runKey
			if err := rows.Scan(&id, &k.mappingID, &k.ref, &k.sha); err != nil {
				return err
			}
			ids[k] = id
			created[k] = isNew
		}
		return rows.Err()
	}

	rows, err := tx.Query(ctx, `
		INSERT INTO runs (mapping_id, dataset, repo_id, ref, revision, old_revision, trigger, delivery_id, status, max_attempts)
		SELECT u.mapping_id, $1, $2, u.ref, u.revision, NULLIF(u.old_revision, ''), 'webhook', $3, 'queued', u.max_attempts
		FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[], $8::int[])
			AS u(mapping_id, ref, revision, old_revision, max_attempts)
		ON CONFLICT (mapping_id, repo_id, ref, revision) WHERE trigger = 'webhook' DO NOTHING
		RETURNING id, mapping_id, ref, revision`,
		d.RepoName, d.RepoID, deliveryID, mappingIDs, refs, shas, olds, maxAttempts)
	if err != nil {
		return nil, nil, fmt.Errorf("insert runs: %w", err)
	}
	if err := scanInto(rows, true); err != nil {
		return nil, nil, fmt.Errorf("insert runs: %w", err)
	}
	if len(ids) == len(mappingIDs) {
		return ids, created, nil
	}

	rows, err = tx.Query(ctx, `
		SELECT r.id, r.mapping_id, r.ref, r.revision
		FROM runs r JOIN unnest($2::bigint[], $3::text[], $4::text[]) AS u(mapping_id, ref, revision)
			ON r.mapping_id = u.mapping_id AND r.ref = u.ref AND r.revision = u.revision
		WHERE r.trigger = 'webhook' AND r.repo_id = $1`,
		d.RepoID, mappingIDs, refs, shas)
	if err != nil {
		return nil, nil, fmt.Errorf("find existing runs: %w", err)
	}
	existing := make(map[runKey]int64)
	defer rows.Close()
	for rows.Next() {
		var id int64
		var k runKey
		if err := rows.Scan(&id, &k.mappingID, &k.ref, &k.sha); err != nil {
			return nil, nil, fmt.Errorf("find existing runs: %w", err)
		}
		existing[k] = id
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("find existing runs: %w", err)
	}
	for k, id := range existing {
		if _, ok := ids[k]; !ok {
			ids[k] = id
		}
	}
	return ids, created, nil
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
		WHERE ($1 = 0 OR d.id < $1)
		ORDER BY d.id DESC
		LIMIT $2`, p.BeforeID, limit)
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

// DeliveryWithPayload is a stored delivery with its raw body.
type DeliveryWithPayload struct {
	DeliveryRecord
	Payload []byte `json:"-"`
}

// DeliveryGetByID returns one delivery with its refs, decisions and raw body, or an error with CodeNotFound.
func (s *Store) DeliveryGetByID(ctx context.Context, id int64) (*DeliveryWithPayload, error) {
	list, err := s.DeliveryList(ctx, DeliveryListParams{BeforeID: id + 1, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 || list[0].ID != id {
		return nil, Errorf(CodeNotFound, "delivery %d not found", id)
	}
	d := &DeliveryWithPayload{DeliveryRecord: list[0]}
	if err := s.pool.QueryRow(ctx, `SELECT payload FROM deliveries WHERE id = $1`, id).Scan(&d.Payload); err != nil {
		return nil, dbError(err, "get delivery payload")
	}
	return d, nil
}
