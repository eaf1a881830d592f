package upstream

import (
	"net/http"
	"os"
	"path/filepath"
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
