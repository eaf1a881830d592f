package gateway_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sumgate/sumgate/certs"
	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/telemetry"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/internal/upstream"
	"github.com/sumgate/sumgate/sumdb"
)

// env is a running test world with a gateway in front of it.
type env struct {
	w        *testworld.World
	addr     string // the gateway's listen address
	rootFile string // the enterprise root, PEM, for SSL_CERT_FILE
	root     *x509.Certificate
	gw       *gateway.Gateway
	stop     func() // shuts the gateway down (again at cleanup: harmless)
}

// start runs a gateway in front of a fresh test world; edit may change
// its configuration.
func start(t testing.TB, edit func(*gateway.Config)) *env {
	t.Helper()
	return startWith(t, testworld.New(t), edit)
}

// startWith runs a gateway in front of w.
func startWith(t testing.TB, w *testworld.World, edit func(*gateway.Config)) *env {
	t.Helper()
	return startTraced(t, w, nil, edit)
}

// startTraced runs a gateway in front of w whose gateway, verifier, CA
// and upstream client record to tel (nil: nothing is recorded).
func startTraced(t testing.TB, w *testworld.World, tel *telemetry.Telemetry, edit func(*gateway.Config)) *env {
	t.Helper()
	return startVerifier(t, w, tel, nil, edit)
}

