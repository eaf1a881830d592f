package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/sumdb"
)

// Decisions, the value of sumgate.decision.
const (
	DecisionIntercept = "intercept" // TLS terminated, traffic inspected (and module files verified)
	DecisionTunnel    = "tunnel"    // CONNECT spliced blindly to a checked public address
	DecisionForward   = "forward"   // plain http:// request forwarded unverified
	DecisionDeny      = "deny"      // refused by policy
)

// scope names the gateway's tracer and meter.
const scope = "github.com/sumgate/sumgate/gateway"

// instruments are the gateway's metrics; docs/audit.md lists them.
type instruments struct {
	// sets caches the attribute sets measurements are recorded with: a
	// handful of distinct ones, built once instead of per request.
	sets sync.Map // string -> metric.MeasurementOption

	requests metric.Int64Counter
	duration metric.Float64Histogram
	verdicts metric.Int64Counter
	bytes    metric.Int64Counter
	upstream metric.Float64Histogram
	lookup   metric.Float64Histogram
	cache    metric.Int64Counter
	tunnels  metric.Int64UpDownCounter
}

// attrs returns the measurement option for kvs, built once per distinct
// set; key must identify the set.
func (in *instruments) attrs(key string, kvs ...attribute.KeyValue) metric.MeasurementOption {
	if o, ok := in.sets.Load(key); ok {
		return o.(metric.MeasurementOption)
	}
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	in.sets.Store(key, o)
	return o
}

// latencyBuckets are the histogram bounds, in seconds: from a cached
// answer to a large download over a slow link.
var latencyBuckets = metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

func newInstruments(mp metric.MeterProvider) (*instruments, error) {
	m := mp.Meter(scope)
	in := &instruments{}
	var errs [8]error
	in.requests, errs[0] = m.Int64Counter("sumgate.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Client requests (CONNECTs included), by decision and status code."))
	in.duration, errs[1] = m.Float64Histogram("sumgate.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from a client request to the end of its response body (tunnels excluded)."), latencyBuckets)
	in.verdicts, errs[2] = m.Int64Counter("sumgate.verdicts", metric.WithUnit("{verdict}"),
		metric.WithDescription("Verdicts given to client requests for module files, by outcome and kind."))
	in.bytes, errs[3] = m.Int64Counter("sumgate.bytes", metric.WithUnit("By"),
		metric.WithDescription("Bytes moved: sent to clients, spooled from upstream, and through tunnels in each direction."))
	in.upstream, errs[4] = m.Float64Histogram("sumgate.upstream.duration", metric.WithUnit("s"),
		metric.WithDescription("Upstream fetches: to the response headers for pass-through, to the last byte spooled for module files."), latencyBuckets)
	in.lookup, errs[5] = m.Float64Histogram("sumgate.sumdb.lookup.duration", metric.WithUnit("s"),
		metric.WithDescription("Checksum-database lookups that went to the network."), latencyBuckets)
	in.cache, errs[6] = m.Int64Counter("sumgate.cache.lookups", metric.WithUnit("{lookup}"),
		metric.WithDescription("Verified-file cache lookups, by hit."))
	in.tunnels, errs[7] = m.Int64UpDownCounter("sumgate.tunnels.active", metric.WithUnit("{tunnel}"),
		metric.WithDescription("Open CONNECT tunnels, by decision."))
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("gateway: creating metrics: %w", err)
		}
	}
	// The series an alert watches exist from the start, at 0: a counter
	// born at 1 by the first block shows no increase() to Prometheus, so
	// the first block after each start would raise no alert.
	for _, o := range []sumdb.Outcome{sumdb.Mismatch, sumdb.SecurityError} {
		for _, k := range []sumdb.Kind{sumdb.KindZip, sumdb.KindMod} {
			in.countVerdict(0, o, k)
		}
	}
	return in, nil
}

// countVerdict adds n to sumgate.verdicts for outcome and kind.
func (in *instruments) countVerdict(n int64, o sumdb.Outcome, k sumdb.Kind) {
	outcome, kind := o.String(), k.String()
	in.verdicts.Add(context.Background(), n, in.attrs("v "+outcome+" "+kind,
		auditkey.Verdict.String(outcome), auditkey.ModuleKind.String(kind)))
}

