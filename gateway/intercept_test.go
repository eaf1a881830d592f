package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/testworld"
)

// TestUnknownMirrorUnderWildcardIsVerified holds threat 19 under
// intercept: ["*"]: a mirror that no configuration names, serving the
// corpus under a path prefix (/go), has every module file verified. The
// real go command, with GOSUMDB=off, gets the genuine module with the
// database's hashes and a 403 for a tampered zip and a tampered go.mod;
// a plain client gets the same answers.
func TestUnknownMirrorUnderWildcardIsVerified(t *testing.T) {
	e := start(t, func(c *gateway.Config) {
		c.Intercept = []string{"*"}
		c.ModuleProxies = c.ModuleProxies[:1] // the public proxy only: the mirror is named nowhere
	})
	w := e.w
	mirror := testworld.UnknownMirrorURL
	wantVerifiedThrough(t, e, mirror)

	client := e.proxyClient(pool(e.root))
	good, _, tampered := corpus(w)
	tamperedMod := w.Module(testworld.TamperedModPath, testworld.Version)
	for _, tt := range []struct {
		path   string
		status int
		want   []byte
	}{
		{zipPath(t, good.Version), http.StatusOK, good.Zip},
		{strings.TrimSuffix(zipPath(t, good.Version), ".zip") + ".mod", http.StatusOK, good.Mod},
		{zipPath(t, tampered.Version), http.StatusForbidden, nil},
		{strings.TrimSuffix(zipPath(t, tamperedMod.Version), ".zip") + ".mod", http.StatusForbidden, nil},
	} {
		resp, body := send(t, client, http.MethodGet, mirror+tt.path)
		if resp.StatusCode != tt.status || tt.want != nil && string(body) != string(tt.want) {
			t.Errorf("GET %s%s: %d %.120q, want %d", mirror, tt.path, resp.StatusCode, body, tt.status)
		}
	}
}

// TestSplicedMirrorIsABlindTunnel: the same mirror under splice is never
// intercepted, even under "*": it is tunnelled blindly (tunnel: allow),
// so its tampered zip reaches the go command unverified, the client sees
// the mirror's own certificate, and the CONNECT's span says tunnel, by
// the rule splice. This is what the README says splice costs.
func TestSplicedMirrorIsABlindTunnel(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	w := testworld.New(t)
	e := startWith(t, w, func(c *gateway.Config) {
		c.Intercept = []string{"*"}
		c.Splice = []string{testworld.UnknownMirrorHost}
		c.ModuleProxies = c.ModuleProxies[:1]
		c.Resolve = map[string]string{testworld.UnknownMirrorHost: w.Addr} // the blind tunnel's way into the world
		c.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	})
	// The client trusts the enterprise root and the world's, which a
	// blind tunnel shows it.
	roots, err := os.ReadFile(e.rootFile)
	if err != nil {
		t.Fatal(err)
	}
	world, err := os.ReadFile(e.w.RootsFile)
	if err != nil {
		t.Fatal(err)
	}
	both := filepath.Join(t.TempDir(), "both.pem")
	if err := os.WriteFile(both, append(roots, world...), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := testworld.GoModDownload(t, []string{"GOPROXY=" + testworld.UnknownMirrorURL, "HTTPS_PROXY=http://" + e.addr, "SSL_CERT_FILE=" + both},
		testworld.TamperedZipPath+"@"+testworld.Version)
	m := e.w.Module(testworld.TamperedZipPath, testworld.Version)
	if !strings.Contains(string(out), `"Sum": "h1:`) || strings.Contains(string(out), m.ZipHash) || strings.Contains(string(out), "sumgate") {
		t.Fatalf("a spliced mirror's tampered zip should reach the client unverified (sum other than the database's %s):\n%s", m.ZipHash, out)
	}
	e.stop() // ends every tunnel's span
	var found bool
	for _, s := range rec.Ended() {
		a := map[string]string{}
		for _, kv := range s.Attributes() {
			a[string(kv.Key)] = kv.Value.Emit()
		}
		if s.Name() != http.MethodConnect || a["server.address"] != testworld.UnknownMirrorHost {
			continue
		}
		found = true
		if a["sumgate.decision"] != gateway.DecisionTunnel || a["sumgate.rule"] != "splice" {
			t.Errorf("CONNECT %s: decision %q, rule %q, want tunnel by splice", testworld.UnknownMirrorHost, a["sumgate.decision"], a["sumgate.rule"])
		}
	}
	if !found {
		t.Error("no CONNECT span for the spliced mirror")
	}
}

// connectStatus sends a raw CONNECT for target and returns the status
// line, which carries sumgate's reason for a refusal.
func connectStatus(t testing.TB, addr, target string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	resp.Body.Close()
	return resp.Status
}

// TestConnectUnderPatterns: which CONNECTs a pattern intercepts. Splice
// beats intercept; a pattern never matches an IP literal; a host matched
// only by a pattern on another port than 443 follows the tunnel policy,
// while an exact entry there is refused as an intercepted host.
func TestConnectUnderPatterns(t *testing.T) {
	for _, tt := range []struct {
		name              string
		intercept, splice []string
		tunnel            gateway.TunnelPolicy
		target            string
		want              string // the status line begins with it
	}{
		{"pattern, port 443", []string{"*.testworld.example"}, nil, gateway.TunnelDeny, "a.b.testworld.example:443", "200"},
		{"pattern, not the apex", []string{"*.testworld.example"}, nil, gateway.TunnelDeny, "testworld.example:443", "403 sumgate: CONNECT to testworld.example refused: only intercepted hosts are reachable (tunnel: deny)"},
		{"every host", []string{"*"}, nil, gateway.TunnelDeny, "anything.example:443", "200"},
		{"splice beats *", []string{"*"}, []string{"pinned.example"}, gateway.TunnelDeny, "pinned.example:443", "403 sumgate: CONNECT to pinned.example refused: only intercepted hosts are reachable (tunnel: deny)"},
		{"splice beats an exact entry", []string{"pinned.example"}, []string{"*.example"}, gateway.TunnelDeny, "pinned.example:443", "403 sumgate: CONNECT to pinned.example refused: only intercepted hosts are reachable"},
		{"an IP literal under *", []string{"*"}, nil, gateway.TunnelDeny, "192.0.2.7:443", "403 sumgate: CONNECT to 192.0.2.7 refused: only intercepted hosts are reachable"},
		{"pattern on another port: tunnel policy", []string{"*"}, nil, gateway.TunnelAllow, "anything.example:8443", "403 sumgate: CONNECT to anything.example:8443 refused: only port 443 is allowed"},
		{"exact entry on another port: intercept-port", []string{"*", "goproxy.cn"}, nil, gateway.TunnelAllow, "goproxy.cn:8443", "403 sumgate: CONNECT to goproxy.cn:8443: only port 443 is intercepted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, func(c *gateway.Config) {
				c.Intercept, c.Splice, c.Tunnel, c.ModuleProxies = tt.intercept, tt.splice, tt.tunnel, nil
			})
			if got := connectStatus(t, e.addr, tt.target); !strings.HasPrefix(got, tt.want) {
				t.Errorf("CONNECT %s: %q, want %q", tt.target, got, tt.want)
			}
		})
	}
}