// startVerifier is startTraced whose verifier's configuration editDB may
// change first (such as its clock).
func startVerifier(t testing.TB, w *testworld.World, tel *telemetry.Telemetry, editDB func(*sumdb.Config), edit func(*gateway.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	var tp trace.TracerProvider
	var mp metric.MeterProvider
	if tel != nil {
		tp, mp = tel.TracerProvider, tel.MeterProvider
	}
	client := w.HTTPClient()
	client.Transport = upstream.Traced(client.Transport, tp, mp)
	dbc := sumdb.Config{Key: w.SumDBKey, DataDir: dir, ModuleProxies: append([]string{w.ProxyURL}, w.MirrorURLs...),
		Private: testworld.PrivatePattern + ",github.com/corp", HTTPClient: client, Logger: quiet, TracerProvider: tp}
	if editDB != nil {
		editDB(&dbc)
	}
	v, err := sumdb.New(dbc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close) // after the gateway's shutdown, before dir is removed
	var hosts []string
	for h := range w.Resolve {
		hosts = append(hosts, h)
	}
	cfg := gateway.Config{
		Intercept:      hosts,
		ModuleProxies:  append([]string{w.ProxyURL}, w.MirrorURLs...),
		DataDir:        dir,
		Verifier:       v,
		Upstream:       client,
		Logger:         quiet,
		TracerProvider: tp,
		MeterProvider:  mp,
	}
	if edit != nil {
		edit(&cfg)
	}
	// The CA mints for what the edited configuration intercepts, as
	// sumgate run's does.
	ca, err := certs.New(context.Background(), certs.Config{DataDir: dir, Intercept: cfg.Intercept, Splice: cfg.Splice,
		Logger: quiet, TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Stop)
	cfg.CA = ca
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	}
	t.Cleanup(stop)
	rootFile := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(rootFile, certs.PEM(ca.Root()), 0o644); err != nil {
		t.Fatal(err)
	}
	return &env{w: w, addr: l.Addr().String(), rootFile: rootFile, root: ca.Root(), gw: g, stop: stop}
}

// modDownload is the JSON the go command prints for one module.
type modDownload struct {
	Path, Version, Error, Sum, GoModSum string
}

// download runs the real go command, through the gateway, with GOSUMDB
// off so that sumgate is the only protection, and a fresh GOPATH.
func (e *env) download(t testing.TB, goproxy, mod string) modDownload {
	t.Helper()
	out, err := testworld.GoModDownload(t, []string{"GOPROXY=" + goproxy, "HTTPS_PROXY=http://" + e.addr, "SSL_CERT_FILE=" + e.rootFile}, mod)
	var d modDownload
	if jerr := json.Unmarshal(out, &d); jerr != nil {
		t.Fatalf("go mod download %s: %v\n%s", mod, err, out)
	}
	return d
}

func TestGoCommandThroughGateway(t *testing.T) {
	e := start(t, nil)
	w := e.w
	aliyun := w.MirrorURLs[len(w.MirrorURLs)-1]
	tests := []struct {
		name    string
		goproxy string
		mod     string
		wantErr []string // substrings of the go command's error; none means success
	}{
		{name: "genuine module", goproxy: w.ProxyURL, mod: testworld.GoodPath + "@v1.0.0"},
		{name: "mirror under a path prefix", goproxy: aliyun, mod: testworld.GoodPath + "@v1.1.0"},
		{name: "upper-case module path", goproxy: w.ProxyURL, mod: testworld.UpperPath + "@v1.0.0"},
		{name: "private module", goproxy: w.ProxyURL, mod: testworld.PrivatePath + "@v1.0.0"},
		{name: "tampered zip", goproxy: w.ProxyURL, mod: testworld.TamperedZipPath + "@v1.0.0",
			wantErr: []string{"403 Forbidden", "sumgate: blocked " + testworld.TamperedZipPath + "@v1.0.0 (zip): checksum mismatch", "downloaded h1:",
				"checksum database has " + w.Module(testworld.TamperedZipPath, testworld.Version).ZipHash, "tampered content"}},
		{name: "tampered go.mod", goproxy: w.ProxyURL, mod: testworld.TamperedModPath + "@v1.0.0",
			wantErr: []string{"sumgate: blocked " + testworld.TamperedModPath + "@v1.0.0 (go.mod): checksum mismatch"}},
		{name: "unknown version", goproxy: w.ProxyURL, mod: testworld.UnknownPath + "@v1.0.0",
			wantErr: []string{"sumgate: blocked", "not in the checksum database", "on_unverified: block"}},
		{name: "hostile zip", goproxy: w.ProxyURL, mod: testworld.HostileSymlinkPath + "@v1.0.0",
			wantErr: []string{"sumgate: blocked", "malformed module zip", "malformed zip: entry", "regular file (mode"}},
		{name: "version no proxy has", goproxy: w.ProxyURL, mod: testworld.GoodPath + "@v1.9.9",
			wantErr: []string{"404 Not Found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.download(t, tt.goproxy, tt.mod)
			if len(tt.wantErr) == 0 {
				if d.Error != "" {
					t.Fatalf("download failed: %s", d.Error)
				}
				m := w.Module(d.Path, d.Version)
				if !m.Private && (d.Sum != m.ZipHash || d.GoModSum != m.ModHash) {
					t.Errorf("go.sum lines %s %s, database has %s %s", d.Sum, d.GoModSum, m.ZipHash, m.ModHash)
				}
				return
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(d.Error, want) {
					t.Errorf("error lacks %q:\n%s", want, d.Error)
				}
			}
			if strings.Contains(d.Error, "404") && len(tt.wantErr) > 1 {
				t.Errorf("a block must never be a 404: %s", d.Error)
			}
		})
	}
}

// TestDatabaseOutageMidRun holds threat 3 end to end: with the database
// down, on_unverified decides; a genuine download still matches.
func TestDatabaseOutageMidRun(t *testing.T) {
	for _, policy := range []gateway.UnverifiedPolicy{gateway.UnverifiedBlock, gateway.UnverifiedAllow} {
		t.Run(string(policy), func(t *testing.T) {
			e := start(t, func(c *gateway.Config) { c.OnUnverified = policy })
			if d := e.download(t, e.w.ProxyURL, testworld.GoodPath+"@v1.0.0"); d.Error != "" {
				t.Fatalf("before the outage: %s", d.Error)
			}
			if d := e.download(t, e.w.ProxyURL, testworld.TamperedZipPath+"@v1.0.0"); !strings.Contains(d.Error, "sumgate: blocked") {
				t.Fatalf("tampered zip before the outage: %q", d.Error)
			}
			e.w.SetSumDB(testworld.SumDBDown)
			d := e.download(t, e.w.ProxyURL, testworld.UpperPath+"@v1.0.0")
			if policy == gateway.UnverifiedBlock {
				if !strings.Contains(d.Error, "checksum database unavailable") || !strings.Contains(d.Error, "403") {
					t.Fatalf("error %q, want a 403 naming the unavailable database", d.Error)
				}
			} else if d.Error != "" {
				t.Fatalf("on_unverified: allow: %s", d.Error)
			}
			// A mismatch, once the database has spoken, is blocked whatever
			// the policy and whatever the database's state.
			if d := e.download(t, e.w.ProxyURL, testworld.TamperedZipPath+"@v1.0.0"); !strings.Contains(d.Error, "sumgate: blocked") {
				t.Fatalf("tampered zip with the database down: %q", d.Error)
			}
		})
	}
}

// proxyClient returns an HTTP client that uses the gateway and trusts
// roots.
func (e *env) proxyClient(roots *x509.CertPool) *http.Client {
	pu, _ := url.Parse("http://" + e.addr)
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(pu),
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
}

// connect sends a raw CONNECT for target and returns the status line.
func (e *env) connect(t testing.TB, target string) (status int, conn net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return 0, nil
	}
	return resp.StatusCode, c
}

