package etcdtest

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// dialTimeout bounds the forwarder's dial of its target. The target is on
// loopback: it answers or refuses at once unless the machine is starved.
const dialTimeout = 10 * time.Second

// Forwarder is a TCP forwarder owned by a test: it listens on 127.0.0.1
// port 0 and copies the bytes of every connection it accepts to and from a
// new connection to its target, without looking at them. A client that
// dials the forwarder's Endpoint keeps one address while the server behind
// it stops, comes back on another port (SetTarget), or is cut off (Cut,
// Blackhole). TLS passes through end to end: the client verifies the
// server's certificate for 127.0.0.1 and the server the client's.
//
// While open, a connection the forwarder cannot forward (the target refuses
// or is stopped) is reset, as a dial of the stopped server itself would be.
//
// All methods are safe for concurrent use. The forwarder closes at the
// cleanup of the test that made it.
type Forwarder struct {
	ln     net.Listener
	scheme string         // of Endpoint: that of the target given to Forward
	wg     sync.WaitGroup // the accept loop and every connection's goroutines

	mu     sync.Mutex
	target string                // host:port that new connections are forwarded to
	state  cutState              // what becomes of new connections
	gen    uint64                // counts Cut, Blackhole and Close: a connection forwarded in an older generation is not forwarded
	resume chan struct{}         // closed by Resume or Close: releases held connections
	conns  map[net.Conn]struct{} // every connection open: accepted, dialled, and held
	closed bool
}

// cutState is what a Forwarder does with a connection it accepts.
type cutState int

const (
	open       cutState = iota // forward it to the target
	refusing                   // reset it at once (Cut)
	blackholed                 // hold it unanswered until Resume (Blackhole)
)

// Forward starts a Forwarder to target and closes it at t's cleanup. target
// is a client endpoint as in Server.Endpoints ("http://127.0.0.1:PORT" or
// "https://…") or a bare host:port; the forwarder's Endpoint has the same
// scheme ("http" for a bare host:port). It fails t if it cannot listen.
//
// Prefer Server.Forward for a forwarder to a Server: Restart retargets it.
func Forward(t testing.TB, target string) *Forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: forwarder listening on 127.0.0.1: %v", err)
	}
	scheme, host := splitEndpoint(target)
	if scheme == "" {
		scheme = "http"
	}
	f := &Forwarder{
		ln:     ln,
		scheme: scheme,
		target: host,
		resume: make(chan struct{}),
		conns:  make(map[net.Conn]struct{}),
	}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.Close)
	return f
}

// Forward starts a Forwarder to s's client endpoint, closed at t's cleanup.
// Every Restart of s retargets it to the new port before Restart returns,
// so a client of the forwarder's Endpoint (with s.ClientTLS for a StartTLS
// server) reaches s across restarts.
func (s *Server) Forward(t testing.TB) *Forwarder {
	t.Helper()
	f := Forward(t, s.Endpoints[0])
	s.mu.Lock()
	s.forwarders = append(s.forwarders, f)
	s.mu.Unlock()
	return f
}

// splitEndpoint returns the scheme and host:port of "scheme://host:port",
// or "" and the whole of a bare host:port.
func splitEndpoint(endpoint string) (scheme, hostPort string) {
	if scheme, rest, ok := strings.Cut(endpoint, "://"); ok {
		return scheme, rest
	}
	return "", endpoint
}

// Addr returns the host:port the forwarder listens on, 127.0.0.1:PORT.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// Endpoint returns the forwarder's address as a client endpoint for
// clientv3.Config, with the scheme of the target given to Forward.
func (f *Forwarder) Endpoint() string { return f.scheme + "://" + f.Addr() }

// SetTarget makes the forwarder forward new connections to target, given
// as in Forward (only its host:port is used). Connections already forwarded
// keep their target; Cut closes them.
func (f *Forwarder) SetTarget(target string) {
	_, host := splitEndpoint(target)
	f.mu.Lock()
	f.target = host
	f.mu.Unlock()
}

