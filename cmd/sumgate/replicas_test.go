package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/etcdtest"
	"github.com/sumgate/sumgate/internal/testworld"
)

// End-to-end tests of replicas sharing their state through etcd: each
// replica is a real 'sumgate run' with a data directory of its own, all
// on one real etcd (internal/etcdtest), and clients are the real go
// command with its own checks off (threat 5), so that only sumgate stands
// between it and the bytes.
//
// The tests that start replicas do not run in parallel: the replicas of
// one test binary share one process, and certmagic keeps the issuances in
// flight in a package-level map keyed by host name, so a CA that needs a
// leaf while another CA of the process obtains one for the same name waits
// for that one and then finds nothing in its own cache (the handshake, or
// pre-minting, fails). In production each replica is a process of its own.

// etcdState is the state section of a replica's configuration.
type etcdState struct {
	endpoint string             // the etcd client endpoint the replica dials
	tls      *etcdtest.TLSFiles // client TLS, for an https endpoint
	timeout  time.Duration      // dial_timeout; 2s if zero
}

// yaml returns the configuration's state section.
func (s etcdState) yaml() string {
	timeout := s.timeout
	if timeout == 0 {
		// Short, so that a request that needs etcd while it is away
		// fails closed in seconds, not the default 5 s per request.
		timeout = 2 * time.Second
	}
	y := fmt.Sprintf("state:\n  backend: etcd\n  etcd:\n    endpoints: [%s]\n    dial_timeout: %v\n", s.endpoint, timeout)
	if s.tls != nil {
		y += fmt.Sprintf("    tls:\n      ca: %s\n      cert: %s\n      key: %s\n", s.tls.CA, s.tls.ClientCert, s.tls.ClientKey)
	}
	return y
}

// replicaConfig writes a configuration file for w with st's state, as a
// replica's, and returns its path.
func replicaConfig(t testing.TB, w *testworld.World, st etcdState) string {
	t.Helper()
	return writeConfig(t, w, append([]string{w.ProxyURL}, w.MirrorURLs...), st.yaml())
}

// goModule is what the go command prints for one module with -json.
type goModule struct {
	Path, Version, Error, Zip, GoMod string
}

// goDownload runs the real go command through r for mod (path@version),
// with a fresh module cache, and returns what it printed for mod (an
// Error if it printed nothing), all it printed (standard error too, on
// failure), and the module cache. It may run on any goroutine.
func goDownload(t testing.TB, w *testworld.World, r *running, mod string) (goModule, string, string) {
	t.Helper()
	modcache := filepath.Join(t.TempDir(), "modcache")
	out, _ := testworld.GoModDownload(t, []string{"GOPROXY=" + w.ProxyURL, "HTTPS_PROXY=" + r.proxyURL, "SSL_CERT_FILE=" + r.bundle,
		"GOMODCACHE=" + modcache}, mod) // the last value of a variable wins
	var m goModule
	if err := json.NewDecoder(bytes.NewReader(out)).Decode(&m); err != nil {
		m = goModule{Error: "the go command printed no JSON: " + err.Error()}
	}
	return m, string(out), modcache
}

// mustDownload is goDownload that fails t unless mod was downloaded.
func mustDownload(t testing.TB, w *testworld.World, r *running, who, mod string) {
	t.Helper()
	if m, out, _ := goDownload(t, w, r, mod); m.Error != "" || m.Zip == "" {
		t.Fatalf("go mod download %s through %s: %s\n%s", mod, who, m.Error, out)
	}
}

// adminGet GETs path on r's admin listener and returns the status and body.
func (r *running) adminGet(t testing.TB, path string) (int, string) {
	t.Helper()
	status, body := fetch(t, &http.Client{Timeout: 10 * time.Second}, r.admin+path)
	return status, string(body)
}

// metric returns the sum of r's samples of name with the labels in want,
// 0 when there is none.
func (r *running) metric(t testing.TB, name string, want ...string) float64 {
	t.Helper()
	_, text := r.adminGet(t, "/metrics")
	v, _ := metricValue(text, name, want...)
	return v
}

// waitFor polls cond every 50ms until it holds, failing t with what after
// limit.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", limit, what)
		}
	}
}

