package orchestrator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Group commit of deliveries. Deliveries that arrive while others are being written are written together, in
// one transaction with one commit, by at most ingestRunnersMax transactions at a time: each request still
// returns only after its own delivery is durable, but the commits, round trips and fsyncs are shared. A lone
// delivery is written at once, without waiting for company.
const (
	// ingestRunnersMax is how many group transactions write deliveries at once.
	ingestRunnersMax = 2
	// ingestBatchMax is the most deliveries one transaction writes.
	ingestBatchMax = 64
	// ingestTimeoutDefault bounds a group whose callers set no deadline.
	ingestTimeoutDefault = 30 * time.Second
	// ingestStaleRetries is how often a group is written again after the mappings changed under it.
	ingestStaleRetries = 3
)

// errStaleMappings says that the mappings changed after the in-memory copy the decisions were made against.
var errStaleMappings = errors.New("the mappings changed while the delivery was recorded")

// mappingCache keeps the enabled mappings in memory with the generation they were read at. The statement that
// records a delivery also reads the current generation, so a stale copy is detected in the same round trip and
// the delivery is decided again: no delivery is ever decided against mappings older than its own transaction.
type mappingCache struct {
	mu         sync.Mutex
	loaded     bool
	generation int64
	mappings   []Mapping
}

// get returns the cached mappings and their generation, reading them first when needed.
func (c *mappingCache) get(ctx context.Context, s *Store) (int64, []Mapping, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded {
		return c.generation, c.mappings, nil
	}
	// The generation is read before the mappings: a change between the two reads makes the copy look stale,
	// never fresh.
	var gen int64
	if err := s.pool.QueryRow(ctx, `SELECT generation FROM mapping_generation`).Scan(&gen); err != nil {
		return 0, nil, fmt.Errorf("read mapping generation: %w", err)
	}
	mappings, err := s.MappingListEnabled(ctx)
	if err != nil {
		return 0, nil, err
	}
	c.loaded, c.generation, c.mappings = true, gen, mappings
	return gen, mappings, nil
}

// forget drops the copy if it is still the one read at generation gen.
func (c *mappingCache) forget(gen int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded && c.generation == gen {
		c.loaded, c.mappings = false, nil
	}
}

// ingestItem is one delivery waiting to be written, and what came of it.
type ingestItem struct {
	ctx  context.Context
	p    DeliveryInsertParams
	done chan struct{}
	res  *DeliveryInsertResult
	err  error
}

// ingestGroup queues deliveries for the group transactions.
type ingestGroup struct {
	mu      sync.Mutex
	pending []*ingestItem
	runners int
}

// submit writes the delivery of it, together with whatever others are waiting, and returns once it is durable
// or has failed.
func (s *Store) submit(it *ingestItem) {
	g := &s.ingest
	g.mu.Lock()
	g.pending = append(g.pending, it)
	if g.runners < ingestRunnersMax {
		g.runners++
		go s.ingestLoop()
	}
	g.mu.Unlock()
	<-it.done
}

// ingestLoop writes groups of waiting deliveries until none is left.
func (s *Store) ingestLoop() {
	g := &s.ingest
	for {
		g.mu.Lock()
		if len(g.pending) == 0 {
			g.runners--
			g.mu.Unlock()
			return
		}
		n := min(len(g.pending), ingestBatchMax)
		items := make([]*ingestItem, n)
		copy(items, g.pending)
		g.pending = append(g.pending[:0], g.pending[n:]...)
		g.mu.Unlock()
		s.ingestGroupWrite(items)
	}
}

