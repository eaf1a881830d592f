package gateway_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
)

// TestTrailingDotProxyHostIsVerified: GOPROXY may name its host fully
// qualified ("goproxy.cn."); the go command then sends a CONNECT to the
// dotted name and an SNI without the dot. That is the same host: its
// modules are verified, not refused with "tls: internal error".
func TestTrailingDotProxyHostIsVerified(t *testing.T) {
	e := start(t, nil)
	goproxy := config.GoproxyCN + "./"
	cnHost := strings.TrimPrefix(config.GoproxyCN, "https://")

	m := e.w.Module(testworld.GoodPath, testworld.Version)
	d := e.download(t, goproxy, testworld.GoodPath+"@"+testworld.Version)
	if d.Error != "" {
		t.Fatalf("GOPROXY=%s: %s", goproxy, d.Error)
	}
	if d.Sum != m.ZipHash || d.GoModSum != m.ModHash {
		t.Errorf("go.sum lines %s %s, database has %s %s", d.Sum, d.GoModSum, m.ZipHash, m.ModHash)
	}
	if n := e.w.Requests(cnHost, "/"+testworld.GoodPath+"/@v/"+testworld.Version+".zip"); n != 1 {
		t.Errorf("%s served the zip %d times, want 1", cnHost, n)
	}

	d = e.download(t, goproxy, testworld.TamperedZipPath+"@"+testworld.Version)
	if !strings.Contains(d.Error, "sumgate: blocked "+testworld.TamperedZipPath+"@"+testworld.Version+" (zip): checksum mismatch") {
		t.Errorf("GOPROXY=%s, tampered zip: %q, want it blocked", goproxy, d.Error)
	}
}

// answering makes the upstream give a canned answer, instead of the file,
// for the URL paths it lists.
type answering struct {
	base    http.RoundTripper
	answers map[string]cannedAnswer // URL path -> answer
}

type cannedAnswer struct {
	status int
	text   string
}

func (a answering) RoundTrip(r *http.Request) (*http.Response, error) {
	ans, ok := a.answers[r.URL.Path]
	if !ok {
		return a.base.RoundTrip(r)
	}
	return &http.Response{
		StatusCode:    ans.status,
		Status:        fmt.Sprintf("%d %s", ans.status, http.StatusText(ans.status)),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		ContentLength: int64(len(ans.text)),
		Body:          io.NopCloser(strings.NewReader(ans.text)),
		Request:       r,
	}, nil
}

// TestUpstreamAnswersReachTheGoCommand: a module proxy's own refusal of a
// module file (4xx, with its text) reaches the developer as the proxy
// said it; an upstream failure (5xx) is sumgate's 502, naming the
// upstream and its status.
func TestUpstreamAnswersReachTheGoCommand(t *testing.T) {
	const notAvailable = "This module version is not available."
	zipPath := func(version string) string { return "/" + testworld.GoodPath + "/@v/" + version + ".zip" }
	e := start(t, func(c *gateway.Config) {
		c.Upstream = &http.Client{Transport: answering{c.Upstream.Transport, map[string]cannedAnswer{
			zipPath(testworld.Version):     {http.StatusForbidden, notAvailable + "\n"},
			zipPath(testworld.NextVersion): {http.StatusServiceUnavailable, "overloaded\n"},
		}}}
	})
	for _, tt := range []struct {
		name    string
		version string
		want    []string // substrings of the go command's error
		notWant []string
	}{
		{name: "403 with text", version: testworld.Version,
			want:    []string{zipPath(testworld.Version) + ": 403 Forbidden", "server response: " + notAvailable},
			notWant: []string{"502", "sumgate"}},
		{name: "503", version: testworld.NextVersion,
			want: []string{zipPath(testworld.NextVersion) + ": 502 Bad Gateway",
				"sumgate: " + e.w.ProxyURL + zipPath(testworld.NextVersion) + " answered 503 Service Unavailable: overloaded"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := e.download(t, e.w.ProxyURL, testworld.GoodPath+"@"+tt.version)
			for _, want := range tt.want {
				if !strings.Contains(d.Error, want) {
					t.Errorf("error lacks %q:\n%s", want, d.Error)
				}
			}
			for _, no := range tt.notWant {
				if strings.Contains(d.Error, no) {
					t.Errorf("error has %q:\n%s", no, d.Error)
				}
			}
		})
	}
}

