package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/testworld"
)

// running is a 'sumgate run' started by startRun.
type running struct {
	proxyURL    string   // HTTPS_PROXY
	bundle      string   // SSL_CERT_FILE
	admin       string   // admin base URL, "off" when disabled
	audit       string   // where spans go, from the banner
	transparent string   // the transparent listener, "off" when disabled
	banner      []string // the banner's lines
	exports     []string // the banner's "export K=V" lines, as K=V
	roots       *x509.CertPool
	cancel      context.CancelFunc
	status      chan int
	logs        *testworld.Buffer // what it logged
}

// startRun starts 'sumgate run' against w, with extra configuration and
// args after -config, and reads its banner.
func startRun(t testing.TB, w *testworld.World, extra string, args ...string) *running {
	t.Helper()
	return startRunResolve(t, w, w.Resolve, extra, args...)
}

// startRunResolve is startRun with upstream.resolve set to resolve.
func startRunResolve(t testing.TB, w *testworld.World, resolve map[string]string, extra string, args ...string) *running {
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
		r.status <- runCmd(ctx, append([]string{"-config", cfg}, args...), pw, r.logs)
		pw.Close()
	}()
	t.Cleanup(func() { r.stop(t) })
	banner := bufio.NewScanner(pr)
	for banner.Scan() {
		line := strings.TrimSpace(banner.Text())
		r.banner = append(r.banner, line)
		if v, ok := strings.CutPrefix(line, "export "); ok {
			r.exports = append(r.exports, v)
		}
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

// TestRunBannerPointsAtItsOwnCA: started with a relative -data-dir, run's
// banner gives absolute paths, the git setting beside SSL_CERT_FILE, and a
// 'sumgate ca export' command that prints, from any folder, the root run
// created there.
func TestRunBannerPointsAtItsOwnCA(t *testing.T) {
	w := testworld.New(t)
	t.Chdir(t.TempDir())
	r := startRun(t, w, "", "-data-dir", "state")
	dir, err := filepath.Abs("state")
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "ca", "bundle.pem")
	for _, want := range []string{
		"export SSL_CERT_FILE=" + bundle,
		"export GIT_SSL_CAINFO=" + bundle,
		"git config --global http.sslCAInfo " + bundle,
		" -data-dir " + dir + ")",
	} {
		if !slices.ContainsFunc(r.banner, func(line string) bool { return strings.Contains(line, want) }) {
			t.Errorf("the banner lacks %q:\n%s", want, strings.Join(r.banner, "\n"))
		}
	}
	var hint []string
	var fingerprint string
	for _, line := range r.banner {
		if _, cmd, ok := strings.Cut(line, "trust store: "); ok {
			hint = strings.Fields(strings.TrimSuffix(cmd, ")"))
		}
		if v, ok := strings.CutPrefix(line, "Enterprise root SHA-256: "); ok {
			fingerprint = v
		}
	}
	if len(hint) < 3 || hint[0] != "sumgate" || hint[1] != "ca" || hint[2] != "export" {
		t.Fatalf("no 'sumgate ca export' hint in the banner:\n%s", strings.Join(r.banner, "\n"))
	}

	t.Chdir(t.TempDir()) // a client's shell is elsewhere
	status, exported, stderr := runCLI(hint[1:]...)
	block, _ := pem.Decode([]byte(exported))
	if status != 0 || block == nil {
		t.Fatalf("%s: status %d\n%s%s", strings.Join(hint, " "), status, exported, stderr)
	}
	if sum := sha256.Sum256(block.Bytes); hex.EncodeToString(sum[:]) != fingerprint {
		t.Errorf("%s printed a root with fingerprint %x; run serves with %s", strings.Join(hint, " "), sum, fingerprint)
	}
	system := filepath.Join(t.TempDir(), "system.pem")
	os.WriteFile(system, []byte(exported), 0o644) // any PEM stands in for the system roots
	status, b, stderr := runCLI(append([]string{"ca", "bundle", "-system-roots", system}, hint[3:]...)...)
	if status != 0 || !strings.HasSuffix(b, exported) {
		t.Errorf("ca bundle with the hint's flags: status %d, it does not end with the root\n%s%s", status, b, stderr)
	}
}

// TestBannerSettingsServeGOPROXYDirect: a client that sets exactly what
// the banner exports fetches a module straight from its git repository
// through the gateway with the real go command and git (GOPROXY=direct).
// git ignores SSL_CERT_FILE: without GIT_SSL_CAINFO it fails with
// "server certificate verification failed". (vcs: allow, since the
// module is public: the default, private-only, refuses it with a 403.)
func TestBannerSettingsServeGOPROXYDirect(t *testing.T) {
	w := testworld.New(t)
	w.ServeGit(t, "owner/repo")
	r := startRun(t, w, "vcs: allow\n")
	out, err := testworld.GoModDownload(t, append(slices.Clone(r.exports), "GOPROXY=direct"), testworld.GitHubHost+"/owner/repo@v1.0.0")
	if err != nil || strings.Contains(string(out), `"Error"`) {
		t.Fatalf("go mod download with GOPROXY=direct and the banner's %v: %v\n%s", r.exports, err, out)
	}
}

