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

// TestRunServesAndDrains starts 'sumgate run' against the test world,
// downloads a verified zip through it, and stops it as SIGTERM would.
func TestRunServesAndDrains(t *testing.T) {
	w := testworld.New(t)
	var hosts []string
	for h := range w.Resolve {
		hosts = append(hosts, h)
	}
	cfg := writeConfig(t, w, append([]string{w.ProxyURL}, w.MirrorURLs...), "listen: 127.0.0.1:0\nintercept: ["+strings.Join(hosts, ", ")+"]\n")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	status := make(chan int, 1)
	go func() {
		status <- runCmd(ctx, []string{"-config", cfg}, pw, io.Discard)
		pw.Close()
	}()

	banner := bufio.NewScanner(pr)
	var proxyURL, bundle string
	for banner.Scan() {
		line := strings.TrimSpace(banner.Text())
		if v, ok := strings.CutPrefix(line, "export HTTPS_PROXY="); ok {
			proxyURL = v
		}
		if v, ok := strings.CutPrefix(line, "export SSL_CERT_FILE="); ok {
			bundle = v
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if proxyURL == "" || bundle == "" {
		t.Fatalf("the banner does not say how to point a client at sumgate (proxy %q, bundle %q)", proxyURL, bundle)
	}
	pemData, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemData) {
		t.Fatalf("%s holds no certificate", bundle)
	}
	pu, _ := url.Parse(proxyURL)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := client.Get(w.ProxyURL + "/example.com/good/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != string(w.Module(testworld.GoodPath, testworld.Version).Zip) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(bundle), "root.key")); err != nil {
		t.Errorf("run did not create the local CA: %v", err)
	}

	cancel()
	select {
	case s := <-status:
		if s != 0 {
			t.Fatalf("run exited %d after SIGTERM, want 0", s)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("run did not drain and exit")
	}
}
