package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/otlptest"
	"github.com/sumgate/sumgate/internal/telemetry"
	"github.com/sumgate/sumgate/internal/testworld"
)

// upperEsc is testworld.UpperPath as module proxy URLs spell it.
var upperEsc, _ = module.EscapePath(testworld.UpperPath)

// traced is a gateway exporting its spans over real OTLP to a receiver.
type traced struct {
	*env
	rcv *otlptest.Receiver
	tel *telemetry.Telemetry
}

// startOTLP runs a gateway whose spans go over OTLP (protocol "grpc" or
// "http") to a fresh receiver.
func startOTLP(t testing.TB, protocol string, queue int, edit func(*gateway.Config)) *traced {
	t.Helper()
	rcv := otlptest.Start(t)
	ctx := context.Background()
	// A small queue is for the collector-down test, which wants exports to
	// fail fast; the others give a loaded CI machine all the time it needs.
	timeout := time.Minute
	if queue > 0 {
		timeout = 2 * time.Second
	}
	var exp sdktrace.SpanExporter
	var err error
	if protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(rcv.GRPCAddr), otlptracegrpc.WithInsecure(),
			otlptracegrpc.WithTimeout(timeout), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	} else {
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(rcv.HTTPURL+"/v1/traces"),
			otlptracehttp.WithTimeout(timeout), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	}
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.Setup(ctx, telemetry.Options{Exporter: exp, BatchTimeout: 50 * time.Millisecond, QueueSize: queue})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	return &traced{env: startTraced(t, testworld.New(t), tel, edit), rcv: rcv, tel: tel}
}

// flush shuts the gateway down (ending every tunnel's span) and then the
// telemetry (exporting every span), and returns what the receiver got.
func (tr *traced) flush(t testing.TB) []otlptest.Span {
	t.Helper()
	tr.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := tr.tel.Shutdown(ctx); err != nil {
		t.Fatalf("flushing spans: %v", err)
	}
	return tr.rcv.Spans()
}

// oneShot returns a client through the gateway that opens a new
// connection (so a new CONNECT) for every request.
func (e *env) oneShot(roots ...*tls.Config) *http.Client {
	pu, _ := url.Parse("http://" + e.addr)
	tc := &tls.Config{RootCAs: pool(e.root)}
	if len(roots) > 0 {
		tc = roots[0]
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(pu), TLSClientConfig: tc, DisableKeepAlives: true,
	}}
}