// observeAlert reports sumgate.sumdb.alert: 1 while a checksum-database
// fork is on record (every check fails closed), else 0.
func observeAlert(mp metric.MeterProvider, v *sumdb.Verifier) error {
	_, err := mp.Meter(scope).Int64ObservableGauge("sumgate.sumdb.alert",
		metric.WithDescription("1 while a checksum-database fork is on record and every check fails closed."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			n := int64(0)
			if _, alerted := v.Alerted(); alerted {
				n = 1
			}
			o.Observe(n, metric.WithAttributes(auditkey.SumDB.String(v.Name())))
			return nil
		}))
	if err != nil {
		return fmt.Errorf("gateway: creating metrics: %w", err)
	}
	return nil
}

// A requestAudit is the server span of one client request, and what is
// learnt about it before its response body is closed.
type requestAudit struct {
	g           *Gateway
	span        trace.Span
	ctx         context.Context
	start       time.Time
	method, url string // for the access log line

	mu       sync.Mutex
	attrs    []attribute.KeyValue // set on the span when it ends, in one call
	decision string
	failure  string // non-empty when sumgate refused, blocked or failed
	status   int
	sent     atomic.Int64
	ended    atomic.Bool
}

// startRequest opens the root server span of a client request that is
// not a CONNECT. Incoming trace context is never consulted: the span is
// a new root, linked to its tunnel's CONNECT span when there is one.
func (g *Gateway) startRequest(req *http.Request, t *tunnel) *requestAudit {
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(req.Method),
		semconv.NetworkProtocolVersion(protoVersion(req)),
	}
	host := canonicalHost(req.URL.Host)
	full := redacted(req.URL)
	client := req.RemoteAddr
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindServer)}
	if t != nil {
		host = t.host
		u := *req.URL
		u.Scheme, u.Host = "https", t.host
		full = redacted(&u)
		client = t.client
		attrs = append(attrs, auditkey.TLSServerName.String(t.sni()))
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: t.audit.span.SpanContext()}))
	}
	if host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
	}
	attrs = append(attrs, semconv.URLFull(full), semconv.URLPath(req.URL.Path))
	attrs = append(attrs, clientAttrs(req, client)...)
	ctx, span := g.tracer.Start(req.Context(), req.Method, append(opts, trace.WithAttributes(attrs...))...)
	return &requestAudit{g: g, span: span, ctx: ctx, start: time.Now(), method: req.Method, url: full, decision: DecisionIntercept,
		attrs: make([]attribute.KeyValue, 0, 24)}
}

// protoVersion is network.protocol.version: "1.1", "1.0" or "2".
func protoVersion(req *http.Request) string {
	if req.ProtoMajor == 2 {
		return "2"
	}
	return fmt.Sprintf("%d.%d", req.ProtoMajor, req.ProtoMinor)
}

// sensitiveQuery are the query parameters whose values url.full never
// records: those semantic conventions name, and the usual bearer tokens.
var sensitiveQuery = []string{"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature", "X-Amz-Signature",
	"X-Amz-Credential", "X-Amz-Security-Token", "access_token", "token", "private_token"}

// redacted is u as url.full records it: credentials in the URL, and the
// values of sensitiveQuery parameters, are replaced by REDACTED, as
// semantic conventions require, so that they never reach the audit trail.
func redacted(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.UserPassword("REDACTED", "REDACTED")
	}
	if c.RawQuery != "" {
		q := c.Query()
		changed := false
		for _, k := range sensitiveQuery {
			if vs, ok := q[k]; ok {
				for i := range vs {
					vs[i] = "REDACTED"
				}
				changed = true
			}
		}
		if changed {
			c.RawQuery = q.Encode()
		}
	}
	return c.String()
}

// clientAttrs are the client's address and user agent.
func clientAttrs(req *http.Request, remote string) []attribute.KeyValue {
	var as []attribute.KeyValue
	if h, p, err := net.SplitHostPort(remote); err == nil {
		as = append(as, semconv.ClientAddress(h))
		if n, err := strconv.Atoi(p); err == nil {
			as = append(as, semconv.ClientPort(n))
		}
	}
	if ua := req.UserAgent(); ua != "" {
		as = append(as, semconv.UserAgentOriginal(ua))
	}
	return as
}

// set adds attributes to the span (when it ends).
func (a *requestAudit) set(kv ...attribute.KeyValue) {
	a.mu.Lock()
	a.attrs = append(a.attrs, kv...)
	a.mu.Unlock()
}

