package bench_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/sumgate/sumgate/internal/testworld"
)

var (
	peers = flag.Bool("sumgate.peers", false,
		"run TestPeerRace: go mod download through sumgate, Squid and mitmproxy, timed (minutes; bench/peers.sh sets it)")
	rounds = flag.Int("sumgate.rounds", 7,
		"TestPeerRace's rounds; each runs every route once, in a shuffled order")
	largeMiB = flag.Int64("sumgate.large-mib", 32,
		"content of each of TestPeerRace's two large modules, MiB")
	requirePeers = flag.Bool("sumgate.require-peers", false,
		"fail TestPeerRace, instead of skipping it, when squid (squid-openssl) or mitmdump is missing")
)

// The workload: 20 small modules of about 48 KiB of content and two large
// ones of -sumgate.large-mib MiB, as in gateway's BenchmarkGoModDownload.
const (
	smallModules = 20
	smallSize    = 48 << 10
)

// A route is one way for the go command to reach the test world's module
// proxy. Every route downloads the same bytes from the same world; the
// proxies differ only in what they do in between.
type route struct {
	name string
	// prepare readies one timed download (untimed) and returns the go
	// command's environment for it, and what to do after it (untimed),
	// or nil.
	prepare func(t *testing.T) (env []string, after func())
}