func get(t testing.TB, c *http.Client, u string, header ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("User-Agent", "audit-test/1")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// TestEveryRequestIsOneServerSpan drives a mixed workload and checks that
// each client request has exactly one root server span, with the audit
// attributes and status it calls for.
func TestEveryRequestIsOneServerSpan(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			tlsSrv := newTLSServer(t, "tunnel.example")
			plain := newHTTPServer(t)
			tr := startOTLP(t, protocol, 0, func(c *gateway.Config) {
				c.Resolve = map[string]string{"tunnel.example": tlsSrv.addr, "plain.example": plain}
				c.VCS = gateway.VCSPrivateOnly
			})
			w := tr.w
			c := tr.oneShot()
			proxy := w.ProxyURL
			type want struct {
				name              string
				url               string
				status            int
				decision, rule    string
				verdict           string
				errorStatus       bool
				modPath, modKind  string
				vcsModule, reason string
			}
			cases := []want{
				{name: "genuine zip", url: proxy + "/" + testworld.GoodPath + "/@v/v1.0.0.zip", status: 200, decision: "intercept", rule: "verify", verdict: "verified", modPath: testworld.GoodPath, modKind: "zip"},
				{name: "genuine zip again (cache)", url: proxy + "/" + testworld.GoodPath + "/@v/v1.0.0.zip", status: 200, decision: "intercept", rule: "verify", verdict: "verified", modPath: testworld.GoodPath, modKind: "zip"},
				{name: "tampered zip", url: proxy + "/" + testworld.TamperedZipPath + "/@v/v1.0.0.zip", status: 403, decision: "intercept", rule: "verify", verdict: "mismatch", errorStatus: true, modPath: testworld.TamperedZipPath, modKind: "zip"},
				{name: "unknown", url: proxy + "/" + testworld.UnknownPath + "/@v/v1.0.0.mod", status: 403, decision: "intercept", rule: "verify", verdict: "not-found", errorStatus: true, modPath: testworld.UnknownPath, modKind: "mod"},
				{name: "private", url: proxy + "/" + testworld.PrivatePath + "/@v/v1.0.0.zip", status: 200, decision: "intercept", rule: "verify", verdict: "private", modPath: testworld.PrivatePath, modKind: "zip"},
				{name: "metadata", url: proxy + "/" + testworld.GoodPath + "/@v/list", status: 200, decision: "intercept", rule: "pass-through", modPath: testworld.GoodPath, modKind: "list"},
				{name: "vcs blocked", url: "https://github.com/public/repo/info/refs?service=git-upload-pack", status: 403, decision: "deny", rule: "vcs: private-only", errorStatus: true, vcsModule: "github.com/public/repo"},
			}
			for _, tc := range cases {
				if status, body := get(t, c, tc.url); status != tc.status {
					t.Fatalf("%s: status %d, want %d: %s", tc.name, status, tc.status, body)
				}
			}
			// A blind tunnel, a denied CONNECT, and a plain-HTTP request.
			tunnelClient := tr.oneShot(&tls.Config{RootCAs: tlsSrv.roots})
			if status, body := get(t, tunnelClient, "https://tunnel.example/hello"); status != 200 {
				t.Fatalf("tunnel: %d %s", status, body)
			}
			if status, _ := tr.connect(t, "10.0.0.1:443"); status != http.StatusForbidden {
				t.Fatalf("CONNECT to an internal address: %d", status)
			}
			if status, body := get(t, c, "http://plain.example/"); status != 200 {
				t.Fatalf("plain http: %d %s", status, body)
			}
			// Client requests: two per intercepted case (CONNECT and GET),
			// one each for the tunnel, the denied CONNECT and plain HTTP.
			wantServers := 2*len(cases) + 3

			spans := tr.flush(t)
			servers := otlptest.Servers(spans)
			if len(servers) != wantServers {
				for _, s := range servers {
					t.Logf("server span %s %s %s", s.Name, s.Str("url.full"), s.Str("server.address"))
				}
				t.Fatalf("%d server spans, want exactly %d (one per client request)", len(servers), wantServers)
			}
			for _, s := range servers {
				if s.ParentSpanID != "" {
					t.Errorf("server span %s has a parent: audit spans must be roots", s.Name)
				}
				if s.Protocol != protocol {
					t.Errorf("span arrived over %s", s.Protocol)
				}
				if s.Resource["service.name"] != "sumgate" {
					t.Errorf("service.name %v", s.Resource["service.name"])
				}
			}
			byID := map[string]otlptest.Span{}
			for _, s := range spans {
				byID[s.SpanID] = s
			}
			var gets, connects []otlptest.Span
			for _, s := range servers {
				if s.Name == "CONNECT" {
					connects = append(connects, s)
				} else {
					gets = append(gets, s)
				}
			}
			// Intercepted requests, in the order sent.
			for i, tc := range cases {
				s := gets[i]
				check := func(key string, want any) {
					t.Helper()
					if want == "" {
						return
					}
					if got := s.Attrs[key]; got != want {
						t.Errorf("%s: %s = %v, want %v", tc.name, key, got, want)
					}
				}
				check("url.full", tc.url)
				check("http.request.method", "GET")
				check("http.response.status_code", int64(tc.status))
				check("sumgate.decision", tc.decision)
				check("sumgate.rule", tc.rule)
				check("sumgate.verdict", tc.verdict)
				check("sumgate.module.path", tc.modPath)
				check("sumgate.module.kind", tc.modKind)
				check("sumgate.vcs.module", tc.vcsModule)
				check("user_agent.original", "audit-test/1")
				check("client.address", "127.0.0.1")
				check("network.protocol.version", "1.1")
				u, _ := url.Parse(tc.url)
				check("server.address", u.Hostname())
				check("tls.server.name", u.Hostname())
				if got := s.StatusCode == tracepb.Status_STATUS_CODE_ERROR; got != tc.errorStatus {
					t.Errorf("%s: span status %v, want error=%v", tc.name, s.StatusCode, tc.errorStatus)
				}
				if tc.errorStatus && s.Str("sumgate.reason") == "" {
					t.Errorf("%s: a refusal without sumgate.reason", tc.name)
				}
				if len(s.Links) != 1 || byID[s.Links[0]].Name != "CONNECT" {
					t.Errorf("%s: not linked to its CONNECT span", tc.name)
				}
				if tc.status == 200 && s.Int("sumgate.bytes.sent") <= 0 {
					t.Errorf("%s: sumgate.bytes.sent = %d", tc.name, s.Int("sumgate.bytes.sent"))
				}
				switch tc.verdict {
				case "verified":
					m := w.Module(tc.modPath, testworld.Version)
					if s.Str("sumgate.hash.got") != m.ZipHash || s.Str("sumgate.hash.want") != m.ZipHash || s.Int("sumgate.sumdb.tree_size") <= 0 {
						t.Errorf("%s: hashes %q %q tree %d, want %s", tc.name, s.Str("sumgate.hash.got"), s.Str("sumgate.hash.want"), s.Int("sumgate.sumdb.tree_size"), m.ZipHash)
					}
				case "mismatch":
					if g, w := s.Str("sumgate.hash.got"), s.Str("sumgate.hash.want"); g == "" || w == "" || g == w {
						t.Errorf("%s: hashes got %q want %q", tc.name, g, w)
					}
				}
			}
			if gets[0].Attrs["sumgate.cache.hit"] != false || gets[1].Attrs["sumgate.cache.hit"] != true {
				t.Errorf("cache.hit: first %v, second %v", gets[0].Attrs["sumgate.cache.hit"], gets[1].Attrs["sumgate.cache.hit"])
			}
			if gets[0].Int("sumgate.spool.bytes") <= 0 {
				t.Errorf("first download: spool.bytes %d", gets[0].Int("sumgate.spool.bytes"))
			}
			// The genuine download's trace holds the fetch, the check, its
			// lookup with tile fetches, and the hash.
			children := map[string]int{}
			for _, s := range spans {
				if s.TraceID == gets[0].TraceID {
					children[s.Name]++
				}
			}
			for _, name := range []string{"upstream GET", "sumdb.check", "sumdb.lookup", "sumdb.hash"} {
				if children[name] == 0 {
					t.Errorf("genuine download's trace lacks a %q span: %v", name, children)
				}
			}
			if children["upstream GET"] < 3 {
				t.Errorf("want the zip fetch plus lookup and tile fetches as upstream spans, got %d", children["upstream GET"])
			}
			// CONNECTs: the first intercepted one minted the leaf.
			minted := 0
			for _, s := range spans {
				if s.Name == "certs.mint" {
					minted++
					if p := byID[byID[s.ParentSpanID].ParentSpanID]; p.Name != "CONNECT" {
						t.Errorf("certs.mint's grandparent is %q, want the CONNECT span", p.Name)
					}
				}
			}
			if minted == 0 {
				t.Error("no certs.mint span")
			}
			var tunnel, denied, forward otlptest.Span
			for _, s := range connects {
				switch s.Str("sumgate.decision") {
				case "tunnel":
					tunnel = s
				case "deny":
					denied = s
				case "intercept":
					if s.Int("sumgate.tunnel.requests") != 1 || s.Int("sumgate.tunnel.client_to_server_bytes") <= 0 {
						t.Errorf("intercepted CONNECT: requests %d, bytes up %d", s.Int("sumgate.tunnel.requests"), s.Int("sumgate.tunnel.client_to_server_bytes"))
					}
				}
			}
			for _, s := range gets[len(cases):] {
				forward = s
			}
			if tunnel.Str("server.address") != "tunnel.example" || tunnel.Int("sumgate.tunnel.client_to_server_bytes") <= 0 ||
				tunnel.Int("sumgate.tunnel.server_to_client_bytes") <= 0 || tunnel.StatusCode == tracepb.Status_STATUS_CODE_ERROR {
				t.Errorf("tunnel span: %+v", tunnel.Attrs)
			}
			if tunnel.End.Sub(tunnel.Start) <= 0 {
				t.Error("tunnel span has no duration")
			}
			if denied.Str("sumgate.rule") != "internal-address" || denied.StatusCode != tracepb.Status_STATUS_CODE_ERROR ||
				denied.Int("http.response.status_code") != 403 {
				t.Errorf("denied CONNECT span: %v %v", denied.Attrs, denied.StatusCode)
			}
			if forward.Str("sumgate.decision") != "forward" || forward.Str("url.full") != "http://plain.example/" {
				t.Errorf("plain HTTP span: %v", forward.Attrs)
			}
		})
	}
}