// TestConnectToInternalAddressesIsRefused holds threat 9.
func TestConnectToInternalAddressesIsRefused(t *testing.T) {
	e := start(t, nil)
	for _, target := range []string{"127.0.0.1:443", "169.254.169.254:443", "10.0.0.1:443", "[::1]:443", "localhost:443", "192.168.1.1:443", "100.64.0.1:443", "0.0.0.0:443"} {
		status, c := e.connect(t, target)
		if c != nil {
			c.Close()
		}
		if status != http.StatusForbidden {
			t.Errorf("CONNECT %s: status %d, want 403", target, status)
		}
	}
}

func TestConnectPolicy(t *testing.T) {
	e := start(t, nil)
	for _, target := range []string{config.SumDBName + ":8443", "example.net:22"} {
		if status, c := e.connect(t, target); status != http.StatusForbidden {
			t.Errorf("CONNECT %s: status %d, want 403", target, status)
		} else if c != nil {
			c.Close()
		}
	}
	deny := start(t, func(c *gateway.Config) { c.Tunnel = gateway.TunnelDeny })
	if status, c := deny.connect(t, "example.net:443"); status != http.StatusForbidden {
		t.Errorf("tunnel: deny: CONNECT to a non-intercepted host: status %d", status)
	} else if c != nil {
		c.Close()
	}
}

// TestTunnelPassesBytesUntouched: a host that is not intercepted is
// spliced blindly, so the client sees the server's own certificate.
func TestTunnelPassesBytesUntouched(t *testing.T) {
	srv := newTLSServer(t, "tunnel.example")
	e := start(t, func(c *gateway.Config) { c.Resolve = map[string]string{"tunnel.example": srv.addr} })
	resp, err := e.proxyClient(srv.roots).Get("https://tunnel.example/hello")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello from tunnel.example\n" {
		t.Fatalf("body %q", body)
	}
	if got := resp.TLS.PeerCertificates[0]; !got.Equal(srv.cert) {
		t.Error("the tunnel did not deliver the server's own certificate")
	}
}

// intercepted opens a CONNECT tunnel to the public proxy host and returns
// a TLS client over it, not yet handshaken, sending sni; it is closed in
// t.Cleanup.
func (e *env) intercepted(t testing.TB, sni string, protos ...string) *tls.Conn {
	t.Helper()
	status, c := e.connect(t, config.PublicProxyHost+":443")
	if status != http.StatusOK {
		t.Fatalf("CONNECT to the proxy host: %d", status)
	}
	t.Cleanup(func() { c.Close() })
	return tls.Client(c, &tls.Config{ServerName: sni, RootCAs: pool(e.root), NextProtos: protos})
}

// TestHostSmugglingInsideTunnelIsRefused holds threat 7.
func TestHostSmugglingInsideTunnelIsRefused(t *testing.T) {
	e := start(t, nil)
	tc := e.intercepted(t, config.PublicProxyHost)
	fmt.Fprintf(tc, "GET /example.com/good/@v/list HTTP/1.1\r\nHost: %s\r\n\r\n", config.SumDBName)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "inside a tunnel") {
		t.Fatalf("smuggled Host: %d %q", resp.StatusCode, body)
	}
	if n := e.w.Requests(config.SumDBName, ""); n != 0 {
		t.Errorf("the smuggled request reached %s", config.SumDBName)
	}
}