// Cut closes every connection in flight, both its sides, and until Resume
// resets every new connection as soon as it is accepted: a client's dial
// succeeds, then its first read fails with "connection reset". This is
// what a client sees of a stopped server, and it fails fast. Cut after
// Blackhole also closes the connections that Blackhole held.
func (f *Forwarder) Cut() { f.cut(refusing) }

// Blackhole is Cut but for new connections: until Resume they are accepted
// and held unanswered, their bytes unread, so a client waits for its own
// timeouts as behind a dropped route. Resume forwards the held connections
// that are still open to the target then, as if their packets had been
// delayed.
func (f *Forwarder) Blackhole() { f.cut(blackholed) }

// Resume ends Cut or Blackhole: new connections are forwarded again, and so
// are those Blackhole held. Resuming an open forwarder does nothing.
func (f *Forwarder) Resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == open || f.closed {
		return
	}
	f.state = open
	close(f.resume)
}

// Close stops the forwarder: it closes its listener and every connection,
// and returns once every goroutine it started has ended. Closing twice does
// nothing.
func (f *Forwarder) Close() {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		f.closeConnsLocked()
		if f.state != open {
			close(f.resume)
		}
	}
	f.mu.Unlock()
	f.ln.Close()
	f.wg.Wait()
}

// cut closes every connection and sets what becomes of new ones.
func (f *Forwarder) cut(state cutState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closeConnsLocked()
	if f.state == open {
		f.resume = make(chan struct{})
	}
	f.state = state
}

// closeConnsLocked closes every connection open and starts a new
// generation, so a connection being set up now is not forwarded.
func (f *Forwarder) closeConnsLocked() {
	f.gen++
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// track adds conns to those open if no Cut, Blackhole or Close happened
// since generation gen, and reports whether it did; if not, it closes them.
func (f *Forwarder) track(gen uint64, conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gen != gen || f.closed {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		f.conns[c] = struct{}{}
	}
	return true
}

// untrack closes conns and removes them from those open.
func (f *Forwarder) untrack(conns ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(f.conns, c)
	}
}

// accept serves the listener until Close.
func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			if closed {
				return
			}
			// Out of file descriptors, say: wait, as net/http does.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.serve(c)
		}()
	}
}

// serve forwards, resets or holds one accepted connection.
func (f *Forwarder) serve(c net.Conn) {
	for {
		f.mu.Lock()
		state, gen, target, resume, closed := f.state, f.gen, f.target, f.resume, f.closed
		f.mu.Unlock()
		switch {
		case closed:
			c.Close()
			return
		case state == refusing:
			reset(c)
			return
		case state == blackholed:
			if !f.track(gen, c) {
				return
			}
			<-resume
			f.mu.Lock()
			_, held := f.conns[c]
			delete(f.conns, c)
			f.mu.Unlock()
			if !held { // a Cut or Close closed it
				return
			}
			continue // forward it if still open
		}

		up, err := net.DialTimeout("tcp", target, dialTimeout)
		if err != nil {
			reset(c)
			return
		}
		if !f.track(gen, c, up) {
			return
		}
		pipe(c, up)
		f.untrack(c, up)
		return
	}
}

// pipe copies a to b and b to a until both directions end. The end of one
// direction (EOF) is passed on as a half-close; an error in either closes
// both connections.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyHalf(b, a)
	}()
	copyHalf(a, b)
	wg.Wait()
}

// copyHalf copies src to dst, then half-closes dst if src ended with EOF,
// or closes both if either failed.
func copyHalf(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil || errors.Is(err, io.EOF) {
		if tc, ok := dst.(*net.TCPConn); ok && tc.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
	src.Close()
}

// reset closes c with a TCP reset rather than an orderly close, so the
// client sees "connection reset" as from a port nobody listens on.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