// decide records the decision and the rule that made it.
func (a *requestAudit) decide(decision, rule string) {
	a.mu.Lock()
	a.decision = decision
	a.attrs = append(a.attrs, auditkey.Decision.String(decision), auditkey.Rule.String(rule))
	a.mu.Unlock()
}

// fail marks the request refused, blocked or failed, for reason.
func (a *requestAudit) fail(reason string) {
	a.mu.Lock()
	a.failure = reason
	a.attrs = append(a.attrs, auditkey.Reason.String(reason))
	a.mu.Unlock()
}

// incomplete marks a delivery the client did not take whole: it went
// away after sent of want bytes (want -1: unknown).
func (a *requestAudit) incomplete(sent, want int64) {
	reason := fmt.Sprintf("incomplete delivery: the client went away after %d bytes", sent)
	if want >= 0 {
		reason = fmt.Sprintf("incomplete delivery: the client went away after %d of %d bytes", sent, want)
	}
	a.mu.Lock()
	a.attrs = append(a.attrs, auditkey.Incomplete.Bool(true))
	if a.failure == "" {
		a.failure = reason
		a.attrs = append(a.attrs, auditkey.Reason.String(reason))
	}
	a.mu.Unlock()
}

// respond notes the status the client is about to get.
func (a *requestAudit) respond(status int) {
	a.mu.Lock()
	a.status = status
	a.mu.Unlock()
}

// end closes the span once the response body has been sent (or the
// client went away), and records the request's metrics.
func (a *requestAudit) end() {
	if a.ended.Swap(true) {
		return
	}
	sent := a.sent.Load()
	a.mu.Lock()
	decision, failure, status := a.decision, a.failure, a.status
	attrs := append(a.attrs, semconv.HTTPResponseStatusCode(status), auditkey.BytesSent.Int64(sent))
	a.mu.Unlock()
	a.span.SetAttributes(attrs...)
	switch {
	case failure != "":
		a.span.SetStatus(codes.Error, failure)
	case status >= 500:
		a.span.SetStatus(codes.Error, http.StatusText(status))
	}
	a.span.End()
	elapsed := time.Since(a.start)
	a.g.log.InfoContext(a.ctx, "request", "method", a.method, "url", a.url, "status", status,
		"decision", decision, "bytes_sent", sent, "duration_ms", float64(elapsed.Microseconds())/1000, "failure", failure)
	in := a.g.metrics
	ctx := context.Background()
	in.requests.Add(ctx, 1, in.requestAttrs(decision, status))
	in.duration.Record(ctx, elapsed.Seconds(), in.attrs("d "+decision, auditkey.Decision.String(decision)))
	in.bytes.Add(ctx, sent, in.direction("sent"))
}

// requestAttrs is the attribute set of sumgate.requests.
func (in *instruments) requestAttrs(decision string, status int) metric.MeasurementOption {
	return in.attrs("r "+decision+" "+strconv.Itoa(status), auditkey.Decision.String(decision), semconv.HTTPResponseStatusCode(status))
}

// recordUpstream records an upstream request's duration, of kind
// (module, pass-through or forward).
func (in *instruments) recordUpstream(ctx context.Context, req *http.Request, start time.Time, kind string) {
	in.upstream.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(
		semconv.ServerAddress(canonicalHost(req.URL.Host)), attribute.String("kind", kind)))
}

// direction is the attribute set of sumgate.bytes.
func (in *instruments) direction(d string) metric.MeasurementOption {
	return in.attrs("b "+d, attribute.String("direction", d))
}

// verdict records a module file's verdict on the span and in the metrics;
// a security error is also a span event and an error log line.
func (a *requestAudit) verdict(vd sumdb.Verdict) {
	a.set(sumdb.VerdictAttributes(vd)...)
	a.g.metrics.countVerdict(1, vd.Outcome, vd.Kind)
	if vd.Outcome == sumdb.SecurityError {
		a.span.AddEvent(auditkey.SecurityEvent, trace.WithAttributes(auditkey.Reason.String(vd.Reason)))
		a.g.log.ErrorContext(a.ctx, "checksum database security error: module blocked",
			"module", vd.Module.String(), "kind", vd.Kind.String(), "reason", vd.Reason)
	}
}