// sharedKey returns the etcd key of name in the shared state of w's
// checksum database, under the default prefix.
func sharedKey(w *testworld.World, name string) string {
	n, rest, _ := strings.Cut(w.SumDBKey, "+")
	h, _, _ := strings.Cut(rest, "+")
	return "/sumgate/sumdb/" + n + "+" + h + "/" + name
}

// lookups counts the lookups w's checksum database served, directly and
// through the module proxies' /sumdb/.
func lookups(w *testworld.World) int {
	n := w.Requests(config.SumDBName, "/lookup/")
	for _, u := range append([]string{w.ProxyURL}, w.MirrorURLs...) {
		host, prefix, _ := strings.Cut(strings.TrimPrefix(u, "https://"), "/")
		if prefix != "" {
			prefix = "/" + prefix
		}
		n += w.Requests(host, prefix+"/sumdb/"+config.SumDBName+"/lookup/")
	}
	return n
}

const alertMetric = "sumgate_sumdb_alert"

// TestForkSeenByOneReplicaBlocksEveryReplica holds threat 21 end to end:
// three replicas share one etcd; a fork shown to one of them blocks every
// download on all three within seconds, versions proven before the fork
// included, until an operator runs 'sumgate alert clear', which every
// replica logs with who cleared it.
func TestForkSeenByOneReplicaBlocksEveryReplica(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.Start(t)
	st := etcdState{endpoint: srv.Endpoints[0]}
	replicas := map[string]*running{}
	for _, name := range []string{"A", "B", "C"} {
		replicas[name] = startRun(t, w, st.yaml())
	}
	a, b, c := replicas["A"], replicas["B"], replicas["C"]
	good := testworld.GoodPath + "@" + testworld.Version
	next := testworld.GoodPath + "@" + testworld.NextVersion
	mustDownload(t, w, a, "A", good) // the shared tree head moves forward

	w.SetSumDB(testworld.SumDBForked)
	m, out, _ := goDownload(t, w, b, next)
	w.SetSumDB(testworld.SumDBHonest) // A and C learn of the fork from etcd alone
	if msg := strings.Join(strings.Fields(m.Error), " "); !strings.Contains(msg, "403 Forbidden") || !strings.Contains(msg, "security error") {
		t.Fatalf("B shown the fork: %q, want a 403 naming the security error\n%s", m.Error, out)
	}

	for name, r := range replicas {
		waitFor(t, 10*time.Second, name+" reports the alert ("+alertMetric+" 1)", func() bool {
			return r.metric(t, alertMetric, `sumgate_sumdb_name="`+config.SumDBName+`"`) == 1
		})
	}
	for _, tt := range []struct {
		name string
		r    *running
		mod  string
	}{
		{"A, a version it proved before the fork", a, good},
		{"C", c, good},
		{"B", b, testworld.UpperPath + "@" + testworld.Version},
	} {
		m, out, _ := goDownload(t, w, tt.r, tt.mod)
		if msg := strings.Join(strings.Fields(m.Error), " "); !strings.Contains(msg, "403 Forbidden") || // the go command wraps the body
			!strings.Contains(msg, "security error") || !strings.Contains(msg, "sumgate alert clear") {
			t.Errorf("%s after the fork: %q, want a 403 security error saying how to clear it\n%s", tt.name, m.Error, out)
		}
	}

	cfg := replicaConfig(t, w, st)
	status, stdout, stderr := runCLI("alert", "clear", "-config", cfg, "-by", "alice@corp.example")
	if status != 0 || !strings.Contains(stdout, "cleared the security alert, by alice@corp.example") {
		t.Fatalf("sumgate alert clear: status %d\n%s%s", status, stdout, stderr)
	}
	for name, r := range replicas {
		// The alert is off before the replica's log line (written through
		// its log buffer) says who cleared it: wait for both.
		waitFor(t, 10*time.Second, name+" learns the alert was cleared, and logs it", func() bool {
			log := r.logs.String()
			return r.metric(t, alertMetric) == 0 && strings.Contains(log, "security alert cleared: serving again") && strings.Contains(log, "alice@corp.example")
		})
		if log := r.logs.String(); !strings.Contains(log, "security alert cleared: serving again") || !strings.Contains(log, "alice@corp.example") {
			t.Errorf("%s does not log who cleared the alert:\n%s", name, log)
		}
	}
	mustDownload(t, w, a, "A after the clearance", good)
	mustDownload(t, w, b, "B after the clearance", next)
	mustDownload(t, w, c, "C after the clearance", next)
}

