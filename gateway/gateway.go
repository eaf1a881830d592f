// Package gateway is sumgate's intercepting egress proxy. Clients reach it
// with CONNECT (HTTPS_PROXY). For a host on the intercept list it
// terminates TLS with a leaf from the enterprise CA, pins every request in
// the tunnel to that host, and verifies every module .zip and .mod against
// the checksum database before a byte reaches the client. Other hosts are
// tunnelled blindly or refused, by policy, and never to internal addresses.
//
// The decision is made in one place ([Gateway.decideConnect]); the
// plumbing that carries it out is goproxy's.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"go.opentelemetry.io/otel/metric"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"

	"github.com/sumgate/sumgate/certs"
	"github.com/sumgate/sumgate/internal/upstream"
	"github.com/sumgate/sumgate/sumdb"
)

// Policies.
const (
	TunnelAllow = "allow" // CONNECT to a non-intercepted public host is spliced blindly
	TunnelDeny  = "deny"  // CONNECT to a non-intercepted host is refused

	UnverifiedBlock = "block" // versions the database does not know, or cannot answer for, are blocked
	UnverifiedAllow = "allow" // ... are passed (and recorded); a mismatch is still blocked

	VCSAllow       = "allow"        // direct VCS fetches (git, ?go-get=1) pass, attributed to a module path
	VCSPrivateOnly = "private-only" // ... only for private module paths: public ones must use a module proxy
	VCSDeny        = "deny"         // ... never
)

// Config configures a [Gateway]. Verifier, CA, Upstream and DataDir are
// required.
type Config struct {
	// Intercept lists the hosts whose TLS is terminated.
	Intercept []string
	// ModuleProxies are module proxy base URLs (with optional path
	// prefixes) whose traffic is parsed as the GOPROXY protocol.
	ModuleProxies []string
	// Tunnel is TunnelAllow (zero value) or TunnelDeny.
	Tunnel string
	// OnUnverified is UnverifiedBlock (zero value) or UnverifiedAllow.
	OnUnverified string
	// VCS is VCSAllow (zero value), VCSPrivateOnly or VCSDeny.
	VCS string
	// Resolve maps host names to "ip:port" the operator chose; those
	// addresses are exempt from the internal-address check.
	Resolve map[string]string
	// DataDir holds the spool folder for downloads being verified.
	DataDir string
	// Verifier checks module files.
	Verifier *sumdb.Verifier
	// CA mints the leaves presented for intercepted hosts.
	CA *certs.CA
	// Upstream fetches from intercepted hosts; its TLS must be verified.
	Upstream *http.Client
	// CacheMaxBytes bounds the on-disk cache of verified module files
	// (under DataDir/cache), which serves repeat downloads without an
	// upstream fetch or a new check. Zero means 10 GiB; negative disables.
	CacheMaxBytes int64
	// ClientHTTP2 offers HTTP/2 to clients inside intercepted tunnels
	// (goproxy's AllowHTTP2). Off by default: see the README for the
	// measurement behind that choice.
	ClientHTTP2 bool
	// IdleTimeout closes a client connection, tunnel or not, that moves no
	// byte for this long. Zero means 5 minutes.
	IdleTimeout time.Duration
	// Logger receives decisions and errors. Zero means slog.Default().
	Logger *slog.Logger
	// TracerProvider receives one root server span per client request,
	// with child spans for upstream fetches, checks and mints (see
	// docs/audit.md). Zero records nothing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the gateway's metrics. Zero records nothing.
	MeterProvider metric.MeterProvider
	// Transparent configures ServeTransparent.
	Transparent TransparentConfig
	// Mark, if not zero, is set as SO_MARK on the gateway's own upstream
	// sockets (blind tunnels, plain http), so that a redirect rule can
	// exempt them: see deploy/transparent. Set the same mark on Upstream's
	// dialer (internal/upstream.Options.Mark).
	Mark int
}