// TestPeerRace times `go mod download` (the real go command, a fresh
// module cache each time, GOSUMDB=off) of the workload through each route,
// in rounds. Each round runs every route once, in a shuffled order, and
// divides each route's time by that round's direct time; the table gives
// each route's median ratio, its range and its median time. Nothing here
// passes or fails on time; a download that fails, misses a module or
// brings other bytes than the world's fails the test.
//
// The routes, and the GOPROXY each gives the go command:
//
//   - direct: GOPROXY=https://127.0.0.1:PORT (the world's own address,
//     DirectProxyURL), no proxy. One TLS connection, client to world: the
//     baseline every ratio divides by.
//   - sumgate-cold: a new `sumgate run` process with an empty data_dir (no
//     leaves, no proven hashes, no cache), started before the clock and
//     stopped after it; every file is fetched, spooled and verified.
//   - sumgate-warm: one long-lived process, primed by one download: its
//     verified-file cache answers.
//   - sumgate-warm-nocache: one long-lived process with cache_max_mb: 0,
//     primed: leaves and proven hashes are warm, but every file is fetched
//     and verified again, as for a version no one has asked for lately.
//   - squid: Squid (Debian squid-openssl) bumping TLS with a CA of its own,
//     with `cache deny all`, long-lived and primed (its leaves minted).
//   - mitmproxy: mitmdump (Debian mitmproxy), with a CA of its own,
//     long-lived and primed.
//
// Every proxy route is HTTPS_PROXY=http://127.0.0.1:PORT, so the client
// sends CONNECT and then TLS to the proxy, which opens its own TLS
// connection to the world: two TLS hops, client to proxy to world,
// verified at both ends. The client trusts only the proxy's CA
// (SSL_CERT_FILE), so a download that bypassed the proxy would fail; each
// proxy trusts the world's root for its upstream connections. The sumgate
// routes use GOPROXY=https://proxy.golang.org, which sumgate resolves to the
// world by its upstream.resolve; it intercepts only port 443. Squid and
// mitmproxy get GOPROXY=https://proxy.golang.org:PORT, the world's port,
// and resolve the name to 127.0.0.1 themselves: Squid by a hosts_file,
// mitmproxy by an addon that sets the server address. (The go command never
// sends a loopback address through a proxy, so GOPROXY=https://127.0.0.1
// would bypass them.) Each peer runs as its package ships, but for what the
// benchmark needs: Squid's caching is off, as sumgate-warm-nocache's is,
// and mitmproxy keeps its defaults (HTTP/2 where both ends offer it, whole
// bodies buffered). The machine's /etc/hosts is never read for the
// world's names, nor changed.
func TestPeerRace(t *testing.T) {
	if !*peers {
		t.Skip("the peer race runs only with -sumgate.peers, as bench/peers.sh does: it takes minutes and needs squid-openssl and mitmproxy")
	}
	if *rounds < 1 || *largeMiB < 1 {
		t.Fatalf("-sumgate.rounds (%d) and -sumgate.large-mib (%d) must be at least 1", *rounds, *largeMiB)
	}
	squid, certgen := findSquid(t)
	mitmdump := findTool(t, "mitmdump", "mitmproxy")

	w := testworld.New(t)
	var mods []*testworld.Module
	for i := range smallModules {
		mods = append(mods, w.PublishGenerated(t, fmt.Sprintf("example.com/peers/small%d", i), smallSize))
	}
	for i := range 2 {
		mods = append(mods, w.PublishGenerated(t, fmt.Sprintf("example.com/peers/large%d", i), *largeMiB<<20))
	}
	download := func(t *testing.T, env []string) {
		t.Helper()
		args := make([]string, len(mods))
		for i, m := range mods {
			args[i] = m.String()
		}
		out, err := testworld.GoModDownload(t, env, args...)
		if err != nil {
			t.Fatalf("go mod download: %v\n%s", err, out)
		}
		if err := checkDownload(out, mods); err != nil {
			t.Fatalf("go mod download: %v\n%s", err, out)
		}
	}

	bin := filepath.Join(t.TempDir(), "sumgate")
	if out, err := exec.Command(testworld.GoBinary(t), "build", "-o", bin, "github.com/sumgate/sumgate/cmd/sumgate").CombinedOutput(); err != nil {
		t.Fatalf("building sumgate: %v\n%s", err, out)
	}
	_, worldPort, err := net.SplitHostPort(w.Addr)
	if err != nil {
		t.Fatal(err)
	}
	peerProxy := w.ProxyURL + ":" + worldPort // see the doc comment: the peers resolve the name themselves
	via := func(proxyURL, goproxy, certFile string) []string {
		return []string{"GOPROXY=" + goproxy, "HTTPS_PROXY=" + proxyURL, "SSL_CERT_FILE=" + certFile}
	}
	warm := startSumgate(t, bin, w, "")
	nocache := startSumgate(t, bin, w, "cache_max_mb: 0\n")
	sq := startSquid(t, squid, certgen, w)
	mitm := startMitmproxy(t, mitmdump, w)
	fixed := func(env []string) func(*testing.T) ([]string, func()) {
		return func(*testing.T) ([]string, func()) { return env, nil }
	}
	routes := []route{
		{"direct", fixed([]string{"GOPROXY=" + w.DirectProxyURL(), "SSL_CERT_FILE=" + w.RootsFile})},
		{"sumgate-cold", func(t *testing.T) ([]string, func()) {
			cold := startSumgate(t, bin, w, "")
			return via(cold.proxyURL, w.ProxyURL, cold.bundle), cold.stop
		}},
		{"sumgate-warm", fixed(via(warm.proxyURL, w.ProxyURL, warm.bundle))},
		{"sumgate-warm-nocache", fixed(via(nocache.proxyURL, w.ProxyURL, nocache.bundle))},
		{"squid", fixed(via(sq.proxyURL, peerProxy, sq.caFile))},
		{"mitmproxy", fixed(via(mitm.proxyURL, peerProxy, mitm.caFile))},
	}

	t.Logf("command: go test -v -count=1 -timeout 60m -run '^TestPeerRace$' ./bench/ -args -sumgate.peers -sumgate.require-peers=%v -sumgate.rounds=%d -sumgate.large-mib=%d",
		*requirePeers, *rounds, *largeMiB)
	t.Logf("workload: go mod download of %d modules of %d KiB and 2 of %d MiB (content), a fresh module cache each time", smallModules, smallSize>>10, *largeMiB)
	t.Logf("machine: %d CPUs, %s %s/%s; %s; %s", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		firstLine(exec.Command(squid, "-v")), firstLine(exec.Command(mitmdump, "--version")))

	// Prime the long-lived routes (and the go command's own files in the
	// page cache), checking each once before any is timed.
	t.Run("prime", func(t *testing.T) {
		for _, r := range routes {
			env, after := r.prepare(t)
			download(t, env)
			if after != nil {
				after()
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	secs := make(map[string][]float64)   // route -> seconds, one per round
	ratios := make(map[string][]float64) // route -> seconds / that round's direct seconds
	var longest time.Duration
	for round := 1; round <= *rounds; round++ {
		if deadline, ok := t.Deadline(); ok && time.Until(deadline) < 2*longest+time.Minute {
			// A test that times out exits without its cleanups, leaving
			// the proxies running; stop in time instead.
			t.Fatalf("round %d would outlast -timeout (a round takes up to %v): run with a longer -timeout", round, longest.Round(time.Second))
		}
		start := time.Now()
		ok := t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			order := slices.Clone(routes)
			mrand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			took := make(map[string]float64)
			var line []string
			for _, r := range order {
				env, after := r.prepare(t)
				begin := time.Now()
				download(t, env)
				took[r.name] = time.Since(begin).Seconds()
				if after != nil {
					after()
				}
				line = append(line, fmt.Sprintf("%s %.2fs", r.name, took[r.name]))
			}
			t.Log(strings.Join(line, ", "))
			for name, s := range took {
				secs[name] = append(secs[name], s)
				ratios[name] = append(ratios[name], s/took["direct"])
			}
		})
		if !ok {
			t.FailNow()
		}
		longest = max(longest, time.Since(start))
	}

	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "route\ttime / direct, median\tmin–max\tmedian time\n")
	for _, r := range routes {
		rs := ratios[r.name]
		fmt.Fprintf(tw, "%s\t%.2f×\t%.2f–%.2f\t%.2f s\n", r.name, median(rs), slices.Min(rs), slices.Max(rs), median(secs[r.name]))
	}
	tw.Flush()
	t.Logf("%d rounds, each route once per round in a shuffled order; ratios taken within each round:\n%s", *rounds, table.String())
}

// checkDownload checks the output of `go mod download -json`: one object
// per module of mods, each without an error and with the zip and go.mod
// hashes the world's checksum database logs for it.
func checkDownload(out []byte, mods []*testworld.Module) error {
	want := make(map[string]*testworld.Module)
	for _, m := range mods {
		want[m.String()] = m
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var got struct{ Path, Version, Error, Sum, GoModSum string }
		if err := dec.Decode(&got); err != nil {
			return fmt.Errorf("reading its output: %w", err)
		}
		key := got.Path + "@" + got.Version
		m := want[key]
		switch {
		case got.Error != "":
			return fmt.Errorf("%s: %s", key, got.Error)
		case m == nil:
			return fmt.Errorf("%s: not asked for, or listed twice", key)
		case got.Sum != m.ZipHash || got.GoModSum != m.ModHash:
			return fmt.Errorf("%s: hashes %s %s, the world's are %s %s", key, got.Sum, got.GoModSum, m.ZipHash, m.ModHash)
		}
		delete(want, key)
	}
	if len(want) > 0 {
		return fmt.Errorf("%d modules missing from its output", len(want))
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// firstLine runs cmd and returns the first line of its output, or why not.
func firstLine(cmd *exec.Cmd) string {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s: %v", cmd.Path, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// missing skips t, or fails it under -sumgate.require-peers, for a peer
// that is not installed.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + "; bench/peers.sh installs it"
	if *requirePeers {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// findTool returns the path of the command name, from Debian package pkg.
func findTool(t *testing.T, name, pkg string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/bin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	missing(t, "%s is not installed (Debian package %s)", name, pkg)
	return ""
}

// findSquid returns the paths of a squid built with OpenSSL, which ssl-bump
// needs, and of its certificate generator.
func findSquid(t *testing.T) (squid, certgen string) {
	t.Helper()
	squid = findTool(t, "squid", "squid-openssl")
	out, err := exec.Command(squid, "-v").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--with-openssl") {
		missing(t, "%s is not built with OpenSSL, which ssl-bump needs (Debian package squid-openssl, not squid): %v", squid, err)
	}
	certgen = "/usr/lib/squid/security_file_certgen"
	if _, err := os.Stat(certgen); err != nil {
		missing(t, "squid's certificate generator: %v", err)
	}
	return squid, certgen
}

// proc is a process started by startProc, in a process group of its own.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testworld.Buffer // its standard output and error
	done chan struct{}     // closed once it has exited
	once sync.Once
}

// startProc starts cmd, with its output in the returned proc's out, in a
// process group of its own that is killed if the test binary dies, and
// stops the group in t.Cleanup (see stop).
func startProc(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &testworld.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop sends SIGTERM to the process's group, waits up to 20 seconds for
// the process to exit, then kills what is left of the group. Later calls
// do nothing.
func (p *proc) stop() {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
		}
		syscall.Kill(-pgid, syscall.SIGKILL) // helpers (squid's) that outlived it
		<-p.done
	})
}

// waitFor polls ready until it holds, failing t if the process exits or
// 60 seconds pass first.
func (p *proc) waitFor(t testing.TB, what string, ready func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ready(); {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s: %v\n%s", p.name, what, p.cmd.ProcessState, p.out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within a minute\n%s", p.name, what, p.out)
		}
	}
}

