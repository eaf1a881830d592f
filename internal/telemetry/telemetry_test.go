package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/trace"
)

// TestHungCollectorDropsAndCounts: a collector that accepts connections
// and never answers fills the queue; spans past it are dropped and
// counted, and ending a span never waits.
func TestHungCollectorDropsAndCounts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL("http://"+l.Addr().String()+"/v1/traces"),
		otlptracehttp.WithTimeout(time.Second), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	tel, err := Setup(context.Background(), Options{Exporter: exp, QueueSize: 4, BatchSize: 2, BatchTimeout: 10 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tracer := tel.TracerProvider.Tracer("test")
	start := time.Now()
	const spans = 200
	for range spans {
		_, s := tracer.Start(context.Background(), "request")
		s.End()
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("ending %d spans took %v with a hung collector: serving would wait", spans, took)
	}
	if d := tel.Dropped(); d < spans-4-2 {
		t.Errorf("dropped %d of %d spans with a queue of 4", d, spans)
	}
	if !strings.Contains(logs.String(), `"msg":"audit spans dropped"`) {
		t.Errorf("drops were not logged: %s", logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tel.Shutdown(ctx)
	// Every span is accounted for: the ones in the queue failed to export.
	if d := tel.Dropped(); d != spans {
		t.Errorf("after shutdown, %d of %d spans counted as dropped; the collector took none", d, spans)
	}
}

// TestLoggerCarriesTraceIDs: a line logged with a span in its context
// carries that span's trace and span IDs, in JSON and in text.
func TestLoggerCarriesTraceIDs(t *testing.T) {
	tel, err := Setup(context.Background(), Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	ctx, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		NewLogger(&b, format, nil).With("component", "x").InfoContext(ctx, "hello")
		tid, sid := span.SpanContext().TraceID().String(), span.SpanContext().SpanID().String()
		if !strings.Contains(b.String(), tid) || !strings.Contains(b.String(), sid) {
			t.Errorf("%s: %s lacks trace %s span %s", format, b.String(), tid, sid)
		}
		if format == "json" && json.Valid(b.Bytes()) == false {
			t.Errorf("not JSON: %s", b.String())
		}
	}
}

// TestAuditFile: with no exporter configured, spans go to the audit file
// as flat JSON lines, and the file rotates with bounded backups.
func TestAuditFile(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	tel, err := Setup(context.Background(), Options{DataDir: dir, FileMaxMB: 1, FileBackups: 1, Version: "v9"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "audit", "spans.jsonl"); tel.Destination != want {
		t.Fatalf("destination %q, want %q", tel.Destination, want)
	}
	tracer := tel.TracerProvider.Tracer("test")
	_, first := tracer.Start(context.Background(), "CONNECT")
	first.End()
	ctx, s := tracer.Start(context.Background(), "GET", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithLinks(trace.Link{SpanContext: first.SpanContext()}),
		trace.WithAttributes(attribute.String("sumgate.verdict", "security-error"), attribute.Int64("sumgate.sumdb.tree_size", 42)))
	s.AddEvent("sumgate.security_error", trace.WithAttributes(attribute.String("sumgate.reason", "fork")))
	s.SetStatus(codes.Error, "blocked")
	_, child := tracer.Start(ctx, "sumdb.check")
	child.End()
	s.End()
	// Enough large spans (their attribute truncated to 8 KiB) to rotate the
	// 1 MiB file three times.
	big := strings.Repeat("x", 16<<10)
	for range 500 {
		_, s := tracer.Start(context.Background(), "filler", trace.WithAttributes(attribute.String("pad", big)))
		s.End()
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "audit", "*.jsonl"))
	deadline := time.Now().Add(5 * time.Second)
	for len(files) != 2 && time.Now().Before(deadline) { // old backups are removed in the background
		time.Sleep(20 * time.Millisecond)
		files, _ = filepath.Glob(filepath.Join(dir, "audit", "*.jsonl"))
	}
	if len(files) != 2 {
		t.Errorf("audit files %v: want spans.jsonl and one backup", files)
	}
	cur, _ := os.ReadFile(filepath.Join(dir, "audit", "spans.jsonl"))
	var filler fileSpan
	line, _, _ := strings.Cut(string(cur), "\n")
	if err := json.Unmarshal([]byte(line), &filler); err != nil || len(filler.Attributes["pad"].(string)) != MaxAttributeLength {
		t.Errorf("a 16 KiB attribute was not truncated to %d bytes (%v)", MaxAttributeLength, err)
	}

	// The first spans are in the oldest file kept... or were rotated away;
	// write them again to a fresh file to check their form.
	dir2 := t.TempDir()
	tel2, _ := Setup(context.Background(), Options{DataDir: dir2, Version: "v9"})
	tracer = tel2.TracerProvider.Tracer("test")
	_, first = tracer.Start(context.Background(), "CONNECT")
	first.End()
	ctx, s = tracer.Start(context.Background(), "GET", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithLinks(trace.Link{SpanContext: first.SpanContext()}),
		trace.WithAttributes(attribute.String("sumgate.verdict", "security-error"), attribute.Int64("sumgate.sumdb.tree_size", 42)))
	s.AddEvent("sumgate.security_error", trace.WithAttributes(attribute.String("sumgate.reason", "fork")))
	s.SetStatus(codes.Error, "blocked")
	_, child = tracer.Start(ctx, "sumdb.check")
	child.End()
	s.End()
	tel2.Shutdown(context.Background())
	data, err := os.ReadFile(filepath.Join(dir2, "audit", "spans.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), data)
	}
	var got []fileSpan
	for _, l := range lines {
		var fs fileSpan
		if err := json.Unmarshal([]byte(l), &fs); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		got = append(got, fs)
	}
	c, g := got[1], got[2] // the child ends before its parent
	if c.Name != "sumdb.check" || c.ParentSpanID != g.SpanID || c.TraceID != g.TraceID || c.Kind != "internal" {
		t.Errorf("child %+v of %+v", c, g)
	}
	if g.Kind != "server" || g.ParentSpanID != "" || g.Status != "error" || g.StatusMessage != "blocked" ||
		g.Attributes["sumgate.verdict"] != "security-error" || g.Attributes["sumgate.sumdb.tree_size"] != float64(42) ||
		len(g.Events) != 1 || g.Events[0].Name != "sumgate.security_error" || g.Events[0].Attributes["sumgate.reason"] != "fork" ||
		len(g.Links) != 1 || g.Links[0].SpanID != got[0].SpanID || g.End.Before(g.Start) {
		t.Errorf("server span: %s", lines[2])
	}
	var res map[string]any
	if json.Unmarshal(g.Resource, &res); res["service.name"] != "sumgate" || res["service.version"] != "v9" {
		t.Errorf("resource %s", g.Resource)
	}
}
