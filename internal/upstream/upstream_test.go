package upstream

import (
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	m := map[string]string{"sum.golang.org": "127.0.0.1:8443", "10.0.0.1": "127.0.0.1:1"}
	tests := []struct{ addr, want string }{
		{"sum.golang.org:443", "127.0.0.1:8443"},
		{"sum.golang.org:80", "sum.golang.org:80"}, // only host:443 is mapped
		{"other.example:443", "other.example:443"},
		{"10.0.0.1:443", "10.0.0.1:443"}, // never IP literals
		{"[::1]:443", "[::1]:443"},
		{"no-port", "no-port"},
	}
	for _, tt := range tests {
		if got := Resolve(m, tt.addr); got != tt.want {
			t.Errorf("Resolve(%q) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestRoots(t *testing.T) {
	if _, err := Roots(""); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not a certificate"), 0o600)
	if _, err := Roots(empty); err == nil {
		t.Error("a file with no certificate was accepted")
	}
	if _, err := Roots(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("a missing file was accepted")
	}
}

// TestNewClientNeverChainsProxies: sumgate is the egress; its own upstream
// requests must not go through $HTTPS_PROXY (which may point at itself).
func TestNewClientNeverChainsProxies(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	tr := NewClient(Options{}).Transport.(*http.Transport)
	if tr.Proxy != nil {
		t.Fatal("the upstream transport consults a proxy")
	}
	if tr.TLSClientConfig.InsecureSkipVerify {
		t.Fatal("upstream TLS verification is off")
	}
}

// TestUpstreamNeverReachesInternalAddresses: an upstream that redirects
// sumgate to an internal address (SSRF by redirect), or a name that
// resolves to one, gets nothing; the operator's resolve entries are the
// only exception.
func TestUpstreamNeverReachesInternalAddresses(t *testing.T) {
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("internal secret"))
	}))
	defer secret.Close()
	redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-internal-https":
			http.Redirect(w, r, "https://internal.example.com"+strings.TrimPrefix(secret.URL, "http://127.0.0.1"), http.StatusFound)
		case "/to-http":
			http.Redirect(w, r, secret.URL, http.StatusFound)
		default:
			w.Write([]byte("public"))
		}
	}))
	defer redirector.Close()
	roots := x509.NewCertPool()
	roots.AddCert(redirector.Certificate())
	c := NewClient(Options{Roots: roots, Resolve: map[string]string{"mirror.example.com": redirector.Listener.Addr().String()}})

	if resp, err := c.Get("https://mirror.example.com/ok"); err != nil {
		t.Fatalf("a resolved host: %v", err)
	} else {
		resp.Body.Close()
	}
	for _, u := range []string{
		"https://mirror.example.com/to-http",           // https to http
		"https://mirror.example.com/to-internal-https", // a name that does not resolve publicly
		"https://127.0.0.1:1/",                         // an internal literal
		"https://localhost/",                           // a name resolving to loopback
	} {
		resp, err := c.Get(u)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("GET %s reached %q", u, body)
		}
	}
}

func TestInternal(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.0.1": true, "169.254.169.254": true,
		"100.64.0.1": true, "0.0.0.0": true, "::1": true, "fe80::1": true, "fc00::1": true, "::ffff:127.0.0.1": true,
		"224.0.0.1": true, "240.0.0.1": true, "fd00:ec2::254": true,
		"8.8.8.8": false, "1.1.1.1": false, "2606:4700:4700::1111": false,
	} {
		if got := Internal(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Internal(%s) = %v, want %v", addr, got, want)
		}
	}
}