// TestEtcdOutageFailsClosed: while etcd is away, a replica serves only
// what it proved before on its own disk; a version that needs a lookup is
// a 403 that says the shared state is unavailable, even under
// on_unverified: allow, no byte of its files reaches the client, and
// /readyz is 503. Once etcd is back the replica
// serves again within seconds, the same download included.
func TestEtcdOutageFailsClosed(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.Start(t)
	fwd := srv.Forward(t) // the replica's one address for etcd, across the restart
	// Each request that needs etcd while it is away waits dial_timeout.
	// on_unverified: allow passes what the database cannot answer for; a
	// replica without its shared state is blocked all the same.
	r := startRun(t, w, etcdState{endpoint: fwd.Endpoint(), timeout: time.Second}.yaml()+"on_unverified: allow\n")
	good := testworld.GoodPath + "@" + testworld.Version
	next := testworld.GoodPath + "@" + testworld.NextVersion
	mustDownload(t, w, r, "the replica", good)
	waitReady(t, &http.Client{Timeout: 10 * time.Second}, r.admin, http.StatusOK)

	fwd.Cut() // ends the replica's streams, which etcd would otherwise wait for
	srv.Stop()
	fwd.Resume()
	m, out, modcache := goDownload(t, w, r, next)
	if msg := strings.Join(strings.Fields(m.Error), " "); !strings.Contains(msg, "403 Forbidden") ||
		!strings.Contains(msg, "sumgate: blocked "+next+" (go.mod): shared state unavailable") {
		t.Errorf("a new version while etcd is away: %q, want a 403 whose verdict is that the shared state is unavailable\n%s", m.Error, out)
	}
	for _, ext := range []string{".zip", ".mod"} {
		file := filepath.Join(modcache, "cache", "download", testworld.GoodPath, "@v", testworld.NextVersion+ext)
		if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the module cache holds %s while etcd is away (%v)", file, err)
		}
	}
	if status, body := r.adminGet(t, "/readyz"); status != http.StatusServiceUnavailable || !strings.Contains(body, "shared state unavailable") {
		t.Errorf("/readyz while etcd is away: %d %q, want 503 saying the shared state is unavailable", status, body)
	}
	// Proven on this replica's disk before: still served.
	mustDownload(t, w, r, "the replica while etcd is away, a version it proved", good)

	srv.Restart(t)
	waitFor(t, 30*time.Second, "/readyz 200 after etcd came back", func() bool {
		status, _ := r.adminGet(t, "/readyz")
		return status == http.StatusOK
	})
	mustDownload(t, w, r, "the replica once etcd is back", next)
}

// TestForkAfterEtcdRestartBlocksEveryReplica: the replicas' watch of the
// alert outlives an etcd outage: a fork one replica sees after etcd came
// back still reaches the others.
func TestForkAfterEtcdRestartBlocksEveryReplica(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.Start(t)
	fwd := srv.Forward(t)
	st := etcdState{endpoint: fwd.Endpoint(), timeout: time.Second}
	a, b := startRun(t, w, st.yaml()), startRun(t, w, st.yaml())
	mustDownload(t, w, a, "A", testworld.GoodPath+"@"+testworld.Version)

	fwd.Cut()
	srv.Stop()
	fwd.Resume()
	srv.Restart(t)
	for name, r := range map[string]*running{"A": a, "B": b} {
		waitFor(t, 30*time.Second, name+" ready after etcd came back", func() bool {
			status, _ := r.adminGet(t, "/readyz")
			return status == http.StatusOK
		})
	}

	w.SetSumDB(testworld.SumDBForked)
	m, out, _ := goDownload(t, w, b, testworld.GoodPath+"@"+testworld.NextVersion)
	w.SetSumDB(testworld.SumDBHonest)
	if !strings.Contains(m.Error, "security error") {
		t.Fatalf("B shown the fork: %q, want a security error\n%s", m.Error, out)
	}
	waitFor(t, 10*time.Second, "A learns of the fork B saw", func() bool {
		return a.metric(t, alertMetric) == 1
	})
}

