package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/elazarl/goproxy"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sumgate/sumgate/internal/auditkey"
)

// tunnel is what a CONNECT decided to intercept, carried to every request
// inside it.
type tunnel struct {
	host     string        // the CONNECT target's host name, canonical
	client   string        // the client's address
	audit    *connectAudit // the CONNECT's span
	headers  bool          // bound the reading of each request's headers (HTTP/1.1 tunnels)
	requests atomic.Int64  // requests served inside

	mu        sync.Mutex
	sniName   string // the client's SNI
	failed    string // why sumgate refused the handshake, if it did
	handshake error  // why the handshake failed on the client's side, if it did
}

func (t *tunnel) sni() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sniName
}

func (t *tunnel) failure() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *tunnel) handshakeErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.handshake
}

// requestRead notes that a request's headers have arrived: its body may
// be as slow as the idle timeout allows.
func (t *tunnel) requestRead() {
	if t.headers && t.audit.conn != nil {
		t.audit.conn.headersRead()
	}
}

// awaitRequest notes that the tunnel waits for its next request, whose
// headers must arrive within the header timeout of its first byte.
func (t *tunnel) awaitRequest() {
	if t.headers && t.audit.conn != nil {
		t.audit.conn.awaitHeaders()
	}
}

// unused explains an intercepted tunnel that carried no request, and
// whether that is a failure. A client that rejected sumgate's certificate
// says so with a TLS alert (bad_certificate, unknown_ca, …), which is a
// failure: it does not trust the enterprise root. A client that closed
// the connection before or during the handshake without an alert, or
// after it without a request, is not: the go command opens connections it
// then does not use.
func (t *tunnel) unused() (reason string, failed bool) {
	if f := t.failure(); f != "" {
		return f, true
	}
	err := t.handshakeErr()
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" && !strings.Contains(oe.Err.Error(), "user canceled") {
		return fmt.Sprintf("the client rejected sumgate's certificate in the TLS handshake (%v): does it trust the enterprise root?", oe.Err), true
	}
	if err != nil {
		return fmt.Sprintf("the client closed the tunnel during the TLS handshake, without an alert (%v)", err), false
	}
	return "the client closed the tunnel without making a request", false
}

// handshakes finds the intercepted tunnels whose handshake is under way
// by goproxy's session number, the only thing goproxy reports a failed
// client handshake with.
type handshakes struct {
	mu sync.Mutex
	m  map[int64][]*tunnel // session & 0xFFFF, as goproxy logs it -> tunnels
}

func (h *handshakes) add(session int64, t *tunnel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[int64][]*tunnel{}
	}
	h.m[session&0xFFFF] = append(h.m[session&0xFFFF], t)
}

func (h *handshakes) remove(session int64, t *tunnel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ts := h.m[session&0xFFFF]
	for i, x := range ts {
		if x == t {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(h.m, session&0xFFFF)
	} else {
		h.m[session&0xFFFF] = ts
	}
}

// failed records err on the tunnel to host, of goproxy's session (masked),
// that has not carried a request yet.
func (h *handshakes) failed(masked int64, host string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.m[masked] {
		if t.host == canonicalHost(host) && t.requests.Load() == 0 {
			t.mu.Lock()
			if t.handshake == nil {
				t.handshake = err
			}
			t.mu.Unlock()
			return
		}
	}
}

// goproxyLog receives goproxy's log lines. It keeps one: a client's
// failed TLS handshake in an intercepted tunnel ("Cannot handshake client
// %v %v", with the session, the CONNECT host and the error), which goproxy
// reports nowhere else. The rest is goproxy's debugging, and dropped.
type goproxyLog struct{ g *Gateway }

func (l goproxyLog) Printf(format string, v ...any) {
	if !strings.Contains(format, "Cannot handshake client") || len(v) < 3 {
		return
	}
	session, ok1 := v[0].(int64)
	host, ok2 := v[1].(string)
	err, ok3 := v[2].(error)
	if ok1 && ok2 && ok3 {
		l.g.hs.failed(session, host, err)
	}
}

// countingConn is the upstream side of a blind tunnel: it counts the bytes
// each way and ends the CONNECT span when closed. goproxy closes it after
// both directions are done.
type countingConn struct {
	net.Conn
	audit       *connectAudit
	read, wrote atomic.Int64
	closed      atomic.Bool
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.wrote.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	err := c.Conn.Close()
	if c.closed.Swap(true) {
		return err // counted already
	}
	up, down := c.wrote.Load(), c.read.Load()
	ctx := context.Background()
	c.audit.g.metrics.bytes.Add(ctx, up, c.audit.g.metrics.direction("tunnel_to_server"))
	c.audit.g.metrics.bytes.Add(ctx, down, c.audit.g.metrics.direction("tunnel_to_client"))
	c.audit.finish(http.StatusOK, "", auditkey.TunnelUp.Int64(up), auditkey.TunnelDown.Int64(down))
	return err
}

// dialTunnel dials a blind tunnel's pinned address, in a child span of
// the CONNECT's span, and hands back a connection that ends that span.
func (g *Gateway) dialTunnel(req *http.Request, network, addr string) (net.Conn, error) {
	ic, _ := req.Context().Value(connKey{}).(*idleConn)
	var audit *connectAudit
	if ic != nil {
		audit = ic.takeConnect()
	}
	ctx := req.Context()
	if audit != nil {
		ctx = audit.ctx
	}
	ctx, span := g.tracer.Start(ctx, "dial", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.NetworkPeerAddress(addr)))
	c, err := g.dialer.DialContext(ctx, network, addr)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		span.End()
		err = &dialError{addr: addr, err: err}
		if audit != nil {
			audit.span.SetAttributes(auditkey.Reason.String(err.Error()))
			audit.finish(http.StatusBadGateway, err.Error())
		}
		return nil, err
	}
	span.End()
	if audit == nil {
		return c, nil
	}
	return &countingConn{Conn: c, audit: audit}, nil
}

// dialError is a blind tunnel's failed dial.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return fmt.Sprintf("dialling %s failed: %v", e.addr, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// connectError answers a CONNECT whose tunnel could not be dialled with a
// 502 whose reason phrase, which is what clients print, says why.
// goproxy calls it for failures in established tunnels too: those get
// nothing, as a response written into a tunnel would corrupt its stream.
func connectError(w io.Writer, _ *goproxy.ProxyCtx, err error) {
	var de *dialError
	if !errors.As(err, &de) {
		return
	}
	msg := "sumgate: CONNECT failed: " + de.Error()
	fmt.Fprintf(w, "HTTP/1.1 502 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		reasonPhrase(msg), len(msg)+1, msg)
}