// TestTraceContextIsNeitherTrustedNorLeaked holds threat 15: a client's
// traceparent does not become the parent of an audit span, and no trace
// context or proxy credential reaches an upstream.
func TestTraceContextIsNeitherTrustedNorLeaked(t *testing.T) {
	// A program embedding sumgate may well install the W3C propagator
	// globally; sumgate must not use it.
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
	plain := newHTTPServer(t)
	tr := startOTLP(t, "grpc", 0, func(c *gateway.Config) {
		c.Resolve = map[string]string{"plain.example": plain}
	})
	const clientTrace = "0af7651916cd43dd8448eb211c80319c"
	parent := "00-" + clientTrace + "-b7ad6b7169203331-01"
	headers := []string{"Traceparent", parent, "Tracestate", "vendor=secret", "Baggage", "user=alice", "Proxy-Authorization", "Basic c2VjcmV0"}
	c := tr.oneShot()
	for _, u := range []string{
		tr.w.ProxyURL + "/" + testworld.GoodPath + "/@v/v1.0.0.zip",  // verified
		tr.w.ProxyURL + "/" + testworld.GoodPath + "/@v/v1.0.0.info", // passed through
		tr.w.ProxyURL + "/sumdb/" + config.SumDBName + "/latest",     // passed through
		tr.w.ProxyURL + "/" + upperEsc + "/@v/v1.0.0.mod",            // verified
		tr.w.MirrorURLs[0] + "/" + testworld.GoodPath + "/@v/list",   // another origin
	} {
		if status, body := get(t, c, u, headers...); status != 200 {
			t.Fatalf("GET %s: %d %s", u, status, body)
		}
	}
	// Plain HTTP: the headers reach sumgate directly; so do credentials in
	// the request line, which must reach neither the upstream nor the
	// audit trail. (Go's client would move them to a header; write it raw.)
	conn, err := net.Dial("tcp", tr.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET http://user:hunter2@plain.example/ HTTP/1.1\r\nHost: plain.example\r\nConnection: close\r\n")
	for i := 0; i < len(headers); i += 2 {
		fmt.Fprintf(conn, "%s: %s\r\n", headers[i], headers[i+1])
	}
	fmt.Fprintf(conn, "\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("plain http with credentials in the URL: %d", resp.StatusCode)
	}
	resp.Body.Close()
	conn.Close()
	spans := tr.flush(t)
	if len(otlptest.Servers(spans)) == 0 {
		t.Fatal("no spans")
	}
	for _, s := range spans {
		if s.TraceID == clientTrace {
			t.Errorf("span %s joined the client's trace", s.Name)
		}
		for k, v := range s.Attrs {
			if str, _ := v.(string); strings.Contains(str, "hunter2") || strings.Contains(str, "c2VjcmV0") {
				t.Errorf("span %s: %s = %q holds a credential", s.Name, k, str)
			}
		}
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.ParentSpanID != "" {
			t.Errorf("server span %s has parent %s", s.Name, s.ParentSpanID)
		}
	}
	if leaks := tr.w.Leaks(); len(leaks) != 0 {
		t.Errorf("internal headers reached upstreams: %v", leaks)
	}
}

// TestSpanCountEqualsRequestCountUnderLoad: a few hundred concurrent
// requests, each on its own connection, give exactly one server span per
// client request, none dropped.
func TestSpanCountEqualsRequestCountUnderLoad(t *testing.T) {
	tr := startOTLP(t, "grpc", 0, nil)
	const requests = 300
	urls := []string{
		tr.w.ProxyURL + "/" + testworld.GoodPath + "/@v/v1.0.0.zip",
		tr.w.ProxyURL + "/" + testworld.TamperedZipPath + "/@v/v1.0.0.zip",
		tr.w.ProxyURL + "/" + testworld.GoodPath + "/@v/list",
		tr.w.ProxyURL + "/" + upperEsc + "/@v/v1.0.0.mod",
	}
	c := tr.oneShot()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	var failed sync.Map
	for i := range requests {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if status, body := get(t, c, urls[i%len(urls)]); status != 200 && status != 403 {
				failed.Store(i, fmt.Sprintf("%d %s", status, body))
			}
		})
	}
	wg.Wait()
	failed.Range(func(k, v any) bool { t.Errorf("request %v: %v", k, v); return true })
	servers := otlptest.Servers(tr.flush(t))
	var gets, connects int
	for _, s := range servers {
		if s.Name == "CONNECT" {
			connects++
		} else {
			gets++
		}
	}
	if gets != requests || connects != requests {
		t.Errorf("%d request spans and %d CONNECT spans for %d requests on as many connections", gets, connects, requests)
	}
	if d := tr.tel.Dropped(); d != 0 {
		t.Errorf("%d spans dropped", d)
	}
}

