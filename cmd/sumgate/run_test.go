package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/testworld"
)

// running is a 'sumgate run' started by startRun.
type running struct {
	proxyURL    string // HTTPS_PROXY
	bundle      string // SSL_CERT_FILE
	admin       string // admin base URL, "off" when disabled
	audit       string // where spans go, from the banner
	transparent string // the transparent listener, "off" when disabled
	roots       *x509.CertPool
	cancel      context.CancelFunc
	status      chan int
	logs        *testworld.Buffer // what it logged
}

// startRun starts 'sumgate run' against w, with extra configuration,
// and reads its banner.
func startRun(t testing.TB, w *testworld.World, extra string) *running {
	t.Helper()
	return startRunResolve(t, w, w.Resolve, extra)
}

// startRunResolve is startRun with upstream.resolve set to resolve.
func startRunResolve(t testing.TB, w *testworld.World, resolve map[string]string, extra string) *running {
	t.Helper()
	var hosts []string
	for h := range w.Resolve {
		hosts = append(hosts, h)
	}
	cfg := writeConfigResolve(t, w, append([]string{w.ProxyURL}, w.MirrorURLs...), resolve,
		"listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nintercept: ["+strings.Join(hosts, ", ")+"]\n"+extra)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	r := &running{cancel: cancel, status: make(chan int, 1), logs: &testworld.Buffer{}}
	go func() {
		r.status <- runCmd(ctx, []string{"-config", cfg}, pw, r.logs)
		pw.Close()
	}()
	t.Cleanup(func() { r.stop(t) })
	banner := bufio.NewScanner(pr)
	for banner.Scan() {
		line := strings.TrimSpace(banner.Text())
		if v, ok := strings.CutPrefix(line, "export HTTPS_PROXY="); ok {
			r.proxyURL = v
		}
		if v, ok := strings.CutPrefix(line, "export SSL_CERT_FILE="); ok {
			r.bundle = v
		}
		if v, ok := strings.CutPrefix(line, "Transparent: "); ok {
			r.transparent, _, _ = strings.Cut(v, " ")
		}
		if v, ok := strings.CutPrefix(line, "Admin (metrics, health, /ca.pem): "); ok {
			r.admin = v
		}
		if v, ok := strings.CutPrefix(line, "Audit spans: "); ok {
			r.audit = v
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if r.proxyURL == "" || r.bundle == "" || r.admin == "" || r.audit == "" {
		t.Fatalf("the banner does not say how to point a client at sumgate (proxy %q, bundle %q, admin %q, audit %q)\n%s", r.proxyURL, r.bundle, r.admin, r.audit, r.logs)
	}
	pemData, err := os.ReadFile(r.bundle)
	if err != nil {
		t.Fatal(err)
	}
	r.roots = x509.NewCertPool()
	if !r.roots.AppendCertsFromPEM(pemData) {
		t.Fatalf("%s holds no certificate", r.bundle)
	}
	return r
}

// client is an HTTP client through the gateway.
func (r *running) client() *http.Client {
	pu, _ := url.Parse(r.proxyURL)
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: r.roots}}}
}

// stop stops the gateway as SIGTERM would and returns its exit status.
func (r *running) stop(t testing.TB) int {
	t.Helper()
	r.cancel()
	select {
	case s := <-r.status:
		r.status <- s // later calls see it too
		return s
	case <-time.After(40 * time.Second):
		t.Fatal("run did not drain and exit")
		return -1
	}
}

// TestRunServesAndDrains starts 'sumgate run' against the test world,
// downloads a verified zip through it, and stops it as SIGTERM would.
func TestRunServesAndDrains(t *testing.T) {
	w := testworld.New(t)
	r := startRun(t, w, "")
	resp, err := r.client().Get(w.ProxyURL + "/example.com/good/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != string(w.Module(testworld.GoodPath, testworld.Version).Zip) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(r.bundle), "root.key")); err != nil {
		t.Errorf("run did not create the local CA: %v", err)
	}
	if s := r.stop(t); s != 0 {
		t.Fatalf("run exited %d after SIGTERM, want 0", s)
	}
}
