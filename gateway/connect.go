package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/elazarl/goproxy"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/internal/upstream"
)

// decideConnect is the whole CONNECT policy:
//
//   - a host on the intercept list, port 443: terminate TLS (MITM) with a
//     leaf for exactly that host; an exact entry on another port is
//     refused (intercept-port);
//   - any other host, a spliced one, an IP literal under a pattern, and a
//     host matched only by a pattern on another port than 443: refused if
//     Tunnel is deny, or the port is not 443;
//     otherwise resolved, refused if any address is internal (loopback,
//     private, link-local, metadata, ...) unless the operator resolved
//     it, and tunnelled to the checked address only, so the name cannot be
//     rebound between check and dial.
func (g *Gateway) decideConnect(hostport string, pctx *goproxy.ProxyCtx) (action *goproxy.ConnectAction, target string) {
	audit := g.startConnect(pctx.Req, hostport)
	defer func() {
		if p := recover(); p != nil {
			g.log.ErrorContext(audit.ctx, "panic while deciding a CONNECT", "target", hostport, "panic", p, "stack", string(debug.Stack()))
			action, target = g.reject(pctx, audit, http.StatusBadGateway, "internal-error", "internal error deciding CONNECT %s", hostport)
		}
	}()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return g.reject(pctx, audit, http.StatusBadRequest, "bad-target", "CONNECT target %q is not host:port", hostport)
	}
	host = canonicalHost(host)
	info := transparentInfo(pctx.Req.Context())
	if info != nil {
		audit.span.SetAttributes(auditkey.Transparent.Bool(true), auditkey.OriginalDst.String(info.dst.String()))
		if info.sni != "" {
			audit.span.SetAttributes(auditkey.TLSServerName.String(info.sni))
		}
		if info.fatal != "" {
			return g.reject(pctx, audit, http.StatusForbidden, "transparent: not-redirected", "connection to the transparent listener refused: %s", info.fatal)
		}
		if info.sni == "" {
			if g.cfg.Transparent.NoSNI != NoSNISplice {
				why := info.peeked
				if why == "" {
					why = "no SNI"
				}
				return g.reject(pctx, audit, http.StatusForbidden, "transparent: no-sni "+string(g.cfg.Transparent.NoSNI),
					"redirected connection to %s refused: %s (transparent.no_sni: %s)", info.dst, why, g.cfg.Transparent.NoSNI)
			}
			audit.span.SetAttributes(auditkey.Reason.String(info.peeked))
		}
	}
	if g.pol.intercept.intercepts(host) && (port == "443" || !g.pol.intercept.byPatternOnly(host)) {
		if port != "443" {
			return g.reject(pctx, audit, http.StatusForbidden, "intercept-port", "CONNECT to %s: only port 443 is intercepted", hostport)
		}
		rule := "intercept"
		if info != nil {
			ok, err := g.sniMatches(audit.ctx, host, info.dst.Addr())
			switch {
			case ok:
			case g.cfg.Transparent.SNIMismatch == SNIMismatchIntercept:
				rule = "transparent: sni-mismatch intercept"
			default:
				why := fmt.Sprintf("%s does not resolve to %s", host, info.dst.Addr())
				if err != nil {
					why = fmt.Sprintf("resolving %s: %v", host, err)
				}
				return g.reject(pctx, audit, http.StatusForbidden, "transparent: sni-mismatch",
					"redirected connection to %s with SNI %s refused: %s (transparent.sni_mismatch: deny)", info.dst, host, why)
			}
		}
		t := &tunnel{host: host, client: pctx.Req.RemoteAddr, audit: audit, headers: !g.cfg.ClientHTTP2}
		pctx.UserData = t
		audit.open(DecisionIntercept, rule)
		if audit.conn != nil {
			session := pctx.Session
			g.hs.add(session, t)
			t.awaitRequest() // the handshake and the first request's headers
			audit.conn.atClose(func() {
				g.hs.remove(session, t)
				audit.endIntercepted(t)
			})
		} else {
			audit.finish(http.StatusOK, "") // mounted elsewhere: the tunnel's end is not visible
		}
		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: g.mitmTLS}, hostport
	}
	if g.cfg.Tunnel != TunnelAllow {
		return g.reject(pctx, audit, http.StatusForbidden, "tunnel: deny", "CONNECT to %s refused: only intercepted hosts are reachable (tunnel: deny)", host)
	}
	if port != "443" {
		return g.reject(pctx, audit, http.StatusForbidden, "tunnel-port", "CONNECT to %s refused: only port 443 is allowed", hostport)
	}
	to, resolved := g.cfg.Resolve[host]
	rule := "resolve" // the operator chose this address
	if info != nil {
		// Splice to where the client was going, and only if its SNI names
		// that address: otherwise any destination could hide behind an
		// allowed name.
		if a := info.dst.Addr(); upstream.Internal(a) && !resolved {
			return g.reject(pctx, audit, http.StatusForbidden, "internal-address", "redirected connection to %s refused: an internal address", info.dst)
		}
		if info.sni != "" {
			if ok, err := g.sniMatches(audit.ctx, host, info.dst.Addr()); !ok {
				why := fmt.Sprintf("%s does not resolve to %s", host, info.dst.Addr())
				if err != nil {
					why = fmt.Sprintf("resolving %s: %v", host, err)
				}
				return g.reject(pctx, audit, http.StatusForbidden, "transparent: sni-mismatch",
					"redirected connection to %s with SNI %s refused: %s", info.dst, host, why)
			}
			rule = "transparent: tunnel"
		} else {
			rule = "transparent: no-sni splice"
		}
		if !resolved { // a name the operator pinned is dialled where it said
			to, resolved = info.dst.String(), true
		}
	}
	if !resolved {
		addr, err := upstream.PublicAddr(pctx.Req.Context(), host)
		if err != nil {
			return g.reject(pctx, audit, http.StatusForbidden, "internal-address", "CONNECT to %s refused: %v", hostport, err)
		}
		to, rule = net.JoinHostPort(addr.String(), port), "tunnel: allow"
	}
	if info == nil && g.pol.intercept.spliced(host) {
		rule = "splice" // intercepted but for splice: the audit says why it was not
	}
	audit.span.SetAttributes(semconv.NetworkPeerAddress(to))
	audit.open(DecisionTunnel, rule)
	if ic := audit.conn; ic != nil {
		ic.setConnect(audit)
		ic.atClose(func() {
			// goproxy never dialled (the hijack failed): end the span here.
			if a := ic.takeConnect(); a != nil {
				a.span.SetAttributes(auditkey.Reason.String("the client connection closed before the tunnel was dialled"))
				a.finish(http.StatusBadGateway, "the client connection closed before the tunnel was dialled")
			}
		})
	} else {
		audit.finish(http.StatusOK, "")
	}
	return goproxy.OkConnect, to
}

