package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/elazarl/goproxy"
	"go.opentelemetry.io/otel/attribute"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/internal/upstream"
)

// handle answers every request that reaches the proxy other than CONNECT
// (inside an intercepted tunnel, or plain http), in four steps that only
// ever go forward: open the audit record, decide ([policy.decide], which
// reads only the request and the configuration), act on the decision
// (verify a module file with the [Fetcher], or pass the request upstream
// exactly as decided), and respond ([Gateway.respond], which builds the
// answer and writes the audit record).
func (g *Gateway) handle(req *http.Request, pctx *goproxy.ProxyCtx) (_ *http.Request, resp *http.Response) {
	t, _ := pctx.UserData.(*tunnel)
	a := g.startRequest(req, t)
	req = req.WithContext(a.ctx)
	host := ""
	if t != nil {
		t.requests.Add(1)
		t.requestRead()
		host = t.host
	}
	counted := g.begin()
	defer func() {
		// goproxy serves tunnels in goroutines of its own, where a panic
		// would end the process: never let one out.
		if p := recover(); p != nil {
			g.log.ErrorContext(a.ctx, "panic while answering a request", "url", req.URL.String(), "panic", p, "stack", string(debug.Stack()))
			a.fail("internal error while answering this request")
			resp = textResponse(req, http.StatusBadGateway, "sumgate: internal error while answering this request")
			a.respond(resp.StatusCode)
			a.end()
			if counted {
				g.end()
			}
		}
	}()
	var d decision
	var out outcome
	func() {
		defer func() {
			if p := recover(); p != nil {
				g.log.ErrorContext(a.ctx, "panic while handling a request", "url", req.URL.String(), "panic", p, "stack", string(debug.Stack()))
				out.close()
				d, out = refusal(http.StatusBadGateway, "internal-error", "internal error while handling this request"), outcome{}
			}
		}()
		if !counted {
			d = refusal(http.StatusServiceUnavailable, "shutdown", "shutting down; retry")
			return
		}
		d = g.pol.decide(lineOf(req, host))
		out = g.act(a.ctx, req, d)
		out = g.decideFile(a.ctx, d, out)
		out = g.filterList(a.ctx, a, d, out)
	}()
	if d.action == actRefuse {
		g.log.InfoContext(a.ctx, "refused", "rule", d.rule, "reason", d.reason)
	}
	return req, g.respond(req, a, d, out, counted, t)
}

// act carries out a decision: nothing for a refusal; otherwise the
// upstream request, to exactly the decided URL.
func (g *Gateway) act(ctx context.Context, req *http.Request, d decision) outcome {
	switch d.action {
	case actVerify:
		if d.any != nil {
			res, err := g.fetcher.FetchAny(ctx, d.url, d.any, d.mod.kind)
			return outcome{res: res, err: err}
		}
		res, err := g.fetcher.Fetch(ctx, d.url, d.mod.mod, d.mod.kind)
		return outcome{res: res, err: err}
	case actPass:
		if d.mod != nil && d.mod.file == "info" {
			// The go command asks for the .mod or .zip next: look the
			// version up meanwhile.
			g.cfg.Verifier.Prefetch(ctx, d.mod.mod)
		}
		if g.policy != nil && d.mod != nil && (d.mod.file == "list" || d.mod.file == "latest") {
			// Its answer is read on the way back, to leave out what
			// policy blocks: ask for it plain (the upstream client then
			// decodes gzip itself).
			req = req.Clone(ctx)
			req.Header.Del("Accept-Encoding")
			// Whole, too: a part of a list cannot be filtered.
			req.Header.Del("Range")
			req.Header.Del("If-Range")
		}
		out := g.forward(req, d.url, g.cfg.Upstream.Do, "pass-through")
		if d.learn && out.resp != nil && g.vcs != nil {
			g.learnImports(clientIP(req), canonicalHost(req.URL.Host), out.resp)
		}
		return out
	case actGit:
		res, out := g.actGit(ctx, req, d)
		out.git = &res
		return out
	case actForward:
		return g.forward(req, d.url, g.plainTr.RoundTrip, "forward")
	}
	return outcome{}
}

// close releases what an outcome holds, for a request that will not be
// answered with it.
func (o outcome) close() {
	if o.res != nil {
		o.res.Close()
	}
	if o.resp != nil && o.resp.Body != nil {
		o.resp.Body.Close()
	}
	if o.served != nil {
		o.served.Close()
	}
}

