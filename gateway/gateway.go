// Package gateway is sumgate's intercepting egress proxy. Clients reach it
// with CONNECT (HTTPS_PROXY). For a host on the intercept list it
// terminates TLS with a leaf from the enterprise CA, pins every request in
// the tunnel to that host, and verifies every module .zip and .mod against
// the checksum database before a byte reaches the client. Other hosts are
// tunnelled blindly or refused, by policy, and never to internal addresses.
//
// Every request is decided before anything is done with it: a CONNECT by
// decideConnect (connect.go), every other request by policy.decide
// (decide.go), a pure function of the request and the configuration.
// Then the decision is carried out (a module file through the [Fetcher]:
// fetch, spool, verify, cache; anything else forwarded to exactly the
// decided URL) and answered by respond (respond.go), the one place that
// builds answers and writes audit records. goproxy is the plumbing: it
// hijacks CONNECTs and terminates TLS; docs/architecture.md draws the flow.
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
	"path/filepath"
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
	"github.com/sumgate/sumgate/policy"
	"github.com/sumgate/sumgate/sumdb"
	"github.com/sumgate/sumgate/vcs"
)

// TunnelPolicy decides CONNECT to hosts that are not intercepted.
type TunnelPolicy string

// UnverifiedPolicy decides module files the checksum database does not
// know, or cannot answer for. A mismatch and a fork are always blocked.
type UnverifiedPolicy string

// VCSPolicy decides direct VCS fetches (git smart HTTP, ?go-get=1).
type VCSPolicy string

// Policies.
const (
	TunnelAllow TunnelPolicy = "allow" // CONNECT to a non-intercepted public host is spliced blindly
	TunnelDeny  TunnelPolicy = "deny"  // CONNECT to a non-intercepted host is refused

	UnverifiedBlock UnverifiedPolicy = "block" // versions the database does not know, or cannot answer for, are blocked
	UnverifiedAllow UnverifiedPolicy = "allow" // ... are passed (and recorded); a mismatch is still blocked

	VCSVerify      VCSPolicy = "verify"       // direct git fetches pass only revisions verified against the checksum database (package vcs)
	VCSAllow       VCSPolicy = "allow"        // direct VCS fetches (git, ?go-get=1) pass blindly, attributed to a module path
	VCSPrivateOnly VCSPolicy = "private-only" // ... only for private module paths: public ones must use a module proxy
	VCSDeny        VCSPolicy = "deny"         // ... never
)

// Config configures a [Gateway]. Verifier, CA, Upstream and DataDir are
// required.
type Config struct {
	// Intercept lists the hosts whose TLS is terminated: exact names,
	// "*.example.com" (every name under example.com, at any depth, not
	// example.com itself) and "*" (every DNS name); see package
	// internal/hostpattern. A pattern never matches an IP literal, and a
	// host matched only by a pattern on a port other than 443 follows
	// Tunnel, as a host that is not intercepted does.
	Intercept []string
	// Splice lists hosts (names or patterns, as Intercept) that are never
	// intercepted, even when Intercept matches them: clients that pin
	// certificates. A spliced host follows Tunnel (a blind tunnel under
	// TunnelAllow), so nothing from it is verified.
	Splice []string
	// ModuleProxies are module proxy base URLs (with optional path
	// prefixes) whose traffic is parsed as the GOPROXY protocol.
	ModuleProxies []string
	// Tunnel is TunnelAllow (zero value) or TunnelDeny.
	Tunnel TunnelPolicy
	// OnUnverified is UnverifiedBlock (zero value) or UnverifiedAllow.
	OnUnverified UnverifiedPolicy
	// VCS is VCSVerify (zero value), VCSPrivateOnly, VCSAllow or VCSDeny.
	// Under VCSVerify a direct git fetch of a public module passes only
	// if every object it wants is a tagged revision whose module zip and
	// go.mod, built as the go command builds them, match the checksum
	// database; other fetches (pseudo-versions, branches, repositories
	// sumgate cannot read anonymously) follow OnUnverified, and private
	// module paths pass. It needs git installed.
	VCS VCSPolicy
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
	// byte for this long, and ends a module file download whose upstream
	// sends no byte for this long (the client gets a 504). Zero means 5
	// minutes.
	IdleTimeout time.Duration
	// HeaderTimeout bounds the reading of a request's headers, from its
	// first byte: on the proxy's own listener, and inside intercepted
	// tunnels (HTTP/1.1), where a slow-loris client is cut off too. Zero
	// means 30 seconds.
	HeaderTimeout time.Duration
	// FetchTimeout bounds one module file's download and check, which the
	// client waits for before it gets a byte. Zero means 10 minutes.
	FetchTimeout time.Duration
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
	// Policy, if set, refuses module versions the operator's policy
	// blocks (deny rules, advisories, a cooldown; see package policy):
	// on a .zip after it verified, whether fetched or from the cache, on
	// a verified direct VCS fetch, and in version lists and @latest,
	// which leave those versions out. Nil applies no policy.
	Policy *policy.Engine
	// Mark, if not zero, is set as SO_MARK on the gateway's own upstream
	// sockets (blind tunnels, plain http), so that a redirect rule can
	// exempt them: see deploy/transparent. Set the same mark on Upstream's
	// dialer (internal/upstream.Options.Mark).
	Mark int
}