func TestSNIMustMatchConnectTarget(t *testing.T) {
	e := start(t, nil)
	if err := e.intercepted(t, "github.com").Handshake(); err == nil {
		t.Fatal("a handshake whose SNI differs from the CONNECT target succeeded")
	}
}

func TestMetadataPassesAndBadPathsAre400(t *testing.T) {
	e := start(t, nil)
	client := e.proxyClient(pool(e.root))
	for _, tt := range []struct {
		path   string
		status int
	}{
		{"/example.com/good/@v/list", http.StatusOK},
		{"/example.com/good/@latest", http.StatusOK},
		{"/example.com/good/@v/v1.0.0.info", http.StatusOK},
		{"/example.com/nowhere/@v/v1.0.0.info", http.StatusNotFound},
		{"/example.com/nowhere/@v/v1.0.0.zip", http.StatusNotFound}, // upstream 404 passes as is
		{"/github.com/Upper/Case/@v/v1.0.0.zip", http.StatusBadRequest},
		{"/example.com/good/@v/v1.0.zip", http.StatusBadRequest},
		{"/example.com/good/@v/v1.0.0.exe", http.StatusBadRequest},
	} {
		resp, err := client.Get(e.w.ProxyURL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("GET %s: %d, want %d", tt.path, resp.StatusCode, tt.status)
		}
	}
}