// listening reports whether something accepts TCP connections at addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// freePort returns a loopback TCP port that was free a moment ago, for
// the peers, which cannot report a port they chose themselves.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proxy is a running proxy: what a client needs to use it.
type proxy struct {
	proxyURL string // HTTPS_PROXY
	caFile   string // the CA the client trusts (SSL_CERT_FILE)
	bundle   string // sumgate's bundle: the system roots and its root
	stop     func() // stops it before the test ends
}

// startSumgate runs bin as `sumgate run` in front of w with a new data
// directory, extra appended to its configuration, and returns it once its
// banner says where it listens.
func startSumgate(t testing.TB, bin string, w *testworld.World, extra string) proxy {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sumgate.yaml")
	text := "data_dir: " + filepath.Join(dir, "data") + "\nlisten: 127.0.0.1:0\nadmin_listen: \"off\"\n" + w.UpstreamConfig(w.RootsFile) + extra
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "sumgate", exec.Command(bin, "run", "-config", cfg))
	var g proxy
	p.waitFor(t, "its banner", func() bool {
		out := p.out.String()
		lines := strings.Split(out[:strings.LastIndexByte(out, '\n')+1], "\n")
		for _, line := range lines {
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, "export HTTPS_PROXY="); ok {
				g.proxyURL = v
			}
			if v, ok := strings.CutPrefix(line, "export SSL_CERT_FILE="); ok {
				g.bundle = v
			}
		}
		return g.proxyURL != "" && g.bundle != ""
	})
	g.stop = p.stop
	return g
}

