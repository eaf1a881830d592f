package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

// TestOriginAddressPolicy: the operator's own origins (module_proxies,
// sumdb.urls) may live at private addresses; no host, listed or not, may
// be dialled at loopback, link-local, cloud metadata, unspecified,
// multicast or reserved addresses.
func TestOriginAddressPolicy(t *testing.T) {
	tests := []struct {
		addr          string
		origin, other bool // allowed for an operator origin, for any other host
	}{
		{"203.0.113.7", true, true},
		{"2606:4700:4700::1111", true, true},
		{"10.1.2.3", true, false},
		{"172.16.0.1", true, false},
		{"192.168.1.1", true, false},
		{"::ffff:10.1.2.3", true, false},
		{"fd12:3456::1", true, false}, // RFC 4193 unique local
		{"100.64.0.1", true, false},   // CGNAT
		{"127.0.0.1", false, false},
		{"::1", false, false},
		{"::ffff:127.0.0.1", false, false},
		{"169.254.169.254", false, false}, // cloud metadata
		{"169.254.1.1", false, false},
		{"fe80::1", false, false},
		{"fd00:ec2::254", false, false}, // cloud metadata, inside fc00::/7
		{"0.0.0.0", false, false},
		{"::", false, false},
		{"224.0.0.1", false, false},
		{"ff02::1", false, false},
		{"240.0.0.1", false, false},
		{"255.255.255.255", false, false},
		{"198.18.0.1", false, false},
		{"192.0.0.8", false, false},
		{"64:ff9b:1::1", false, false},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := originAllowed(a); got != tt.origin {
			t.Errorf("originAllowed(%s) = %v, want %v", a, got, tt.origin)
		}
		if got := !Internal(a); got != tt.other {
			t.Errorf("!Internal(%s) = %v, want %v", a, got, tt.other)
		}
	}
}

// errNotConnecting stops a test dial after the socket is made and before
// connect(2): no packet leaves.
var errNotConnecting = errors.New("test: not connecting")

// recordingDialer returns a dialer that records the address of every
// dial and connects only to the addresses in allow (loopback test
// servers), and the function that returns what it recorded.
func recordingDialer(allow ...string) (*net.Dialer, func() []string) {
	var mu sync.Mutex
	var dialled []string
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(network, address string, c syscall.RawConn) error {
		mu.Lock()
		defer mu.Unlock()
		dialled = append(dialled, address)
		if slices.Contains(allow, address) {
			return nil
		}
		return errNotConnecting
	}}
	return d, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(dialled)
	}
}

// fakeLookup resolves names from m only: no query leaves the machine.
func fakeLookup(m map[string][]string) func(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		addrs, ok := m[strings.ToLower(host)]
		if !ok {
			return nil, fmt.Errorf("no such host %s (test resolver)", host)
		}
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
}

