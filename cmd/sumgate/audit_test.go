package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/otlptest"
	"github.com/sumgate/sumgate/internal/testworld"
)

// clearOTELEnv makes the test independent of the caller's OTEL_* settings.
func clearOTELEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
		}
	}
}

// TestRunExportsOverOTLP configures export only through the standard
// environment variables, drives the real go command through the gateway,
// and finds the spans at a real OTLP receiver, over gRPC and over HTTP.
// The batch delay is an hour, so the spans arrive only because shutdown
// flushes them.
func TestRunExportsOverOTLP(t *testing.T) {
	for _, tc := range []struct{ protocol, endpoint string }{{"grpc", "grpc"}, {"http/protobuf", "http"}} {
		t.Run(tc.endpoint, func(t *testing.T) {
			clearOTELEnv(t)
			rcv := otlptest.Start(t)
			endpoint := "http://" + rcv.GRPCAddr
			if tc.endpoint == "http" {
				endpoint = rcv.HTTPURL
			}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
			t.Setenv("OTEL_SERVICE_NAME", "sumgate-ci")
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
			w := testworld.New(t)
			r := startRun(t, w, "")
			if r.audit != "otlp" {
				t.Errorf("banner says spans go to %q, want otlp", r.audit)
			}
			out, err := testworld.GoModDownload(t, []string{"GOPROXY=" + w.ProxyURL, "HTTPS_PROXY=" + r.proxyURL, "SSL_CERT_FILE=" + r.bundle},
				testworld.GoodPath+"@v1.0.0")
			if err != nil {
				t.Fatalf("go mod download: %v\n%s", err, out)
			}
			if n := len(rcv.Spans()); n != 0 {
				t.Fatalf("%d spans exported before shutdown with an hour's batch delay", n)
			}
			if s := r.stop(t); s != 0 {
				t.Fatalf("run exited %d", s)
			}
			var zip *otlptest.Span
			servers := otlptest.Servers(rcv.Spans())
			for i, s := range servers {
				if strings.HasSuffix(s.Str("url.full"), "/"+testworld.GoodPath+"/@v/v1.0.0.zip") {
					zip = &servers[i]
				}
				if s.Resource["service.name"] != "sumgate-ci" || s.Resource["deployment.environment.name"] != "test" {
					t.Errorf("resource %v ignores OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES", s.Resource)
				}
			}
			if zip == nil {
				t.Fatalf("no server span for the zip among %d", len(servers))
			}
			want := w.Module(testworld.GoodPath, testworld.Version).ZipHash
			if zip.Str("sumgate.verdict") != "verified" || zip.Str("sumgate.hash.want") != want || !strings.HasPrefix(zip.Str("user_agent.original"), "Go-http-client") {
				t.Errorf("zip span attributes: %v", zip.Attrs)
			}
		})
	}
}

// TestRunWritesAuditFile: with no exporter configured, spans go to a
// JSON-lines file under the data directory, one parseable span per line.
func TestRunWritesAuditFile(t *testing.T) {
	clearOTELEnv(t)
	w := testworld.New(t)
	r := startRun(t, w, "")
	if !strings.HasSuffix(r.audit, "/audit/spans.jsonl") {
		t.Fatalf("banner says spans go to %q", r.audit)
	}
	status, _ := fetch(t, r.client(), w.ProxyURL+"/"+testworld.TamperedZipPath+"/@v/v1.0.0.zip")
	if status != http.StatusForbidden {
		t.Fatalf("tampered zip: %d", status)
	}
	r.stop(t)
	f, err := os.Open(r.audit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("audit file mode %v: readable by others", fi.Mode())
	}
	var found string // the blocked download's trace ID
	spans := readAudit(t, r.audit)
	for i, span := range spans {
		if span.TraceID == "" || span.SpanID == "" || span.Resource["service.name"] != "sumgate" {
			t.Errorf("line %d lacks IDs or resource: %s", i+1, span.raw)
		}
		a := span.Attributes
		if span.Name == "GET" && span.Kind == "server" && a["sumgate.verdict"] == "mismatch" {
			found = span.TraceID
			if span.Status != "error" || !strings.Contains(span.StatusMessage, "checksum mismatch") || a["sumgate.hash.got"] == a["sumgate.hash.want"] ||
				a["http.response.status_code"] != float64(403) || span.ParentSpanID != "" || len(span.Links) != 1 {
				t.Errorf("blocked download's audit record: %s", span.raw)
			}
		}
	}
	if found == "" {
		t.Fatalf("no audit record of the blocked download among %d lines", len(spans))
	}
	// The JSON log lines about that request carry its trace ID.
	var blocked, access bool
	for _, line := range strings.Split(r.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["trace_id"] != found {
			continue
		}
		blocked = blocked || rec["msg"] == "blocked" && rec["level"] == "WARN"
		access = access || rec["msg"] == "request" && rec["status"] == float64(403) && rec["span_id"] != ""
	}
	if !blocked || !access {
		t.Errorf("log lines with the blocked download's trace ID: blocked %v, access %v\n%s", blocked, access, r.logs)
	}
}

