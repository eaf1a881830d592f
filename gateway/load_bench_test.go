package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/sumgate/sumgate/internal/testworld"
)

var (
	loadClients  = flag.Int("sumgate.clients", 500, "concurrent clients in BenchmarkLoad, each with connections of its own")
	loadRequests = flag.Int("sumgate.requests", 10000, "requests per BenchmarkLoad iteration, shared among the clients")
	loadBin      = flag.String("sumgate.bin", "", "sumgate binary BenchmarkLoad runs (default: build ./cmd/sumgate); compare two builds with it")
	loadConfig   = flag.String("sumgate.config", "", "BenchmarkLoad: YAML lines appended to sumgate's configuration, such as \"log_level: warn\"")
	loadLogPipe  = flag.Bool("sumgate.log-pipe", false, "BenchmarkLoad: sumgate logs to a pipe this process reads, a log collector that falls behind under load (default: a file)")
	loadLogStall = flag.Duration("sumgate.log-stall", 0, "BenchmarkLoad with -sumgate.log-pipe: the pipe's reader stops reading for this long every second, as a log collector that flushes or rotates")
	loadProfile  = flag.String("sumgate.profile", "", "BenchmarkLoad: a folder where a runtime trace and a CPU profile of the sumgate process, 8 s from the start of the first iteration, and its allocation profile, are saved")
	loadState    = flag.String("sumgate.state", "file", "BenchmarkLoad: state.backend of every sumgate, file or etcd (an etcd server in a process of its own)")
	loadReplicas = flag.Int("sumgate.replicas", 1, "BenchmarkLoad: sumgate processes sharing their state through etcd (more than 1 needs -sumgate.state etcd), the clients spread round-robin over them")
)

// loadRequest is one request of BenchmarkLoad's mix, and the status it
// must get.
type loadRequest struct {
	kind   string // what it is, for the breakdown of the tail
	url    string
	status int
}

