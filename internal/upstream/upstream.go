// Package upstream builds the HTTP clients sumgate uses to reach upstream
// servers: module proxies, the checksum database and, later, the hosts the
// gateway forwards to.
//
// Upstream TLS is always verified, against the system roots plus any extra
// roots the operator configured. There is deliberately no way to turn
// verification off.
//
// Which addresses a client may dial: a name the operator pinned
// (Options.Resolve) goes where it says; one of the operator's own origins
// (Options.Origins) goes to a public or private address, never loopback,
// link-local or cloud metadata; every other host, redirect targets
// included, goes to public addresses only ([Internal]).
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Options configures [NewClient]. The zero value dials the real hosts and
// trusts the system roots.
type Options struct {
	// Roots, if non-nil, replaces the system roots. Build it with [Roots]
	// so that the system roots are kept.
	Roots *x509.CertPool
	// Resolve maps a host name to the "ip:port" to dial instead of
	// host:443. It is never applied to IP literals or other ports.
	Resolve map[string]string
	// Timeout bounds one whole request, body included. Zero means 60s;
	// negative means no bound, for callers that bound requests with
	// contexts (dial, handshake and response-header timeouts still apply).
	Timeout time.Duration
	// TracerProvider, if set, records a client span for every request,
	// under the caller's span. Trace context is never sent upstream.
	TracerProvider trace.TracerProvider
	// MeterProvider, if set, records request durations and sizes.
	MeterProvider metric.MeterProvider
	// Mark, if not zero, is set as SO_MARK on every connection (Linux),
	// so that a transparent-mode redirect rule can exempt sumgate's own
	// traffic.
	Mark int
	// Origins are the operator's own upstream origins, "host:port" (port
	// 443 unless another is named): the module proxies and checksum
	// database URLs of the configuration (config.Config.Origins). A dial
	// to one of them may reach a private address (RFC 1918, RFC 4193
	// unique local, CGNAT), such as an internal module proxy's; never
	// loopback, link-local (cloud metadata included), unspecified,
	// multicast or reserved ones. Every other host, a redirect target
	// included, is dialled at public addresses only. Resolve comes first
	// and overrides both.
	Origins []string
	// LookupNetIP resolves the names Resolve does not pin. Zero means
	// net.DefaultResolver.LookupNetIP; tests set it so that no query
	// leaves the machine.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Roots returns the system roots plus the certificates in the PEM file at
// extraPEM. An empty extraPEM returns the system roots. A file holding no
// certificate is an error.
func Roots(extraPEM string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if extraPEM == "" {
		return pool, nil
	}
	data, err := os.ReadFile(extraPEM)
	if err != nil {
		return nil, fmt.Errorf("reading upstream roots: %w", err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("reading upstream roots: %s holds no PEM certificate", extraPEM)
	}
	return pool, nil
}

// NewClient returns an HTTP client with bounded dial, handshake, header and
// total times, verified TLS, no environment proxy, and opts.Resolve applied.
func NewClient(opts Options) *http.Client {
	timeout := opts.Timeout
	switch {
	case timeout == 0:
		timeout = 60 * time.Second
	case timeout < 0:
		timeout = 0
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: MarkControl(opts.Mark)}
	t := &http.Transport{
		Proxy:                 nil, // sumgate is the egress; never chain through $HTTPS_PROXY
		DialContext:           Dialer(d, opts),
		TLSClientConfig:       &tls.Config{RootCAs: opts.Roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: Traced(t, opts.TracerProvider, opts.MeterProvider), Timeout: timeout, CheckRedirect: checkRedirect}
}

// Traced wraps rt so that each request is a client span (and, with mp,
// measured). The span is recorded only: no traceparent, tracestate or
// baggage is added to the request, since upstreams are third parties. With
// a nil tp, rt is returned as is.
func Traced(rt http.RoundTripper, tp trace.TracerProvider, mp metric.MeterProvider) http.RoundTripper {
	if tp == nil {
		return rt
	}
	opts := []otelhttp.Option{
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator()), // inject nothing
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "upstream " + r.Method }),
	}
	if mp != nil {
		opts = append(opts, otelhttp.WithMeterProvider(mp))
	} else {
		opts = append(opts, otelhttp.WithMeterProvider(noopmetric.NewMeterProvider()))
	}
	return otelhttp.NewTransport(rt, opts...)
}

// checkRedirect follows at most 10 redirects, and never from https to
// plain http.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing a redirect from %s to insecure %s", via[len(via)-1].URL, req.URL)
	}
	return nil
}