// TestRefusedConnectSaysWhy: clients print a refused CONNECT's reason
// phrase, not its body; the developer must read sumgate's reason there,
// not a bare "Forbidden".
func TestRefusedConnectSaysWhy(t *testing.T) {
	e := start(t, func(c *gateway.Config) { c.Tunnel = gateway.TunnelDeny })
	reason := func(host string) string {
		return "sumgate: CONNECT to " + host + " refused: only intercepted hosts are reachable (tunnel: deny)"
	}

	// (Not example.net: the go command knows it has no modules.)
	d := e.download(t, "direct", "example.org/x@v1.0.0")
	if !strings.Contains(d.Error, reason("example.org")) {
		t.Errorf("go command's error lacks %q:\n%s", reason("example.org"), d.Error)
	}

	long := strings.Repeat("a", 600) + ".example"
	for _, tt := range []struct {
		target string
		want   string // the whole reason phrase, or its start when it ends in "..."
	}{
		{"example.net:443", reason("example.net")},
		{"Example.NET.:443", reason("example.net")},
		{long + ":443", "sumgate: CONNECT to " + long[:489] + "..."},
	} {
		line := connectStatusLine(t, e.addr, tt.target)
		phrase, ok := strings.CutPrefix(line, "HTTP/1.1 403 ")
		body, ok2 := strings.CutSuffix(phrase, "\r\n")
		if !ok || !ok2 {
			t.Errorf("CONNECT %.40s: status line %q, want a 403 ending in CRLF", tt.target, line)
			continue
		}
		if strings.ContainsAny(body, "\r\n") || len(body) > 512 {
			t.Errorf("CONNECT %.40s: reason phrase of %d bytes, not one line of at most 512: %q", tt.target, len(body), body)
		}
		if body != tt.want {
			t.Errorf("CONNECT %.40s: reason phrase %q, want %q", tt.target, body, tt.want)
		}
	}
}

// connectStatusLine sends a CONNECT for target to the proxy at addr and
// returns the status line of its answer, CRLF included.
func connectStatusLine(t testing.TB, addr, target string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("CONNECT %.40s: reading the status line: %v", target, err)
	}
	return line
}

// clientHello returns the first TLS record a client sends: a real
// ClientHello for sni.
func clientHello(t testing.TB, sni string) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		tls.Client(client, &tls.Config{ServerName: sni}).Handshake()
		client.Close()
	}()
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	head := make([]byte, 5)
	if _, err := io.ReadFull(server, head); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, 5+int(head[3])<<8|int(head[4]))
	copy(rec, head)
	if _, err := io.ReadFull(server, rec[5:]); err != nil {
		t.Fatal(err)
	}
	return rec
}

// trickle writes data to w one byte every 100ms until closed is closed
// or 10s pass, and reports whether closed was closed.
func trickle(w io.Writer, data []byte, closed <-chan struct{}) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for {
		if len(data) > 0 {
			w.Write(data[:1])
			data = data[1:]
		}
		select {
		case <-closed:
			return true
		case <-timeout:
			return false
		case <-tick.C:
		}
	}
}

// closedBy returns a channel closed once r's reads fail: the gateway hung up.
func closedBy(r io.Reader) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, r)
		close(done)
	}()
	return done
}

// TestSlowHeadersInsideTunnelAreCut holds threat 13 inside intercepted
// tunnels: a client that trickles a request's headers (or its TLS
// ClientHello) keeps the connection busy, so the idle timeout never
// fires; the header timeout cuts it, counted from the request's first
// byte (for a tunnel's first request, the first byte of its handshake).
// A client that pauses between prompt requests is not cut: the clock
// starts with a request, not at the end of the one before.
func TestSlowHeadersInsideTunnelAreCut(t *testing.T) {
	const headerTimeout = 2 * time.Second // room for a handshake under -race on a loaded machine
	e := start(t, func(c *gateway.Config) {
		c.HeaderTimeout = headerTimeout
		c.IdleTimeout = 30 * time.Second
	})
	// Mint the leaf now, so that no handshake below waits for it.
	if err := e.intercepted(t, config.PublicProxyHost).Handshake(); err != nil {
		t.Fatal(err)
	}
	request := fmt.Sprintf("GET /%s/@v/list HTTP/1.1\r\nHost: %s\r\n", testworld.GoodPath, config.PublicProxyHost)

	for _, tt := range []struct {
		name string
		send func(t *testing.T) (io.Writer, io.Reader, []byte) // where to trickle what, and where the gateway hanging up shows
	}{
		{"request headers", func(t *testing.T) (io.Writer, io.Reader, []byte) {
			tc := e.intercepted(t, config.PublicProxyHost)
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			return tc, tc, []byte(request + "X-Pad: " + strings.Repeat("a", 1000))
		}},
		{"TLS ClientHello", func(t *testing.T) (io.Writer, io.Reader, []byte) {
			status, c := e.connect(t, config.PublicProxyHost+":443")
			if status != http.StatusOK {
				t.Fatalf("CONNECT: %d", status)
			}
			t.Cleanup(func() { c.Close() })
			return c, c, clientHello(t, config.PublicProxyHost)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			began := time.Now() // before the tunnel's first byte, which starts the header clock
			w, r, data := tt.send(t)
			cut := trickle(w, data, closedBy(r))
			took := time.Since(began)
			if !cut {
				t.Fatalf("a client trickling one byte every 100ms was still connected after %v (header timeout %v)", took, headerTimeout)
			}
			if took < headerTimeout {
				t.Errorf("cut after %v, before the header timeout of %v", took, headerTimeout)
			}
		})
	}

	t.Run("prompt requests with a pause between", func(t *testing.T) {
		tc := e.intercepted(t, config.PublicProxyHost)
		br := bufio.NewReader(tc)
		for i := range 2 {
			if i > 0 {
				time.Sleep(headerTimeout + time.Second) // idle, but not inside a request
			}
			if _, err := io.WriteString(tc, request+"\r\n"); err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			tc.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: status %d", i+1, resp.StatusCode)
			}
		}
	})
}

