// Package otlptest is a real OTLP trace receiver for tests: a gRPC server
// and an HTTP server on 127.0.0.1 that decode the protobuf wire format
// (go.opentelemetry.io/proto/otlp) and keep every span they are sent.
// Exporters reach it over the network, exactly as they reach a collector.
package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is a received span, flattened for assertions.
type Span struct {
	Name         string
	Kind         tracepb.Span_SpanKind
	TraceID      string // hex
	SpanID       string // hex
	ParentSpanID string // hex, "" for a root
	Attrs        map[string]any
	Resource     map[string]any
	StatusCode   tracepb.Status_StatusCode
	StatusMsg    string
	Events       []string // event names
	Links        []string // linked span IDs, hex
	Start, End   time.Time
	Protocol     string // "grpc" or "http"
}

// Str returns a string attribute, or "".
func (s Span) Str(key string) string { v, _ := s.Attrs[key].(string); return v }

// Int returns an integer attribute, or -1.
func (s Span) Int(key string) int64 {
	if v, ok := s.Attrs[key].(int64); ok {
		return v
	}
	return -1
}

// Receiver accepts OTLP/gRPC at GRPCAddr and OTLP/HTTP at HTTPURL.
type Receiver struct {
	GRPCAddr string // host:port
	HTTPURL  string // http://host:port (spans are POSTed to /v1/traces)

	grpcSrv *grpc.Server
	httpSrv *http.Server

	mu    sync.Mutex
	spans []Span
	wake  chan struct{}
}

// Start runs a receiver until the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{wake: make(chan struct{})}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.GRPCAddr, r.HTTPURL = gl.Addr().String(), "http://"+hl.Addr().String()
	r.grpcSrv = grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(r.grpcSrv, grpcService{r: r})
	go r.grpcSrv.Serve(gl)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP)
	r.httpSrv = &http.Server{Handler: mux}
	go r.httpSrv.Serve(hl)
	t.Cleanup(r.Stop)
	return r
}

// Stop shuts both servers down; exporters then fail as they would with a
// collector that is down.
func (r *Receiver) Stop() {
	r.grpcSrv.Stop()
	r.httpSrv.Close()
}

type grpcService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (s grpcService) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.r.add(req, "grpc")
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "unsupported content type "+ct, http.StatusUnsupportedMediaType)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&msg, "http")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (r *Receiver) add(req *coltracepb.ExportTraceServiceRequest, protocol string) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				s := Span{
					Name: sp.GetName(), Kind: sp.GetKind(),
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
					Attrs: attrs(sp.GetAttributes()), Resource: res,
					StatusCode: sp.GetStatus().GetCode(), StatusMsg: sp.GetStatus().GetMessage(),
					Start: time.Unix(0, int64(sp.GetStartTimeUnixNano())), End: time.Unix(0, int64(sp.GetEndTimeUnixNano())),
					Protocol: protocol,
				}
				if p := sp.GetParentSpanId(); len(p) > 0 && !bytes.Equal(p, make([]byte, 8)) {
					s.ParentSpanID = hex.EncodeToString(p)
				}
				for _, e := range sp.GetEvents() {
					s.Events = append(s.Events, e.GetName())
				}
				for _, l := range sp.GetLinks() {
					s.Links = append(s.Links, hex.EncodeToString(l.GetSpanId()))
				}
				got = append(got, s)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	close(r.wake)
	r.wake = make(chan struct{})
	r.mu.Unlock()
}

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e))
		}
		return out
	}
	return fmt.Sprint(v)
}

// Spans returns every span received so far, oldest first by start time.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]Span(nil), r.spans...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// WaitFor waits until match holds for the spans received, or fails the
// test after timeout.
func (r *Receiver) WaitFor(t testing.TB, timeout time.Duration, what string, match func([]Span) bool) []Span {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		wake := r.wake
		r.mu.Unlock()
		if s := r.Spans(); match(s) {
			return s
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("otlptest: timed out after %v waiting for %s; have %d spans", timeout, what, len(r.Spans()))
			return nil
		}
	}
}

// Servers returns the server spans among spans: one per client request.
func Servers(spans []Span) []Span {
	var out []Span
	for _, s := range spans {
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
			out = append(out, s)
		}
	}
	return out
}

// Find returns the last of spans that match accepts, or nil.
func Find(spans []Span, match func(Span) bool) *Span {
	var found *Span
	for i := range spans {
		if match(spans[i]) {
			found = &spans[i]
		}
	}
	return found
}
