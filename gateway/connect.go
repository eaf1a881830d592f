package gateway

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/elazarl/goproxy"

	"github.com/sumgate/sumgate/internal/upstream"
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
	addr, err := upstream.PublicAddr(pctx.Req.Context(), host)
	if err != nil {
		return g.reject(pctx, http.StatusForbidden, "CONNECT to %s refused: %v", hostport, err)
	}
	return goproxy.OkConnect, net.JoinHostPort(addr.String(), port)
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