// TestStalledUpstreamIsCutOff holds threat 13 on the upstream side: an
// upstream that stops sending mid-file does not hold the client for the
// whole fetch timeout; after the idle timeout without a byte, the client
// gets a 504 saying so, and nothing is left in the spool.
func TestStalledUpstreamIsCutOff(t *testing.T) {
	const idle = 500 * time.Millisecond
	e := start(t, func(c *gateway.Config) {
		c.IdleTimeout = idle
		c.Upstream = &http.Client{Transport: truncating{base: c.Upstream.Transport, suffix: ".zip", stall: true}}
	})
	client := e.proxyClient(pool(e.root))
	client.Timeout = 15 * time.Second // past the bound below, well short of the fetch timeout
	began := time.Now()
	resp, err := client.Get(e.w.ProxyURL + "/" + testworld.GoodPath + "/@v/" + testworld.Version + ".zip")
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(began), err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(began)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "the upstream sent no byte for "+idle.String()) {
		t.Errorf("status %d, body %q; want a 504 saying the upstream sent no byte for %v", resp.StatusCode, body, idle)
	}
	if took > 10*time.Second || took < idle {
		t.Errorf("answered after %v; want after the idle timeout of %v, and within 10s", took, idle)
	}
	if left, _ := os.ReadDir(filepath.Join(filepath.Dir(e.rootFile), "spool")); len(left) != 0 {
		t.Errorf("spool files left behind: %v", left)
	}
}

// TestStalledPassThroughIsCutOff: an upstream that stops sending in the
// middle of an answer passed through (metadata here) is cut off after
// the idle timeout too, and the client's request ends, instead of being
// held for as long as the upstream likes.
func TestStalledPassThroughIsCutOff(t *testing.T) {
	const idle = 500 * time.Millisecond
	e := start(t, func(c *gateway.Config) {
		c.IdleTimeout = idle
		c.Upstream = &http.Client{Transport: truncating{base: c.Upstream.Transport, suffix: "/@v/list", stall: true, after: 3}}
	})
	client := e.proxyClient(pool(e.root))
	client.Timeout = 20 * time.Second
	began := time.Now()
	resp, err := client.Get(e.w.ProxyURL + "/" + testworld.GoodPath + "/@v/list")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	took := time.Since(began)
	if err == nil {
		t.Errorf("a stalled answer was delivered as complete after %v", took)
	}
	if took > 10*time.Second || took < idle {
		t.Errorf("the request ended after %v (%v); want after the idle timeout of %v, and within 10s", took, err, idle)
	}
}

// TestDirectFallbackIsRefusedByDefault holds threat 11 with the default
// policy: under the go command's default GOPROXY (proxy, then direct), a
// public module the proxy does not have falls back to git; the default
// vcs: verify checks the tag's revision against the checksum database,
// which has no record of it, and refuses it in-band, which the go command
// prints, instead of letting it through.
func TestDirectFallbackIsRefusedByDefault(t *testing.T) {
	e := start(t, nil)
	e.w.ServeGit(t, "owner/repo")
	out, _ := testworld.GoModDownload(t, []string{"GOPROXY=" + e.w.ProxyURL + ",direct", "HTTPS_PROXY=http://" + e.addr,
		"SSL_CERT_FILE=" + e.rootFile, "GIT_SSL_CAINFO=" + e.rootFile}, testworld.GitHubHost+"/owner/repo@v1.0.0")
	if !strings.Contains(string(out), "remote error: sumgate: blocked github.com/owner/repo@v1.0.0 (tag v1.0.0, commit ") ||
		!strings.Contains(string(out), "not in the checksum database") {
		t.Fatalf("the go command fell back to git unrefused:\n%s", out)
	}
	if strings.Contains(string(out), `"Sum"`) {
		t.Fatalf("the module was downloaded:\n%s", out)
	}
}

// TestSlowUploadIsNotAStall: a request body that keeps moving (a long
// git push) is progress, not a stalled upstream: the idle timeout does
// not cut it.
func TestSlowUploadIsNotAStall(t *testing.T) {
	const idle = 500 * time.Millisecond
	got := make(chan int, 1)
	e := start(t, func(c *gateway.Config) { c.IdleTimeout, c.VCS = idle, gateway.VCSAllow })
	e.w.Override(t, testworld.GitHubHost, "/owner/repo.git/git-receive-pack", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- len(b)
		w.Write([]byte("ok\n"))
	}))
	pr, pw := io.Pipe()
	go func() {
		for range 15 { // 1.5 s in all, three times the idle timeout
			pw.Write([]byte("x"))
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, "https://"+testworld.GitHubHost+"/owner/repo.git/git-receive-pack", pr)
	resp, err := e.proxyClient(pool(e.root)).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("a slow but moving upload: %d %q", resp.StatusCode, body)
	}
	if n := <-got; n != 15 {
		t.Errorf("the upstream got %d of 15 bytes", n)
	}
}