// BenchmarkLoad is issue 13's workload: -sumgate.clients clients (500)
// at once, each its own http.Transport, so its own CONNECT tunnels and TLS
// handshakes with sumgate's minted leaves, as go commands on as many CI
// machines would, share -sumgate.requests small requests (10,000) to a
// `sumgate run` process in front of a test world: verified zips and
// go.mods (proven and cached by a warm-up), refusals (a tampered zip and
// a tampered go.mod, each fetched and checked again every time, 403),
// metadata (.info, @v/list) and checksum-database reads through the
// intercepted sum.golang.org (/lookup, /tile, /latest). Every response's
// status is checked; a wrong one fails the benchmark.
//
// It reports the latency of a request, from the client's call to the end
// of its body (the client's CONNECT and handshake included when the
// request opened a connection), as p50, p99 and max, in ms, over every
// request of every iteration, and requests/s. p99-new and p99-reused
// split the requests by whether they opened their connection; dial-max
// is the longest TCP connect to the proxy (a dropped SYN costs 1 s), and
// dial-, connect-, tls- and request-p99 the 99th percentiles of the
// phases of the requests that opened a connection: the TCP connect, the
// CONNECT round trip, the TLS handshake inside the tunnel, the request.
// sumgate-cpu-µs/req and clients-cpu-µs/req are the CPU time used per
// request by the sumgate process and by this one (the clients and the
// test world). listen-overflows and syn-retransmits are the network
// namespace's counts, over the timed runs, of connections the kernel
// dropped because sumgate's accept queue was full (net.core.somaxconn)
// and of the SYNs clients sent again for them, 1 s later or more (other
// processes in the namespace count too). spans-dropped is
// sumgate_spans_dropped_total at the end: audit spans past the exporter's
// queue, counted and logged. peakRSS-MiB is the sumgate process's peak
// resident set. The log line says which requests made the tail, and when
// in the run they ended.
//
// With -sumgate.replicas N (and -sumgate.state etcd), N `sumgate run`
// processes share their state through one etcd server (a real one,
// fsyncing its log, in a process of its own, over plain HTTP on
// 127.0.0.1), and client c sends its requests to replica c mod N, as a
// load balancer spreading connections would; every replica is warmed up
// alike. Every sumgate, whatever the flags, imports the same CA, made by
// `sumgate ca init`, so that all present leaves of one root. sumgate-cpu-
// µs/req, peakRSS-MiB and spans-dropped are then summed over the
// replicas, etcd-cpu-µs/req is the etcd process's CPU time per request (0
// with -sumgate.state file), and -sumgate.profile profiles the first
// replica only.
//
//	go test -run XXX -bench '^BenchmarkLoad$' -benchtime 1x -count 6 ./gateway/ | tee load.txt && benchstat load.txt
//
// To compare one replica with the file backend, one with etcd, and three
// sharing etcd, in one run, each configuration its own process, in a
// shuffled order every round:
//
//	go build -o /tmp/sg ./cmd/sumgate && go test -c -o /tmp/gw.test ./gateway/
//	for i in $(seq 6); do for x in $(shuf -e file/1 etcd/1 etcd/3); do
//	  echo "config: ${x%/*}-${x#*/}"
//	  /tmp/gw.test -test.run XXX -test.bench '^BenchmarkLoad$' -test.benchtime 1x -sumgate.bin /tmp/sg \
//	    -sumgate.state ${x%/*} -sumgate.replicas ${x#*/} | grep ^Benchmark
//	done; done > replicas.txt; benchstat -col config replicas.txt
//
// To compare two builds of sumgate in one run, interleaved:
//
//	go build -o /tmp/sg-old ./cmd/sumgate   # at the old commit
//	go build -o /tmp/sg-new ./cmd/sumgate
//	go test -c -o /tmp/gw.test ./gateway/
//	for i in $(seq 6); do for x in $(shuf -e old new); do
//	  /tmp/gw.test -test.run XXX -test.bench '^BenchmarkLoad$' -test.benchtime 1x -sumgate.bin /tmp/sg-$x | grep ^Benchmark >> $x.txt
//	done; done; benchstat old.txt new.txt
//
// The clients, the test world and sumgate share the machine's cores, as
// they would not in production: compare ratios, not absolute numbers.
func BenchmarkLoad(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc")
	}
	w := testworld.New(b)
	var verified []loadRequest
	for i := range 8 {
		mod := publishModule(b, w, fmt.Sprintf("example.com/load/m%d", i), 16<<10)
		path, vers, _ := strings.Cut(mod, "@")
		base := w.ProxyURL + "/" + path + "/@v/" + vers
		verified = append(verified, loadRequest{"zip", base + ".zip", 200}, loadRequest{"mod", base + ".mod", 200})
	}
	goodBase := w.ProxyURL + "/" + testworld.GoodPath + "/@v/"
	upper, _ := module.EscapePath(testworld.UpperPath)
	sumdbURL := "https://sum.golang.org"
	mix := []loadRequest{
		{"zip", goodBase + testworld.Version + ".zip", 200},
		{"mod", goodBase + testworld.Version + ".mod", 200},
		{"zip", goodBase + testworld.NextVersion + ".zip", 200},
		{"zip", w.ProxyURL + "/" + upper + "/@v/" + testworld.Version + ".zip", 200},
		{"refusal", w.ProxyURL + "/" + testworld.TamperedZipPath + "/@v/" + testworld.Version + ".zip", 403},
		{"refusal", w.ProxyURL + "/" + testworld.TamperedModPath + "/@v/" + testworld.Version + ".mod", 403},
		{"info", goodBase + testworld.NextVersion + ".info", 200},
		{"list", goodBase + "list", 200},
		{"lookup", sumdbURL + "/lookup/" + testworld.GoodPath + "@" + testworld.Version, 200},
		{"tile", "", 200}, // its URL needs the tree size, read by the warm-up
		{"latest", sumdbURL + "/latest", 200},
	}

	bin := *loadBin
	if bin == "" {
		bin = filepath.Join(b.TempDir(), "sumgate")
		if out, err := exec.Command(testworld.GoBinary(b), "build", "-o", bin, "github.com/sumgate/sumgate/cmd/sumgate").CombinedOutput(); err != nil {
			b.Fatalf("building sumgate: %v\n%s", err, out)
		}
	}
	extra := *loadConfig + "\n"
	if *loadProfile != "" {
		extra += "admin_pprof: true\n"
	}
	logTo := logFile
	if *loadLogPipe {
		logTo = logPipe(*loadLogStall)
	}
	caCert, caKey, caRoot := sharedCA(b, bin, w)
	extra += fmt.Sprintf("ca:\n  cert: %s\n  key: %s\n", caCert, caKey)
	var etcd etcdProcess
	switch {
	case *loadState == "etcd":
		etcd = startEtcdProcess(b)
		extra += fmt.Sprintf("state:\n  backend: etcd\n  etcd:\n    endpoints: [%s]\n", etcd.endpoint)
	case *loadState != "file":
		b.Fatalf("-sumgate.state %q: want file or etcd", *loadState)
	case *loadReplicas > 1:
		b.Fatalf("-sumgate.replicas %d: replicas share their state through etcd (-sumgate.state etcd)", *loadReplicas)
	}
	replicas := make([]sumgateProc, max(1, *loadReplicas))
	for i := range replicas {
		replicas[i] = startSumgate(b, bin, w, extra, logTo)
		defer replicas[i].stop()
	}
	p := replicas[0]
	// The root, rather than the bundle the banner names: with the CA
	// imported and leaves in etcd, nothing creates data_dir/ca, and the
	// bundle is not written.
	pemData, err := os.ReadFile(caRoot)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemData)
	newClient := func(p sumgateProc) (*http.Client, *http.Transport) {
		proxy, _ := url.Parse(p.proxyURL)
		tr := &http.Transport{Proxy: http.ProxyURL(proxy), TLSClientConfig: &tls.Config{RootCAs: roots}}
		return &http.Client{Transport: tr, Timeout: 2 * time.Minute}, tr
	}

	// Warm up every replica: leaves minted (or read from etcd), every
	// verified file proven and cached (its lookup may grow the tree), then
	// the tree size read for the tile.
	tile := slices.IndexFunc(mix, func(r loadRequest) bool { return r.kind == "tile" })
	for _, p := range replicas {
		warm, wtr := newClient(p)
		get := func(r loadRequest) []byte {
			status, body, err := fetch(context.Background(), warm, r.url)
			if err != nil || status != r.status {
				b.Fatalf("warm-up of %s: %s: got %d %v %.200s, want %d", p.proxyURL, r.url, status, err, body, r.status)
			}
			return body
		}
		for i, r := range append(slices.Clone(mix), verified...) {
			if i != tile {
				get(r)
			}
		}
		if mix[tile].url == "" {
			latest := strings.Split(string(get(loadRequest{"latest", sumdbURL + "/latest", 200})), "\n")
			size, err := strconv.ParseInt(latest[min(1, len(latest)-1)], 10, 64)
			if err != nil || size < 1 || size > 256 {
				b.Fatalf("%s/latest: no tree size that fits one partial tile: %q", sumdbURL, latest)
			}
			mix[tile].url = sumdbURL + "/" + tlog.Tile{H: 8, L: 0, N: 0, W: int(size)}.Path()
		}
		get(mix[tile])
		wtr.CloseIdleConnections()
	}
	// The request of each index: the mix, with a verified file of the
	// published modules every len(mix) requests.
	reqs := make([]loadRequest, *loadRequests)
	for i := range reqs {
		reqs[i] = mix[i%len(mix)]
		if i%len(mix) == 0 {
			reqs[i] = verified[(i/len(mix))%len(verified)]
		}
	}

	n := *loadClients
	var all []loadSample
	var wall, sgCPU, selfCPU, etcdCPU time.Duration // the run's wall clock, and CPU time of sumgate, of this process and of etcd
	tcp := map[string]int64{}                       // the network namespace's TCP counters, over the runs
	first := true
	for b.Loop() {
		b.StopTimer()
		clients := make([]*http.Client, n)
		trs := make([]*http.Transport, n)
		for i := range clients {
			clients[i], trs[i] = newClient(replicas[i%len(replicas)])
		}
		samples := make([]loadSample, len(reqs))
		var t0 time.Time // set before start is closed
		errs := make(chan error, n)
		ready, start := sync.WaitGroup{}, make(chan struct{})
		var done sync.WaitGroup
		ready.Add(n)
		for c := range n {
			done.Go(func() {
				ready.Done()
				<-start
				// Client c sends requests c, c+n, c+2n, …, one at a
				// time, on its own keep-alive connections.
				for i := c; i < len(reqs); i += n {
					s, err := timedFetch(clients[c], reqs[i])
					s.at = time.Since(t0)
					samples[i] = s
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		ready.Wait()
		var stopProfile func()
		if first && *loadProfile != "" {
			stopProfile = profileSumgate(b, p.admin, *loadProfile)
		}
		b.StartTimer()
		sg0, self0, etcd0, tcp0 := replicasCPU(b, replicas), cpuTime(b, os.Getpid()), etcd.cpuTime(b), tcpCounters(b)
		t0 = time.Now()
		close(start)
		done.Wait()
		wall += time.Since(t0)
		sgCPU += replicasCPU(b, replicas) - sg0
		selfCPU += cpuTime(b, os.Getpid()) - self0
		etcdCPU += etcd.cpuTime(b) - etcd0
		for k, v := range tcpCounters(b) {
			tcp[k] += v - tcp0[k]
		}
		b.StopTimer()
		if stopProfile != nil {
			stopProfile()
		}
		first = false
		close(errs)
		for err := range errs {
			b.Error(err)
		}
		if b.Failed() {
			b.FailNow()
		}
		for _, tr := range trs {
			tr.CloseIdleConnections()
		}
		all = append(all, samples...)
		b.StartTimer()
	}
	reportLoad(b, all, wall)
	b.ReportMetric(float64(sgCPU.Microseconds())/float64(len(all)), "sumgate-cpu-µs/req")
	b.ReportMetric(float64(selfCPU.Microseconds())/float64(len(all)), "clients-cpu-µs/req")
	b.ReportMetric(float64(etcdCPU.Microseconds())/float64(len(all)), "etcd-cpu-µs/req")
	var rss, dropped int64
	for _, p := range replicas {
		rss += peakRSS(b, p.pid)
		dropped += droppedSpans(b, p.admin)
	}
	b.ReportMetric(float64(rss)/(1<<20), "peakRSS-MiB")
	b.ReportMetric(float64(dropped), "spans-dropped")
	b.ReportMetric(float64(tcp["ListenOverflows"]), "listen-overflows")
	b.ReportMetric(float64(tcp["TCPSynRetrans"]), "syn-retransmits")
}

// replicasCPU is the CPU time the sumgate processes have used, together.
func replicasCPU(b *testing.B, replicas []sumgateProc) time.Duration {
	b.Helper()
	var d time.Duration
	for _, p := range replicas {
		d += cpuTime(b, p.pid)
	}
	return d
}

// cpuTime is the CPU time the etcd process has used; 0 if there is none.
func (e etcdProcess) cpuTime(b *testing.B) time.Duration {
	b.Helper()
	if e.pid == 0 {
		return 0
	}
	return cpuTime(b, e.pid)
}

// droppedSpans reads sumgate_spans_dropped_total from the admin
// listener's metrics: audit spans the exporter could not keep up with.
func droppedSpans(b *testing.B, admin string) int64 {
	b.Helper()
	status, body, err := fetch(context.Background(), http.DefaultClient, admin+"/metrics")
	if err != nil || status != 200 {
		b.Fatalf("%s/metrics: %d %v", admin, status, err)
	}
	var n int64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "sumgate_spans_dropped_total") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int64(v)
		}
	}
	return n
}