// auditSpan is one line of the audit file.
type auditSpan struct {
	Name          string         `json:"name"`
	Kind          string         `json:"kind"`
	TraceID       string         `json:"trace_id"`
	SpanID        string         `json:"span_id"`
	ParentSpanID  string         `json:"parent_span_id"`
	Status        string         `json:"status"`
	StatusMessage string         `json:"status_message"`
	Attributes    map[string]any `json:"attributes"`
	Links         []struct {
		SpanID string `json:"span_id"`
	} `json:"links"`
	Resource map[string]any `json:"resource"`
	raw      []byte
}

// readAudit returns the spans in the audit file; a line that is not a
// span fails the test.
func readAudit(t testing.TB, file string) []auditSpan {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var spans []auditSpan
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s auditSpan
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("line %d of %s is not a JSON span: %v\n%s", len(spans)+1, file, err, sc.Bytes())
		}
		s.raw = append([]byte(nil), sc.Bytes()...)
		spans = append(spans, s)
	}
	return spans
}

func fetch(t testing.TB, c *http.Client, u string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// metricValue returns the sum of the samples of name whose labels include
// every label in want (written as `key="value"`).
func metricValue(text, name string, want ...string) (float64, bool) {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)`)
	var sum float64
	found := false
	for _, line := range strings.Split(text, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ok := true
		for _, l := range want {
			ok = ok && strings.Contains(m[1], l)
		}
		if v, err := strconv.ParseFloat(m[2], 64); ok && err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

// TestAdminEndpoints: /metrics reflects a workload; /healthz, /readyz and
// /ca.pem answer.
func TestAdminEndpoints(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	w := testworld.New(t)
	r := startRun(t, w, "")
	c := r.client()
	admin := &http.Client{Timeout: 10 * time.Second}
	// Before any request, the series the block alert watches exist at 0:
	// Prometheus sees no increase() in a counter born at 1.
	_, before := fetch(t, admin, r.admin+"/metrics")
	for _, verdict := range []string{"mismatch", "security-error"} {
		for _, kind := range []string{"zip", "go.mod"} {
			if v, ok := metricValue(string(before), "sumgate_verdicts_total", `sumgate_verdict="`+verdict+`"`, `sumgate_module_kind="`+kind+`"`); !ok || v != 0 {
				t.Errorf("at start, sumgate_verdicts_total{%s, %s} = %v (present %v), want 0", verdict, kind, v, ok)
			}
		}
	}
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/" + testworld.GoodPath + "/@v/v1.0.0.zip", 200},
		{"/" + testworld.GoodPath + "/@v/v1.0.0.zip", 200}, // from the cache
		{"/" + testworld.TamperedZipPath + "/@v/v1.0.0.zip", 403},
		{"/" + testworld.GoodPath + "/@v/list", 200},
	} {
		if status, body := fetch(t, c, w.ProxyURL+tc.path); status != tc.status {
			t.Fatalf("%s: %d %s", tc.path, status, body)
		}
	}
	if body, want := waitReady(t, admin, r.admin, 200), "ready: checksum database sum.golang.org via https://sum.golang.org\n"; body != want {
		t.Errorf("/readyz says %q, want %q", body, want)
	}
	if status, body := fetch(t, admin, r.admin+"/healthz"); status != 200 {
		t.Errorf("/healthz: %d %s", status, body)
	}
	bundle, _ := os.ReadFile(r.bundle)
	if _, body := fetch(t, admin, r.admin+"/ca.pem"); !strings.HasPrefix(string(body), "-----BEGIN CERTIFICATE-----") || !strings.Contains(string(bundle), string(body)) {
		t.Errorf("/ca.pem is not the enterprise root: %s", body)
	}
	// A request is counted when its response body has been sent, which
	// is after the client has the last byte: wait for all four. Every
	// intercepted name's leaf is minted at start, in the background
	// (certs.Config.Premint), once: wait for those too.
	var text string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, body := fetch(t, admin, r.admin+"/metrics")
		text = string(body)
		n, _ := metricValue(text, "sumgate_request_duration_seconds_count")
		minted, _ := metricValue(text, "sumgate_certs_minted_total", `outcome="ok"`)
		if n >= 4 && minted >= float64(len(w.Resolve)) || time.Now().After(deadline) {
			break
		}
	}
	for _, m := range []struct {
		name   string
		labels []string
		min    float64
		max    float64
	}{
		{"sumgate_requests_total", []string{`sumgate_decision="intercept"`, `http_response_status_code="200"`}, 3, 3},
		{"sumgate_requests_total", []string{`sumgate_decision="intercept"`, `http_response_status_code="403"`}, 1, 1},
		{"sumgate_verdicts_total", []string{`sumgate_verdict="verified"`}, 2, 2},
		{"sumgate_verdicts_total", []string{`sumgate_verdict="mismatch"`}, 1, 1},
		{"sumgate_cache_lookups_total", []string{`sumgate_cache_hit="true"`}, 1, 1},
		{"sumgate_certs_minted_total", []string{`outcome="ok"`}, float64(len(w.Resolve)), float64(len(w.Resolve))},
		{"sumgate_bytes_total", []string{`direction="sent"`}, 1, 1e9},
		{"sumgate_bytes_total", []string{`direction="spooled"`}, 1, 1e9},
		{"sumgate_upstream_duration_seconds_count", []string{`kind="module"`}, 2, 2},
		{"sumgate_sumdb_lookup_duration_seconds_count", nil, 2, 2},
		{"sumgate_request_duration_seconds_count", nil, 4, 4},
		{"sumgate_spans_dropped_total", nil, 0, 0},
	} {
		v, ok := metricValue(text, m.name, m.labels...)
		if !ok || v < m.min || v > m.max {
			t.Errorf("%s%v = %v (present %v), want %v..%v", m.name, m.labels, v, ok, m.min, m.max)
		}
	}
	if v, ok := metricValue(text, "sumgate_sumdb_alert", `sumgate_sumdb_name="sum.golang.org"`); !ok || v != 0 {
		t.Errorf("sumgate_sumdb_alert = %v (present %v), want 0", v, ok)
	}
	if _, ok := metricValue(text, "sumgate_tunnels_active"); !ok {
		t.Error("/metrics lacks sumgate_tunnels_active")
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

// waitReady polls /readyz until it answers status, for up to 15s.
func waitReady(t testing.TB, c *http.Client, admin string, status int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, body := fetch(t, c, admin+"/readyz")
		if got == status {
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %s, want %d", got, body, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReadyzWaitsForTheDatabase: a gateway that cannot reach the
// checksum database at start is not ready, and becomes ready once it can.
func TestReadyzWaitsForTheDatabase(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	w := testworld.New(t)
	w.SetSumDB(testworld.SumDBDown)
	r := startRun(t, w, "")
	admin := &http.Client{Timeout: 10 * time.Second}
	time.Sleep(500 * time.Millisecond) // the first probe has failed by now
	if body := waitReady(t, admin, r.admin, http.StatusServiceUnavailable); !strings.Contains(body, "checksum database") {
		t.Errorf("/readyz says %q, want the reason", body)
	}
	if status, _ := fetch(t, admin, r.admin+"/healthz"); status != 200 {
		t.Errorf("/healthz: %d while not ready: a live process must stay healthy", status)
	}
	w.SetSumDB(testworld.SumDBHonest)
	waitReady(t, admin, r.admin, http.StatusOK)
}

// TestReadyzNamesTheDatabaseSource: with sum.golang.org answering 403 to
// everything (a corporate firewall), sumgate reads the checksum database
// through a module proxy's /sumdb/, becomes ready, says so at start-up and
// in /readyz, and still verifies and blocks.
func TestReadyzNamesTheDatabaseSource(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	w := testworld.New(t)
	w.Override(t, config.SumDBName, "/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.Error(rw, "Forbidden by corporate policy", http.StatusForbidden)
	}))
	source := w.ProxyURL + "/sumdb/" + config.SumDBName
	r := startRun(t, w, "")
	body := waitReady(t, &http.Client{Timeout: 10 * time.Second}, r.admin, http.StatusOK)
	if want := "ready: checksum database " + config.SumDBName + " via " + source + "\n"; body != want {
		t.Errorf("/readyz says %q, want %q", body, want)
	}
	logged := func() bool {
		for _, line := range strings.Split(r.logs.String(), "\n") {
			if strings.Contains(line, `"msg":"checksum database reached"`) && strings.Contains(line, `"source":"`+source+`"`) {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !logged() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if !logged() {
		t.Errorf("the start-up log does not name the source %s:\n%s", source, r.logs)
	}
	c := r.client()
	for path, status := range map[string]int{testworld.GoodPath: 200, testworld.TamperedZipPath: 403} {
		if got, body := fetch(t, c, w.ProxyURL+"/"+path+"/@v/v1.0.0.zip"); got != status {
			t.Errorf("%s: %d %.200s, want %d", path, got, body, status)
		}
	}
	if n := w.Requests(config.SumDBName, ""); n == 0 {
		t.Error("sum.golang.org was never asked")
	}
}