// startSquid runs squid bumping TLS with a CA of its own and caching
// nothing, in a folder of its own, resolving w's hosts by a hosts_file,
// and returns it once it accepts connections. Run as root, it runs as the
// user proxy, as Debian's squid does.
func startSquid(t testing.TB, squid, certgen string, w *testworld.World) proxy {
	t.Helper()
	// Not t.TempDir: its parent is private to root, and squid may run as proxy.
	dir, err := os.MkdirTemp("", "sumgate-peers-squid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after stopping squid: cleanups run last first
	file := func(name string) string { return filepath.Join(dir, name) }
	caFile, keyFile := writeCA(t, dir)
	roots, err := os.ReadFile(w.RootsFile)
	if err != nil {
		t.Fatal(err)
	}
	var hosts strings.Builder
	for host, addr := range w.Resolve {
		ip, _, _ := net.SplitHostPort(addr)
		fmt.Fprintf(&hosts, "%s %s\n", ip, host)
	}
	for name, data := range map[string]string{"roots.pem": string(roots), "hosts": hosts.String()} {
		if err := os.WriteFile(file(name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(certgen, "-c", "-s", file("ssl_db"), "-M", "16MB").CombinedOutput(); err != nil {
		t.Fatalf("creating squid's certificate database: %v\n%s", err, out)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	conf := strings.Join([]string{
		"http_port " + addr + " ssl-bump tls-cert=" + caFile + " tls-key=" + keyFile +
			" generate-host-certificates=on dynamic_cert_mem_cache_size=16MB",
		"sslcrtd_program " + certgen + " -s " + file("ssl_db") + " -M 16MB",
		"sslcrtd_children 4 startup=1 idle=1",
		"acl step1 at_step SslBump1",
		"ssl_bump peek step1",
		"ssl_bump bump all",
		"tls_outgoing_options cafile=" + file("roots.pem"),
		"hosts_file " + file("hosts"),
		"http_access allow all", // it listens on loopback only
		"cache deny all",
		"visible_hostname sumgate-peers",
		"pid_filename " + file("squid.pid"),
		"cache_log " + file("cache.log"),
		"access_log stdio:" + file("access.log"),
		"coredump_dir " + dir,
		"netdb_filename none",
		"pinger_enable off",
		"icp_port 0",
		"htcp_port 0",
		"shutdown_lifetime 1 seconds",
	}, "\n") + "\n"
	if err := os.WriteFile(file("squid.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(squid, "-N", "-f", file("squid.conf"))
	cmd.Dir = dir
	if os.Geteuid() == 0 {
		uid, gid := lookupUser(t, "proxy")
		chownAll(t, dir, uid, gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	p := startProc(t, "squid", cmd)
	p.waitFor(t, "listening on "+addr, func() bool { return listening(addr) })
	return proxy{proxyURL: "http://" + addr, caFile: caFile, stop: p.stop}
}

// startMitmproxy runs mitmdump with its configuration folder (and so the
// CA it creates) in a temporary folder, trusting w's root upstream and
// resolving w's hosts by an addon, and returns it once it accepts
// connections.
func startMitmproxy(t testing.TB, mitmdump string, w *testworld.World) proxy {
	t.Helper()
	dir := t.TempDir()
	hosts := make(map[string]string)
	for host, addr := range w.Resolve {
		hosts[host], _, _ = net.SplitHostPort(addr)
	}
	hostsJSON, err := json.Marshal(hosts)
	if err != nil {
		t.Fatal(err)
	}
	addon := filepath.Join(dir, "resolve.py")
	if err := os.WriteFile(addon, []byte(`"""Resolves the test world's host names, as squid's hosts_file does."""
HOSTS = `+string(hostsJSON)+`

def server_connect(data):
    host, port = data.server.address
    if host in HOSTS:
        data.server.address = (HOSTS[host], port)
`), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := startProc(t, "mitmdump", exec.Command(mitmdump,
		"--listen-host", "127.0.0.1", "--listen-port", strconv.Itoa(port),
		"--set", "confdir="+dir,
		"--set", "ssl_verify_upstream_trusted_ca="+w.RootsFile,
		"--set", "flow_detail=0",
		"-s", addon))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	caFile := filepath.Join(dir, "mitmproxy-ca-cert.pem")
	p.waitFor(t, "listening on "+addr, func() bool {
		_, err := os.Stat(caFile)
		return err == nil && listening(addr)
	})
	return proxy{proxyURL: "http://" + addr, caFile: caFile, stop: p.stop}
}

// writeCA writes a new self-signed RSA CA (as Squid's documentation makes
// one) into dir and returns its certificate and key files.
func writeCA(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sumgate peer race throwaway squid CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := errors.Join(
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644),
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600),
	); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// lookupUser returns the user and group ids of the user name.
func lookupUser(t testing.TB, name string) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("squid runs as %s when started as root: %v", name, err)
	}
	id, err1 := strconv.ParseUint(u.Uid, 10, 32)
	g, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return uint32(id), uint32(g)
}

// chownAll gives dir and everything in it to uid and gid.
func chownAll(t testing.TB, dir string, uid, gid uint32) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(uid), int(gid))
	})
	if err != nil {
		t.Fatal(err)
	}
}