// TestCollectorDownKeepsServing: with the collector gone, requests still
// succeed and the dropped-span count rises, on both the export-failure
// and the full-queue paths.
func TestCollectorDownKeepsServing(t *testing.T) {
	tr := startOTLP(t, "grpc", 16, nil)
	tr.rcv.Stop()
	c := tr.oneShot()
	start := time.Now()
	for i := range 40 {
		if status, body := get(t, c, tr.w.ProxyURL+"/"+testworld.GoodPath+"/@v/list"); status != 200 {
			t.Fatalf("request %d with the collector down: %d %s", i, status, body)
		}
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("40 requests took %v with the collector down: serving waited for it", took)
	}
	deadline := time.Now().Add(20 * time.Second)
	for tr.tel.Dropped() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if tr.tel.Dropped() == 0 {
		t.Fatal("no span counted as dropped with the collector down")
	}
	rec := scrape(t, tr.tel)
	if m := regexp.MustCompile(`(?m)^sumgate_spans_dropped_total(\{[^}]*\})? ([0-9.e+]+)$`).FindStringSubmatch(rec); m == nil || m[2] == "0" {
		t.Errorf("/metrics does not show the drops:\n%s", rec)
	}
}

// scrape returns the Prometheus text of tel's metrics.
func scrape(t testing.TB, tel *telemetry.Telemetry) string {
	t.Helper()
	rec := &strings.Builder{}
	srv := &http.Server{Handler: tel.MetricsHandler()}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rec.WriteString(sc.Text() + "\n")
	}
	return rec.String()
}