// A Gateway is the proxy. Create it with [New], serve with [Gateway.Serve],
// stop with [Gateway.Shutdown].
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	pol     requestPolicy // decides requests; never changes after New
	policy  *policyGate   // the operator's policy on module versions; nil if none
	fetcher *Fetcher      // fetch, spool, verify and cache of module files
	vcs     *vcs.Verifier // direct git fetches, under VCSVerify; else nil
	proxy   *goproxy.ProxyHttpServer
	server  *http.Server
	hs      handshakes // intercepted tunnels whose TLS handshake is under way

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
		cfg.VCS = VCSVerify
	}
	if cfg.Transparent.NoSNI == "" {
		cfg.Transparent.NoSNI = NoSNIDeny
	}
	if cfg.Transparent.SNIMismatch == "" {
		cfg.Transparent.SNIMismatch = SNIMismatchDeny
	}
	if cfg.CacheMaxBytes == 0 {
		cfg.CacheMaxBytes = 10 << 30
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = 30 * time.Second
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
	g := &Gateway{cfg: cfg, log: cfg.Logger.With("component", "gateway"),
		pol:     requestPolicy{tunnel: cfg.Tunnel, vcs: cfg.VCS, unverified: cfg.OnUnverified, private: cfg.Verifier.Private()},
		drained: make(chan struct{}), conns: map[*idleConn]bool{},
		tracer: cfg.TracerProvider.Tracer(scope),
		dialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: upstream.MarkControl(cfg.Mark)}}
	if err := cfg.checkPolicies(); err != nil {
		return nil, err
	}
	metrics, err := newInstruments(cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	g.metrics = metrics
	if err := observeAlert(cfg.MeterProvider, cfg.Verifier); err != nil {
		return nil, err
	}
	if g.pol.intercept, err = newInterceptList(cfg.Intercept, cfg.Splice); err != nil {
		return nil, err
	}
	for _, p := range cfg.ModuleProxies {
		o, err := parseOrigin(p)
		if err != nil {
			return nil, err
		}
		g.pol.origins = append(g.pol.origins, o)
	}
	g.fetcher, err = NewFetcher(FetcherConfig{
		Client:        cfg.Upstream,
		Verifier:      cfg.Verifier,
		SpoolDir:      filepath.Join(cfg.DataDir, "spool"),
		CacheDir:      filepath.Join(cfg.DataDir, "cache"),
		CacheMaxBytes: cfg.CacheMaxBytes,
		OnUnverified:  cfg.OnUnverified,
		Timeout:       cfg.FetchTimeout,
		StallTimeout:  cfg.IdleTimeout,
		Logger:        g.log,
	})
	if err != nil {
		return nil, err
	}
	g.fetcher.metrics = metrics
	if cfg.Policy != nil {
		if g.policy, err = newPolicyGate(cfg.Policy, cfg.Verifier, cfg.Upstream, cfg.MeterProvider); err != nil {
			return nil, err
		}
	}
	if cfg.VCS == VCSVerify {
		g.vcs, err = vcs.New(vcs.Config{Client: cfg.Upstream, SumDB: cfg.Verifier, WorkDir: filepath.Join(cfg.DataDir, "vcs"), Timeout: cfg.FetchTimeout,
			PassUnverified: cfg.OnUnverified == UnverifiedAllow,
			Logger:         g.log, TracerProvider: cfg.TracerProvider})
		if err != nil {
			return nil, fmt.Errorf("gateway: vcs: verify: %w (or choose another vcs policy)", err)
		}
	}

	p := goproxy.NewProxyHttpServer()
	p.Logger = goproxyLog{g}
	// goproxy's defaults skip upstream TLS verification and chain through
	// $HTTPS_PROXY; neither may ever apply. Intercepted requests are
	// answered by our handler, which fetches with cfg.Upstream; tunnels
	// dial exactly the address decideConnect pinned.
	p.Tr = &http.Transport{Proxy: nil, DialContext: g.safeDial, ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second}
	g.plainTr = upstream.Traced(p.Tr, cfg.TracerProvider, nil)
	p.ConnectDialWithReq = g.dialTunnel
	p.ConnectionErrHandler = connectError
	p.NonproxyHandler = http.HandlerFunc(g.notAProxyRequest)
	p.AllowHTTP2 = cfg.ClientHTTP2
	p.OnRequest().HandleConnectFunc(g.decideConnect)
	p.OnRequest().DoFunc(g.handle)
	g.proxy = p
	g.server = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: cfg.HeaderTimeout,
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

// notAProxyRequest answers requests for the proxy itself, which it does
// not serve.
func (g *Gateway) notAProxyRequest(w http.ResponseWriter, r *http.Request) {
	a := g.startRequest(r, nil)
	resp := g.respond(r, a, refusal(http.StatusNotFound, "not-a-proxy-request", "this is an egress proxy; set HTTPS_PROXY to use it"), outcome{}, false, nil)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
	resp.Body.Close()
}

// connKey finds a request's *idleConn in its context.
type connKey struct{}

// ServeHTTP lets a Gateway be mounted on any server (tests use it).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.proxy.ServeHTTP(w, r) }

// checkPolicies refuses a policy value that is not one of its constants:
// an unknown value must never be read as a permissive one.
func (cfg *Config) checkPolicies() error {
	for _, p := range []struct {
		name, value string
		valid       bool
	}{
		{"Tunnel", string(cfg.Tunnel), cfg.Tunnel == TunnelAllow || cfg.Tunnel == TunnelDeny},
		{"OnUnverified", string(cfg.OnUnverified), cfg.OnUnverified == UnverifiedBlock || cfg.OnUnverified == UnverifiedAllow},
		{"VCS", string(cfg.VCS), cfg.VCS == VCSVerify || cfg.VCS == VCSAllow || cfg.VCS == VCSPrivateOnly || cfg.VCS == VCSDeny},
		{"Transparent.NoSNI", string(cfg.Transparent.NoSNI), cfg.Transparent.NoSNI == NoSNIDeny || cfg.Transparent.NoSNI == NoSNISplice},
		{"Transparent.SNIMismatch", string(cfg.Transparent.SNIMismatch),
			cfg.Transparent.SNIMismatch == SNIMismatchDeny || cfg.Transparent.SNIMismatch == SNIMismatchIntercept},
	} {
		if !p.valid {
			return fmt.Errorf("gateway: %s %q is not a policy value (see the constants of its type)", p.name, p.value)
		}
	}
	return nil
}
