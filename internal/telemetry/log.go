package telemetry

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/trace"
)

// NewLogger returns a logger writing to w, as JSON lines or, with format
// "text", as logfmt. A record logged with a context that carries a span
// has that span's trace_id and span_id, so log lines and audit spans join.
func NewLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(traceHandler{h})
}

// traceHandler adds the trace and span IDs of the record's context.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// An AsyncWriter passes what is written to it on to another writer from a
// goroutine of its own, so that a request that logs a line never waits for
// a slow log collector (a pipe to journald or a container runtime, which
// stall when they flush or rotate): a Write copies the line into a buffer
// and returns. The buffer holds at most max bytes; a Write that finds it
// full waits for room, so lines are never dropped and memory stays
// bounded, and only a collector that stays behind for max bytes slows
// requests down, as it did every request before. A process that dies
// without Close loses what is buffered. Create it with
// [NewAsyncWriter]; Close flushes it. It is safe for concurrent use.
type AsyncWriter struct {
	w    io.Writer
	max  int
	done chan struct{}

	mu      sync.Mutex
	cond    *sync.Cond // signalled when buf gains lines or room, and on Close
	buf     []byte     // lines not yet handed to w
	closed  bool       // Close was called: run returns once buf is empty
	running bool       // run may still write to w
}

// NewAsyncWriter returns an AsyncWriter that writes to w, buffering at most
// max bytes (at least one Write's worth, whatever max is).
func NewAsyncWriter(w io.Writer, max int) *AsyncWriter {
	a := &AsyncWriter{w: w, max: max, done: make(chan struct{}), running: true}
	a.cond = sync.NewCond(&a.mu)
	go a.run()
	return a
}

// Write queues a copy of p and returns len(p), nil; it waits while the
// buffer is full. Once Close has written everything out, it writes p to
// the underlying writer itself.
func (a *AsyncWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.buf) > 0 && len(a.buf)+len(p) > a.max && a.running {
		a.cond.Wait()
	}
	if !a.running {
		return a.w.Write(p)
	}
	a.buf = append(a.buf, p...)
	a.cond.Broadcast()
	return len(p), nil
}

// run hands the buffered lines to w, a batch at a time. A failed write is
// not retried: there is nowhere to report it.
func (a *AsyncWriter) run() {
	defer close(a.done)
	var out []byte
	a.mu.Lock()
	for {
		for len(a.buf) == 0 && !a.closed {
			a.cond.Wait()
		}
		if len(a.buf) == 0 {
			a.running = false
			a.cond.Broadcast()
			a.mu.Unlock()
			return
		}
		out, a.buf = a.buf, out[:0]
		a.cond.Broadcast() // room
		a.mu.Unlock()
		a.w.Write(out)
		a.mu.Lock()
	}
}

// Close writes out what is buffered and returns once it is written; later
// Writes go straight to the underlying writer. It may be called more than
// once.
func (a *AsyncWriter) Close() error {
	a.mu.Lock()
	a.closed = true
	a.cond.Broadcast()
	a.mu.Unlock()
	<-a.done
	return nil
}
