package gateway

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

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
	awaiting            bool      // an intercepted tunnel waits for a request's headers
	headerBy            time.Time // ... which must have arrived by then (set by their first byte)

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
	d := c.next(c.readLimit)
	if c.awaiting && !c.headerBy.IsZero() && c.headerBy.Before(d) {
		d = c.headerBy
	}
	c.Conn.SetReadDeadline(d)
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	if n > 0 {
		c.mu.Lock()
		if c.awaiting && c.headerBy.IsZero() {
			c.headerBy = time.Now().Add(c.g.cfg.HeaderTimeout)
		}
		c.mu.Unlock()
	}
	return n, err
}

// awaitHeaders starts the wait for a request inside an intercepted tunnel
// (the TLS handshake included): from the first byte that arrives, the
// headers must be read within the header timeout, however slowly the
// bytes trickle in (threat 13). The wait for that first byte is bounded by
// the idle timeout.
func (c *idleConn) awaitHeaders() {
	c.mu.Lock()
	c.awaiting, c.headerBy = true, time.Time{}
	c.mu.Unlock()
}

// headersRead ends the wait awaitHeaders started.
func (c *idleConn) headersRead() {
	c.mu.Lock()
	c.awaiting, c.headerBy = false, time.Time{}
	c.mu.Unlock()
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.Conn.SetWriteDeadline(c.next(c.writeLim))
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}
