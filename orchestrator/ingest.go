package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Group commit of deliveries. Deliveries that arrive while others are being written are written together, in
// one transaction with one commit, by at most ingestWritersMax transactions at a time: each call still returns
// only after its own delivery is durable, but the commits, round trips and fsyncs are shared. A lone delivery is
// written at once, without waiting for company.
const (
	// ingestWritersMax is how many group transactions write deliveries at once.
	ingestWritersMax = 2
	// ingestBatchMax is the most deliveries one transaction writes.
	ingestBatchMax = 64
	// ingestTimeoutDefault bounds a group whose callers set no deadline.
	ingestTimeoutDefault = 30 * time.Second
)

// ingester groups deliveries for their transactions. It starts no goroutine: the groups are written by the
// callers themselves. A caller that finds a writer's place free takes it and writes the oldest waiting
// deliveries, a group at a time, until its own delivery is taken into a group, then hands its place on to the
// oldest delivery still waiting, whose caller carries on. Every call has returned, and nothing is left
// running, once the last delivery is written; each group is written with the context of the caller that
// writes it, without its cancellation.
type ingester struct {
	// write writes a group in one transaction, filling in each item's res, and returns its error.
	write func(ctx context.Context, items []*ingestItem) error

	mu      sync.Mutex
	pending []*ingestItem // waiting for a group, oldest first
	writers int           // the places taken, at most ingestWritersMax

	// deadlocks counts the writes that PostgreSQL failed as a deadlock (SQLSTATE 40P01). Group transactions
	// take their locks in one order (see ingestTx), so it stays zero unless another transaction breaks that
	// order.
	deadlocks atomic.Int64
}

// ingestItem is one delivery waiting to be written, and what came of it.
type ingestItem struct {
	p DeliveryInsertParams
	// cancelled and deadline are those of the caller's context: a delivery whose caller gave up before its
	// group began is not written, and a group may take as long as the latest deadline of its deliveries.
	cancelled <-chan struct{}
	deadline  time.Time // zero when the caller set none

	turn chan struct{} // signalled when the caller is handed a writer's place
	done chan struct{} // closed once the delivery is written, has failed, or was given up

	// Under ingester.mu.
	taken   bool // in a group
	hasTurn bool // handed a writer's place

	// Set by the writer of its group before done is closed.
	res      *DeliveryInsertResult
	err      error
	skipped  bool // its caller gave up before its group began
	finished bool // done is closed
}

// finish records the error the delivery's write ended with and wakes its caller.
func (it *ingestItem) finish(err error) {
	it.err, it.finished = err, true
	close(it.done)
}

// newIngestItem returns the item of a delivery whose caller waits with ctx.
func newIngestItem(ctx context.Context, p DeliveryInsertParams) *ingestItem {
	deadline, _ := ctx.Deadline()
	return &ingestItem{p: p, cancelled: ctx.Done(), deadline: deadline, turn: make(chan struct{}, 1),
		done: make(chan struct{})}
}

// submit writes the delivery p, together with whatever others are waiting, and returns what came of it once it
// is durable or has failed. A caller whose ctx ends before the delivery's group begins gets ctx's error, and
// nothing is written; once the group has begun, its transaction runs to its end.
func (g *ingester) submit(ctx context.Context, p DeliveryInsertParams) (*DeliveryInsertResult, error) {
	it := newIngestItem(ctx, p)
	g.mu.Lock()
	g.pending = append(g.pending, it)
	lead := g.writers < ingestWritersMax
	if lead {
		g.writers++
		it.hasTurn = true
	}
	g.mu.Unlock()
	if !lead {
		select {
		case <-it.turn:
			lead = true
		case <-it.done:
			// A place handed over just before another writer took the delivery is still to be passed on.
			select {
			case <-it.turn:
				lead = true
			default:
			}
		}
	}
	if lead {
		g.writeUntilTaken(ctx, it)
	}
	<-it.done
	if it.skipped {
		return nil, ctx.Err()
	}
	return it.res, it.err
}

// writeUntilTaken writes groups of the oldest waiting deliveries until own is in one, then passes the writer's
// place on.
func (g *ingester) writeUntilTaken(ctx context.Context, own *ingestItem) {
	// A panic while writing (a bug) fails the deliveries of its group and passes the place on, so that the
	// callers behind it do not wait for a writer forever; the panic then goes on up the caller's stack.
	var items []*ingestItem
	defer func() {
		if r := recover(); r != nil {
			for _, it := range items {
				if !it.finished {
					it.finish(fmt.Errorf("write deliveries: panic: %v", r))
				}
			}
			g.mu.Lock()
			g.passOn()
			g.mu.Unlock()
			panic(r)
		}
	}()
	for {
		g.mu.Lock()
		if own.taken {
			g.passOn()
			g.mu.Unlock()
			return
		}
		n := min(len(g.pending), ingestBatchMax)
		items = make([]*ingestItem, n)
		copy(items, g.pending)
		g.pending = append(g.pending[:0], g.pending[n:]...)
		for _, it := range items {
			it.taken = true
		}
		g.mu.Unlock()
		g.writeGroup(ctx, items)
	}
}

// passOn hands the writer's place of a caller whose delivery is taken to the oldest waiting delivery that has
// none, or gives it up when there is none. It is called with g.mu held.
func (g *ingester) passOn() {
	for _, it := range g.pending {
		if !it.hasTurn {
			it.hasTurn = true
			it.turn <- struct{}{}
			return
		}
	}
	g.writers--
}

// writeGroup writes items in one transaction. If that fails, each is written again in a transaction of its
// own, so that one delivery (or a deadlock between two groups) never fails the others.
func (g *ingester) writeGroup(ctx context.Context, items []*ingestItem) {
	live := items[:0:0]
	for _, it := range items {
		select {
		case <-it.cancelled:
			it.skipped = true
			it.finish(nil)
		default:
			live = append(live, it)
		}
	}
	if len(live) == 0 {
		return
	}
	var deadline time.Time
	for _, it := range live {
		if it.deadline.IsZero() {
			continue
		}
		if deadline.IsZero() || it.deadline.After(deadline) {
			deadline = it.deadline
		}
	}
	if deadline.IsZero() {
		deadline = time.Now().Add(ingestTimeoutDefault)
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()

	err := g.countDeadlock(g.write(ctx, live))
	if err != nil && len(live) > 1 {
		for _, it := range live {
			it.finish(g.countDeadlock(g.write(ctx, []*ingestItem{it})))
		}
		return
	}
	for _, it := range live {
		it.finish(err)
	}
}

// countDeadlock counts err in g.deadlocks when PostgreSQL broke a deadlock with it, and returns it.
func (g *ingester) countDeadlock(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "40P01" {
		g.deadlocks.Add(1)
	}
	return err
}