func TestVerifiedResponseIsWholeWithLength(t *testing.T) {
	e := start(t, nil)
	m := e.w.Module(testworld.GoodPath, testworld.Version)
	resp, err := e.proxyClient(pool(e.root)).Get(e.w.ProxyURL + "/example.com/good/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ContentLength != int64(len(m.Zip)) || string(body) != string(m.Zip) || resp.Header.Get("X-Sumgate-Verdict") != "verified" {
		t.Fatalf("status %d, length %d of %d, verdict %q", resp.StatusCode, resp.ContentLength, len(m.Zip), resp.Header.Get("X-Sumgate-Verdict"))
	}
	if left, _ := os.ReadDir(filepath.Join(filepath.Dir(e.rootFile), "spool")); len(left) != 0 {
		t.Errorf("spool files left behind: %v", left)
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// TestBlockMessagesFitTheGoCommand: the go command prints at most 8
// lines and 648 bytes of an error response, up to the first blank line;
// every blocked verdict must fit whole, naming module, version and both
// hashes.
func TestBlockMessagesFitTheGoCommand(t *testing.T) {
	long := strings.Repeat("GET https://mirrors.aliyun.com/goproxy/sumdb/sum.golang.org/lookup/x: 503; ", 10)
	h := "h1:" + strings.Repeat("A", 44)
	longPath := "example.com/" + strings.Repeat("a-very-long-element/", 40) + "m"
	for _, vd := range []sumdb.Verdict{
		{Outcome: sumdb.Mismatch, Got: h, Want: h, TreeSize: 51421875},
		{Outcome: sumdb.Mismatch, Want: h, TreeSize: 1, Reason: "malformed zip: entry \"x\" is not a regular file (mode Lrwxrwxrwx)"},
		{Outcome: sumdb.NotFound, Got: h, Reason: "sum.golang.org has no record"},
		{Outcome: sumdb.Unavailable, Got: h, Reason: long},
		{Outcome: sumdb.SecurityError, Reason: long},
	} {
		for _, path := range []string{"github.com/some-organisation/a-rather-long-module-name/v2", longPath} {
			vd.Module.Path, vd.Module.Version, vd.Kind = path, "v2.3.4-rc.1.0.20240101000000-abcdefabcdef", sumdb.KindZip
			msg := gateway.BlockMessage(vd, gateway.UnverifiedBlock)
			lines := strings.Split(strings.TrimSuffix(msg, "\n"), "\n")
			if len(lines) > 8 || len(msg) > 648 || strings.Contains(msg, "\n\n") {
				t.Errorf("%v: %d lines, %d bytes:\n%s", vd.Outcome, len(lines), len(msg), msg)
			}
			mod := vd.Module.String()
			if !strings.HasPrefix(msg, "sumgate: blocked "+mod[:min(len(mod), 60)]) || !strings.Contains(msg, vd.Module.Version+" (zip)") ||
				(vd.Got != "" && !strings.Contains(msg, vd.Got)) || (vd.Want != "" && !strings.Contains(msg, vd.Want)) {
				t.Errorf("%v: message lacks the module or a hash:\n%s", vd.Outcome, msg)
			}
			if !strings.Contains(strings.ReplaceAll(msg, "\n", " "), vd.Advice()) {
				t.Errorf("%v: the advice is cut:\n%s", vd.Outcome, msg)
			}
		}
	}
}

func TestPlainHTTPFollowsHostPolicy(t *testing.T) {
	srv := newHTTPServer(t)
	e := start(t, func(c *gateway.Config) { c.Resolve = map[string]string{"plain.example": srv} })
	pu, _ := url.Parse("http://" + e.addr)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	for _, tt := range []struct {
		url    string
		status int
	}{
		{"http://plain.example/hi", http.StatusOK},                         // the operator resolved it
		{"http://" + config.PublicProxyHost + "/x", http.StatusForbidden},  // intercepted: https only
		{"http://127.0.0.1/", http.StatusForbidden},                        // internal address: a refusal, not an upstream failure
		{"http://169.254.169.254/latest/meta-data/", http.StatusForbidden}, // metadata
		{"http://public.example:8080/", http.StatusForbidden},              // not port 80
	} {
		resp, err := client.Get(tt.url)
		if err != nil {
			t.Fatalf("%s: %v", tt.url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %d %q, want %d", tt.url, resp.StatusCode, body, tt.status)
		}
	}
}

// truncating cuts a response body short after 100 bytes (or after) for
// paths ending in suffix: it fails the read the way a dropped connection
// does, or, with stall, sends nothing more until the request is cancelled.
type truncating struct {
	base   http.RoundTripper
	suffix string
	stall  bool
	after  int64
}

func (tr truncating) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := tr.base.RoundTrip(r)
	if err != nil || !strings.HasSuffix(r.URL.Path, tr.suffix) {
		return resp, err
	}
	var rest io.Reader = errReader{io.ErrUnexpectedEOF}
	if tr.stall {
		rest = ctxReader{r.Context()}
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(resp.Body, cmp.Or(tr.after, 100)), rest), resp.Body}
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// ctxReader blocks until ctx ends.
type ctxReader struct{ ctx context.Context }

func (c ctxReader) Read([]byte) (int, error) {
	<-c.ctx.Done()
	return 0, c.ctx.Err()
}

// TestTruncatedUpstreamNeverGivesAPartialBody holds threat 13.
func TestTruncatedUpstreamNeverGivesAPartialBody(t *testing.T) {
	var e *env
	e = start(t, func(c *gateway.Config) {
		c.Upstream = &http.Client{Transport: truncating{base: c.Upstream.Transport, suffix: ".zip"}}
	})
	resp, err := e.proxyClient(pool(e.root)).Get(e.w.ProxyURL + "/example.com/good/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "cut short") {
		t.Fatalf("status %d, body %q; want a 502 saying the download was cut short", resp.StatusCode, body)
	}
	if left, _ := os.ReadDir(filepath.Join(filepath.Dir(e.rootFile), "spool")); len(left) != 0 {
		t.Errorf("spool files left behind: %v", left)
	}
	if d := e.download(t, e.w.ProxyURL, testworld.GoodPath+"@v1.0.0"); !strings.Contains(d.Error, "502") {
		t.Errorf("go command: %q, want a 502", d.Error)
	}
}

// gitLsRemote runs the real git through the gateway.
func (e *env) gitLsRemote(t testing.TB, repoURL string) (string, error) {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed")
	}
	home := t.TempDir()
	cmd := exec.Command(gitBin, "ls-remote", repoURL)
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"HTTPS_PROXY=http://" + e.addr, "GIT_SSL_CAINFO=" + e.rootFile}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestDirectVCSIsAttributedAndPoliced holds threat 11: git traffic is
// attributed to a module path, and vcs: private-only forces public
// modules onto the verified proxy path.
func TestDirectVCSIsAttributedAndPoliced(t *testing.T) {
	for _, policy := range []gateway.VCSPolicy{gateway.VCSVerify, gateway.VCSAllow, gateway.VCSPrivateOnly, gateway.VCSDeny} {
		t.Run(string(policy), func(t *testing.T) {
			e := start(t, func(c *gateway.Config) { c.VCS = policy })
			e.w.ServeGit(t, "public/repo")
			e.w.ServeGit(t, "corp/private")
			for _, tt := range []struct {
				repo    string
				private bool
			}{{"public/repo", false}, {"corp/private", true}} {
				out, err := e.gitLsRemote(t, "https://github.com/"+tt.repo)
				// Under verify, listing refs passes: it delivers no objects.
				wantOK := policy == gateway.VCSAllow || policy == gateway.VCSVerify || (policy == gateway.VCSPrivateOnly && tt.private)
				if wantOK && (err != nil || !strings.Contains(out, "refs/tags/v1.0.0")) {
					t.Errorf("git ls-remote %s: %v\n%s", tt.repo, err, out)
				}
				if !wantOK && (err == nil || !strings.Contains(out, "403")) {
					t.Errorf("git ls-remote %s passed under vcs: %s\n%s", tt.repo, policy, out)
				}
			}
		})
	}
}

// TestIdleConnectionsAreReaped holds part of threat 13: a slow-loris
// client and a stuck tunnel are closed once idle.
func TestIdleConnectionsAreReaped(t *testing.T) {
	srv := newTLSServer(t, "tunnel.example")
	e := start(t, func(c *gateway.Config) {
		c.IdleTimeout = 300 * time.Millisecond
		c.Resolve = map[string]string{"tunnel.example": srv.addr}
	})
	closedWithin := func(c net.Conn, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		return err == nil || !(errors.As(err, &ne) && ne.Timeout()) // EOF or reset: the gateway hung up
	}
	loris, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer loris.Close()
	fmt.Fprint(loris, "CONNECT tunnel.example:443 HTTP/1.1\r\nHost: tunn")
	if !closedWithin(loris, 5*time.Second) {
		t.Error("a client that stopped mid-header was not disconnected")
	}
	status, tunnelConn := e.connect(t, "tunnel.example:443")
	if status != http.StatusOK {
		t.Fatalf("CONNECT: %d", status)
	}
	defer tunnelConn.Close()
	if !closedWithin(tunnelConn, 5*time.Second) {
		t.Error("an idle tunnel was not closed")
	}
}

// TestInterceptedConnectionsSpeakHTTP1 documents threat 18's choice:
// HTTP/2 is not offered to clients inside intercepted tunnels, so its
// stream and header floods have no server to hit there.
func TestInterceptedConnectionsSpeakHTTP1(t *testing.T) {
	// With ClientHTTP2 the go command speaks HTTP/2 and is still verified.
	h2 := start(t, func(c *gateway.Config) { c.ClientHTTP2 = true })
	if tc := h2.intercepted(t, config.PublicProxyHost, "h2", "http/1.1"); tc.Handshake() != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatal("ClientHTTP2 did not negotiate h2")
	}
	if d := h2.download(t, h2.w.ProxyURL, testworld.TamperedZipPath+"@v1.0.0"); !strings.Contains(d.Error, "sumgate: blocked") {
		t.Fatalf("over HTTP/2, a tampered zip: %q", d.Error)
	}
	if d := h2.download(t, h2.w.ProxyURL, testworld.GoodPath+"@v1.0.0"); d.Error != "" {
		t.Fatalf("over HTTP/2, a genuine module: %q", d.Error)
	}

	e := start(t, nil)
	tc := e.intercepted(t, config.PublicProxyHost, "h2", "http/1.1")
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p == "h2" {
		t.Fatalf("negotiated %q inside an intercepted tunnel", p)
	}
}