// TestOperatorOriginsMayBePrivate: an internal module proxy or
// checksum-database mirror the operator listed is dialled at its private
// address; a host not listed is not, and is told how to be allowed; and
// loopback or cloud metadata is refused even for a listed origin. Every
// dial stops before connect(2).
func TestOperatorOriginsMayBePrivate(t *testing.T) {
	opts := Options{
		Origins: []string{"artifactory.corp.example:443", "sumdb.corp.example:8443", "meta.corp.example:443",
			"loop.corp.example:443", "mixed.corp.example:443", "10.7.7.7:443", "public.example:443"},
		Resolve: map[string]string{"pinned.corp.example": "169.254.1.2:8443"},
		LookupNetIP: fakeLookup(map[string][]string{
			"artifactory.corp.example": {"10.1.2.3"},
			"sumdb.corp.example":       {"fd12:3456::5"},
			"cgnat.corp.example":       {"100.64.1.1"},
			"meta.corp.example":        {"169.254.169.254"},
			"loop.corp.example":        {"127.0.0.1"},
			"mixed.corp.example":       {"10.0.0.1", "fd00:ec2::254"},
			"other.corp.example":       {"10.9.9.9"},
			"local.example":            {"127.0.0.1"},
			"public.example":           {"203.0.113.7"},
			"unlisted-public.example":  {"203.0.113.8"},
		}),
	}
	tests := []struct {
		addr    string
		dialled string // the address dialled; "" when refused
		refusal string // substring of the refusal
	}{
		{"artifactory.corp.example:443", "10.1.2.3:443", ""},
		{"Artifactory.Corp.Example:443", "10.1.2.3:443", ""},
		{"sumdb.corp.example:8443", "[fd12:3456::5]:8443", ""},
		{"10.7.7.7:443", "10.7.7.7:443", ""},
		{"public.example:443", "203.0.113.7:443", ""},
		{"unlisted-public.example:443", "203.0.113.8:443", ""},
		{"pinned.corp.example:443", "169.254.1.2:8443", ""}, // the operator's pin overrides everything
		{"other.corp.example:443", "", "other.corp.example resolves to the internal address 10.9.9.9; to allow it, list https://other.corp.example in module_proxies or sumdb.urls, or pin it in upstream.resolve"},
		{"cgnat.corp.example:443", "", "list https://cgnat.corp.example in module_proxies"},
		{"artifactory.corp.example:8443", "", "list https://artifactory.corp.example:8443 in module_proxies or sumdb.urls"}, // another port is another origin
		{"10.1.2.3:443", "", "list https://10.1.2.3 in module_proxies or sumdb.urls"},
		{"meta.corp.example:443", "", "internal address 169.254.169.254, which even a module_proxies or sumdb.urls origin may not reach"},
		{"loop.corp.example:443", "", "internal address 127.0.0.1, which even"},
		{"mixed.corp.example:443", "", "internal address fd00:ec2::254, which even"},
		{"local.example:443", "", "internal address 127.0.0.1; to allow it, pin it in upstream.resolve"},
		{"unknown.example:443", "", "cannot resolve unknown.example"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			d, dialled := recordingDialer()
			_, err := Dialer(d, opts)(context.Background(), "tcp", tt.addr)
			got := dialled()
			if tt.dialled != "" {
				if !errors.Is(err, errNotConnecting) || !slices.Equal(got, []string{tt.dialled}) {
					t.Errorf("dialled %v (err %v), want %s", got, err, tt.dialled)
				}
				return
			}
			if len(got) != 0 {
				t.Errorf("dialled %v, want a refusal", got)
			}
			if err == nil || !strings.Contains(err.Error(), tt.refusal) || !strings.Contains(err.Error(), "refusing to dial "+tt.addr) {
				t.Errorf("err = %v, want a refusal saying %q", err, tt.refusal)
			}
		})
	}
}

// TestRedirectIsJudgedByItsTarget: a redirect from an operator origin to
// another host is dialled under that host's own rule.
func TestRedirectIsJudgedByItsTarget(t *testing.T) {
	origin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://"+strings.TrimPrefix(r.URL.Path, "/to/")+"/file", http.StatusFound)
	}))
	defer origin.Close()
	roots := x509.NewCertPool()
	roots.AddCert(origin.Certificate())
	opts := Options{
		Origins: []string{"mirror.example.com:443", "blobs.corp.example:443"},
		Resolve: map[string]string{"mirror.example.com": origin.Listener.Addr().String()}, // the test server's certificate names *.example.com
		LookupNetIP: fakeLookup(map[string][]string{
			"blobs.corp.example":  {"10.2.2.2"},
			"other.corp.example":  {"10.9.9.9"},
			"metadata.google.int": {"169.254.169.254"},
		}),
	}
	for _, tt := range []struct {
		target  string
		dialled string // besides the origin; "" when refused
	}{
		{"blobs.corp.example", "10.2.2.2:443"},
		{"other.corp.example", ""},
		{"metadata.google.int", ""},
	} {
		t.Run(tt.target, func(t *testing.T) {
			d, dialled := recordingDialer(origin.Listener.Addr().String())
			tr := &http.Transport{DialContext: Dialer(d, opts), TLSClientConfig: &tls.Config{RootCAs: roots}}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, CheckRedirect: checkRedirect, Timeout: 10 * time.Second}
			resp, err := c.Get("https://mirror.example.com/to/" + tt.target)
			if err == nil {
				resp.Body.Close()
				t.Fatal("the redirect target answered")
			}
			want := []string{origin.Listener.Addr().String()}
			if tt.dialled != "" {
				want = append(want, tt.dialled)
				if !errors.Is(err, errNotConnecting) {
					t.Errorf("err = %v, want the test's stop before connect", err)
				}
			} else if !strings.Contains(err.Error(), "refusing to dial "+tt.target) {
				t.Errorf("err = %v, want a refusal", err)
			}
			if got := dialled(); !slices.Equal(got, want) {
				t.Errorf("dialled %v, want %v", got, want)
			}
		})
	}
}
