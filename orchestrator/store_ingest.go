package orchestrator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Recording deliveries: the transaction that writes a group of them (ingest.go groups them), with their refs,
// their decisions and the runs they create, and the statements it runs.

// DeliveryInsertParams is a delivery to record.
type DeliveryInsertParams struct {
	Delivery   *Delivery
	Source     DeliverySource // DeliverySourceWebhook when empty
	RemoteAddr string
	Secret     Secret // which webhook secret matched: SecretCurrent when empty
}

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
//
// Deliveries recorded at the same time share their transaction (see ingester).
func (s *Store) DeliveryInsert(ctx context.Context, p DeliveryInsertParams) (*DeliveryInsertResult, error) {
	res, err := s.ingest.submit(ctx, p)
	if err != nil {
		return nil, WrapError(CodeUnavailable, err, "database unavailable, try again")
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

// ingestStaleRetries is how often a group is written again after the mappings changed under it.
const ingestStaleRetries = 3

// errStaleMappings says that the mappings changed after the in-memory copy the decisions were made against.
var errStaleMappings = errors.New("the mappings changed while the delivery was recorded")

// writeDeliveries writes items in one transaction, deciding them again when the mappings changed meanwhile. It
// is the ingester's write.
func (s *Store) writeDeliveries(ctx context.Context, items []*ingestItem) error {
	for try := 0; ; try++ {
		err := s.ingestTx(ctx, items)
		if errors.Is(err, errStaleMappings) && try < ingestStaleRetries {
			continue
		}
		if err != nil {
			for _, it := range items {
				it.res = nil
			}
		}
		return err
	}
}

// ingestTx records the deliveries of items, their refs and decisions, and creates and enqueues their runs, in
// one transaction: a single round trip for its BEGIN and all the rows of all the deliveries, one for the
// queue's jobs (River adds one for its NOTIFY, at most every few milliseconds) and one for the commit; one more
// when another transaction created some of its runs meanwhile (resolveDuplicates), and one when its new runs
// stop running ones (lockStoppingRefs).
//
// Two group transactions never wait for each other both, so PostgreSQL never has a deadlock to break between
// them (which it does only after deadlock_timeout). They wait for each other at two places only:
//   - a run whose dedup key the other inserted and has not committed: the group's statement inserts its runs
//     in the key's order, so a group waiting at key k has inserted its keys before k and none after, and two
//     groups waiting for each other would each have inserted a key the other waits at, before its own: k1 < k2
//     and k2 < k1. The other rows the statement writes (deliveries, their refs, decisions) are new rows no
//     other transaction can conflict with, and the rows it locks for its foreign keys (mappings, runs) are
//     locked for key share, which no group's update of them (none of which changes a key) waits for.
//   - a running run that both stop (cancel_running): a group takes the advisory locks of the refs whose
//     running runs it stops first, in the locks' order, so only one group at a time locks a ref's running
//     runs, and groups wait for each other's ref locks in one order. Only a group past its statement holds
//     ref locks, and a group in its statement holds nothing but its keys, which only groups in their
//     statements wait for: the two kinds of waits never make one cycle.
//
// The rest waits for no other group: the quiet period updates the group's own new runs, raced duplicates its
// own decisions, and River's inserts are of jobs with ids of their own, none of them unique jobs.
func (s *Store) ingestTx(ctx context.Context, items []*ingestItem) error {
	gen, mappings, err := s.mappings.get(ctx, s)
	if err != nil {
		return err
	}
	for _, it := range items {
		d := it.p.Delivery
		var ms []Mapping
		if d.MayTrigger() {
			ms = mappings
		}
		it.res = &DeliveryInsertResult{Decisions: Decide(d, ms)}
	}
	reserved, err := s.reserveJobIDs(ctx, items)
	if err != nil {
		return err
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// A connection released inside a transaction (after a failed rollback) is closed by the pool.
	defer conn.Release()
	// The transaction begins in the batch of its first statements, saving the round trip of a BEGIN alone.
	var tx pgx.Tx
	defer func() {
		if tx != nil {
			_ = tx.Rollback(ctx)
		}
	}()
	send := func(b *pgx.Batch) error {
		if tx != nil {
			return tx.SendBatch(ctx, b).Close()
		}
		br := conn.SendBatch(ctx, b)
		tx = br.Tx()
		return br.Close()
	}
	batch := &pgx.Batch{}
	batch.BeginTx(pgx.TxOptions{})
	// Its statements are prepared once per connection; the plan made once spares PostgreSQL planning the
	// group's statement again for every group, which costs more than executing it (its arrays give custom plans
	// no better estimates).
	batch.Queue(planOnceSQL)

	// Catch-up's first sight of a ref records it as a baseline instead of running it, unless the mapping asks
	// for that run.
	for _, it := range items {
		if it.p.Source != DeliverySourceReconcile {
			continue
		}
		if tx == nil {
			if err := send(batch); err != nil {
				return fmt.Errorf("begin: %w", err)
			}
			batch = &pgx.Batch{}
		}
		if err := s.markBaselines(ctx, tx, it.res.Decisions); err != nil {
			return err
		}
	}

	out := make([]groupInsertRow, len(items))
	args := groupInsert.args(newGroupRows(items, reserved).args())
	batch.Queue(groupInsert.sql, args...).Query(func(rows pgx.Rows) error {
		i := 0
		for rows.Next() {
			if i == len(items) {
				return fmt.Errorf("more rows than the %d deliveries", len(items))
			}
			o := &out[i]
			if err := rows.Scan(&items[i].res.DeliveryID, &items[i].res.ReceivedAt, &o.generation, &o.kinds,
				&o.runIDs, &o.jobIDs, &o.newer); err != nil {
				return err
			}
			i++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if i != len(items) {
			return fmt.Errorf("%d rows for %d deliveries", i, len(items))
		}
		return nil
	})
	if err := send(batch); err != nil {
		return fmt.Errorf("insert deliveries: %w", err)
	}
	for _, o := range out {
		if o.generation != gen {
			s.mappings.forget(gen)
			return errStaleMappings
		}
	}

	var jobs []RunJob
	var created []newRun
	var raced []racedDecision
	for i, it := range items {
		res, o := it.res, out[i]
		for j := range res.Decisions {
			dec := &res.Decisions[j]
			if o.runIDs[j] != nil {
				dec.RunID = *o.runIDs[j]
			}
			queued := dec.Decision == DecisionQueued
			dec.Decision = DecisionKind(o.kinds[j])
			switch {
			case queued && dec.Decision == DecisionIgnored:
				dec.Cause, dec.Reason = IgnoreOlder, olderReason(o.newer[j], dec.Ref)
				continue
			case dec.Decision == DecisionDuplicate:
				dec.Reason = duplicateReason(dec.RunID)
				continue
			case dec.Decision != DecisionQueued:
				continue
			case dec.RunID == 0:
				// Another transaction created the run after this statement began: it is a duplicate.
				raced = append(raced, racedDecision{deliveryID: res.DeliveryID, repoID: it.p.Delivery.RepoID, dec: dec})
				continue
			}
			res.RunIDs = append(res.RunIDs, dec.RunID)
			created = append(created, newRun{res: res, dec: dec, repoID: it.p.Delivery.RepoID})
			job := RunJob{RunID: dec.RunID, MaxAttempts: dec.mapping.MaxAttempts, Queue: dec.mapping.Queue}
			if o.jobIDs[j] != nil {
				job.JobID = *o.jobIDs[j]
			}
			jobs = append(jobs, job)
		}
	}
	if err := resolveDuplicates(ctx, tx, raced); err != nil {
		return err
	}
	if err := lockStoppingRefs(ctx, tx, created); err != nil {
		return err
	}
	for _, n := range created {
		// A new run waits out its mapping's quiet period; older runs of its ref that have not started
		// give way to it when a worker picks them up (RunAttemptStart), so deliveries of one dataset never
		// wait for each other here.
		sched, err := s.scheduleRun(ctx, tx, n.dec)
		if err != nil {
			return err
		}
		n.res.stopRunning = append(n.res.stopRunning, sched.stopJobs...)
	}
	if err := s.enqueueTx(ctx, tx, jobs); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// newRun is a run that a group's statement created, to schedule.
type newRun struct {
	res    *DeliveryInsertResult // of the delivery that created it
	dec    *Decision
	repoID string
}

// stopsRunning tells whether scheduling the run stops older running runs of its ref (scheduleRun).
func (n newRun) stopsRunning() bool {
	m := n.dec.mapping
	return m.OnNewRevision == OnNewRevisionCancelRunning && m.PathFilter().Empty()
}

// refLockSpace is the first key of the transaction-level advisory locks (the two-key form, whose keys no
// one-key lock shares) that group transactions take on the refs whose running runs they stop.
const refLockSpace int32 = 0x72656673

// refLockKey returns the second key of the lock of a (mapping, repository, ref): a hash, since two refs that
// share a key only take their turns together.
func refLockKey(mappingID int64, repoID, ref string) int32 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d\x00%s\x00%s", mappingID, repoID, ref)
	return int32(h.Sum32())
}

// lockStoppingRefs takes, in one round trip and in the order of their keys, the advisory lock of each ref whose
// running runs the group's new runs stop. Those row locks are the only ones a group takes on rows that other
// groups may lock too (runs of the same ref): under the ref's lock only one group at a time takes them, and
// groups wait for each other's ref locks in one order, so two groups never wait for each other.
func lockStoppingRefs(ctx context.Context, tx pgx.Tx, runs []newRun) error {
	var keys []int32
	for _, n := range runs {
		if n.stopsRunning() {
			keys = append(keys, refLockKey(n.dec.MappingID, n.repoID, n.dec.Ref))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	b := &pgx.Batch{}
	for _, k := range slices.Compact(keys) {
		b.Queue(`SELECT pg_advisory_xact_lock($1::int, $2::int)`, refLockSpace, k)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("lock refs: %w", err)
	}
	return nil
}

// reserveJobIDs reserves a job id for each queued decision of items: at least one for each run that the group's
// statement may create, since a run is created for a queued decision only.
func (s *Store) reserveJobIDs(ctx context.Context, items []*ingestItem) ([]int64, error) {
	n := 0
	for _, it := range items {
		for _, dec := range it.res.Decisions {
			if dec.Decision == DecisionQueued {
				n++
			}
		}
	}
	if n == 0 {
		return nil, nil
	}
	if s.queue == nil {
		return nil, errors.New("store has no queue")
	}
	ids, err := s.queue.ReserveJobIDs(ctx, n)
	if err != nil {
		return nil, dbError(err, "reserve job ids")
	}
	return ids, nil
}

// The rows groupInsertSQL writes for a group of deliveries. Refs, runs and decisions name their delivery by its
// place in the group (dord, from 1); the statement gives the deliveries their ids.
type (
	// deliveryRow is a delivery.
	deliveryRow struct {
		source                        string
		scope, action                 string
		repoType, repoName, repoID    string
		webhookID, remoteAddr, secret string
		payload                       []byte
		payloadShortenedFrom          int64 // 0: payload is the body as received
	}
	// refRow is one of a delivery's updatedRefs, at its position in them.
	refRow struct {
		dord                int64
		position            int32
		ref, oldSha, newSha string
	}
	// runRow is a run that a queued decision asks for: one per distinct (mapping, repository, ref, revision) of
	// the group, with the first delivery that asks for it and a job id reserved from the queue.
	runRow struct {
		dord, mappingID            int64
		ref, revision, oldRevision string
		maxAttempts                int32
		newestOnly                 bool // the mapping trains only the newest revision (not on_new_revision queue)
		jobID                      int64
		checkFiles                 bool // the mapping has paths or ignore_paths: the run's files check is pending
	}
	// decisionRow is a decision as Decide made it; the statement settles whether a queued one is a duplicate.
	decisionRow struct {
		dord                       int64
		mappingID                  *int64 // nil for a decision on the whole delivery
		ref, sha, decision, reason string
	}
)

// groupRows holds the rows of a group, in order.
type groupRows struct {
	deliveries []deliveryRow
	refs       []refRow
	runs       []runRow
	decisions  []decisionRow
}

// runKey names a run by what deduplicates it: (mapping, repository, ref, revision).
type runKey struct {
	mappingID        int64
	repoID, ref, sha string
}

// newGroupRows returns the rows of the deliveries of items, decided. jobIDs holds a reserved job id for each
// queued decision of items, at least one per run to create.
func newGroupRows(items []*ingestItem, jobIDs []int64) groupRows {
	nRefs, nDecisions := 0, 0
	for _, it := range items {
		nRefs, nDecisions = nRefs+len(it.p.Delivery.Refs), nDecisions+len(it.res.Decisions)
	}
	g := groupRows{deliveries: make([]deliveryRow, 0, len(items)), refs: make([]refRow, 0, nRefs),
		runs: make([]runRow, 0, len(jobIDs)), decisions: make([]decisionRow, 0, nDecisions)}
	seen := map[runKey]bool{}
	for i, it := range items {
		d, dord := it.p.Delivery, int64(i+1)
		g.deliveries = append(g.deliveries, deliveryRow{
			source: string(cmp.Or(it.p.Source, DeliverySourceWebhook)), scope: d.Scope, action: d.Action,
			repoType: d.RepoType, repoName: d.RepoName, repoID: d.RepoID, webhookID: d.WebhookID,
			remoteAddr: it.p.RemoteAddr, secret: string(cmp.Or(it.p.Secret, SecretCurrent)),
			payload: d.Raw, payloadShortenedFrom: d.ShortenedFrom,
		})
		for j, r := range d.Refs {
			g.refs = append(g.refs, refRow{dord: dord, position: int32(j), ref: r.Ref, oldSha: r.OldSha, newSha: r.NewSha})
		}
		for _, dec := range it.res.Decisions {
			var mappingID *int64
			if dec.MappingID != 0 {
				mappingID = &dec.MappingID
			}
			g.decisions = append(g.decisions, decisionRow{dord: dord, mappingID: mappingID, ref: dec.Ref,
				sha: dec.NewSha, decision: string(dec.Decision), reason: dec.Reason})
			key := runKey{dec.MappingID, d.RepoID, dec.Ref, dec.NewSha}
			if dec.Decision != DecisionQueued || seen[key] {
				continue
			}
			seen[key] = true
			g.runs = append(g.runs, runRow{dord: dord, mappingID: dec.MappingID, ref: dec.Ref, revision: dec.NewSha,
				oldRevision: dec.OldSha, maxAttempts: int32(dec.mapping.MaxAttempts),
				newestOnly: dec.mapping.OnNewRevision != OnNewRevisionQueue, jobID: jobIDs[len(g.runs)],
				checkFiles: !dec.mapping.PathFilter().Empty()})
		}
	}
	return g
}

// args returns the rows as the named arguments of groupInsertSQL: a column of one of the tables each.
func (g groupRows) args() pgx.NamedArgs {
	d, r, w, x := g.deliveries, g.refs, g.runs, g.decisions
	return pgx.NamedArgs{
		"delivery_source":                 column(d, func(d deliveryRow) string { return d.source }),
		"delivery_scope":                  column(d, func(d deliveryRow) string { return d.scope }),
		"delivery_action":                 column(d, func(d deliveryRow) string { return d.action }),
		"delivery_repo_type":              column(d, func(d deliveryRow) string { return d.repoType }),
		"delivery_repo_name":              column(d, func(d deliveryRow) string { return d.repoName }),
		"delivery_repo_id":                column(d, func(d deliveryRow) string { return d.repoID }),
		"delivery_webhook_id":             column(d, func(d deliveryRow) string { return d.webhookID }),
		"delivery_remote_addr":            column(d, func(d deliveryRow) string { return d.remoteAddr }),
		"delivery_payload":                column(d, func(d deliveryRow) []byte { return d.payload }),
		"delivery_payload_shortened_from": column(d, func(d deliveryRow) int64 { return d.payloadShortenedFrom }),
		"delivery_secret":                 column(d, func(d deliveryRow) string { return d.secret }),

		"ref_dord":     column(r, func(r refRow) int64 { return r.dord }),
		"ref_position": column(r, func(r refRow) int32 { return r.position }),
		"ref_ref":      column(r, func(r refRow) string { return r.ref }),
		"ref_old_sha":  column(r, func(r refRow) string { return r.oldSha }),
		"ref_new_sha":  column(r, func(r refRow) string { return r.newSha }),

		"run_dord":         column(w, func(w runRow) int64 { return w.dord }),
		"run_mapping_id":   column(w, func(w runRow) int64 { return w.mappingID }),
		"run_ref":          column(w, func(w runRow) string { return w.ref }),
		"run_revision":     column(w, func(w runRow) string { return w.revision }),
		"run_old_revision": column(w, func(w runRow) string { return w.oldRevision }),
		"run_max_attempts": column(w, func(w runRow) int32 { return w.maxAttempts }),
		"run_newest_only":  column(w, func(w runRow) bool { return w.newestOnly }),
		"run_job_id":       column(w, func(w runRow) int64 { return w.jobID }),
		"run_check_files":  column(w, func(w runRow) bool { return w.checkFiles }),

		"decision_dord":       column(x, func(x decisionRow) int64 { return x.dord }),
		"decision_mapping_id": column(x, func(x decisionRow) *int64 { return x.mappingID }),
		"decision_ref":        column(x, func(x decisionRow) string { return x.ref }),
		"decision_sha":        column(x, func(x decisionRow) string { return x.sha }),
		"decision_kind":       column(x, func(x decisionRow) string { return x.decision }),
		"decision_reason":     column(x, func(x decisionRow) string { return x.reason }),
	}
}

// column returns one field of every row: the array a statement reads a column from with unnest.
func column[R, T any](rows []R, field func(R) T) []T {
	out := make([]T, len(rows))
	for i, r := range rows {
		out[i] = field(r)
	}
	return out
}

// groupInsertRow is what groupInsertSQL returns of a delivery, beside its id and time: the mappings'
// generation, and for each of its decisions, in order, its kind, its run and the job id reserved for a new run,
// and the later revision that made a queued decision ignored.
type groupInsertRow struct {
	generation     int64
	kinds          []string
	runIDs, jobIDs []*int64
	newer          []string
}

// groupInsertSQL records the deliveries of a group in one statement: the deliveries, their refs, the runs of
// their queued decisions (a conflict on the dedup index means the run exists already) and their decisions.
// Each queued decision becomes a duplicate when its run existed or the same (mapping, repository, ref,
// revision) came earlier in the group. One statement for the group, rather than one per delivery, sets up
// its plan once: with a dozen indexes to open on runs alone, that set-up cost more than the rows.
//
// Its arguments are the columns of groupRows, by table. The deliveries' sequence is named as PostgreSQL names
// that of an identity column (deliveries_id_seq). Each new run records the job id reserved for it from the
// queue (see Store.reserveJobIDs).
//
// It returns one row per delivery, in order: its id and time, and a groupInsertRow. A queued decision without a
// run is one whose run a concurrent transaction committed while the statement ran: the caller resolves it.
var groupInsertSQL = `
WITH din AS MATERIALIZED (
	SELECT u.dord, nextval('deliveries_id_seq') AS id, u.source, u.scope, u.action, u.repo_type, u.repo_name,
		u.repo_id, u.webhook_id, u.remote_addr, u.payload, NULLIF(u.payload_shortened_from, 0) AS payload_shortened_from, u.secret
	FROM unnest(@delivery_source::text[], @delivery_scope::text[], @delivery_action::text[], @delivery_repo_type::text[],
		@delivery_repo_name::text[], @delivery_repo_id::text[], @delivery_webhook_id::text[], @delivery_remote_addr::text[],
		@delivery_payload::bytea[], @delivery_payload_shortened_from::bigint[], @delivery_secret::text[]) WITH ORDINALITY
		AS u(source, scope, action, repo_type, repo_name, repo_id, webhook_id, remote_addr, payload, payload_shortened_from, secret, dord)
), d AS (
	INSERT INTO deliveries (id, source, scope, action, repo_type, repo_name, repo_id, webhook_id, remote_addr, payload, payload_shortened_from, secret)
	OVERRIDING SYSTEM VALUE
	SELECT id, source, scope, action, repo_type, repo_name, repo_id, webhook_id, remote_addr, payload, payload_shortened_from, secret FROM din
	RETURNING id, received_at
), r AS (
	INSERT INTO delivery_refs (delivery_id, position, ref, old_sha, new_sha)
	SELECT din.id, u.position, u.ref, NULLIF(u.old_sha, ''), NULLIF(u.new_sha, '')
	FROM unnest(@ref_dord::bigint[], @ref_position::int[], @ref_ref::text[], @ref_old_sha::text[], @ref_new_sha::text[])
		AS u(dord, position, ref, old_sha, new_sha)
	JOIN din ON din.dord = u.dord
), win AS MATERIALIZED (
	-- The runs to create get their ids here, in the order they were asked for (the subquery's order, which
	-- nextval follows), and are inserted below in the dedup key's order.
	SELECT nextval('runs_id_seq') AS id, w.* FROM (
		SELECT w.mapping_id, din.repo_name, din.repo_id, w.ref, w.revision, w.old_revision, din.id AS delivery_id,
			w.max_attempts, w.job_id, w.check_files
		FROM unnest(@run_dord::bigint[], @run_mapping_id::bigint[], @run_ref::text[], @run_revision::text[],
			@run_old_revision::text[], @run_max_attempts::int[], @run_newest_only::boolean[], @run_job_id::bigint[],
			@run_check_files::boolean[]) WITH ORDINALITY
			AS w(dord, mapping_id, ref, revision, old_revision, max_attempts, newest_only, job_id, check_files, ord)
		JOIN din ON din.dord = w.dord
		-- A mapping that trains only the newest revision creates no run for one its ref's history already has
		-- a later revision of: the push of that later revision replaced this one.
		WHERE NOT (w.newest_only AND EXISTS (SELECT 1 FROM runs c WHERE c.mapping_id = w.mapping_id AND c.ref = w.ref
			AND c.old_revision = w.revision AND c.trigger = ` + sqlTriggerWebhook + ` AND c.repo_id = din.repo_id
			AND ` + sqlMayReplace("c") + `))
		ORDER BY w.ord) w
), ins AS (
	-- In the dedup key's order: a transaction that meets another's uncommitted run of the same key waits for
	-- it to end, and two groups that wait for each other would have to have met their keys in opposing orders
	-- (see ingestTx).
	INSERT INTO runs (id, mapping_id, dataset, repo_id, ref, revision, old_revision, trigger, delivery_id, status,
		max_attempts, job_id, files_check)
	OVERRIDING SYSTEM VALUE
	SELECT w.id, w.mapping_id, w.repo_name, w.repo_id, w.ref, w.revision, NULLIF(w.old_revision, ''),
		` + sqlTriggerWebhook + `, w.delivery_id, ` + sqlStatus(RunQueued) + `, w.max_attempts, w.job_id,
		CASE WHEN w.check_files THEN ` + sqlLiteral(FilesPending) + ` END
	FROM win w
	ORDER BY w.mapping_id, w.repo_id, w.ref, w.revision
	ON CONFLICT (mapping_id, repo_id, ref, revision) WHERE trigger = ` + sqlTriggerWebhook + ` DO NOTHING
	RETURNING id, mapping_id, repo_id, ref, revision, job_id
), x AS (
	SELECT u.ord, u.dord, din.id AS delivery_id, u.mapping_id, u.ref, u.sha, u.reason, o.revision AS newer,
		CASE WHEN u.decision = ` + sqlDecisionQueued + ` THEN coalesce(i.id, e.id) END AS run_id,
		CASE WHEN u.decision = ` + sqlDecisionQueued + ` THEN i.job_id END AS job_id,
		CASE WHEN u.decision <> ` + sqlDecisionQueued + ` THEN u.decision
			WHEN i.id IS NOT NULL
				AND u.ord = min(u.ord) OVER (PARTITION BY u.mapping_id, din.repo_id, u.ref, u.sha, u.decision)
				THEN ` + sqlDecisionQueued + `
			WHEN i.id IS NOT NULL OR e.id IS NOT NULL THEN ` + sqlDecisionDuplicate + `
			WHEN o.revision IS NOT NULL THEN ` + sqlDecisionIgnored + `
			ELSE ` + sqlDecisionQueued + ` END AS decision
	FROM unnest(@decision_dord::bigint[], @decision_mapping_id::bigint[], @decision_ref::text[], @decision_sha::text[],
		@decision_kind::text[], @decision_reason::text[]) WITH ORDINALITY
		AS u(dord, mapping_id, ref, sha, decision, reason, ord)
	JOIN din ON din.dord = u.dord
	LEFT JOIN ins i ON u.decision = ` + sqlDecisionQueued + ` AND i.mapping_id = u.mapping_id AND i.repo_id = din.repo_id
		AND i.ref = u.ref AND i.revision = u.sha
	LEFT JOIN LATERAL (SELECT e.id FROM runs e WHERE u.decision = ` + sqlDecisionQueued + ` AND i.id IS NULL
		AND e.trigger = ` + sqlTriggerWebhook + ` AND e.mapping_id = u.mapping_id AND e.repo_id = din.repo_id
		AND e.ref = u.ref AND e.revision = u.sha LIMIT 1) e ON true
	-- The later revision that kept the insert above from creating a run.
	LEFT JOIN LATERAL (SELECT c.revision FROM runs c WHERE u.decision = ` + sqlDecisionQueued + ` AND i.id IS NULL
		AND e.id IS NULL AND c.mapping_id = u.mapping_id AND c.ref = u.ref AND c.old_revision = u.sha
		AND c.trigger = ` + sqlTriggerWebhook + ` AND c.repo_id = din.repo_id AND ` + sqlMayReplace("c") + ` LIMIT 1) o ON true
), dec AS (
	INSERT INTO decisions (delivery_id, mapping_id, ref, new_sha, decision, reason, run_id)
	SELECT x.delivery_id, x.mapping_id, x.ref, NULLIF(x.sha, ''), x.decision,
		CASE WHEN x.decision = ` + sqlDecisionDuplicate + ` THEN ` + duplicateReasonSQL + `
			WHEN x.newer IS NOT NULL AND x.decision = ` + sqlDecisionIgnored + ` THEN ` + olderReasonSQL + `
			ELSE x.reason END, x.run_id
	FROM x ORDER BY x.ord
)
SELECT din.id, d.received_at, (SELECT generation FROM mapping_generation),
	coalesce((SELECT array_agg(x.decision ORDER BY x.ord) FROM x WHERE x.dord = din.dord), '{}'),
	coalesce((SELECT array_agg(x.run_id ORDER BY x.ord) FROM x WHERE x.dord = din.dord), '{}'),
	coalesce((SELECT array_agg(x.job_id ORDER BY x.ord) FROM x WHERE x.dord = din.dord), '{}'),
	coalesce((SELECT array_agg(coalesce(x.newer, '') ORDER BY x.ord) FROM x WHERE x.dord = din.dord), '{}')
FROM din JOIN d ON d.id = din.id
ORDER BY din.dord`

// groupInsert is groupInsertSQL with positional arguments.
var groupInsert = newPositional(groupInsertSQL, groupRows{}.args())

// positional is a statement written with named arguments (@name), turned into positional ones ($1) once: the
// rewrite that pgx.NamedArgs makes at every call costs more than building a group's rows.
type positional struct {
	sql   string
	names []string // the name of each argument, from $1
}

// newPositional turns sql into a positional statement; named holds every argument it names, and no other.
func newPositional(sql string, named pgx.NamedArgs) positional {
	names := pgx.StrictNamedArgs{}
	for name := range named {
		names[name] = name
	}
	out, args, err := names.RewriteQuery(context.Background(), nil, sql, nil)
	if err != nil {
		panic(fmt.Sprintf("named arguments: %v", err))
	}
	p := positional{sql: out, names: make([]string, len(args))}
	for i, a := range args {
		p.names[i] = a.(string)
	}
	return p
}

// args returns the values of named in the order of the statement's arguments.
func (p positional) args(named pgx.NamedArgs) []any {
	args := make([]any, len(p.names))
	for i, name := range p.names {
		args[i] = named[name]
	}
	return args
}

// duplicateReasonSQL is the reason of a duplicate decision, in SQL over x.run_id; duplicateReason says the same
// in Go.
const duplicateReasonSQL = `'duplicate of run ' || x.run_id`

// duplicateReason returns the reason duplicateReasonSQL writes.
func duplicateReason(runID int64) string { return fmt.Sprintf("duplicate of run %d", runID) }

// olderReasonSQL is the reason of a revision that its ref's recorded history already has a later revision of,
// in SQL over x.newer and x.ref; olderReason says the same in Go.
const olderReasonSQL = `'older than revision ' || left(x.newer, 12) || '…, already recorded for ' || x.ref`

// olderReason returns the reason olderReasonSQL writes.
func olderReason(newer, ref string) string {
	return fmt.Sprintf("older than revision %s…, already recorded for %s", newer[:min(len(newer), 12)], ref)
}

// racedDecision is a queued decision whose run another transaction created and committed while the group's
// statement ran, so that the statement could neither insert nor see it: a duplicate of that run.
type racedDecision struct {
	deliveryID int64
	repoID     string
	dec        *Decision
}

// decisionsMakeDuplicateSQL turns the queued decisions that found no run, of deliveries $1 for mappings $2, refs
// $3 and revisions $4 of repositories $5, into duplicates of the webhook runs of those revisions, and returns
// each decision's place in the arguments (from 1) and its run.
var decisionsMakeDuplicateSQL = `UPDATE decisions d SET decision = ` + sqlDecisionDuplicate + `,
	reason = 'duplicate of run ' || r.id, run_id = r.id
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY
		AS u(delivery_id, mapping_id, ref, sha, repo_id, ord)
	JOIN runs r ON r.trigger = ` + sqlTriggerWebhook + ` AND r.mapping_id = u.mapping_id AND r.repo_id = u.repo_id
		AND r.ref = u.ref AND r.revision = u.sha
WHERE d.delivery_id = u.delivery_id AND d.mapping_id = u.mapping_id AND d.ref = u.ref AND d.new_sha = u.sha
	AND d.decision = ` + sqlDecisionQueued + ` AND d.run_id IS NULL
RETURNING u.ord, r.id`

// resolveDuplicates records the raced decisions as duplicates of the runs that were created for them, in one
// round trip however many there are.
func resolveDuplicates(ctx context.Context, tx pgx.Tx, raced []racedDecision) error {
	if len(raced) == 0 {
		return nil
	}
	deliveryIDs, mappingIDs := make([]int64, len(raced)), make([]int64, len(raced))
	refs, shas, repoIDs := make([]string, len(raced)), make([]string, len(raced)), make([]string, len(raced))
	for i, r := range raced {
		deliveryIDs[i], mappingIDs[i], refs[i], shas[i], repoIDs[i] = r.deliveryID, r.dec.MappingID, r.dec.Ref,
			r.dec.NewSha, r.repoID
	}
	// Sent with the simple protocol, so that it is planned for its rows (the transaction asks for generic
	// plans, which know nothing of how few they are).
	rows, err := tx.Query(ctx, decisionsMakeDuplicateSQL, pgx.QueryExecModeSimpleProtocol,
		deliveryIDs, mappingIDs, refs, shas, repoIDs)
	if err != nil {
		return fmt.Errorf("record duplicates: %w", err)
	}
	n := 0
	var ord, runID int64
	if _, err := pgx.ForEachRow(rows, []any{&ord, &runID}, func() error {
		if ord < 1 || ord > int64(len(raced)) || raced[ord-1].dec.Decision == DecisionDuplicate {
			return fmt.Errorf("record duplicates: unexpected decision %d", ord)
		}
		dec := raced[ord-1].dec
		dec.Decision, dec.RunID, dec.Reason = DecisionDuplicate, runID, duplicateReason(runID)
		n++
		return nil
	}); err != nil {
		return fmt.Errorf("record duplicates: %w", err)
	}
	if n != len(raced) {
		return fmt.Errorf("record duplicates: %d of %d decisions found their run", n, len(raced))
	}
	return nil
}

// refSeenSQL tells whether a (mapping, ref) has a recorded revision: a decision that records one.
var refSeenSQL = `SELECT EXISTS (SELECT 1 FROM decisions WHERE mapping_id = $1 AND ref = $2
	AND new_sha IS NOT NULL AND decision IN (` + sqlDecisionsRecording + `))`

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
		if err := tx.QueryRow(ctx, refSeenSQL, dec.MappingID, dec.Ref).Scan(&seen); err != nil {
			return fmt.Errorf("look for a recorded revision: %w", err)
		}
		if !seen {
			dec.Decision = DecisionBaseline
			dec.Reason = "first revision seen for this ref: recorded as the baseline, not run (run_on_baseline is off)"
		}
	}
	return nil
}

// schedule is what scheduleRun decided for a new run.
type schedule struct {
	notBefore *time.Time // the end of its quiet period, enforced when a worker picks it up
	stopJobs  []int64    // jobs of running runs to stop after commit (cancel_running)
}

// runQuietPeriodSQL sets the end of a new run's quiet period: once the burst has been quiet for the period ($4
// ms), but no later than max_wait ($5 ms) after the burst's first revision (the oldest waiting webhook run of
// the same ref).
var runQuietPeriodSQL = `
WITH burst AS (
	SELECT least(now(), (SELECT min(coalesce(burst_started_at, created_at)) FROM runs
		WHERE mapping_id = $2 AND ref = $3 AND id < $1 AND status = ` + sqlStatus(RunQueued) + `
			AND trigger = ` + sqlTriggerWebhook + `)) AS started
)
UPDATE runs SET burst_started_at = burst.started,
	not_before = least(now() + $4 * interval '1 millisecond', burst.started + $5 * interval '1 millisecond')
FROM burst WHERE runs.id = $1
RETURNING runs.not_before`

// scheduleRun applies the mapping's trigger settings to a new run at delivery time: its quiet period
// (runQuietPeriodSQL), and with cancel_running, the stop of older running runs of the ref (stopEarlierSQL). It
// costs no round trip with the default settings.
func (s *Store) scheduleRun(ctx context.Context, tx pgx.Tx, dec *Decision) (schedule, error) {
	m := dec.mapping
	var sched schedule
	if m.QuietPeriod > 0 {
		err := tx.QueryRow(ctx, runQuietPeriodSQL,
			dec.RunID, dec.MappingID, dec.Ref, m.QuietPeriod.Milliseconds(), m.MaxWait.Milliseconds(),
		).Scan(&sched.notBefore)
		if err != nil {
			return sched, fmt.Errorf("schedule run: %w", err)
		}
	}
	// A run that may yet be skipped for changing no watched file stops nothing until its check lets it go
	// ahead (RunFilesRecord).
	if (newRun{dec: dec}).stopsRunning() {
		jobIDs, err := stopEarlier(ctx, tx, dec.RunID, dec.MappingID, dec.Ref)
		if err != nil {
			return sched, fmt.Errorf("stop older runs: %w", err)
		}
		sched.stopJobs = jobIDs
	}
	return sched, nil
}

// stopEarlier asks the running runs of run's ref that come before it in the ref's recorded history to stop for
// it (stopEarlierSQL), and returns their jobs, to cancel once tx commits.
func stopEarlier(ctx context.Context, tx pgx.Tx, runID, mappingID int64, ref string) ([]int64, error) {
	rows, err := tx.Query(ctx, stopEarlierSQL, runID, mappingID, ref)
	if err != nil {
		return nil, err
	}
	jobIDs, err := pgx.CollectRows(rows, pgx.RowTo[*int64])
	if err != nil {
		return nil, err
	}
	var stop []int64
	for _, id := range jobIDs {
		if id != nil {
			stop = append(stop, *id)
		}
	}
	return stop, nil
}

// stopEarlierSQL asks the running runs of a new run's ref whose revisions come before the new one in the ref's
// recorded history to stop for it (cancel_running). It walks the history back from the new revision, only
// while a run of the ref is running, and stops at the first running one: a run the history does not place
// before the new one (a delivery between them never came) is left running.
var stopEarlierSQL = `
WITH RECURSIVE earlier(revision, old_revision, status, depth) AS (
	SELECT n.revision, n.old_revision, n.status, 0 FROM runs n
	WHERE n.id = $1 AND EXISTS (SELECT 1 FROM runs x WHERE x.mapping_id = $2 AND x.ref = $3
		AND x.status = ` + sqlStatus(RunRunning) + ` AND x.trigger = ` + sqlTriggerWebhook + `)
	UNION ALL
	SELECT p.revision, p.old_revision, p.status, e.depth + 1 FROM earlier e, LATERAL (
		SELECT p.revision, p.old_revision, p.status FROM runs p
		WHERE p.mapping_id = $2 AND p.ref = $3 AND p.revision = e.old_revision AND p.trigger = ` + sqlTriggerWebhook + `
			AND p.repo_id = (SELECT repo_id FROM runs WHERE id = $1) LIMIT 1) p
	WHERE (e.depth = 0 OR e.status <> ` + sqlStatus(RunRunning) + `) AND e.depth < ` + fmt.Sprint(historyDepthMax) + `
)
UPDATE runs SET superseded_by = $1, cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
FROM earlier e
WHERE e.depth > 0 AND e.status = ` + sqlStatus(RunRunning) + ` AND runs.mapping_id = $2 AND runs.ref = $3
	AND runs.revision = e.revision AND runs.status = ` + sqlStatus(RunRunning) + `
	AND runs.trigger = ` + sqlTriggerWebhook + `
	AND runs.repo_id = (SELECT repo_id FROM runs WHERE id = $1)
RETURNING runs.job_id`
