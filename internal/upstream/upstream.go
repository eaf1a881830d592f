// Package upstream builds the HTTP clients sumgate uses to reach upstream
// servers: module proxies, the checksum database and, later, the hosts the
// gateway forwards to.
//
// Upstream TLS is always verified, against the system roots plus any extra
// roots the operator configured. There is deliberately no way to turn
// verification off.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"
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
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 nil, // sumgate is the egress; never chain through $HTTPS_PROXY
		DialContext:           Dialer(d, opts.Resolve),
		TLSClientConfig:       &tls.Config{RootCAs: opts.Roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: t, Timeout: timeout}
}

// Dialer wraps d so that a dial of host:443, where host is a key of
// resolve, goes to resolve[host] instead.
func Dialer(d *net.Dialer, resolve map[string]string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, Resolve(resolve, addr))
	}
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
