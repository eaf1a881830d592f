package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/otlptest"
	"github.com/sumgate/sumgate/internal/testworld"
)

// redirect plays the network for unit tests: it says where each
// connection to the transparent listener was going (by client port), and
// what names resolve to.
type redirect struct {
	mu    sync.Mutex
	dst   map[string]netip.AddrPort // client address -> original destination
	names map[string][]netip.Addr
}

func (r *redirect) originalDst(c net.Conn) (netip.AddrPort, error) {
	// The test registers a connection once its Dial returns, which may be
	// after the listener accepted it.
	for range 100 {
		r.mu.Lock()
		d, ok := r.dst[c.RemoteAddr().String()]
		r.mu.Unlock()
		if ok {
			return d, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return netip.AddrPort{}, errors.New("not redirected")
}

func (r *redirect) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.names[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// transparentEnv is a traced gateway with a transparent listener.
type transparentEnv struct {
	*traced
	taddr string // the transparent listener
	r     *redirect
}

func startTransparent(t *testing.T, edit func(*gateway.Config)) *transparentEnv {
	t.Helper()
	r := &redirect{dst: map[string]netip.AddrPort{}, names: map[string][]netip.Addr{}}
	tr := startOTLP(t, "grpc", 0, func(c *gateway.Config) {
		c.Transparent.OriginalDst = r.originalDst
		c.Transparent.LookupHost = r.lookup
		c.Transparent.PeekTimeout = time.Second
		if edit != nil {
			edit(c)
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go tr.gw.ServeTransparent(l)
	return &transparentEnv{traced: tr, taddr: l.Addr().String(), r: r}
}

// dial connects to the transparent listener as a client redirected from
// dst would.
func (te *transparentEnv) dial(t testing.TB, dst string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", te.taddr)
	if err != nil {
		t.Fatal(err)
	}
	te.r.mu.Lock()
	te.r.dst[c.LocalAddr().String()] = netip.MustParseAddrPort(dst)
	te.r.mu.Unlock()
	t.Cleanup(func() { c.Close() })
	return c
}

// client is an HTTPS client whose every connection is "redirected" from
// dst to the transparent listener: it has no proxy settings.
func (te *transparentEnv) client(t testing.TB, dst string, tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext:       func(context.Context, string, string) (net.Conn, error) { return te.dial(t, dst), nil },
		TLSClientConfig:   tc,
		DisableKeepAlives: true,
	}}
}

func TestTransparentIntercepts(t *testing.T) {
	te := startTransparent(t, nil)
	te.r.names[config.PublicProxyHost] = []netip.Addr{netip.MustParseAddr("203.0.113.10")}
	c := te.client(t, "203.0.113.10:443", &tls.Config{RootCAs: pool(te.root)})
	good := te.w.Module(testworld.GoodPath, testworld.Version)
	status, body := get(t, c, te.w.ProxyURL+"/"+testworld.GoodPath+"/@v/v1.0.0.zip")
	if status != 200 || string(body) != string(good.Zip) {
		t.Fatalf("genuine zip: %d, %d bytes", status, len(body))
	}
	status, body = get(t, c, te.w.ProxyURL+"/"+testworld.TamperedZipPath+"/@v/v1.0.0.zip")
	if status != http.StatusForbidden || !strings.Contains(string(body), "checksum mismatch") {
		t.Fatalf("tampered zip: %d %s", status, body)
	}
	servers := otlptest.Servers(te.flush(t))
	var connects int
	for _, s := range servers {
		if s.Name == "CONNECT" {
			connects++
			if s.Attrs["sumgate.transparent"] != true || s.Str("sumgate.transparent.destination") != "203.0.113.10:443" ||
				s.Str("sumgate.decision") != "intercept" || s.Str("tls.server.name") != config.PublicProxyHost {
				t.Errorf("transparent CONNECT span: %v", s.Attrs)
			}
		}
	}
	if connects != 2 || len(servers) != 4 {
		t.Errorf("%d server spans, %d of them CONNECT: want one per connection and one per request", len(servers), connects)
	}
}

func TestTransparentSplicesUnderTunnelPolicy(t *testing.T) {
	srv := newTLSServer(t, "tunnel.example")
	te := startTransparent(t, func(c *gateway.Config) { c.Resolve = map[string]string{"tunnel.example": srv.addr} })
	// The operator pinned tunnel.example to the server; the client was
	// going to that address (port 443, as the redirect rule sees it).
	c := te.client(t, "127.0.0.1:443", &tls.Config{RootCAs: srv.roots})
	resp, err := c.Get("https://tunnel.example/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello from tunnel.example\n" || !resp.TLS.PeerCertificates[0].Equal(srv.cert) {
		t.Fatalf("splice: %q", body)
	}
	tunnel := otlptest.Find(otlptest.Servers(te.flush(t)), func(s otlptest.Span) bool { return s.Str("sumgate.decision") == "tunnel" })
	if tunnel == nil || tunnel.Str("sumgate.rule") != "transparent: tunnel" || tunnel.Int("sumgate.tunnel.server_to_client_bytes") <= 0 ||
		tunnel.Str("tls.server.name") != "tunnel.example" {
		t.Fatalf("splice span: %+v", tunnel)
	}
}

// TestTransparentRefusals: what transparent mode must not pass, each
// refused with a TLS alert (or a close, for non-TLS bytes) and recorded
// as a denied CONNECT with its rule. Threat 8 is the SNI/destination
// mismatch; threat 13 the slow-loris that never sends a ClientHello.
func TestTransparentRefusals(t *testing.T) {
	te := startTransparent(t, func(c *gateway.Config) {
		c.Resolve = map[string]string{"tunnel.example": "127.0.0.1:1"}
	})
	te.r.names[config.PublicProxyHost] = []netip.Addr{netip.MustParseAddr("203.0.113.10")}
	te.r.names["elsewhere.example"] = []netip.Addr{netip.MustParseAddr("198.51.100.7")}
	handshake := func(t *testing.T, dst, sni string) error {
		c := te.dial(t, dst)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return tls.Client(c, &tls.Config{ServerName: sni, RootCAs: pool(te.root), InsecureSkipVerify: sni == ""}).Handshake()
	}
	tests := []struct {
		name, rule string
		run        func(t *testing.T) error
	}{
		{"intercepted SNI, other destination (threat 8)", "transparent: sni-mismatch", func(t *testing.T) error {
			return handshake(t, "192.0.2.99:443", config.PublicProxyHost)
		}},
		{"tunnelled SNI, other destination (threat 8)", "transparent: sni-mismatch", func(t *testing.T) error {
			return handshake(t, "127.0.0.2:443", "tunnel.example")
		}},
		{"no SNI", "transparent: no-sni deny", func(t *testing.T) error { return handshake(t, "198.51.100.7:443", "") }},
		{"not TLS", "transparent: no-sni deny", func(t *testing.T) error {
			c := te.dial(t, "198.51.100.7:443")
			c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n > 0 {
				return nil
			} else {
				return err
			}
		}},
		{"slow-loris (threat 13)", "transparent: no-sni deny", func(t *testing.T) error {
			c := te.dial(t, "198.51.100.7:443")
			c.Write([]byte{0x16, 0x03, 0x01}) // a record header, then nothing
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			got, err := io.ReadAll(c)
			if time.Since(start) > 5*time.Second {
				t.Errorf("held for %v: the peek is not bounded", time.Since(start))
			}
			if err != nil || (len(got) > 0 && got[0] != 0x15) {
				return nil // a timeout, or bytes that are not an alert: served
			}
			return errors.New("refused")
		}},
		{"dialled directly, not redirected", "transparent: not-redirected", func(t *testing.T) error {
			c, err := net.Dial("tcp", te.taddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			return tls.Client(c, &tls.Config{ServerName: config.PublicProxyHost, RootCAs: pool(te.root)}).Handshake()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t)
			if err == nil {
				t.Fatal("the connection was served")
			}
			if strings.Contains(tc.name, "SNI") && !strings.Contains(tc.name, "no SNI") && !strings.Contains(err.Error(), "access denied") {
				t.Errorf("refusal: %v, want a TLS access_denied alert", err)
			}
		})
	}
	servers := otlptest.Servers(te.flush(t))
	if len(servers) != len(tests) {
		t.Errorf("%d server spans for %d connections", len(servers), len(tests))
	}
	rules := map[string]int{}
	for _, s := range servers {
		if s.Str("sumgate.decision") != "deny" || s.StatusCode != tracepb.Status_STATUS_CODE_ERROR || s.Str("sumgate.reason") == "" {
			t.Errorf("refusal span: %v %v", s.Attrs, s.StatusCode)
		}
		rules[s.Str("sumgate.rule")]++
	}
	for _, tc := range tests {
		if rules[tc.rule] == 0 {
			t.Errorf("no span with rule %q: %v", tc.rule, rules)
		}
	}
}

// TestTransparentNoSNISplicePolicy: with no_sni: splice, a connection
// without SNI is spliced to its destination only if that is public.
func TestTransparentNoSNISplicePolicy(t *testing.T) {
	te := startTransparent(t, func(c *gateway.Config) { c.Transparent.NoSNI = gateway.NoSNISplice })
	c := te.dial(t, "10.1.2.3:443")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake(); err == nil {
		t.Fatal("spliced to an internal address")
	}
	var rule string
	for _, s := range otlptest.Servers(te.flush(t)) {
		rule = s.Str("sumgate.rule")
	}
	if rule != "internal-address" {
		t.Errorf("rule %q, want internal-address", rule)
	}
}

// TestTransparentSNIMismatchIntercept: sni_mismatch: intercept serves an
// intercepted name whatever the destination, since sumgate dials the name.
func TestTransparentSNIMismatchIntercept(t *testing.T) {
	te := startTransparent(t, func(c *gateway.Config) { c.Transparent.SNIMismatch = gateway.SNIMismatchIntercept })
	c := te.client(t, "192.0.2.99:443", &tls.Config{RootCAs: pool(te.root)})
	if status, body := get(t, c, te.w.ProxyURL+"/"+testworld.GoodPath+"/@v/v1.0.0.zip"); status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	var rule string
	for _, s := range otlptest.Servers(te.flush(t)) {
		if s.Name == "CONNECT" {
			rule = s.Str("sumgate.rule")
		}
	}
	if rule != "transparent: sni-mismatch intercept" {
		t.Errorf("rule %q", rule)
	}
}

// FuzzPeekClientHello: whatever a redirected client sends first, the peek
// neither panics nor hangs, replays exactly the bytes it consumed, and
// returns an SNI only from a TLS handshake, in lower case.
func FuzzPeekClientHello(f *testing.F) {
	// A real ClientHello, and pieces of one.
	var hello []byte
	{
		c, s := net.Pipe()
		go func() {
			tls.Client(c, &tls.Config{ServerName: "Example.COM", InsecureSkipVerify: true}).Handshake()
			c.Close()
		}()
		// Everything the client writes before it waits for an answer.
		s.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 4096)
		n := 0
		for n < 5 || int(buf[3])<<8|int(buf[4]) > n-5 {
			m, err := s.Read(buf[n:])
			n += m
			if err != nil {
				f.Fatalf("reading a ClientHello: %v", err)
			}
		}
		hello = buf[:n]
		s.Close()
	}
	f.Add(hello)
	f.Add(hello[:5])
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, s := net.Pipe()
		go func() {
			c.Write(data)
			c.Close()
		}()
		defer s.Close()
		var prefix []byte
		var sni, why string
		var isTLS bool
		done := make(chan struct{})
		go func() {
			prefix, sni, isTLS, why = gateway.PeekClientHello(s, time.Second)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("the peek hung on %q\n%s", data, buf[:runtime.Stack(buf, true)])
		}
		if !bytes.HasPrefix(data, prefix) {
			t.Fatalf("replayed %q, not a prefix of what was sent", prefix)
		}
		if sni != "" && (!isTLS || why != "" || sni != strings.ToLower(sni)) {
			t.Fatalf("sni %q, tls %v, why %q", sni, isTLS, why)
		}
		if sni == "" && why == "" {
			t.Fatal("no SNI and no reason")
		}
	})
}