// mitmTLS is the TLS configuration presented inside an intercepted
// tunnel: a leaf for the CONNECT host, and only if the client's SNI (when
// it sends one) names that same host.
func (g *Gateway) mitmTLS(hostport string, pctx *goproxy.ProxyCtx) (*tls.Config, error) {
	cfg := g.cfg.CA.TLSConfig()
	cfg.NextProtos = []string{"http/1.1"}
	if g.cfg.ClientHTTP2 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	t, _ := pctx.UserData.(*tunnel)
	if t == nil {
		return nil, fmt.Errorf("sumgate: no tunnel state for %s", hostport)
	}
	host := t.host
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		sni := canonicalHost(hello.ServerName)
		t.mu.Lock()
		t.sniName = sni
		t.mu.Unlock()
		t.audit.span.SetAttributes(auditkey.TLSServerName.String(sni))
		if sni != "" && sni != host {
			reason := fmt.Sprintf("SNI %q does not match CONNECT target %q", sni, host)
			t.mu.Lock()
			t.failed = reason
			t.mu.Unlock()
			g.log.WarnContext(t.audit.ctx, "refused a TLS handshake: SNI differs from the CONNECT target", "connect", host, "sni", sni)
			return nil, errors.New(reason)
		}
		ctx, span := g.tracer.Start(t.audit.ctx, "certs.leaf", trace.WithAttributes(semconv.ServerAddress(host)))
		defer span.End()
		h := *hello
		h.ServerName = host
		cert, err := g.cfg.CA.GetCertificateContext(ctx, &h)
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			t.mu.Lock()
			t.failed = "no leaf certificate: " + err.Error()
			t.mu.Unlock()
		}
		return cert, err
	}
	return cfg, nil
}

// reject answers a CONNECT with status and a text reason, and ends its
// span as denied by rule.
func (g *Gateway) reject(pctx *goproxy.ProxyCtx, audit *connectAudit, status int, rule, format string, args ...any) (*goproxy.ConnectAction, string) {
	msg := "sumgate: " + fmt.Sprintf(format, args...)
	g.log.InfoContext(audit.ctx, "refused CONNECT", "reason", msg)
	pctx.Resp = textResponse(pctx.Req, status, msg)
	// Clients print the reason phrase of a refused CONNECT, not its body
	// (Go's net/http returns it as the error): it carries the reason too.
	pctx.Resp.Status = fmt.Sprintf("%d %s", status, reasonPhrase(msg))
	audit.deny(status, rule, msg)
	return goproxy.RejectConnect, ""
}

// reasonPhrase makes msg fit an HTTP/1.1 reason phrase (RFC 9112,
// section 4): one line of visible characters, spaces and tabs, at most
// 512 bytes.
func reasonPhrase(msg string) string {
	msg = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r':
			return ' '
		case r < 0x20 && r != '\t', r == 0x7f, r > 0x7e:
			return '?'
		}
		return r
	}, msg)
	if len(msg) > 512 {
		msg = msg[:509] + "..."
	}
	return msg
}