// TestConcurrentRequestsShareOneFetch: 16 clients asking for one zip at
// once cause one upstream fetch and one check, and all get the whole file.
func TestConcurrentRequestsShareOneFetch(t *testing.T) {
	// A slow upstream, so that every request arrives while the fetch runs.
	e := start(t, func(c *gateway.Config) {
		c.Upstream = &http.Client{Transport: slow{c.Upstream.Transport, 500 * time.Millisecond}}
	})
	m := e.w.Module(testworld.GoodPath, "v1.1.0")
	client := e.proxyClient(pool(e.root))
	e.w.ResetRequests()
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for range 16 {
		wg.Go(func() {
			resp, err := client.Get(e.w.ProxyURL + "/example.com/good/@v/v1.1.0.zip")
			if err != nil {
				errs <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, m.Zip) {
				errs <- fmt.Sprintf("status %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.w.Requests(config.PublicProxyHost, "/example.com/good/@v/v1.1.0.zip"); n != 1 {
		t.Errorf("16 concurrent requests made %d upstream fetches, want 1", n)
	}
}

// slow delays every response by d.
type slow struct {
	base http.RoundTripper
	d    time.Duration
}

func (s slow) RoundTrip(r *http.Request) (*http.Response, error) {
	time.Sleep(s.d)
	return s.base.RoundTrip(r)
}

// TestVerifiedFilesAreServedFromCache: a verified file is served again
// without an upstream fetch; the cache stays within its bound; and after a
// checksum-database fork nothing is served from it.
func TestVerifiedFilesAreServedFromCache(t *testing.T) {
	e := start(t, nil)
	client := e.proxyClient(pool(e.root))
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := client.Get(e.w.ProxyURL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, body
	}
	m := e.w.Module(testworld.GoodPath, testworld.Version)
	get("/example.com/good/@v/v1.0.0.zip")
	e.w.ResetRequests()
	resp, body := get("/example.com/good/@v/v1.0.0.zip")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, m.Zip) || resp.Header.Get("X-Sumgate-Cache") != "hit" {
		t.Fatalf("second download: %d, %d bytes, cache %q", resp.StatusCode, len(body), resp.Header.Get("X-Sumgate-Cache"))
	}
	if n := e.w.Requests("", ""); n != 0 {
		t.Errorf("a cached file made %d upstream requests", n)
	}
	// Blocked files are never cached.
	get("/example.com/tampered/zip/@v/v1.0.0.zip")
	if resp, _ := get("/example.com/tampered/zip/@v/v1.0.0.zip"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tampered zip, second time: %d", resp.StatusCode)
	}

	// A fork recorded later stops the cache from serving.
	e.w.SetSumDB(testworld.SumDBForked)
	get("/github.com/!upper/!case/@v/v1.0.0.mod")
	e.w.SetSumDB(testworld.SumDBHonest)
	if resp, body := get("/example.com/good/@v/v1.0.0.zip"); resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "security error") {
		t.Fatalf("after a fork: %d %q, want a 403 security error", resp.StatusCode, body)
	}
}

func TestCacheIsBounded(t *testing.T) {
	good := testworld.New(t).Module(testworld.GoodPath, testworld.Version)
	e := start(t, func(c *gateway.Config) { c.CacheMaxBytes = int64(len(good.Zip)) + 10 })
	client := e.proxyClient(pool(e.root))
	for _, p := range []string{"/example.com/good/@v/v1.0.0.zip", "/example.com/good/@v/v1.1.0.zip", "/example.com/good/@v/v1.0.0.zip"} {
		resp, err := client.Get(e.w.ProxyURL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
	var total int64
	files, _ := os.ReadDir(filepath.Join(filepath.Dir(e.rootFile), "cache"))
	for _, f := range files {
		info, _ := f.Info()
		total += info.Size()
	}
	if total > int64(len(good.Zip))+10 || len(files) != 1 {
		t.Errorf("cache holds %d files, %d bytes; bound %d", len(files), total, len(good.Zip)+10)
	}
}
