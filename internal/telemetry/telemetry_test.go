package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
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