// connectAudit is the server span of one CONNECT. A denied CONNECT's span
// ends at once; a tunnel's lasts until the tunnel closes.
type connectAudit struct {
	g       *Gateway
	span    trace.Span
	ctx     context.Context
	conn    *idleConn // nil when the gateway is mounted on another server
	decided string
	target  string // the CONNECT's host:port
	start   time.Time
	r0, w0  int64 // client bytes before the tunnel began
	once    sync.Once
}

// startConnect opens the root server span of a CONNECT.
func (g *Gateway) startConnect(req *http.Request, hostport string) *connectAudit {
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(http.MethodConnect),
		semconv.NetworkProtocolVersion(protoVersion(req)),
	}
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		attrs = append(attrs, semconv.ServerAddress(canonicalHost(h)))
		if n, err := strconv.Atoi(p); err == nil {
			attrs = append(attrs, semconv.ServerPort(n))
		}
	} else {
		attrs = append(attrs, semconv.ServerAddress(hostport))
	}
	attrs = append(attrs, clientAttrs(req, req.RemoteAddr)...)
	ctx, span := g.tracer.Start(req.Context(), http.MethodConnect,
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	c := &connectAudit{g: g, span: span, ctx: ctx, target: hostport, start: time.Now()}
	c.conn, _ = req.Context().Value(connKey{}).(*idleConn)
	g.openSpans.Add(1)
	return c
}

// deny ends a refused CONNECT's span.
func (c *connectAudit) deny(status int, rule, reason string) {
	c.span.SetAttributes(auditkey.Decision.String(DecisionDeny), auditkey.Rule.String(rule), auditkey.Reason.String(reason))
	c.finish(status, reason)
}

// open records an accepted CONNECT: the span now lasts until the tunnel
// closes (intercepted tunnels: the client connection; blind tunnels: the
// upstream connection, see [Gateway.dialTunnel]).
func (c *connectAudit) open(decision, rule string) {
	c.decided = decision
	c.span.SetAttributes(auditkey.Decision.String(decision), auditkey.Rule.String(rule))
	c.g.metrics.tunnels.Add(context.Background(), 1, metric.WithAttributes(auditkey.Decision.String(decision)))
	if c.conn != nil {
		c.r0, c.w0 = c.conn.read.Load(), c.conn.written.Load()
	}
}

// finish ends the span once, with status; a non-empty failure makes it an
// Error.
func (c *connectAudit) finish(status int, failure string, kv ...attribute.KeyValue) {
	c.once.Do(func() {
		c.span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		c.span.SetAttributes(kv...)
		if failure != "" {
			c.span.SetStatus(codes.Error, failure)
		}
		c.span.End()
		ctx := context.Background()
		decision := c.decided
		if decision == "" {
			decision = DecisionDeny
		}
		c.g.log.InfoContext(c.ctx, "request", "method", http.MethodConnect, "target", c.target, "status", status,
			"decision", decision, "duration_ms", float64(time.Since(c.start).Microseconds())/1000, "failure", failure)
		if c.decided != "" {
			c.g.metrics.tunnels.Add(ctx, -1, metric.WithAttributes(auditkey.Decision.String(decision)))
		}
		c.g.metrics.requests.Add(ctx, 1, c.g.metrics.requestAttrs(decision, status))
		c.g.openSpans.Done()
	})
}

// endIntercepted ends an intercepted tunnel's span when its client
// connection closes, with the bytes it moved (TLS records included) and
// how many requests it carried.
func (c *connectAudit) endIntercepted(t *tunnel) {
	up, down := c.conn.read.Load()-c.r0, c.conn.written.Load()-c.w0
	ctx := context.Background()
	c.g.metrics.bytes.Add(ctx, up, c.g.metrics.direction("tunnel_to_server"))
	c.g.metrics.bytes.Add(ctx, down, c.g.metrics.direction("tunnel_to_client"))
	failure := ""
	if t.requests.Load() == 0 {
		reason, failed := t.unused()
		c.span.SetAttributes(auditkey.Reason.String(reason))
		if failed {
			failure = reason
		}
	}
	c.finish(http.StatusOK, failure, auditkey.TunnelUp.Int64(up), auditkey.TunnelDown.Int64(down),
		auditkey.TunnelRequests.Int64(t.requests.Load()))
}
