package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"

	"github.com/elazarl/goproxy"
)

// decideConnect is the whole CONNECT policy:
//
//   - a host on the intercept list, port 443: terminate TLS (MITM) with a
//     leaf for exactly that host;
//   - any other host: refused if Tunnel is deny, or the port is not 443;
//     otherwise resolved, refused if any address is internal (loopback,
//     private, link-local, metadata, ...) unless the operator resolved
//     it, and tunnelled to the checked address only, so the name cannot be
//     rebound between check and dial.
func (g *Gateway) decideConnect(hostport string, pctx *goproxy.ProxyCtx) (action *goproxy.ConnectAction, target string) {
	defer func() {
		if p := recover(); p != nil {
			g.log.Error("panic while deciding a CONNECT", "target", hostport, "panic", p, "stack", string(debug.Stack()))
			action, target = g.reject(pctx, http.StatusBadGateway, "internal error deciding CONNECT %s", hostport)
		}
	}()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return g.reject(pctx, http.StatusBadRequest, "CONNECT target %q is not host:port", hostport)
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if g.intercept[host] {
		if port != "443" {
			return g.reject(pctx, http.StatusForbidden, "CONNECT to %s: only port 443 is intercepted", hostport)
		}
		pctx.UserData = &tunnel{host: host}
		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: g.mitmTLS}, hostport
	}
	if g.cfg.Tunnel != TunnelAllow {
		return g.reject(pctx, http.StatusForbidden, "CONNECT to %s refused: only intercepted hosts are reachable (tunnel: deny)", host)
	}
	if port != "443" {
		return g.reject(pctx, http.StatusForbidden, "CONNECT to %s refused: only port 443 is allowed", hostport)
	}
	if to, ok := g.cfg.Resolve[host]; ok {
		return goproxy.OkConnect, to // the operator chose this address
	}
	addr, err := g.publicAddr(pctx.Req.Context(), host)
	if err != nil {
		return g.reject(pctx, http.StatusForbidden, "CONNECT to %s refused: %v", hostport, err)
	}
	return goproxy.OkConnect, net.JoinHostPort(addr.String(), port)
}

// publicAddr resolves host and returns its first address, failing if any
// of its addresses is internal: a name that resolves to both a public and
// an internal address is refused as a whole.
func (g *Gateway) publicAddr(ctx context.Context, host string) (netip.Addr, error) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
			return netip.Addr{}, fmt.Errorf("cannot resolve %s: %v", host, err)
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s has no address", host)
	}
	for _, a := range addrs {
		if internal(a) {
			return netip.Addr{}, fmt.Errorf("%s resolves to the internal address %s", host, a)
		}
	}
	return addrs[0].Unmap(), nil
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

// internal reports whether a is an address an egress must not connect to.
func internal(a netip.Addr) bool {
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

// mitmTLS is the TLS configuration presented inside an intercepted
// tunnel: a leaf for the CONNECT host, and only if the client's SNI (when
// it sends one) names that same host.
func (g *Gateway) mitmTLS(hostport string, pctx *goproxy.ProxyCtx) (*tls.Config, error) {
	host, _, _ := net.SplitHostPort(hostport)
	host = strings.ToLower(host)
	cfg := g.cfg.CA.TLSConfig()
	cfg.NextProtos = []string{"http/1.1"}
	if g.cfg.ClientHTTP2 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		sni := strings.ToLower(hello.ServerName)
		if sni != "" && sni != host {
			g.log.Warn("refused a TLS handshake: SNI differs from the CONNECT target", "connect", host, "sni", sni)
			return nil, fmt.Errorf("SNI %q does not match CONNECT target %q", sni, host)
		}
		h := *hello
		h.ServerName = host
		return g.cfg.CA.GetCertificate(&h)
	}
	return cfg, nil
}

// reject answers a CONNECT with status and a text reason.
func (g *Gateway) reject(pctx *goproxy.ProxyCtx, status int, format string, args ...any) (*goproxy.ConnectAction, string) {
	msg := "sumgate: " + fmt.Sprintf(format, args...)
	g.log.Info("refused CONNECT", "reason", msg)
	pctx.Resp = textResponse(pctx.Req, status, msg)
	return goproxy.RejectConnect, ""
}