// ingestGroupWrite writes items in one transaction. If that fails, each is written again in a transaction of
// its own, so that one delivery (or a deadlock between two groups) never fails the others.
func (s *Store) ingestGroupWrite(items []*ingestItem) {
	live := items[:0:0]
	for _, it := range items {
		if err := it.ctx.Err(); err != nil {
			it.err = err
			close(it.done)
			continue
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	deadline, ok := time.Time{}, false
	for _, it := range live {
		if d, has := it.ctx.Deadline(); has && (!ok || d.After(deadline)) {
			deadline, ok = d, true
		}
	}
	if !ok {
		deadline = time.Now().Add(ingestTimeoutDefault)
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(live[0].ctx), deadline)
	defer cancel()

	err := s.ingestWrite(ctx, live)
	if err != nil && len(live) > 1 {
		for _, it := range live {
			it.err = s.ingestWrite(ctx, []*ingestItem{it})
			close(it.done)
		}
		return
	}
	for _, it := range live {
		it.err = err
		close(it.done)
	}
}

// ingestWrite writes items in one transaction, deciding them again when the mappings changed meanwhile.
func (s *Store) ingestWrite(ctx context.Context, items []*ingestItem) error {
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
// queue's jobs (River adds one for its NOTIFY, at most every few milliseconds) and one for the commit.
func (s *Store) ingestTx(ctx context.Context, items []*ingestItem) error {
	gen, mappings, err := s.mappings.get(ctx, s)
	if err != nil {
		return err
	}
	for _, it := range items {
		d := it.p.Delivery
		var ms []Mapping
		if d.IsContentUpdate() && d.RepoType == "dataset" {
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

	gens := make([]int64, len(items))
	kinds := make([][]string, len(items))
	runIDs := make([][]*int64, len(items))
	jobIDs := make([][]*int64, len(items))
	newer := make([][]string, len(items))
	queueGroupInsert(batch, items, reserved).Query(func(rows pgx.Rows) error {
		i := 0
		for rows.Next() {
			if i == len(items) {
				return fmt.Errorf("more rows than the %d deliveries", len(items))
			}
			if err := rows.Scan(&items[i].res.DeliveryID, &items[i].res.ReceivedAt, &gens[i], &kinds[i], &runIDs[i], &jobIDs[i], &newer[i]); err != nil {
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
	for _, g := range gens {
		if g != gen {
			s.mappings.forget(gen)
			return errStaleMappings
		}
	}

	var jobs []RunJob
	for i, it := range items {
		res := it.res
		for j := range res.Decisions {
			dec := &res.Decisions[j]
			if runIDs[i][j] != nil {
				dec.RunID = *runIDs[i][j]
			}
			queued := dec.Decision == DecisionQueued
			dec.Decision = DecisionKind(kinds[i][j])
			switch {
			case queued && dec.Decision == DecisionIgnored:
				dec.Cause, dec.Reason = IgnoreOlder, olderReason(newer[i][j], dec.Ref)
				continue
			case dec.Decision == DecisionDuplicate:
				dec.Reason = fmt.Sprintf("duplicate of run %d", dec.RunID)
				continue
			case dec.Decision != DecisionQueued:
				continue
			case dec.RunID == 0:
				// Another transaction created the run after this statement began: it is a duplicate.
				if err := s.resolveDuplicate(ctx, tx, res.DeliveryID, it.p.Delivery.RepoID, dec); err != nil {
					return err
				}
				continue
			}
			res.RunIDs = append(res.RunIDs, dec.RunID)
			// A new run waits out its mapping's quiet period; older runs of its ref that have not started
			// give way to it when a worker picks them up (RunAttemptStart), so deliveries of one dataset never
			// wait for each other here.
			sched, err := s.scheduleRun(ctx, tx, dec)
			if err != nil {
				return err
			}
			res.stopRunning = append(res.stopRunning, sched.stopJobs...)
			job := RunJob{RunID: dec.RunID, MaxAttempts: dec.mapping.MaxAttempts, Queue: dec.mapping.Queue}
			if jobIDs[i][j] != nil {
				job.JobID = *jobIDs[i][j]
			}
			jobs = append(jobs, job)
		}
	}
	if err := s.enqueueTx(ctx, tx, jobs); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// resolveDuplicate records a queued decision whose run another transaction created and committed while this
// one's statement ran (so the statement could neither insert nor see it) as a duplicate of that run.
func (s *Store) resolveDuplicate(ctx context.Context, tx pgx.Tx, deliveryID int64, repoID string, dec *Decision) error {
	err := tx.QueryRow(ctx, `SELECT id FROM runs WHERE trigger = 'webhook' AND mapping_id = $1 AND repo_id = $2
		AND ref = $3 AND revision = $4`, dec.MappingID, repoID, dec.Ref, dec.NewSha).Scan(&dec.RunID)
	if err != nil {
		return fmt.Errorf("find existing run: %w", err)
	}
	dec.Decision = DecisionDuplicate
	dec.Reason = fmt.Sprintf("duplicate of run %d", dec.RunID)
	if _, err := tx.Exec(ctx, `UPDATE decisions SET decision = $6, reason = $7, run_id = $5
		WHERE delivery_id = $1 AND mapping_id = $2 AND ref = $3 AND new_sha = $4 AND decision = 'queued' AND run_id IS NULL`,
		deliveryID, dec.MappingID, dec.Ref, dec.NewSha, dec.RunID, string(dec.Decision), dec.Reason); err != nil {
		return fmt.Errorf("record duplicate: %w", err)
	}
	return nil
}

// groupInsertSQL records the deliveries of a group in one statement: the deliveries, their refs, the runs of
// their queued decisions (a conflict on the dedup index means the run exists already) and their decisions.
// Each queued decision becomes a duplicate when its run existed or the same (mapping, repository, ref,
// revision) came earlier in the group. One statement for the group, rather than one per delivery, sets up
// its plan once: with a dozen indexes to open on runs alone, that set-up cost more than the rows.
//
// The deliveries' sequence is named as PostgreSQL names that of an identity column (deliveries_id_seq). Each new
// run records the job id reserved for it from the queue ($30, see Store.reserveJobIDs).
//
// It returns one row per delivery, in order: its id and time, the mappings' generation, and its decisions'
// kinds, runs and the job ids reserved for new runs, in order. A queued decision without a run is one whose
// run a concurrent transaction committed while the statement ran: the caller resolves it.
var groupInsertSQL = `
WITH din AS MATERIALIZED (
	SELECT u.dord, nextval('deliveries_id_seq') AS id, u.source, u.scope, u.action, u.repo_type, u.repo_name,
		u.repo_id, u.webhook_id, u.remote_addr, u.payload, NULLIF(u.payload_shortened_from, 0) AS payload_shortened_from, u.secret
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
		$9::bytea[], $29::bigint[], $10::text[]) WITH ORDINALITY
		AS u(source, scope, action, repo_type, repo_name, repo_id, webhook_id, remote_addr, payload, payload_shortened_from, secret, dord)
), d AS (
	INSERT INTO deliveries (id, source, scope, action, repo_type, repo_name, repo_id, webhook_id, remote_addr, payload, payload_shortened_from, secret)
	OVERRIDING SYSTEM VALUE
	SELECT id, source, scope, action, repo_type, repo_name, repo_id, webhook_id, remote_addr, payload, payload_shortened_from, secret FROM din
	RETURNING id, received_at
), r AS (
	INSERT INTO delivery_refs (delivery_id, position, ref, old_sha, new_sha)
	SELECT din.id, u.position, u.ref, NULLIF(u.old_sha, ''), NULLIF(u.new_sha, '')
	FROM unnest($11::bigint[], $12::int[], $13::text[], $14::text[], $15::text[]) AS u(dord, position, ref, old_sha, new_sha)
	JOIN din ON din.dord = u.dord
), ins AS (
	INSERT INTO runs (mapping_id, dataset, repo_id, ref, revision, old_revision, trigger, delivery_id, status, max_attempts, job_id)
	SELECT w.mapping_id, din.repo_name, din.repo_id, w.ref, w.revision, NULLIF(w.old_revision, ''), 'webhook', din.id,
		` + sqlStatus(RunQueued) + `, w.max_attempts, w.job_id
	FROM unnest($16::bigint[], $17::bigint[], $18::text[], $19::text[], $20::text[], $21::int[], $28::boolean[],
		$30::bigint[]) WITH ORDINALITY
		AS w(dord, mapping_id, ref, revision, old_revision, max_attempts, newest_only, job_id, ord)
	JOIN din ON din.dord = w.dord
	-- A mapping that trains only the newest revision creates no run for one its ref's history already has a
	-- later revision of: the push of that later revision replaced this one.
	WHERE NOT (w.newest_only AND EXISTS (SELECT 1 FROM runs c WHERE c.mapping_id = w.mapping_id AND c.ref = w.ref
		AND c.old_revision = w.revision AND c.trigger = 'webhook' AND c.repo_id = din.repo_id))
	ORDER BY w.ord
	ON CONFLICT (mapping_id, repo_id, ref, revision) WHERE trigger = 'webhook' DO NOTHING
	RETURNING id, mapping_id, repo_id, ref, revision, job_id
), x AS (
	SELECT u.ord, u.dord, din.id AS delivery_id, u.mapping_id, u.ref, u.sha, u.reason, o.revision AS newer,
		CASE WHEN u.decision = 'queued' THEN coalesce(i.id, e.id) END AS run_id,
		CASE WHEN u.decision = 'queued' THEN i.job_id END AS job_id,
		CASE WHEN u.decision <> 'queued' THEN u.decision
			WHEN i.id IS NOT NULL
				AND u.ord = min(u.ord) OVER (PARTITION BY u.mapping_id, din.repo_id, u.ref, u.sha, u.decision) THEN 'queued'
			WHEN i.id IS NOT NULL OR e.id IS NOT NULL THEN 'duplicate'
			WHEN o.revision IS NOT NULL THEN 'ignored'
			ELSE 'queued' END AS decision
	FROM unnest($22::bigint[], $23::bigint[], $24::text[], $25::text[], $26::text[], $27::text[]) WITH ORDINALITY
		AS u(dord, mapping_id, ref, sha, decision, reason, ord)
	JOIN din ON din.dord = u.dord
	LEFT JOIN ins i ON u.decision = 'queued' AND i.mapping_id = u.mapping_id AND i.repo_id = din.repo_id
		AND i.ref = u.ref AND i.revision = u.sha
	LEFT JOIN LATERAL (SELECT e.id FROM runs e WHERE u.decision = 'queued' AND i.id IS NULL AND e.trigger = 'webhook'
		AND e.mapping_id = u.mapping_id AND e.repo_id = din.repo_id AND e.ref = u.ref AND e.revision = u.sha LIMIT 1) e ON true
	-- The later revision that kept the insert above from creating a run.
	LEFT JOIN LATERAL (SELECT c.revision FROM runs c WHERE u.decision = 'queued' AND i.id IS NULL AND e.id IS NULL
		AND c.mapping_id = u.mapping_id AND c.ref = u.ref AND c.old_revision = u.sha AND c.trigger = 'webhook'
		AND c.repo_id = din.repo_id LIMIT 1) o ON true
), dec AS (
	INSERT INTO decisions (delivery_id, mapping_id, ref, new_sha, decision, reason, run_id)
	SELECT x.delivery_id, x.mapping_id, x.ref, NULLIF(x.sha, ''), x.decision,
		CASE WHEN x.decision = 'duplicate' THEN 'duplicate of run ' || x.run_id
			WHEN x.newer IS NOT NULL AND x.decision = 'ignored' THEN ` + olderReasonSQL + `
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

// olderReasonSQL is the reason of a revision that its ref's recorded history already has a later revision of,
// in SQL over x.newer and x.ref; olderReason says the same in Go.
const olderReasonSQL = `'older than revision ' || left(x.newer, 12) || '…, already recorded for ' || x.ref`

// olderReason returns the reason olderReasonSQL writes.
func olderReason(newer, ref string) string {
	return fmt.Sprintf("older than revision %s…, already recorded for %s", newer[:min(len(newer), 12)], ref)
}

// runKey names a run by what deduplicates it: (mapping, repository, ref, revision).
type runKey struct {
	mappingID        int64
	repoID, ref, sha string
}

// queueGroupInsert queues the statement that records the deliveries of items. jobIDs holds a reserved job id for
// each queued decision of items, at least one per run to create.
func queueGroupInsert(batch *pgx.Batch, items []*ingestItem, jobIDs []int64) *pgx.QueuedQuery {
	n := len(items)
	sources, scopes, actions, repoTypes, repoNames, repoIDs, webhookIDs, addrs, secrets :=
		make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	payloads, shortenedFrom := make([][]byte, n), make([]int64, n)

	var refDords []int64
	var refPositions []int32
	var refs, refOlds, refNews []string

	// The runs to create: one per distinct queued (mapping, repository, ref, revision) of the group, with the
	// first delivery that asks for it.
	var wantDords, wantMappings []int64
	var wantRefs, wantShas, wantOlds []string
	var wantAttempts []int32
	var wantNewestOnly []bool
	seen := map[runKey]bool{}

	var decDords []int64
	var decMappings []*int64
	var decRefs, decShas, decKinds, decReasons []string

	for i, it := range items {
		d, dord := it.p.Delivery, int64(i+1)
		sources[i] = string(cmp.Or(it.p.Source, DeliverySourceWebhook))
		scopes[i], actions[i], repoTypes[i], repoNames[i], repoIDs[i], webhookIDs[i] =
			d.Scope, d.Action, d.RepoType, d.RepoName, d.RepoID, d.WebhookID
		addrs[i], payloads[i], secrets[i] = it.p.RemoteAddr, d.Raw, cmp.Or(it.p.Secret, SecretCurrent)
		shortenedFrom[i] = d.ShortenedFrom
		for j, r := range d.Refs {
			refDords, refPositions = append(refDords, dord), append(refPositions, int32(j))
			refs, refOlds, refNews = append(refs, r.Ref), append(refOlds, r.OldSha), append(refNews, r.NewSha)
		}
		decisions := it.res.Decisions
		for j := range decisions {
			dec := &decisions[j]
			var mappingID *int64
			if dec.MappingID != 0 {
				mappingID = &dec.MappingID
			}
			decDords, decMappings = append(decDords, dord), append(decMappings, mappingID)
			decRefs, decShas = append(decRefs, dec.Ref), append(decShas, dec.NewSha)
			decKinds, decReasons = append(decKinds, string(dec.Decision)), append(decReasons, dec.Reason)
			if dec.Decision != DecisionQueued {
				continue
			}
			key := runKey{dec.MappingID, d.RepoID, dec.Ref, dec.NewSha}
			if seen[key] {
				continue
			}
			seen[key] = true
			wantDords, wantMappings = append(wantDords, dord), append(wantMappings, dec.MappingID)
			wantRefs, wantShas, wantOlds = append(wantRefs, dec.Ref), append(wantShas, dec.NewSha), append(wantOlds, dec.OldSha)
			wantAttempts = append(wantAttempts, int32(dec.mapping.MaxAttempts))
			wantNewestOnly = append(wantNewestOnly, dec.mapping.OnNewRevision != OnNewRevisionQueue)
		}
	}
	return batch.Queue(groupInsertSQL,
		sources, scopes, actions, repoTypes, repoNames, repoIDs, webhookIDs, addrs, payloads, secrets,
		refDords, refPositions, refs, refOlds, refNews,
		wantDords, wantMappings, wantRefs, wantShas, wantOlds, wantAttempts,
		decDords, decMappings, decRefs, decShas, decKinds, decReasons, wantNewestOnly,
		shortenedFrom, jobIDs[:len(wantDords)])
}