// TestForkIsASpanEventAndAnErrorLog: a checksum-database fork met by a
// download adds the security event to its span, and an error log line
// carrying the span's trace ID.
func TestForkIsASpanEventAndAnErrorLog(t *testing.T) {
	var logs testworld.Buffer
	tr := startOTLP(t, "http", 0, func(c *gateway.Config) {
		c.Logger = telemetry.NewLogger(&logs, "json", nil)
	})
	c := tr.oneShot()
	if status, body := get(t, c, tr.w.ProxyURL+"/"+testworld.GoodPath+"/@v/v1.0.0.zip"); status != 200 {
		t.Fatalf("before the fork: %d %s", status, body)
	}
	tr.w.SetSumDB(testworld.SumDBForked)
	if status, body := get(t, c, tr.w.ProxyURL+"/"+upperEsc+"/@v/v1.0.0.zip"); status != http.StatusForbidden {
		t.Fatalf("on the fork: %d %s", status, body)
	}
	if m := scrape(t, tr.tel); !strings.Contains(m, `sumgate_sumdb_alert{sumgate_sumdb_name="sum.golang.org"} 1`) {
		t.Errorf("/metrics does not show the alert:\n%s", m)
	}
	forked := otlptest.Find(otlptest.Servers(tr.flush(t)), func(s otlptest.Span) bool { return s.Str("sumgate.verdict") == "security-error" })
	if forked == nil {
		t.Fatal("no server span with verdict security-error")
	}
	if forked.StatusCode != tracepb.Status_STATUS_CODE_ERROR || len(forked.Events) != 1 || forked.Events[0] != "sumgate.security_error" {
		t.Errorf("fork span: status %v, events %v", forked.StatusCode, forked.Events)
	}
	found := false
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) && strings.Contains(line, "security error") && strings.Contains(line, `"trace_id":"`+forked.TraceID+`"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no error log line with the fork span's trace ID %s:\n%s", forked.TraceID, logs.String())
	}
}

// TestFailedHandshakesAreErrors: an intercepted CONNECT whose TLS
// handshake fails (a lying SNI, a client that does not trust the
// enterprise root) is an Error span that says why.
func TestFailedHandshakesAreErrors(t *testing.T) {
	tr := startOTLP(t, "grpc", 0, nil)
	if err := tr.intercepted(t, "github.com").Handshake(); err == nil {
		t.Fatal("a handshake whose SNI differs from the CONNECT target succeeded")
	}
	status, c := tr.connect(t, config.PublicProxyHost+":443")
	if status != http.StatusOK {
		t.Fatalf("CONNECT: %d", status)
	}
	untrusting := tls.Client(c, &tls.Config{ServerName: config.PublicProxyHost}) // system roots only
	if err := untrusting.Handshake(); err == nil {
		t.Fatal("a client without the enterprise root completed the handshake")
	}
	// The client has sent its alert; sumgate reads it, then closes.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c)
	c.Close()
	var reasons []string
	for _, s := range otlptest.Servers(tr.flush(t)) {
		if s.Name != "CONNECT" {
			t.Errorf("unexpected server span %s", s.Name)
			continue
		}
		if s.StatusCode != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("failed handshake's CONNECT span has status %v", s.StatusCode)
		}
		reasons = append(reasons, s.Str("sumgate.reason"))
	}
	if len(reasons) != 2 || !strings.Contains(strings.Join(reasons, "|"), `SNI "github.com" does not match`) ||
		!strings.Contains(strings.Join(reasons, "|"), "does it trust the enterprise root") {
		t.Errorf("reasons %q", reasons)
	}
}

func TestURLFullIsRedacted(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://goproxy.cn/example.com/x/@v/list", "https://goproxy.cn/example.com/x/@v/list"},
		{"http://user:hunter2@plain.example/", "http://REDACTED:REDACTED@plain.example/"},
		{"https://github.com/o/r/info/refs?service=git-upload-pack&access_token=ghp_secret",
			"https://github.com/o/r/info/refs?access_token=REDACTED&service=git-upload-pack"},
		{"https://bucket.example/m.zip?X-Amz-Signature=abc&X-Amz-Credential=AKIA&x=1",
			"https://bucket.example/m.zip?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x=1"},
		{"https://example.com/?sig=a&sig=b", "https://example.com/?sig=REDACTED&sig=REDACTED"},
	} {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := gateway.Redacted(u); got != tc.want {
			t.Errorf("%s: url.full %s, want %s", tc.in, got, tc.want)
		}
		if u.String() != tc.in {
			t.Errorf("redacting changed the request's URL to %s", u)
		}
	}
}

// TestTunnelDialFailureIsAnErrorSpan: a blind tunnel whose dial fails is
// a 502 for the client and an Error CONNECT span saying why.
func TestTunnelDialFailureIsAnErrorSpan(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	tr := startOTLP(t, "grpc", 0, func(c *gateway.Config) { c.Resolve = map[string]string{"dead.example": dead} })
	// The reason is in the status line: that is what clients print.
	c, err := net.DialTimeout("tcp", tr.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT dead.example:443 HTTP/1.1\r\nHost: dead.example:443\r\n\r\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(line, "HTTP/1.1 502 sumgate: CONNECT failed: dialling "+dead) {
		t.Errorf("CONNECT to an unreachable pinned host: %q, want a 502 saying why", line)
	}
	s := otlptest.Find(otlptest.Servers(tr.flush(t)), func(s otlptest.Span) bool { return s.Name == "CONNECT" })
	if s == nil || s.StatusCode != tracepb.Status_STATUS_CODE_ERROR || s.Int("http.response.status_code") != 502 ||
		!strings.Contains(s.Str("sumgate.reason"), "dialling "+dead+" failed") || s.Str("sumgate.decision") != "tunnel" {
		t.Fatalf("CONNECT span: %+v", s)
	}
}

// TestUnusedTunnelsAreNotErrors: the go command opens intercepted
// tunnels it then closes unused; those are not failures, and the audit
// trail's errors stay for what is one (a client rejecting sumgate's
// certificate). Every unused tunnel still says why it carried nothing.
func TestUnusedTunnelsAreNotErrors(t *testing.T) {
	tr := startOTLP(t, "grpc", 0, nil)
	hello := clientHello(t, config.PublicProxyHost)
	cases := []struct {
		name    string
		use     func(c net.Conn) // what the client does inside the tunnel, before it closes
		isError bool
		reason  string
	}{
		{name: "closed without a byte", use: func(net.Conn) {},
			reason: "the client closed the tunnel without making a request"},
		{name: "half a ClientHello", use: func(c net.Conn) { c.Write(hello[:len(hello)/2]) },
			reason: "the client closed the tunnel during the TLS handshake, without an alert"},
		{name: "handshake, no request", use: func(c net.Conn) {
			if err := tls.Client(c, &tls.Config{ServerName: config.PublicProxyHost, RootCAs: pool(tr.root)}).Handshake(); err != nil {
				t.Errorf("a trusting client's handshake: %v", err)
			}
		}, reason: "the client closed the tunnel without making a request"},
		{name: "client without the enterprise root", use: func(c net.Conn) {
			tls.Client(c, &tls.Config{ServerName: config.PublicProxyHost}).Handshake() // system roots only
			// The client has sent its alert; sumgate reads it, then closes.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c)
		}, isError: true, reason: "rejected sumgate's certificate"},
	}
	byPort := map[int64]int{} // client port -> case
	for i, tc := range cases {
		status, c := tr.connect(t, config.PublicProxyHost+":443")
		if status != http.StatusOK {
			t.Fatalf("%s: CONNECT: %d", tc.name, status)
		}
		byPort[int64(c.LocalAddr().(*net.TCPAddr).Port)] = i
		tc.use(c)
		// Close the sending side and wait for sumgate to close the tunnel,
		// so that it has read everything before the gateway shuts down.
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
	seen := map[int]bool{}
	for _, s := range otlptest.Servers(tr.flush(t)) {
		i, ok := byPort[s.Int("client.port")]
		if s.Name != "CONNECT" || !ok {
			t.Errorf("unexpected server span %s from port %d", s.Name, s.Int("client.port"))
			continue
		}
		tc := cases[i]
		if seen[i] {
			t.Errorf("%s: more than one CONNECT span", tc.name)
		}
		seen[i] = true
		if isErr := s.StatusCode == tracepb.Status_STATUS_CODE_ERROR; isErr != tc.isError {
			t.Errorf("%s: span status %v (%q), want error=%v", tc.name, s.StatusCode, s.StatusMsg, tc.isError)
		}
		if !strings.Contains(s.Str("sumgate.reason"), tc.reason) {
			t.Errorf("%s: sumgate.reason %q, want it to say %q", tc.name, s.Str("sumgate.reason"), tc.reason)
		}
	}
	if len(seen) != len(cases) {
		t.Errorf("CONNECT spans for %d of %d tunnels", len(seen), len(cases))
	}
}

// TestCleanGoCommandRunHasNoErrorSpans: after the real go command, with
// its checksum database on as a developer has it, downloads genuine
// modules through sumgate, the README's query for every blocked or
// refused request (server spans with status error) finds nothing.
func TestCleanGoCommandRunHasNoErrorSpans(t *testing.T) {
	tr := startOTLP(t, "grpc", 0, nil)
	mods := []string{testworld.GoodPath + "@" + testworld.Version, testworld.GoodPath + "@" + testworld.NextVersion,
		testworld.UpperPath + "@" + testworld.Version, testworld.PrivatePath + "@" + testworld.Version}
	// GOSUMDB and GONOSUMDB replace GoModDownload's (the last value wins).
	out, err := testworld.GoModDownload(t, []string{"GOPROXY=" + tr.w.ProxyURL, "HTTPS_PROXY=http://" + tr.addr, "SSL_CERT_FILE=" + tr.rootFile,
		"GOSUMDB=" + tr.w.SumDBKey, "GONOSUMDB=" + testworld.PrivatePattern}, mods...)
	if err != nil || strings.Contains(string(out), `"Error"`) {
		t.Fatalf("go mod download: %v\n%s", err, out)
	}
	servers := otlptest.Servers(tr.flush(t))
	connects := 0
	for _, s := range servers {
		if s.Name == "CONNECT" {
			connects++
		}
		if s.StatusCode == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("%s %s: an Error span in a clean run: %q (sumgate.reason %q)", s.Name, s.Str("url.full"), s.StatusMsg, s.Str("sumgate.reason"))
		}
	}
	if connects == 0 {
		t.Error("no CONNECT span: the go command did not go through sumgate")
	}
}

// publishRandom publishes path@v1.0.0 in w with size bytes of random,
// incompressible content, so that its zip is about as large.
func publishRandom(t testing.TB, w *testworld.World, path string, size int) *testworld.Module {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	m := module.Version{Path: path, Version: testworld.Version}
	mod := []byte("module " + path + "\n")
	var zip bytes.Buffer
	if err := modzip.Create(&zip, m, []modzip.File{memFile{"go.mod", mod}, memFile{"random.bin", data}}); err != nil {
		t.Fatal(err)
	}
	return w.Publish(t, m, zip.Bytes(), mod)
}

// TestIncompleteDeliveryIsAnError: a client that hangs up mid-body did
// not get the module; its request span says so (an Error, with the bytes
// sent of those owed), where a whole delivery of the same file is clean.
func TestIncompleteDeliveryIsAnError(t *testing.T) {
	tr := startOTLP(t, "grpc", 0, nil)
	m := publishRandom(t, tr.w, "example.com/large", 8<<20)
	path := "/example.com/large/@v/" + testworld.Version + ".zip"

	tc := tr.intercepted(t, config.PublicProxyHost)
	fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, config.PublicProxyHost)
	tc.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(m.Zip)) {
		t.Fatalf("status %d, length %d, want 200 and %d", resp.StatusCode, resp.ContentLength, len(m.Zip))
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	tc.Close() // mid-body

	if status, body := get(t, tr.oneShot(), tr.w.ProxyURL+path); status != http.StatusOK || !bytes.Equal(body, m.Zip) {
		t.Fatalf("whole download: status %d, %d of %d bytes", status, len(body), len(m.Zip))
	}

	var spans []otlptest.Span // the two GETs, in the order sent
	for _, s := range otlptest.Servers(tr.flush(t)) {
		if s.Name == http.MethodGet && s.Str("url.full") == tr.w.ProxyURL+path {
			spans = append(spans, s)
		}
	}
	if len(spans) != 2 {
		t.Fatalf("%d request spans for the zip, want 2", len(spans))
	}
	cut, whole := spans[0], spans[1]
	wantReason := fmt.Sprintf("incomplete delivery: the client went away after %d of %d bytes", cut.Int("sumgate.bytes.sent"), len(m.Zip))
	if cut.Attrs["sumgate.delivery.incomplete"] != true || cut.StatusCode != tracepb.Status_STATUS_CODE_ERROR ||
		cut.Str("sumgate.reason") != wantReason || cut.Int("sumgate.bytes.sent") >= int64(len(m.Zip)) {
		t.Errorf("cut-short delivery: incomplete %v, status %v, reason %q (want %q), bytes sent %d",
			cut.Attrs["sumgate.delivery.incomplete"], cut.StatusCode, cut.Str("sumgate.reason"), wantReason, cut.Int("sumgate.bytes.sent"))
	}
	if _, ok := whole.Attrs["sumgate.delivery.incomplete"]; ok || whole.StatusCode == tracepb.Status_STATUS_CODE_ERROR ||
		whole.Int("sumgate.bytes.sent") != int64(len(m.Zip)) {
		t.Errorf("whole delivery: incomplete %v, status %v (%q), bytes sent %d of %d",
			whole.Attrs["sumgate.delivery.incomplete"], whole.StatusCode, whole.StatusMsg, whole.Int("sumgate.bytes.sent"), len(m.Zip))
	}
}
