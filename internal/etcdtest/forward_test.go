package etcdtest_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// TestMain fails the package if any goroutine outlives its tests: every
// server, client and forwarder a test starts must be gone by its cleanup,
// including across Stop and Restart.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// forwardedClient returns a client of f's endpoint with s's client TLS,
// closed at t's cleanup. Its dial timeout is short, and its log is
// discarded: it reconnects and warns while the server is away.
func forwardedClient(t *testing.T, s *etcdtest.Server, f *etcdtest.Forwarder) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{f.Endpoint()},
		TLS:         s.ClientTLS(),
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
		// gRPC waits a second or more before it redials a server that
		// went away; the tests need not wait as long.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// getValue reads key through c within timeout and returns its value.
func getValue(c *clientv3.Client, key string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := c.Get(ctx, key)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) != 1 {
		return "", errors.New("key not found")
	}
	return string(resp.Kvs[0].Value), nil
}

// put writes key through c within timeout.
func put(c *clientv3.Client, key, value string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := c.Put(ctx, key, value)
	return err
}

// Timeouts of the tests below: short where a request must fail, long where
// it must succeed (a loaded machine is slow, and a client reconnects after
// a backoff of up to a few seconds).
const (
	failTimeout    = 200 * time.Millisecond
	succeedTimeout = 30 * time.Second
)

// TestClientSurvivesServerRestart is the plumbing of "etcd goes away": a
// client that dials a forwarder writes a key, the server stops and the
// client's requests fail, the server restarts on a new port from the same
// data, and the client's next request reads the key back without the client
// being remade.
func TestClientSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		start    func(testing.TB) *etcdtest.Server
		forward  func(*etcdtest.Server, testing.TB) *etcdtest.Forwarder
		retarget bool // the test calls SetTarget itself after Restart
	}{
		{"plain, Server.Forward", etcdtest.Start, (*etcdtest.Server).Forward, false},
		{"tls, Forward and SetTarget", etcdtest.StartTLS, forwardTo, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := tt.start(t)
			f := tt.forward(s, t)
			c := forwardedClient(t, s, f)
			const key, value = "sumgate/restart", "kept"
			if err := put(c, key, value, succeedTimeout); err != nil {
				t.Fatalf("Put before Stop: %v", err)
			}

			old := s.Endpoints[0]
			s.Stop()
			s.Stop() // a second Stop does nothing
			if _, err := getValue(c, key, failTimeout); err == nil {
				t.Fatal("Get while stopped succeeded")
			}
			if err := put(c, key, "lost", failTimeout); err == nil {
				t.Fatal("Put while stopped succeeded")
			}
			assertRefused(t, old)

			s.Restart(t)
			if s.Endpoints[0] == old {
				t.Fatalf("restarted server kept its endpoint %s", old)
			}
			if tt.retarget {
				f.SetTarget(s.Endpoints[0])
			}
			if got, err := getValue(c, key, succeedTimeout); err != nil || got != value {
				t.Fatalf("Get after Restart = %q, %v; want %q", got, err, value)
			}
			if err := put(c, key, "after", succeedTimeout); err != nil {
				t.Fatalf("Put after Restart: %v", err)
			}

			// Restart of a running server stops it first; the data stays.
			s.Restart(t)
			if tt.retarget {
				f.SetTarget(s.Endpoints[0])
			}
			if got, err := getValue(c, key, succeedTimeout); err != nil || got != "after" {
				t.Fatalf("Get after second Restart = %q, %v; want %q", got, err, "after")
			}
		})
	}
}

// forwardTo makes a forwarder with Forward, which Restart does not retarget.
func forwardTo(s *etcdtest.Server, t testing.TB) *etcdtest.Forwarder {
	return etcdtest.Forward(t, s.Endpoints[0])
}

// assertRefused checks that nothing listens on endpoint's port any more.
func assertRefused(t *testing.T, endpoint string) {
	t.Helper()
	_, host, _ := strings.Cut(endpoint, "://")
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", host)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialling %s after Stop: %v, want connection refused", host, err)
	}
}

// TestClientThroughCut checks what an etcd client sees of Cut and Blackhole:
// its requests fail within their timeout, and after Resume the same client
// is served again.
func TestClientThroughCut(t *testing.T) {
	t.Parallel()
	s := etcdtest.StartTLS(t)
	f := s.Forward(t)
	c := forwardedClient(t, s, f)
	tests := []struct {
		name string
		cut  func()
	}{
		{"Cut", f.Cut},
		{"Blackhole", f.Blackhole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := put(c, "k", tt.name, succeedTimeout); err != nil {
				t.Fatalf("Put before %s: %v", tt.name, err)
			}
			tt.cut()
			if _, err := getValue(c, "k", failTimeout); err == nil {
				t.Fatalf("Get during %s succeeded", tt.name)
			}
			f.Resume()
			if got, err := getValue(c, "k", succeedTimeout); err != nil || got != tt.name {
				t.Fatalf("Get after Resume = %q, %v; want %q", got, err, tt.name)
			}
		})
	}
}