// tcpCounters reads the network namespace's counts of connections
// dropped because a listener's accept queue was full, and of SYNs sent
// again, from /proc/net/netstat.
func tcpCounters(b *testing.B) map[string]int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]int64{}
	var names []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if (name == "ListenOverflows" || name == "TCPSynRetrans") && i < len(f) {
				out[name], _ = strconv.ParseInt(f[i], 10, 64)
			}
		}
	}
	return out
}

// cpuTime is the CPU time (user and system) process pid has used, at the
// kernel's clock-tick resolution (10 ms).
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses: utime
	// and stime are the 12th and 13th.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// loadSample is one request's timing. A request that opened its
// connection went through four phases: the TCP connect to the proxy, the
// CONNECT round trip, the TLS handshake inside the tunnel, and the
// request itself; one on a reused connection, through the last only.
type loadSample struct {
	kind    string
	at      time.Duration // when it ended, from the start of the run
	total   time.Duration // from the call to the end of the body
	newConn bool          // the request opened its connection
	dial    time.Duration // TCP connect to the proxy
	connect time.Duration // CONNECT sent, 200 read
	tls     time.Duration // the TLS handshake inside the tunnel
	request time.Duration // from having the connection to the end of the body
}

// timedFetch sends r with c and checks its status.
func timedFetch(c *http.Client, r loadRequest) (loadSample, error) {
	s := loadSample{kind: r.kind}
	var dialStart, dialDone, tlsStart, gotConn time.Time
	trace := &httptrace.ClientTrace{
		ConnectStart: func(string, string) { dialStart = time.Now() },
		ConnectDone: func(string, string, error) {
			dialDone = time.Now()
			s.dial = dialDone.Sub(dialStart)
		},
		TLSHandshakeStart: func() {
			tlsStart = time.Now()
			s.connect = tlsStart.Sub(dialDone)
		},
		TLSHandshakeDone: func(tls.ConnectionState, error) { s.tls = time.Since(tlsStart) },
		GotConn: func(i httptrace.GotConnInfo) {
			gotConn = time.Now()
			s.newConn = !i.Reused
		},
	}
	t0 := time.Now()
	status, body, err := fetch(httptrace.WithClientTrace(context.Background(), trace), c, r.url)
	s.total = time.Since(t0)
	s.request = time.Since(gotConn)
	switch {
	case err != nil:
		return s, fmt.Errorf("%s: %w", r.url, err)
	case status != r.status:
		return s, fmt.Errorf("%s: got %d, want %d: %.200s", r.url, status, r.status, body)
	}
	return s, nil
}