// hopHeaders are removed from requests passed upstream: hop-by-hop
// headers, proxy credentials, and trace context that must not leak to
// third parties.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Traceparent", "Tracestate", "Baggage",
}

// stripHopHeaders removes hopHeaders and the headers Connection names.
func stripHopHeaders(h http.Header) {
	for _, name := range splitList(h.Values("Connection")) {
		h.Del(name)
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// forward sends req upstream as exactly the URL u, without hop-by-hop
// headers, proxy credentials or trace context, and returns the answer to
// stream back.
func (g *Gateway) forward(req *http.Request, u string, do func(*http.Request) (*http.Response, error), kind string) outcome {
	out := req.Clone(req.Context())
	out.RequestURI = ""
	var err error
	if out.URL, err = url.Parse(u); err != nil {
		return outcome{err: fmt.Errorf("forwarding to %s: %w", u, err)}
	}
	out.Host = out.URL.Host
	stripHopHeaders(out.Header)
	// An upstream that sends no byte for the idle timeout is cut off, as
	// it is for module files: the client's connection moves no byte
	// either while it waits.
	ctx, cancel := context.WithCancelCause(req.Context())
	idle := g.cfg.IdleTimeout
	stall := time.AfterFunc(idle, func() { cancel(stallError{idle}) })
	out = out.WithContext(ctx)
	if out.Body != nil && out.Body != http.NoBody {
		// The client's upload moving counts as progress too (a long git
		// push is not a stalled upstream).
		out.Body = struct {
			io.Reader
			io.Closer
		}{&stallReader{r: out.Body, t: stall, d: idle}, out.Body}
	}
	start := time.Now()
	resp, err := do(out)
	g.metrics.recordUpstream(req.Context(), out, start, kind)
	if err != nil {
		stall.Stop()
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = cause
		}
		cancel(nil)
		return outcome{err: fmt.Errorf("fetching %s: %w", redacted(out.URL), err)}
	}
	stall.Reset(idle)
	resp.Body = &stallBody{ReadCloser: resp.Body, stall: stallReader{r: resp.Body, t: stall, d: idle}, cancel: cancel}
	return outcome{resp: resp}
}

// stallBody is an upstream's answer passed through: every byte read
// pushes the stall timer forward, and closing it stops the timer.
type stallBody struct {
	io.ReadCloser
	stall  stallReader
	cancel context.CancelCauseFunc
}

func (b *stallBody) Read(p []byte) (int, error) { return b.stall.Read(p) }

func (b *stallBody) Close() error {
	b.stall.t.Stop()
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// safeDial dials addr for plain http forwarding: a host the operator
// resolved goes where it said; anything else only to a public address.
func (g *Gateway) safeDial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	host = canonicalHost(host)
	d := &net.Dialer{Timeout: 10 * time.Second, Control: upstream.MarkControl(g.cfg.Mark)}
	if to, ok := g.cfg.Resolve[host]; ok {
		return d.DialContext(ctx, network, to)
	}
	if port != "80" {
		return nil, &refusedDial{rule: "tunnel-port", err: fmt.Errorf("port %s refused: plain http is forwarded to port 80 only", port)}
	}
	a, err := upstream.PublicAddr(ctx, host)
	if err != nil {
		return nil, &refusedDial{rule: "internal-address", err: err}
	}
	return d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
}

// moduleAttrs are the audit attributes of a module proxy request.
func moduleAttrs(mr moduleRequest) []attribute.KeyValue {
	as := []attribute.KeyValue{auditkey.ModuleKind.String(mr.file), auditkey.ModuleOrigin.String(mr.origin)}
	if mr.mod.Path != "" {
		as = append(as, auditkey.ModulePath.String(mr.mod.Path))
	}
	if mr.mod.Version != "" {
		as = append(as, auditkey.ModuleVersion.String(mr.mod.Version))
	}
	return as
}

// splitList splits comma-separated header values into their elements.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
	}
	return out
}

// refusedDial is a plain http request that policy refuses once its host
// is resolved: an internal address, or a port other than 80. It is a
// refusal (403, decision deny), not an upstream failure.
type refusedDial struct {
	rule string // the rule, as docs/audit.md lists them
	err  error
}

func (e *refusedDial) Error() string { return e.err.Error() }
func (e *refusedDial) Unwrap() error { return e.err }