// TestReplicaBannerBundleExists: with leaves in etcd and an imported CA
// (ca.cert and ca.key), as replicas run, nothing else creates
// data_dir/ca; the banner's SSL_CERT_FILE must exist all the same, so that
// a client that sets what the banner exports trusts the gateway.
func TestReplicaBannerBundleExists(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.Start(t)
	r := startRun(t, w, etcdState{endpoint: srv.Endpoints[0]}.yaml()+importedCA(t)) // reads the bundle
	mustDownload(t, w, r, "the gateway", testworld.GoodPath+"@"+testworld.Version)
}

// importedCA makes a root with 'sumgate ca init' and returns the
// configuration that imports it (ca.cert and ca.key), as replicas that
// share one CA are configured.
func importedCA(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if status, stdout, stderr := runCLI("ca", "init", "-data-dir", dir); status != 0 {
		t.Fatalf("sumgate ca init: %d\n%s%s", status, stdout, stderr)
	}
	return fmt.Sprintf("ca:\n  cert: %s\n  key: %s\n", filepath.Join(dir, "ca", "root.crt"), filepath.Join(dir, "ca", "root.key"))
}

// TestReplicasShareLeaves: replicas holding the same CA mint each
// intercepted name once: the second serves the leaf the first minted,
// the same serial, and mints none.
func TestReplicasShareLeaves(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.Start(t)
	extra := etcdState{endpoint: srv.Endpoints[0]}.yaml() + importedCA(t) // one CA for both
	minted := `sumgate_certs_minted_total`
	a := startRun(t, w, extra)
	// A pre-mints the leaf of every name listed.
	waitFor(t, 30*time.Second, "A mints a leaf for every intercepted name", func() bool {
		return a.metric(t, minted, `outcome="ok"`) == float64(len(w.Resolve))
	})
	b := startRun(t, w, extra)
	for host := range w.Resolve {
		sa, sb := connectSerial(t, a, host), connectSerial(t, b, host)
		if sa != sb {
			t.Errorf("%s: A serves serial %s, B %s: B minted its own", host, sa, sb)
		}
	}
	if n := b.metric(t, minted); n != 0 {
		t.Errorf("B minted %v leaves, want 0: A minted every one", n)
	}
}