// TestRunLogsDurationsWithUnits: a duration in the JSON log names its unit
// in the field, as duration_ms does, and is never bare nanoseconds.
func TestRunLogsDurationsWithUnits(t *testing.T) {
	w := testworld.New(t)
	w.SetSumDB(testworld.SumDBDown) // the readiness probe logs when it retries
	defer w.SetSumDB(testworld.SumDBHonest)
	r := startRun(t, w, "")
	fetch(t, r.client(), w.ProxyURL+"/"+testworld.GoodPath+"/@v/list") // mints a leaf
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(r.logs.String(), "not reachable yet"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the probe logged no retry:\n%s", r.logs)
		}
	}
	if s := r.stop(t); s != 0 {
		t.Fatalf("run exited %d", s)
	}
	for _, tt := range []struct {
		msg, field, bare string
		min, max         float64
	}{
		{"minted a leaf", "took_ms", "took", 0, 60e3},
		{"checksum database not reachable yet: not ready", "retry_in_s", "retry_in", 1, 1},
		{"draining", "timeout_s", "timeout", 30, 30},
	} {
		var rec map[string]any
		for line := range strings.Lines(r.logs.String()) {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == tt.msg {
				rec = l
				break
			}
		}
		if rec == nil {
			t.Errorf("no %q line in the log:\n%s", tt.msg, r.logs)
			continue
		}
		v, ok := rec[tt.field].(float64)
		if _, bare := rec[tt.bare]; !ok || bare || v < tt.min || v > tt.max {
			t.Errorf("%q line: %s = %v, want a number in [%v, %v], and no %q: %v", tt.msg, tt.field, rec[tt.field], tt.min, tt.max, tt.bare, rec)
		}
	}
}

// TestRunHonoursLogLevel: log_level: warn keeps the info lines of a run
// (minting a leaf, draining) out of the log; info keeps them.
func TestRunHonoursLogLevel(t *testing.T) {
	for _, tt := range []struct {
		level    string
		wantInfo bool
	}{{"warn", false}, {"info", true}} {
		t.Run(tt.level, func(t *testing.T) {
			w := testworld.New(t)
			r := startRun(t, w, "log_level: "+tt.level+"\n")
			fetch(t, r.client(), w.ProxyURL+"/"+testworld.GoodPath+"/@v/list") // mints a leaf
			if s := r.stop(t); s != 0 {
				t.Fatalf("run exited %d", s)
			}
			if got := strings.Contains(r.logs.String(), `"level":"INFO"`); got != tt.wantInfo {
				t.Errorf("log_level: %s: info lines logged: %v, want %v\n%s", tt.level, got, tt.wantInfo, r.logs)
			}
		})
	}
}

// TestRunSaysSIGHUPDoesNotReload: a configuration change needs a restart;
// SIGHUP, which would otherwise end the process without draining, is
// logged as such and the gateway goes on serving.
func TestRunSaysSIGHUPDoesNotReload(t *testing.T) {
	w := testworld.New(t)
	r := startRun(t, w, "")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(r.logs.String(), "SIGHUP: the configuration is not reloaded"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no SIGHUP line in the log:\n%s", r.logs)
		}
	}
	fetch(t, r.client(), w.ProxyURL+"/"+testworld.GoodPath+"/@v/list")
	if s := r.stop(t); s != 0 {
		t.Fatalf("run exited %d after SIGHUP", s)
	}
}

// TestRunNotifiesSystemd: under systemd's Type=notify, sumgate says
// READY=1 once it serves, feeds the watchdog at half its interval, and
// says STOPPING=1 when it drains, on the socket systemd names.
func TestRunNotifiesSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000") // 200 ms: fed every 100 ms
	got := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	wait := func(want string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-got:
				if strings.Contains(m, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no %s on the notify socket", want)
			}
		}
	}
	w := testworld.New(t)
	r := startRun(t, w, "")
	wait("READY=1")
	wait("WATCHDOG=1")
	wait("WATCHDOG=1")
	if s := r.stop(t); s != 0 {
		t.Fatalf("run exited %d", s)
	}
	wait("STOPPING=1")
}

// TestProfilerIsOffUnlessAsked: /debug/pprof/ on the admin listener
// answers only under admin_pprof: true.
func TestProfilerIsOffUnlessAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		w := testworld.New(t)
		r := startRun(t, w, fmt.Sprintf("admin_pprof: %v\n", on))
		resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Get(strings.TrimSuffix(r.admin, "/") + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.StatusCode == http.StatusOK; got != on {
			t.Errorf("admin_pprof: %v: /debug/pprof/ answered %s", on, resp.Status)
		}
		r.stop(t)
	}
}

// TestRunFailureIsTheLastLine: when run cannot start, the error is the
// last line of its standard error, after the log lines of what had
// started (the leaves minted meanwhile), and written through the same
// buffer as they are, never beside it (a plain bytes.Buffer then sees no
// concurrent writes).
func TestRunFailureIsTheLastLine(t *testing.T) {
	w := testworld.New(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := writeConfig(t, w, []string{w.ProxyURL}, "listen: 127.0.0.1:0\nadmin_listen: "+busy.Addr().String()+"\n")
	for range 3 {
		var stdout, stderr bytes.Buffer
		if status := runCmd(context.Background(), []string{"-config", cfg}, &stdout, &stderr); status != exitError {
			t.Fatalf("exit status %d, want %d\n%s", status, exitError, &stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "sumgate run: admin_listen: ") {
			t.Fatalf("last line %q, want the error\n%s", last, &stderr)
		}
	}
}
