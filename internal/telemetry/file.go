package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// fileExporter writes spans as JSON lines, one self-contained object per
// span, shaped for jq and log shippers: attributes are a flat object keyed
// by attribute name, IDs are hex, times are RFC 3339. docs/audit.md
// describes the format.
type fileExporter struct {
	mu  sync.Mutex
	w   io.WriteCloser
	buf bytes.Buffer

	res     *resource.Resource // the resource last encoded (one per provider)
	resJSON json.RawMessage    // and its encoding
}

// fileSpan is the JSON form of one span.
type fileSpan struct {
	Name          string          `json:"name"`
	Kind          string          `json:"kind"`
	TraceID       string          `json:"trace_id"`
	SpanID        string          `json:"span_id"`
	ParentSpanID  string          `json:"parent_span_id,omitempty"`
	Start         time.Time       `json:"start"`
	End           time.Time       `json:"end"`
	DurationMS    float64         `json:"duration_ms"`
	Status        string          `json:"status,omitempty"`
	StatusMessage string          `json:"status_message,omitempty"`
	Attributes    map[string]any  `json:"attributes,omitempty"`
	Events        []fileEvent     `json:"events,omitempty"`
	Links         []fileLink      `json:"links,omitempty"`
	Scope         string          `json:"scope"`
	Resource      json.RawMessage `json:"resource,omitempty"`
}

type fileEvent struct {
	Name       string         `json:"name"`
	Time       time.Time      `json:"time"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

type fileLink struct {
	TraceID string `json:"trace_id"`
	SpanID  string `json:"span_id"`
}

func attrMap(kvs []attribute.KeyValue) map[string]any {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

// resource returns the encoding of r, computed once per resource.
func (e *fileExporter) resource(r *resource.Resource) json.RawMessage {
	if r != e.res {
		e.res, e.resJSON = r, nil
		if b, err := json.Marshal(attrMap(r.Attributes())); err == nil && r.Len() > 0 {
			e.resJSON = b
		}
	}
	return e.resJSON
}

// ExportSpans appends the spans to the file in one write.
func (e *fileExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.buf.Reset()
	enc := json.NewEncoder(&e.buf)
	enc.SetEscapeHTML(false)
	for _, s := range spans {
		fs := fileSpan{
			Name:       s.Name(),
			Kind:       s.SpanKind().String(),
			TraceID:    s.SpanContext().TraceID().String(),
			SpanID:     s.SpanContext().SpanID().String(),
			Start:      s.StartTime().UTC(),
			End:        s.EndTime().UTC(),
			DurationMS: float64(s.EndTime().Sub(s.StartTime()).Microseconds()) / 1000,
			Attributes: attrMap(s.Attributes()),
			Scope:      s.InstrumentationScope().Name,
			Resource:   e.resource(s.Resource()),
		}
		if p := s.Parent(); p.IsValid() {
			fs.ParentSpanID = p.SpanID().String()
		}
		switch st := s.Status(); st.Code {
		case codes.Error:
			fs.Status, fs.StatusMessage = "error", st.Description
		case codes.Ok:
			fs.Status = "ok"
		}
		for _, ev := range s.Events() {
			fs.Events = append(fs.Events, fileEvent{Name: ev.Name, Time: ev.Time.UTC(), Attributes: attrMap(ev.Attributes)})
		}
		for _, l := range s.Links() {
			fs.Links = append(fs.Links, fileLink{TraceID: l.SpanContext.TraceID().String(), SpanID: l.SpanContext.SpanID().String()})
		}
		if err := enc.Encode(&fs); err != nil {
			return fmt.Errorf("telemetry: encoding span %s: %w", fs.SpanID, err)
		}
		// Write whole lines, a few at a time: the rotating writer takes
		// no write larger than the file's maximum size.
		if e.buf.Len() >= 64<<10 {
			if err := e.flush(); err != nil {
				return err
			}
		}
	}
	return e.flush()
}

func (e *fileExporter) flush() error {
	if e.buf.Len() == 0 {
		return nil
	}
	_, err := e.w.Write(e.buf.Bytes())
	e.buf.Reset()
	if err != nil {
		return fmt.Errorf("telemetry: writing the audit file: %w", err)
	}
	return nil
}

// Shutdown closes the file.
func (e *fileExporter) Shutdown(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.w.Close()
}
