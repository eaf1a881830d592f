// Package telemetry builds sumgate's audit trail and metrics: a tracer
// provider that records every span (no sampling) through a bounded batch
// processor, exported where the standard OTEL_* environment variables say
// or, when none is set, to a rotated JSON-lines file under the data
// directory; and a meter provider read by a Prometheus handler.
//
// A span the exporter cannot take — because the queue is full while the
// collector is slow, or because the export failed — is counted in the
// sumgate.spans.dropped metric and logged. It is never lost silently, and
// serving never waits for the collector.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"gopkg.in/natefinch/lumberjack.v2"
)

// ScopeName is the instrumentation scope of sumgate's own spans and
// metrics.
const ScopeName = "github.com/sumgate/sumgate"

// MaxAttributeLength bounds a span attribute's string value, in bytes;
// longer values (a client's very long URL) are truncated.
const MaxAttributeLength = 8 << 10

// Defaults for [Options].
const (
	DefaultQueueSize   = 8192
	DefaultBatchSize   = 512
	DefaultFileMaxMB   = 100
	DefaultFileBackups = 10
)

// Options configures [Setup]. Only DataDir is required.
type Options struct {
	// DataDir holds the audit file, DataDir/audit/spans.jsonl, used when
	// no exporter is configured through the environment.
	DataDir string
	// Version is recorded as service.version.
	Version string
	// Exporter, if set, receives the spans instead of what the
	// environment configures (tests use it).
	Exporter sdktrace.SpanExporter
	// QueueSize bounds the spans waiting for export; past it, spans are
	// dropped and counted. Zero means DefaultQueueSize.
	QueueSize int
	// BatchSize is the most spans sent in one export. Zero means
	// DefaultBatchSize.
	BatchSize int
	// BatchTimeout is how long a span may wait for a full batch. Zero
	// means the SDK's default (5s, or OTEL_BSP_SCHEDULE_DELAY).
	BatchTimeout time.Duration
	// FileMaxMB and FileBackups rotate the audit file. Zero means
	// DefaultFileMaxMB and DefaultFileBackups.
	FileMaxMB, FileBackups int
	// Logger receives drop reports. Zero means slog.Default().
	Logger *slog.Logger
}

// Telemetry holds the providers. Shut it down to flush the spans.
type Telemetry struct {
	// TracerProvider records every span it is given; none is sampled out.
	TracerProvider trace.TracerProvider
	// MeterProvider's instruments appear on [Telemetry.MetricsHandler].
	MeterProvider metric.MeterProvider
	// Destination says where spans go: "otlp", "console", "none", or the
	// audit file's path.
	Destination string

	tp       *sdktrace.TracerProvider
	mp       *sdkmetric.MeterProvider
	registry *prometheus.Registry
	gate     *gate
}

// Setup builds the providers. The span exporter is, in order: opts.Exporter;
// what OTEL_TRACES_EXPORTER names (otlp, console, none) or, when only an
// OTLP endpoint is set, OTLP; otherwise the rotated audit file.
func Setup(ctx context.Context, opts Options) (*Telemetry, error) {
	if opts.DataDir == "" && opts.Exporter == nil {
		return nil, errors.New("telemetry: no data directory")
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.FileMaxMB <= 0 {
		opts.FileMaxMB = DefaultFileMaxMB
	}
	if opts.FileBackups <= 0 {
		opts.FileBackups = DefaultFileBackups
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(semconv.ServiceName("sumgate"), semconv.ServiceVersion(opts.Version)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: building the resource: %w", err)
	}

	t := &Telemetry{registry: prometheus.NewRegistry()}
	pe, err := promexporter.New(promexporter.WithRegisterer(t.registry), promexporter.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("telemetry: building the Prometheus exporter: %w", err)
	}
	t.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(pe), sdkmetric.WithResource(res))
	t.MeterProvider = t.mp

	exp, dest, err := spanExporter(ctx, opts)
	if err != nil {
		return nil, err
	}
	t.Destination = dest
	dropped, err := t.mp.Meter(ScopeName).Int64Counter("sumgate.spans.dropped",
		metric.WithDescription("Spans that were not exported: the queue was full or the export failed."),
		metric.WithUnit("{span}"))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	dropped.Add(ctx, 0) // present, at zero, from the first scrape
	t.gate = &gate{capacity: int64(opts.QueueSize), dropped: dropped, log: opts.Logger.With("component", "telemetry")}
	bspOpts := []sdktrace.BatchSpanProcessorOption{
		sdktrace.WithMaxQueueSize(opts.QueueSize),
		sdktrace.WithMaxExportBatchSize(opts.BatchSize),
		// The gate admits at most QueueSize spans, so this never blocks.
		sdktrace.WithBlocking(),
	}
	if opts.BatchTimeout > 0 {
		bspOpts = append(bspOpts, sdktrace.WithBatchTimeout(opts.BatchTimeout))
	}
	t.gate.next = sdktrace.NewBatchSpanProcessor(&countingExporter{SpanExporter: exp, gate: t.gate}, bspOpts...)
	// Attribute values come from clients (URLs, user agents): bound them,
	// so that one request cannot make a span, or an audit line, huge.
	limits := sdktrace.NewSpanLimits()
	limits.AttributeValueLengthLimit = MaxAttributeLength
	t.tp = sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.AlwaysSample()), // an audit trail has no gaps
		sdktrace.WithSpanLimits(limits),
		sdktrace.WithResource(res),
		sdktrace.WithSpanProcessor(t.gate),
	)
	t.TracerProvider = t.tp
	return t, nil
}

