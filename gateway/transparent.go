package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// NoSNIPolicy decides redirected connections with no SNI, or no TLS.
type NoSNIPolicy string

// SNIMismatchPolicy decides an intercepted SNI that does not resolve to
// the redirected connection's destination.
type SNIMismatchPolicy string

// Transparent-mode policies.
const (
	NoSNIDeny   NoSNIPolicy = "deny"   // no SNI, or not TLS: the connection is closed (zero value)
	NoSNISplice NoSNIPolicy = "splice" // ... spliced to its original destination, under the tunnel policy

	SNIMismatchDeny      SNIMismatchPolicy = "deny"      // an intercepted SNI that does not resolve to the destination is refused (zero value)
	SNIMismatchIntercept SNIMismatchPolicy = "intercept" // ... is intercepted anyway: sumgate dials the name itself
)

// TransparentConfig configures [Gateway.ServeTransparent]: connections
// the network redirected to sumgate (REDIRECT or TPROXY) with no client
// configuration.
type TransparentConfig struct {
	// NoSNI decides connections whose first bytes are not a TLS
	// ClientHello naming a server: NoSNIDeny (zero value) or NoSNISplice.
	NoSNI NoSNIPolicy
	// SNIMismatch decides an intercepted SNI whose name does not resolve
	// to the connection's original destination: SNIMismatchDeny (zero
	// value) or SNIMismatchIntercept. A splice is always refused then:
	// the SNI must name the destination it is spliced to.
	SNIMismatch SNIMismatchPolicy
	// PeekTimeout bounds the wait for the ClientHello. Zero means 10s.
	PeekTimeout time.Duration
	// OriginalDst returns where the client meant to connect. Zero means
	// SO_ORIGINAL_DST (REDIRECT), else the socket's local address
	// (TPROXY). Tests supply their own.
	OriginalDst func(c net.Conn) (netip.AddrPort, error)
	// LookupHost resolves an SNI for the destination check. Zero means
	// the system resolver.
	LookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
}

// maxClientHello bounds the bytes read while looking for the SNI: a
// ClientHello is a few hundred bytes, at most 64 KiB with its record
// headers.
const maxClientHello = 64 << 10

// transparentKey finds a transparent connection's *transparentConn in a
// request's context.
type transparentKey struct{}

// transparentConn is what sumgate learnt of a redirected connection
// before deciding it.
type transparentConn struct {
	dst    netip.AddrPort // the original destination
	sni    string         // lower case; "" if none
	tls    bool           // the first bytes are a TLS ClientHello
	peeked string         // why no SNI was read, when there is none
	fatal  string         // why the connection cannot be served at all
}

// ServeTransparent accepts connections redirected to l by the network and
// handles each as if its client had sent a CONNECT for the server its
// ClientHello names: the same decisions, verification and spans. It
// returns when l is closed (by Shutdown, or the caller).
func (g *Gateway) ServeTransparent(l net.Listener) error {
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		l.Close()
		return nil
	}
	g.listeners = append(g.listeners, l)
	g.mu.Unlock()
	self, _ := netip.ParseAddrPort(l.Addr().String())
	for {
		c, err := l.Accept()
		if err != nil {
			g.mu.Lock()
			closing := g.closing
			g.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		ic := g.track(c)
		go func() {
			dst, derr := g.originalDst(c)
			g.transparent(ic, dst, derr, self)
		}()
	}
}

// ListenTransparent listens on addr for ServeTransparent; with tproxy it
// sets IP_TRANSPARENT, which TPROXY rules need (and CAP_NET_ADMIN).
func ListenTransparent(ctx context.Context, addr string, tproxy bool) (net.Listener, error) {
	var lc net.ListenConfig
	if tproxy {
		lc.Control = tproxyControl
	}
	return lc.Listen(ctx, "tcp", addr)
}

// originalDst applies TransparentConfig.OriginalDst or the default.
func (g *Gateway) originalDst(c net.Conn) (netip.AddrPort, error) {
	if f := g.cfg.Transparent.OriginalDst; f != nil {
		return f(c)
	}
	if dst, err := soOriginalDst(c); err == nil {
		return dst, nil
	}
	// TPROXY: the socket is bound to the address the client dialled.
	return netip.ParseAddrPort(c.LocalAddr().String())
}

// transparent peeks at a redirected connection's first bytes and hands it
// to goproxy as a synthetic CONNECT, so that decideConnect decides it.
func (g *Gateway) transparent(ic *idleConn, dst netip.AddrPort, derr error, self netip.AddrPort) {
	info := &transparentConn{dst: netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())}
	var prefix []byte
	switch {
	case derr != nil:
		info.fatal = "no original destination: " + derr.Error()
	case info.dst.Port() == self.Port() && (self.Addr().IsUnspecified() || info.dst.Addr() == self.Addr().Unmap()):
		// Not redirected: dialled directly, its destination is sumgate.
		// Splicing it would loop.
		info.fatal = "the connection was not redirected: its destination is sumgate itself"
	default:
		timeout := g.cfg.Transparent.PeekTimeout
		if timeout == 0 {
			timeout = 10 * time.Second
		}
		prefix, info.sni, info.tls, info.peeked = peekClientHello(ic, timeout)
	}
	target := info.sni
	if target == "" {
		target = info.dst.Addr().String()
	}
	hostport := net.JoinHostPort(target, strconv.Itoa(int(info.dst.Port())))
	ctx := context.WithValue(context.Background(), connKey{}, ic)
	ctx = context.WithValue(ctx, transparentKey{}, info)
	req := (&http.Request{
		Method:     http.MethodConnect,
		URL:        &url.URL{Host: hostport},
		Host:       hostport,
		RemoteAddr: ic.RemoteAddr().String(),
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{},
		Body:   http.NoBody,
	}).WithContext(ctx)
	g.proxy.ServeHTTP(&hijacker{conn: &replayConn{Conn: ic, prefix: prefix, tls: info.tls}}, req)
}