// A Gateway is the proxy. Create it with [New], serve with [Gateway.Serve],
// stop with [Gateway.Shutdown].
type Gateway struct {
	cfg       Config
	log       *slog.Logger
	intercept map[string]bool // lower-case intercepted hosts
	origins   []origin        // module proxies, by host and path prefix
	proxy     *goproxy.ProxyHttpServer
	server    *http.Server
	spool     string      // folder of downloads being verified
	fetches   flightGroup // one upstream fetch and check per URL at a time
	cache     *fileCache  // verified files, bounded

	mu        sync.Mutex
	closing   bool               // Shutdown has begun: new requests get 503
	active    int                // requests whose response body is not yet closed
	drained   chan struct{}      // closed when closing and active reaches 0
	conns     map[*idleConn]bool // every client connection, tunnels included
	serving   atomic.Bool        // Serve has been called and has not returned
	listeners []net.Listener     // transparent listeners, closed by Shutdown
	// openSpans counts CONNECT spans not yet ended; Shutdown waits for
	// them, so that every tunnel's span is ended before it returns.
	openSpans sync.WaitGroup

	tracer  trace.Tracer
	metrics *instruments
	dialer  *net.Dialer       // blind tunnels
	plainTr http.RoundTripper // plain http forwarding, traced
}

// origin is one module proxy: a host and a path prefix ("" or "/goproxy").
type origin struct {
	host, prefix string
}

// tunnel is what a CONNECT decided, carried to every request inside it.
type tunnel struct {
	host     string        // the CONNECT target's host name, lower case
	client   string        // the client's address
	audit    *connectAudit // the CONNECT's span
	requests atomic.Int64  // requests served inside

	mu      sync.Mutex
	sniName string // the client's SNI
	failed  string // why the handshake was refused, if it was
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

// New builds a gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Verifier == nil || cfg.CA == nil || cfg.Upstream == nil || cfg.DataDir == "" {
		return nil, errors.New("gateway: Verifier, CA, Upstream and DataDir are required")
	}
	if cfg.Tunnel == "" {
		cfg.Tunnel = TunnelAllow
	}
	if cfg.OnUnverified == "" {
		cfg.OnUnverified = UnverifiedBlock
	}
	if cfg.VCS == "" {
		cfg.VCS = VCSAllow
	}
	if cfg.CacheMaxBytes == 0 {
		cfg.CacheMaxBytes = 10 << 30
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = nooptrace.NewTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = noopmetric.NewMeterProvider()
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger.With("component", "gateway"), intercept: map[string]bool{},
		drained: make(chan struct{}), conns: map[*idleConn]bool{},
		tracer: cfg.TracerProvider.Tracer(scope),
		dialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: upstream.MarkControl(cfg.Mark)}}
	switch cfg.Transparent.NoSNI {
	case "":
		g.cfg.Transparent.NoSNI = NoSNIDeny
	case NoSNIDeny, NoSNISplice:
	default:
		return nil, fmt.Errorf("gateway: Transparent.NoSNI %q: want deny or splice", cfg.Transparent.NoSNI)
	}
	switch cfg.Transparent.SNIMismatch {
	case "":
		g.cfg.Transparent.SNIMismatch = SNIMismatchDeny
	case SNIMismatchDeny, SNIMismatchIntercept:
	default:
		return nil, fmt.Errorf("gateway: Transparent.SNIMismatch %q: want deny or intercept", cfg.Transparent.SNIMismatch)
	}
	metrics, err := newInstruments(cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	g.metrics = metrics
	if err := observeAlert(cfg.MeterProvider, cfg.Verifier); err != nil {
		return nil, err
	}
	for _, h := range cfg.Intercept {
		g.intercept[strings.ToLower(h)] = true
	}
	for _, p := range cfg.ModuleProxies {
		o, err := parseOrigin(p)
		if err != nil {
			return nil, err
		}
		g.origins = append(g.origins, o)
	}
	g.spool = filepath.Join(cfg.DataDir, "spool")
	if err := os.MkdirAll(g.spool, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: creating the spool folder: %w", err)
	}
	// Files left by a crash are partial downloads: never serve them.
	if leftovers, err := filepath.Glob(filepath.Join(g.spool, "*")); err == nil {
		for _, f := range leftovers {
			os.Remove(f)
		}
	}

	var cache *fileCache
	cache, err = newFileCache(filepath.Join(cfg.DataDir, "cache"), cfg.CacheMaxBytes)
	if err != nil {
		return nil, fmt.Errorf("gateway: opening the verified-file cache: %w", err)
	}
	g.cache = cache

	p := goproxy.NewProxyHttpServer()
	p.Logger = log.New(io.Discard, "", 0)
	// goproxy's defaults skip upstream TLS verification and chain through
	// $HTTPS_PROXY; neither may ever apply. Intercepted requests are
	// answered by our handler, which fetches with cfg.Upstream; tunnels
	// dial exactly the address decideConnect pinned.
	p.Tr = &http.Transport{Proxy: nil, DialContext: g.safeDial, ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second}
	g.plainTr = upstream.Traced(p.Tr, cfg.TracerProvider, nil)
	p.ConnectDialWithReq = g.dialTunnel
	p.NonproxyHandler = http.HandlerFunc(g.notAProxyRequest)
	p.AllowHTTP2 = cfg.ClientHTTP2
	p.OnRequest().HandleConnectFunc(g.decideConnect)
	p.OnRequest().DoFunc(g.handle)
	g.proxy = p
	g.server = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          log.New(io.Discard, "", 0),
		// Requests find their connection, for byte counts and tunnel spans.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	return g, nil
}