// fetch GETs u and reads the whole body.
func fetch(ctx context.Context, c *http.Client, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// reportLoad reports the latency percentiles and the throughput of
// samples, taken over wall, and logs the tail's make-up.
func reportLoad(b *testing.B, samples []loadSample, wall time.Duration) {
	b.Helper()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pct := func(ds []time.Duration, q float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return ds[min(len(ds)-1, int(q*float64(len(ds))))]
	}
	var total, fresh, reused []time.Duration
	var phases [4][]time.Duration // of the requests that opened a connection: dial, connect, tls, request
	for _, s := range samples {
		total = append(total, s.total)
		if !s.newConn {
			reused = append(reused, s.total)
			continue
		}
		fresh = append(fresh, s.total)
		for i, d := range []time.Duration{s.dial, s.connect, s.tls, s.request} {
			phases[i] = append(phases[i], d)
		}
	}
	p99 := pct(total, 0.99)
	b.ReportMetric(ms(pct(total, 0.50)), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(pct(total, 1)), "max-ms")
	b.ReportMetric(float64(len(samples))/wall.Seconds(), "req/s")
	b.ReportMetric(ms(pct(fresh, 0.99)), "p99-new-ms")
	b.ReportMetric(ms(pct(reused, 0.99)), "p99-reused-ms")
	b.ReportMetric(ms(pct(phases[0], 1)), "dial-max-ms")
	for i, name := range []string{"dial", "connect", "tls", "request"} {
		b.ReportMetric(ms(pct(phases[i], 0.99)), name+"-p99-ms")
	}
	b.ReportMetric(0, "ns/op") // the wall time of an iteration says nothing more than req/s
	// The tail's make-up: which requests were slower than the p99, and
	// when they ended, in tenths of the run.
	kinds := map[string]int{}
	var newInTail int
	var when [10]int
	for _, s := range samples {
		if s.total >= p99 {
			kinds[s.kind]++
			if s.newConn {
				newInTail++
			}
			when[min(9, int(10*s.at/wall))]++
		}
	}
	b.Logf("%d requests, %d opened a connection; at or over p99 (%v): %d opened one; by kind %v; by tenth of the run in which they ended %v",
		len(samples), len(fresh), p99, newInTail, kinds, when)
	// Each kind's p50 and p99 on reused connections, in ms.
	byKind := map[string][]time.Duration{}
	for _, s := range samples {
		if !s.newConn {
			byKind[s.kind] = append(byKind[s.kind], s.total)
		}
	}
	var line strings.Builder
	for _, k := range slices.Sorted(maps.Keys(byKind)) {
		fmt.Fprintf(&line, " %s %.0f/%.0f", k, ms(pct(byKind[k], 0.5)), ms(pct(byKind[k], 0.99)))
	}
	b.Logf("on reused connections, p50/p99 ms by kind:%s", line.String())
}

// profileSumgate starts a runtime trace of the sumgate process behind
// admin (admin_pprof: true) and returns the function that waits for it
// and saves it, with the process's mutex and block profiles, in dir.
func profileSumgate(b *testing.B, admin, dir string) func() {
	b.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	save := func(name, u string) error {
		resp, err := http.Get(u)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", u, resp.Status)
		}
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(f, resp.Body)
		return err
	}
	done := make(chan error, 2)
	go func() { done <- save("trace.out", admin+"/debug/pprof/trace?seconds=8") }()
	go func() { done <- save("cpu.pprof", admin+"/debug/pprof/profile?seconds=8") }()
	time.Sleep(100 * time.Millisecond) // the trace and profile have started
	return func() {
		for range 2 {
			if err := <-done; err != nil {
				b.Error(err)
			}
		}
		if err := save("allocs.pprof", admin+"/debug/pprof/allocs"); err != nil {
			b.Error(err)
		}
	}
}