// Dialer wraps d so that a dial of host:443, where host is a key of
// opts.Resolve, goes to opts.Resolve[host] instead; a dial of one of
// opts.Origins goes only to a public or private address
// ([originAllowed]); and every other dial goes only to a public address
// ([Internal]). The name is checked and dialled as one step, by address,
// so that it cannot be rebound in between. Each dial is judged by its own
// host: an upstream that redirects sumgate to an internal address gets
// nothing, even from an operator origin. A refusal says how the operator
// may allow it.
func Dialer(d *net.Dialer, opts Options) func(ctx context.Context, network, addr string) (net.Conn, error) {
	origins := make(map[string]bool, len(opts.Origins))
	for _, o := range opts.Origins {
		if host, port, err := net.SplitHostPort(o); err == nil {
			origins[net.JoinHostPort(strings.ToLower(host), port)] = true
		}
	}
	lookup := opts.LookupNetIP
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	public := func(a netip.Addr) bool { return !Internal(a) }
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to := Resolve(opts.Resolve, addr); to != addr {
			return d.DialContext(ctx, network, to)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		origin := origins[net.JoinHostPort(strings.ToLower(host), port)]
		allowed := public
		if origin {
			allowed = originAllowed
		}
		a, err := lookupAllowed(ctx, lookup, host, allowed)
		if re := (*refusedError)(nil); errors.As(err, &re) {
			err = fmt.Errorf("%w%s", err, refusalHint(origin, re.addr, host, port))
		}
		if err != nil {
			return nil, fmt.Errorf("refusing to dial %s: %w", addr, err)
		}
		return d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
	}
}

// refusalHint tells the operator how a dial of host:port, refused at
// address a, could be allowed, if it can.
func refusalHint(origin bool, a netip.Addr, host, port string) string {
	pin := "" // upstream.resolve pins names on port 443 only
	if _, err := netip.ParseAddr(host); err != nil && port == "443" {
		pin = "pin it in upstream.resolve"
	}
	switch {
	case origin:
		hint := ", which even a module_proxies or sumdb.urls origin may not reach (loopback, link-local, cloud metadata, reserved)"
		if pin != "" {
			hint += "; " + pin + " if that is meant"
		}
		return hint
	case originAllowed(a):
		u := strings.TrimSuffix("https://"+net.JoinHostPort(host, port), ":443")
		if pin != "" {
			pin = ", or " + pin
		}
		return "; to allow it, list " + u + " in module_proxies or sumdb.urls" + pin
	case pin != "":
		return "; to allow it, " + pin
	}
	return ""
}

// PublicAddr resolves host (or parses it, if it is an IP literal) and
// returns its first address, failing if any of its addresses is internal:
// a name that resolves to both a public and an internal address is refused
// as a whole.
func PublicAddr(ctx context.Context, host string) (netip.Addr, error) {
	return lookupAllowed(ctx, net.DefaultResolver.LookupNetIP, host, func(a netip.Addr) bool { return !Internal(a) })
}

// refusedError says that host resolves to an address the dial may not
// reach.
type refusedError struct {
	host string
	addr netip.Addr
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("%s resolves to the internal address %s", e.host, e.addr)
}

// lookupAllowed resolves host with lookup (or parses it, if it is an IP
// literal) and returns its first address, failing with a *refusedError if
// allowed refuses any of its addresses: a name that resolves to both an
// allowed and a refused address is refused as a whole.
func lookupAllowed(ctx context.Context, lookup func(ctx context.Context, network, host string) ([]netip.Addr, error), host string, allowed func(netip.Addr) bool) (netip.Addr, error) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if addrs, err = lookup(ctx, "ip", host); err != nil {
			return netip.Addr{}, fmt.Errorf("cannot resolve %s: %v", host, err)
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s has no address", host)
	}
	for _, a := range addrs {
		if !allowed(a) {
			return netip.Addr{}, &refusedError{host: host, addr: a}
		}
	}
	return addrs[0].Unmap(), nil
}

// originPrefixes are the internal ranges where an operator's own module
// proxy or checksum-database mirror may live, beyond what netip classifies
// as private.
var originPrefixes = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
}

// metadataPrefix is the cloud metadata range inside fc00::/7, which
// netip classifies as private.
var metadataPrefix = netip.MustParsePrefix("fd00:ec2::/32")

// originAllowed reports whether an operator origin may be dialled at a:
// any public address, and the private ranges (RFC 1918, RFC 4193 unique
// local, CGNAT); never loopback, link-local (169.254.0.0/16 and
// fd00:ec2::/32, cloud metadata included), unspecified, multicast or
// reserved ranges.
func originAllowed(a netip.Addr) bool {
	a = a.Unmap()
	if !Internal(a) {
		return true
	}
	if metadataPrefix.Contains(a) {
		return false
	}
	if a.IsPrivate() {
		return true
	}
	for _, p := range originPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// internalPrefixes are the ranges an egress proxy must never reach for a
// client, beyond what netip classifies.
var internalPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated)
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("100::/64"),       // discard
	netip.MustParsePrefix("fd00:ec2::/32"),  // cloud metadata (inside fc00::/7 too)
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, including 169.254.169.254
	netip.MustParsePrefix("255.255.255.255/32"),
}

// Internal reports whether a is an address an egress proxy must never
// connect to on anyone's behalf: loopback, private, link-local (cloud
// metadata included), multicast, unspecified, CGNAT and reserved ranges.
func Internal(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	for _, p := range internalPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolve returns the address to dial for addr ("host:port") under the
// resolve map: resolve[host] when port is 443 and host is a name, not an
// IP literal; addr otherwise.
func Resolve(resolve map[string]string, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "443" {
		return addr
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return addr
	}
	if to, ok := resolve[host]; ok {
		return to
	}
	return addr
}