// spanExporter picks the exporter as [Setup] describes.
func spanExporter(ctx context.Context, opts Options) (sdktrace.SpanExporter, string, error) {
	if opts.Exporter != nil {
		return opts.Exporter, "custom", nil
	}
	name := os.Getenv("OTEL_TRACES_EXPORTER")
	if name != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("telemetry: configuring the span exporter from OTEL_* variables: %w", err)
		}
		if name == "" {
			name = "otlp"
		}
		return exp, name, nil
	}
	dir := filepath.Join(opts.DataDir, "audit")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("telemetry: creating the audit folder: %w", err)
	}
	file := filepath.Join(dir, "spans.jsonl")
	if abs, err := filepath.Abs(file); err == nil {
		file = abs // the destination is printed for people in other folders
	}
	w := &lumberjack.Logger{Filename: file, MaxSize: opts.FileMaxMB, MaxBackups: opts.FileBackups, LocalTime: false}
	return &fileExporter{w: w}, file, nil
}

// MetricsHandler serves the metrics in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Dropped returns how many spans were not exported so far.
func (t *Telemetry) Dropped() int64 { return t.gate.droppedTotal.Load() }

// Shutdown exports the spans still queued, then stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.tp.Shutdown(ctx), t.mp.Shutdown(ctx))
}

// gate admits a span to the batch processor only while fewer than
// capacity spans are queued or being exported; it counts and logs the
// rest. With the processor in blocking mode behind it, every span is
// either exported, or counted as dropped here or by countingExporter.
type gate struct {
	next     sdktrace.SpanProcessor
	capacity int64
	pending  atomic.Int64 // admitted, not yet through an export
	dropped  metric.Int64Counter
	log      *slog.Logger

	droppedTotal atomic.Int64
	mu           sync.Mutex
	lastReport   time.Time
	unreported   int64
}

func (g *gate) OnStart(parent context.Context, s sdktrace.ReadWriteSpan) { g.next.OnStart(parent, s) }

func (g *gate) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return // the batch processor would not export it (none is, here)
	}
	if g.pending.Add(1) > g.capacity {
		g.pending.Add(-1)
		g.drop(1, "the export queue is full")
		return
	}
	g.next.OnEnd(s)
}

func (g *gate) Shutdown(ctx context.Context) error   { return g.next.Shutdown(ctx) }
func (g *gate) ForceFlush(ctx context.Context) error { return g.next.ForceFlush(ctx) }

// drop counts n lost spans, and logs them at most every 10 seconds.
func (g *gate) drop(n int64, why string) {
	g.droppedTotal.Add(n)
	g.dropped.Add(context.Background(), n)
	g.mu.Lock()
	g.unreported += n
	report := time.Since(g.lastReport) >= 10*time.Second
	var count int64
	if report {
		count, g.unreported, g.lastReport = g.unreported, 0, time.Now()
	}
	g.mu.Unlock()
	if report {
		g.log.Error("audit spans dropped", "count", count, "reason", why, "dropped_total", g.droppedTotal.Load())
	}
}

// countingExporter releases the gate's places after each export and
// counts the spans of a failed export as dropped.
type countingExporter struct {
	sdktrace.SpanExporter
	gate *gate
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.gate.pending.Add(-int64(len(spans)))
	if err != nil {
		e.gate.drop(int64(len(spans)), "export failed: "+err.Error())
	}
	return err
}