// peekClientHello reads c's first bytes until it has a TLS ClientHello,
// without answering: it returns the bytes read (to be replayed), the SNI
// (lower case) and whether the bytes were TLS, or why no SNI was read.
func peekClientHello(c net.Conn, timeout time.Duration) (prefix []byte, sni string, isTLS bool, why string) {
	rc := &recordingConn{Conn: c}
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	errPeeked := errors.New("peeked")
	var hello *tls.ClientHelloInfo
	err := tls.Server(rc, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		hello = h
		return nil, errPeeked
	}}).Handshake()
	prefix = rc.buf.Bytes()
	switch {
	case hello != nil && hello.ServerName != "":
		return prefix, strings.ToLower(strings.TrimSuffix(hello.ServerName, ".")), true, ""
	case hello != nil:
		return prefix, "", true, "the TLS ClientHello names no server (no SNI)"
	case len(prefix) > 0 && prefix[0] != 0x16:
		return prefix, "", false, "the first bytes are not TLS"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return prefix, "", len(prefix) > 0, fmt.Sprintf("no TLS ClientHello within %v", timeout)
	}
	return prefix, "", len(prefix) > 0, fmt.Sprintf("no TLS ClientHello: %v", err)
}

// recordingConn keeps what is read, up to maxClientHello, and answers
// nothing: the handshake that reads the ClientHello must not write.
type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	if c.buf.Len() >= maxClientHello {
		return 0, errors.New("ClientHello larger than 64 KiB")
	}
	p = p[:min(len(p), maxClientHello-c.buf.Len())]
	n, err := c.Conn.Read(p)
	c.buf.Write(p[:n])
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) { return len(p), nil }

// hijacker is the http.ResponseWriter goproxy gets for a synthetic
// CONNECT: it hijacks to the redirected connection.
type hijacker struct {
	conn   net.Conn
	header http.Header
}

func (h *hijacker) Header() http.Header {
	if h.header == nil {
		h.header = http.Header{}
	}
	return h.header
}
func (h *hijacker) Write(p []byte) (int, error) { return len(p), nil }
func (h *hijacker) WriteHeader(int)             {}
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// replayConn is a redirected connection as goproxy sees it: reads replay
// the peeked bytes first; the HTTP response goproxy writes to a CONNECT is
// swallowed, since the client never sent one. A refusal becomes a TLS
// access_denied alert for a TLS client, then the connection closes.
type replayConn struct {
	net.Conn
	tls bool

	rmu    sync.Mutex
	prefix []byte

	wmu     sync.Mutex
	head    []byte // the response header, until complete
	done    bool   // the header has been swallowed
	refused bool   // it was not a 200: write nothing more
}

func (c *replayConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		c.rmu.Unlock()
		return n, nil
	}
	c.rmu.Unlock()
	return c.Conn.Read(p)
}

// accessDenied is a TLS fatal access_denied alert record, valid before
// any handshake message from the server.
var accessDenied = []byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x31}

func (c *replayConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case c.refused:
		return len(p), nil
	case c.done:
		return c.Conn.Write(p)
	}
	c.head = append(c.head, p...)
	end := bytes.Index(c.head, []byte("\r\n\r\n"))
	if end < 0 {
		if len(c.head) > 64<<10 {
			return 0, errors.New("sumgate: CONNECT response header too large")
		}
		return len(p), nil
	}
	c.done = true
	line, _, _ := bytes.Cut(c.head, []byte("\r\n"))
	if f := strings.Fields(string(line)); len(f) < 2 || f[1] != "200" {
		c.refused = true
		if c.tls {
			c.Conn.Write(accessDenied)
		}
		return len(p), nil
	}
	if rest := c.head[end+4:]; len(rest) > 0 {
		if _, err := c.Conn.Write(rest); err != nil {
			return 0, err
		}
	}
	c.head = nil
	return len(p), nil
}

// transparentInfo returns the transparent connection a request came on,
// or nil.
func transparentInfo(ctx context.Context) *transparentConn {
	t, _ := ctx.Value(transparentKey{}).(*transparentConn)
	return t
}

// sniMatches reports whether host resolves to (or was pinned by the
// operator at) the destination address.
func (g *Gateway) sniMatches(ctx context.Context, host string, dst netip.Addr) (bool, error) {
	if to, ok := g.cfg.Resolve[host]; ok {
		if ap, err := netip.ParseAddrPort(to); err == nil && ap.Addr().Unmap() == dst {
			return true, nil
		}
	}
	lookup := g.cfg.Transparent.LookupHost
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.Unmap() == dst {
			return true, nil
		}
	}
	return false, nil
}