// Serve accepts proxy clients on l until Shutdown. Every connection,
// including hijacked tunnels, is closed after IdleTimeout without traffic.
func (g *Gateway) Serve(l net.Listener) error {
	g.serving.Store(true)
	defer g.serving.Store(false)
	err := g.server.Serve(idleListener{l, g})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets in-flight requests (downloads inside
// tunnels included) finish until ctx ends, then closes every connection.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if !g.closing {
		g.closing = true
		if g.active == 0 {
			close(g.drained)
		}
	}
	for _, l := range g.listeners {
		l.Close()
	}
	g.mu.Unlock()
	err := g.server.Shutdown(ctx)
	if err == nil {
		select {
		case <-g.drained:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	g.server.Close()
	g.mu.Lock()
	for c := range g.conns {
		c.Conn.Close()
	}
	g.mu.Unlock()
	// Tunnels end (and their spans with them) as goproxy notices the
	// closed connections.
	spansEnded := make(chan struct{})
	go func() {
		g.openSpans.Wait()
		close(spansEnded)
	}()
	select {
	case <-spansEnded:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// begin registers a request; it returns false once Shutdown has begun.
func (g *Gateway) begin() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.active++
	return true
}

// end unregisters a request whose response body has been closed.
func (g *Gateway) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.active--; g.active == 0 && g.closing {
		close(g.drained)
	}
}

// Ready reports why the gateway cannot serve yet, or nil: it must be
// serving a listener, with a CA that has a root.
func (g *Gateway) Ready() error {
	g.mu.Lock()
	closing := g.closing
	g.mu.Unlock()
	switch {
	case closing:
		return errors.New("shutting down")
	case !g.serving.Load():
		return errors.New("the proxy listener is not serving")
	case g.cfg.CA.Root() == nil:
		return errors.New("the CA has no root certificate")
	}
	return nil
}

// notAProxyRequest answers requests for the proxy itself, which it does not serve.
func (g *Gateway) notAProxyRequest(w http.ResponseWriter, r *http.Request) {
	a := g.startRequest(r, nil)
	resp := a.refuse(r, http.StatusNotFound, "not-a-proxy-request", "sumgate: this is an egress proxy; set HTTPS_PROXY to use it")
	a.respond(resp.StatusCode)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(resp.StatusCode)
	n, _ := io.Copy(w, resp.Body)
	a.sent.Add(n)
	a.end()
}

// connKey finds a request's *idleConn in its context.
type connKey struct{}

// ServeHTTP lets a Gateway be mounted on any server (tests use it).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.proxy.ServeHTTP(w, r) }

func parseOrigin(base string) (origin, error) {
	rest, ok := strings.CutPrefix(base, "https://")
	if !ok {
		return origin{}, fmt.Errorf("gateway: module proxy %q is not an https URL", base)
	}
	host, path, _ := strings.Cut(rest, "/")
	return origin{host: strings.ToLower(host), prefix: strings.TrimSuffix("/"+path, "/")}, nil
}

// idleListener wraps accepted connections in idleConn and tracks them.
type idleListener struct {
	net.Listener
	g *Gateway
}

func (l idleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.g.track(c), nil
}

// track wraps c in an idleConn that Shutdown will close.
func (g *Gateway) track(c net.Conn) *idleConn {
	ic := &idleConn{Conn: c, idle: g.cfg.IdleTimeout, g: g}
	g.mu.Lock()
	g.conns[ic] = true
	g.mu.Unlock()
	return ic
}

// idleConn closes a connection that moves no byte for idle: each read and
// write pushes its own deadline forward, so slow-loris clients and stuck
// tunnels are reaped and long downloads are not. A deadline set by the
// server itself (such as the header timeout) still applies when earlier.
type idleConn struct {
	net.Conn
	idle time.Duration
	g    *Gateway // forgets the connection when it closes

	mu                  sync.Mutex
	readLimit, writeLim time.Time // deadlines set through the net.Conn methods

	read, written atomic.Int64 // bytes from and to the client

	hmu     sync.Mutex
	onClose []func()      // run once, after the connection closes
	closed  bool          // onClose has run
	connect *connectAudit // a blind tunnel's CONNECT, until its dial
}

func (c *idleConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c)
	c.g.mu.Unlock()
	err := c.Conn.Close()
	c.hmu.Lock()
	hooks := c.onClose
	c.onClose, c.closed = nil, true
	c.hmu.Unlock()
	for _, f := range hooks {
		f()
	}
	return err
}

// atClose runs f once the connection is closed (at once if it is).
func (c *idleConn) atClose(f func()) {
	c.hmu.Lock()
	if !c.closed {
		c.onClose = append(c.onClose, f)
		f = nil
	}
	c.hmu.Unlock()
	if f != nil {
		f()
	}
}

// setConnect hands a blind tunnel's CONNECT audit to its dial.
func (c *idleConn) setConnect(a *connectAudit) {
	c.hmu.Lock()
	c.connect = a
	c.hmu.Unlock()
}

// takeConnect returns the CONNECT audit setConnect left, once.
func (c *idleConn) takeConnect() *connectAudit {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	a := c.connect
	c.connect = nil
	return a
}

// The deadline methods and Read/Write update the deadline under mu, so
// that the server's own deadline changes cannot be lost between computing
// a deadline and setting it. (They once were: http.Server aborts its
// background read before a hijack by setting a past read deadline; a Read
// that had computed "now + idle" just before, and set it just after,
// blocked the CONNECT for the whole idle timeout.)
func (c *idleConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readLimit, c.writeLim = t, t
	return c.Conn.SetDeadline(t)
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readLimit = t
	return c.Conn.SetReadDeadline(t)
}

func (c *idleConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeLim = t
	return c.Conn.SetWriteDeadline(t)
}

func (c *idleConn) next(limit time.Time) time.Time {
	d := time.Now().Add(c.idle)
	if !limit.IsZero() && limit.Before(d) {
		return limit
	}
	return d
}

func (c *idleConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.Conn.SetReadDeadline(c.next(c.readLimit))
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.Conn.SetWriteDeadline(c.next(c.writeLim))
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}