// TestForwarder checks the forwarder's connection handling against an echo
// server that prefixes every line with its name, so a reply tells which
// target served it.
func TestForwarder(t *testing.T) {
	t.Parallel()
	a, b := echoServer(t, "a"), echoServer(t, "b")

	type check func(t *testing.T, f *etcdtest.Forwarder)
	tests := []struct {
		name  string
		check check
	}{
		{"forwards both ways", func(t *testing.T, f *etcdtest.Forwarder) {
			c := dial(t, f)
			assertEcho(t, c, "ping", "a: ping")
		}},
		{"passes a half-close on", func(t *testing.T, f *etcdtest.Forwarder) {
			c := dial(t, f)
			io.WriteString(c, "last\n")
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "a: last\n" {
				t.Fatalf("read after half-close = %q, %v; want the reply then EOF", got, err)
			}
		}},
		{"Cut and Blackhole close connections in flight", func(t *testing.T, f *etcdtest.Forwarder) {
			for _, cut := range []func(){f.Cut, f.Blackhole} {
				c := dial(t, f)
				assertEcho(t, c, "ping", "a: ping")
				cut()
				assertClosed(t, c)
				f.Resume()
			}
		}},
		{"Cut resets new connections until Resume", func(t *testing.T, f *etcdtest.Forwarder) {
			f.Cut()
			assertReset(t, f)
			f.Resume()
			assertEcho(t, dial(t, f), "ping", "a: ping")
		}},
		{"Blackhole holds new connections, Resume forwards them", func(t *testing.T, f *etcdtest.Forwarder) {
			f.Blackhole()
			c := dial(t, f)
			io.WriteString(c, "held\n")
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			var ne net.Error
			if _, err := c.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("read during Blackhole: %v, want a timeout", err)
			}
			f.Resume()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "a: held\n" {
				t.Fatalf("reply after Resume = %q, %v; want %q", line, err, "a: held\n")
			}
		}},
		{"Cut after Blackhole closes held connections", func(t *testing.T, f *etcdtest.Forwarder) {
			f.Blackhole()
			c := dial(t, f)
			io.WriteString(c, "held\n")
			time.Sleep(50 * time.Millisecond) // most likely held by now; if not, still in the backlog, then reset: closed either way
			f.Cut()
			assertClosed(t, c)
			f.Resume()
			assertEcho(t, dial(t, f), "ping", "a: ping")
		}},
		{"SetTarget moves new connections only", func(t *testing.T, f *etcdtest.Forwarder) {
			old := dial(t, f)
			assertEcho(t, old, "ping", "a: ping")
			f.SetTarget(b)
			assertEcho(t, dial(t, f), "ping", "b: ping")
			assertEcho(t, old, "again", "a: again")
		}},
		{"a target that refuses resets the connection", func(t *testing.T, f *etcdtest.Forwarder) {
			f.SetTarget(closedPort(t))
			assertReset(t, f)
		}},
		{"Close closes everything", func(t *testing.T, f *etcdtest.Forwarder) {
			inFlight := dial(t, f)
			assertEcho(t, inFlight, "ping", "a: ping")
			f.Blackhole()
			held := dial(t, f)
			time.Sleep(50 * time.Millisecond) // most likely held by now; if not, still in the backlog, then reset: closed either way
			f.Close()
			f.Close() // a second Close does nothing
			assertClosed(t, inFlight)
			assertClosed(t, held)
			if c, err := net.Dial("tcp", f.Addr()); err == nil {
				c.Close()
				t.Fatal("a closed forwarder accepts connections")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := etcdtest.Forward(t, a)
			if !strings.HasPrefix(f.Endpoint(), "http://127.0.0.1:") || f.Endpoint() != "http://"+f.Addr() {
				t.Fatalf("Endpoint() = %q, Addr() = %q", f.Endpoint(), f.Addr())
			}
			tt.check(t, f)
		})
	}
}

// TestForwarderEndpointScheme checks that Endpoint keeps the scheme of the
// target given to Forward.
func TestForwarderEndpointScheme(t *testing.T) {
	t.Parallel()
	tests := []struct{ target, scheme string }{
		{"127.0.0.1:1", "http"},
		{"http://127.0.0.1:1", "http"},
		{"https://127.0.0.1:1", "https"},
	}
	for _, tt := range tests {
		f := etcdtest.Forward(t, tt.target)
		if want := tt.scheme + "://" + f.Addr(); f.Endpoint() != want {
			t.Errorf("Forward(%q).Endpoint() = %q, want %q", tt.target, f.Endpoint(), want)
		}
	}
}

// echoServer serves, until t's cleanup, a line echo on 127.0.0.1 that
// prefixes every reply with name, and half-closes when its client does.
func echoServer(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn // every connection accepted, closed at cleanup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.(*net.TCPConn).CloseWrite()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, name+": "+line); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// dial connects to f, closing the connection at t's cleanup.
func dial(t *testing.T, f *etcdtest.Forwarder) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.Addr(), 10*time.Second)
	if err != nil {
		t.Fatalf("dialling the forwarder: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// assertEcho writes line to c and checks that the reply is want.
func assertEcho(t *testing.T, c net.Conn, line, want string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("writing %q: %v", line, err)
	}
	// One byte at a time: a buffered reader would swallow later replies.
	var got []byte
	b := make([]byte, 1)
	for len(got) == 0 || got[len(got)-1] != '\n' {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("reading the reply to %q after %q: %v", line, got, err)
		}
		got = append(got, b[0])
	}
	if string(got) != want+"\n" {
		t.Fatalf("reply to %q = %q, want %q", line, got, want+"\n")
	}
}

// assertClosed checks that the forwarder closed c: a read ends with EOF or
// a reset, not a timeout, and no byte arrives.
func assertClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("read of a connection the forwarder closed: %d bytes, %v; want EOF or reset", n, err)
	}
}

// assertReset checks that f resets a new connection: the dial fails with a
// reset (when it arrives before the dial returns), or the first read does.
func assertReset(t *testing.T, f *etcdtest.Forwarder) {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.Addr(), 10*time.Second)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dialling the forwarder: %v, want success or a reset", err)
		}
		return
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("first read from the forwarder: %d bytes, %v; want a reset", n, err)
	}
}

// closedPort returns a host:port on 127.0.0.1 that nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