// connectSerial handshakes with host through r's CONNECT and returns the
// serial number of the leaf r presents.
func connectSerial(t testing.TB, r *running, host string) string {
	t.Helper()
	pu, err := url.Parse(r.proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", pu.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s through %s: %v %v", host, r.proxyURL, resp, err)
	}
	if br.Buffered() > 0 {
		t.Fatalf("CONNECT %s: bytes after the response", host)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: r.roots})
	if err := tc.HandshakeContext(context.Background()); err != nil {
		t.Fatalf("TLS handshake with %s through %s: %v", host, r.proxyURL, err)
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestReplicasShareProofs: a version one replica proved costs another no
// lookup: it reads the record and tiles from etcd and checks them itself.
// etcd is reached over TLS with a client certificate, as in production.
func TestReplicasShareProofs(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.StartTLS(t)
	st := etcdState{endpoint: srv.Endpoints[0], tls: srv.TLS}
	a, b := startRun(t, w, st.yaml()), startRun(t, w, st.yaml())
	mustDownload(t, w, a, "A", testworld.GoodPath+"@"+testworld.Version)
	if lookups(w) == 0 {
		t.Fatal("A looked nothing up: the count is wrong")
	}
	// A shares the proof in the background, after answering.
	etcd := srv.Client(t)
	record := sharedKey(w, "cache/lookup/"+testworld.GoodPath+"@"+testworld.Version)
	waitFor(t, 10*time.Second, "A shares the record in etcd", func() bool {
		resp, err := etcd.Get(context.Background(), record, clientv3.WithCountOnly())
		return err == nil && resp.Count == 1
	})
	w.ResetRequests()
	mustDownload(t, w, b, "B", testworld.GoodPath+"@"+testworld.Version)
	if n := lookups(w); n != 0 {
		t.Errorf("B looked up a version A proved %d times, want 0", n)
	}
}

// TestConcurrentDownloadsAcrossReplicasLookUpOnce: replicas asked for the
// same new version at once look it up once between them: the second waits
// for the first's claim, then checks the record the first shared.
func TestConcurrentDownloadsAcrossReplicasLookUpOnce(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.Start(t)
	st := etcdState{endpoint: srv.Endpoints[0]}
	a, b := startRun(t, w, st.yaml()), startRun(t, w, st.yaml())
	// The database answers lookups slowly, so that B asks while A's
	// lookup is in flight, and a second lookup would be counted.
	arrived := make(chan struct{}, 16)
	upstream := w.HTTPClient()
	w.Override(t, config.SumDBName, "/lookup/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		resp, err := upstream.Get(w.ProxyURL + "/sumdb/" + config.SumDBName + r.URL.Path) // the same database
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		rw.WriteHeader(resp.StatusCode)
		io.Copy(rw, resp.Body)
	}))
	mod := testworld.UpperPath + "@" + testworld.Version
	type result struct {
		m   goModule
		out string
	}
	done := make(chan result, 1)
	go func() {
		m, out, _ := goDownload(t, w, a, mod)
		done <- result{m, out}
	}()
	var ra result
	select {
	case <-arrived:
	case ra = <-done:
		t.Fatalf("A answered %q without a lookup\n%s", ra.m.Error, ra.out)
	}
	mustDownload(t, w, b, "B", mod)
	if ra = <-done; ra.m.Error != "" || ra.m.Zip == "" {
		t.Fatalf("go mod download %s through A: %s\n%s", mod, ra.m.Error, ra.out)
	}
	if n := w.Requests(config.SumDBName, "/lookup/"); n != 1 {
		t.Errorf("two replicas asked for one new version at once looked it up %d times, want 1", n)
	}
}

// TestFileBackendNeedsNoEtcd: with state.backend file (the default) run
// never dials etcd, even with endpoints configured that nothing answers:
// it starts, is ready and serves.
func TestFileBackendNeedsNoEtcd(t *testing.T) {
	w := testworld.New(t)
	r := startRun(t, w, "state:\n  backend: file\n  etcd:\n    endpoints: [http://127.0.0.1:1]\n")
	waitReady(t, &http.Client{Timeout: 10 * time.Second}, r.admin, http.StatusOK)
	mustDownload(t, w, r, "the gateway", testworld.GoodPath+"@"+testworld.Version)
}

// TestRunWithoutEtcdFailsAtStart: with state.backend etcd, a replica that
// cannot reach etcd does not start (it could serve nothing it has not
// proven before): it exits within about dial_timeout, saying so.
func TestRunWithoutEtcdFailsAtStart(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close() // nothing listens there now
	silent := etcdtest.Forward(t, "127.0.0.1:1")
	silent.Blackhole() // accepts, never answers
	for _, tt := range []struct {
		name, endpoint string
	}{
		{"refused", "http://" + refusedAddr},
		{"silent", silent.Endpoint()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const timeout = 500 * time.Millisecond
			cfg := writeConfig(t, w, []string{w.ProxyURL}, "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n"+
				etcdState{endpoint: tt.endpoint, timeout: timeout}.yaml())
			var stdout, stderr bytes.Buffer
			start := time.Now()
			status := runCmd(context.Background(), []string{"-config", cfg}, &stdout, &stderr)
			took := time.Since(start)
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			last := lines[len(lines)-1]
			if status != exitError || !strings.HasPrefix(last, "sumgate run: etcd: ") || !strings.Contains(last, tt.endpoint) {
				t.Errorf("status %d, last line %q: want %d and an error naming etcd and %s\n%s", status, last, exitError, tt.endpoint, &stderr)
			}
			if stdout.Len() > 0 {
				t.Errorf("printed a banner though it cannot serve:\n%s", &stdout)
			}
			// Generous: only a start that waits on etcd much longer
			// than dial_timeout fails.
			if took > timeout+15*time.Second {
				t.Errorf("took %v to give up, dial_timeout %v", took, timeout)
			}
		})
	}
}
