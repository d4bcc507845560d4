package jobs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Defaults of log capture.
const (
	// LogLimitDefault is how many bytes of the end of an attempt's output are kept.
	LogLimitDefault = 4 << 20
	// LogFlushIntervalDefault is how often captured output is written to the database while a command runs.
	LogFlushIntervalDefault = 250 * time.Millisecond
	// logChunkMax is the largest chunk stored in one row.
	logChunkMax = 256 << 10
)

// logWriter captures a command's output into the run_logs table while the command runs. Write never waits for
// the database: output is buffered up to the limit and flushed periodically in the background, and when the
// command writes faster than the database takes it, or more than the limit in all, the oldest bytes are let go
// and counted. The database keeps at least the last limit bytes (whole chunks, so up to one chunk more), and
// memory stays bounded by about three times the limit.
type logWriter struct {
	store   *orchestrator.Store
	logger  *slog.Logger
	runID   int64
	attempt int
	limit   int

	mu             sync.Mutex
	pending        []byte
	spare          []byte // the buffer of the last flush, reused for the next one
	pendingDropped int64
	total          int64

	// Owned by the flushing goroutine.
	seq     int
	chunks  []logChunk
	kept    int64
	dropped int64

	stop chan struct{}
	done chan struct{}
}

type logChunk struct {
	seq  int
	size int
}

func newLogWriter(store *orchestrator.Store, logger *slog.Logger, runID int64, attempt, limit int, interval time.Duration) *logWriter {
	w := &logWriter{
		store: store, logger: logger, runID: runID, attempt: attempt, limit: limit,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go w.loop(interval)
	return w
}

// Write buffers p. It never fails and never blocks on the database.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.total += int64(len(p))
	if len(p) >= w.limit {
		w.pendingDropped += int64(len(w.pending) + len(p) - w.limit)
		w.pending = append(w.pending[:0], p[len(p)-w.limit:]...)
		return len(p), nil
	}
	// The buffer may grow to twice the limit before its oldest bytes are dropped, so that a fast writer costs
	// one move per limit's worth of output, not one per write.
	if len(w.pending)+len(p) > 2*w.limit {
		over := len(w.pending) + len(p) - w.limit
		w.pendingDropped += int64(over)
		w.pending = append(w.pending[:0], w.pending[over:]...)
	}
	w.pending = append(w.pending, p...)
	return len(p), nil
}

func (w *logWriter) loop(interval time.Duration) {
	defer close(w.done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			w.flush()
		case <-w.stop:
			w.flush()
			return
		}
	}
}

// flush writes what was buffered since the last flush.
func (w *logWriter) flush() {
	w.mu.Lock()
	data := w.pending
	w.pending = w.spare[:0]
	w.spare = nil
	w.dropped += w.pendingDropped
	w.pendingDropped = 0
	total := w.total
	w.mu.Unlock()

	// The buffer goes back for reuse once stored: no allocation per flush, however much the command writes.
	buf := data
	defer func() {
		w.mu.Lock()
		w.spare = buf[:0]
		w.mu.Unlock()
	}()
	if len(data) > w.limit {
		w.dropped += int64(len(data) - w.limit)
		data = data[len(data)-w.limit:]
	}
	if len(data) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(data) > 0 {
		n := min(len(data), logChunkMax)
		chunk := data[:n]
		data = data[n:]
		w.seq++
		w.chunks = append(w.chunks, logChunk{seq: w.seq, size: n})
		w.kept += int64(n)
		p := orchestrator.RunLogAppendParams{RunID: w.runID, Attempt: w.attempt, Seq: w.seq, Data: chunk, LogBytes: total}
		// Keep at least the last limit bytes: drop the oldest chunk only while the others still hold enough.
		for len(w.chunks) > 1 && w.kept-int64(w.chunks[0].size) >= int64(w.limit) {
			w.kept -= int64(w.chunks[0].size)
			w.dropped += int64(w.chunks[0].size)
			w.chunks = w.chunks[1:]
			p.DropBelowSeq = w.chunks[0].seq
		}
		// Bytes still pending when a later flush runs are counted in total but not yet kept or dropped.
		p.LogDropped = w.dropped
		if err := w.store.RunLogAppend(ctx, p); err != nil {
			w.logger.WarnContext(ctx, "could not store command output", "run_id", w.runID, "error", err)
		}
	}
}

// Close flushes what is left and stops the background flushing.
func (w *logWriter) Close() {
	close(w.stop)
	<-w.done
}
