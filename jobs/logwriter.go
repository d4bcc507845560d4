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
// memory stays bounded by about two times the limit: a ring of the last limit bytes written, and the copy of
// it that a flush stores.
type logWriter struct {
	store   *orchestrator.Store
	logger  *slog.Logger
	runID   int64
	attempt int
	limit   int

	mu sync.Mutex
	// buf holds the bytes written since the last flush, in a ring of limit bytes from start; it grows to the
	// limit as output comes, so a quiet command costs little memory.
	buf            []byte
	start, size    int
	pendingDropped int64
	total          int64

	// Owned by the flushing goroutine.
	out     []byte // the copy being stored, reused from flush to flush
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

// Write buffers p. It never fails and never blocks on the database, and costs one copy of p: the oldest
// bytes beyond the limit are overwritten in place, never moved.
func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.total += int64(len(p))
	n := len(p)
	if len(p) > w.limit {
		w.pendingDropped += int64(len(p) - w.limit)
		p = p[len(p)-w.limit:]
	}
	if len(w.buf) < w.limit {
		// Growing: the bytes are in order from the start of buf.
		if w.size+len(p) <= w.limit {
			w.buf = append(w.buf, p...)
			w.size = len(w.buf)
			return n, nil
		}
		ring := make([]byte, w.limit)
		copy(ring, w.buf[:w.size])
		w.buf = ring
	}
	if over := w.size + len(p) - w.limit; over > 0 {
		w.start = (w.start + over) % w.limit
		w.size -= over
		w.pendingDropped += int64(over)
	}
	end := (w.start + w.size) % w.limit
	copied := copy(w.buf[end:], p)
	copy(w.buf, p[copied:])
	w.size += len(p)
	return n, nil
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
	first := w.buf[w.start:min(w.start+w.size, len(w.buf))]
	data := append(w.out[:0], first...)
	data = append(data, w.buf[:w.size-len(first)]...)
	w.start, w.size = 0, 0
	if len(w.buf) < w.limit {
		w.buf = w.buf[:0]
	}
	w.dropped += w.pendingDropped
	w.pendingDropped = 0
	total := w.total
	w.mu.Unlock()
	w.out = data

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
