package testworld

import (
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// connectProxy is the world's blind CONNECT proxy (World.ConnectProxyURL).
type connectProxy struct {
	w  *World
	wg sync.WaitGroup // tunnels still copying

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // both ends of every open tunnel
	closed bool                  // no new tunnels once set
}

// startConnectProxy starts the world's blind CONNECT proxy on 127.0.0.1
// and returns its URL. It stops, closing every tunnel, in t.Cleanup.
func (w *World) startConnectProxy(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testworld: connect proxy: %v", err)
	}
	p := &connectProxy{w: w, conns: make(map[net.Conn]struct{})}
	serveUntilCleanup(t, ln, p, func() {
		p.mu.Lock()
		p.closed = true
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// serveUntilCleanup serves h on ln until t ends; then it closes the
// server, waits for it to stop, and calls stopped.
func serveUntilCleanup(t testing.TB, ln net.Listener, h http.Handler, stopped func()) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // handshake noise from clients that distrust the CA
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		stopped()
	})
}

// serves reports whether the world serves host (any case), CDNHost
// included.
func (p *connectProxy) serves(host string) bool {
	host = strings.ToLower(host)
	_, ok := p.w.Resolve[host]
	return ok || host == CDNHost
}

// track registers c as an open tunnel end; it reports false, having
// closed c, when the proxy is stopping.
func (p *connectProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *connectProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	c.Close()
}

// ServeHTTP tunnels CONNECT <world host>:443 to the world's listener and
// answers 403 to any other target, 405 to any other method.
func (p *connectProxy) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		rw.Header().Set("Allow", http.MethodConnect)
		http.Error(rw, "testworld connect proxy: only CONNECT", http.StatusMethodNotAllowed)
		return
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || port != "443" || !p.serves(host) {
		http.Error(rw, "testworld connect proxy: not a host of the test world: "+r.Host, http.StatusForbidden)
		return
	}
	upstream, err := net.DialTimeout("tcp", p.w.Addr, 5*time.Second)
	if err != nil {
		http.Error(rw, "testworld connect proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	if !p.track(upstream) {
		http.Error(rw, "testworld connect proxy: stopping", http.StatusServiceUnavailable)
		return
	}
	client, brw, err := http.NewResponseController(rw).Hijack()
	if err != nil {
		p.untrack(upstream)
		http.Error(rw, "testworld connect proxy: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if !p.track(client) {
		p.untrack(upstream)
		return
	}
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		p.untrack(client)
		p.untrack(upstream)
		return
	}
	// Bytes the client sent after its CONNECT head are already buffered.
	var fromClient io.Reader = client
	if n := brw.Reader.Buffered(); n > 0 {
		head, _ := brw.Reader.Peek(n)
		fromClient = io.MultiReader(strings.NewReader(string(head)), client)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.untrack(upstream)
		defer p.untrack(client)
		var both sync.WaitGroup
		both.Add(2)
		go func() { defer both.Done(); halfCopy(upstream, fromClient) }()
		go func() { defer both.Done(); halfCopy(client, upstream) }()
		both.Wait()
	}()
}

// halfCopy copies src to dst, then closes dst for writing (or altogether,
// if it cannot be half-closed) so that the peer sees the end of the stream.
func halfCopy(dst net.Conn, src io.Reader) {
	io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}
