package gateway_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ossf/osv-schema/bindings/go/osvschema"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/policy"
	"github.com/sumgate/sumgate/policy/advisory"
	"github.com/sumgate/sumgate/policy/advisory/advisorytest"
	"github.com/sumgate/sumgate/sumdb"
)

// policyNow is when the policy tests happen, by their clock: after every
// corpus module's .info time (2024-01-01), so that those are old.
var policyNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable time, given to the policy engine (waiver expiry,
// the cooldown) and to the verifier (the tree-head history).
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// policyEnv is a gateway applying a policy, with its spans and metrics
// recorded in memory.
type policyEnv struct {
	*env
	clock    *clock
	spans    *tracetest.SpanRecorder
	metrics  *sdkmetric.ManualReader
	advisory *advisory.Watcher // nil without advisory sources
}

// startPolicy runs a gateway in front of w under p, as sumgate run builds
// it: advisories loaded from p.Advisories.Sources by a Watcher (refreshed
// only when the test says), blocking by p.Advisories.Block. The engine and
// the verifier's tree-head history read one clock, set to policyNow.
// edit may change the rest of the configuration.
func startPolicy(t testing.TB, w *testworld.World, p config.Policy, edit func(*gateway.Config)) *policyEnv {
	t.Helper()
	pe := &policyEnv{clock: &clock{t: policyNow}, spans: tracetest.NewSpanRecorder(), metrics: sdkmetric.NewManualReader()}
	if p.Mode == "" {
		p.Mode = config.PolicyEnforce
	}
	opts := policy.Options{Now: pe.clock.Now}
	if len(p.Advisories.Sources) > 0 {
		block, err := advisory.ParseSelectors(p.Advisories.Block)
		if err != nil {
			t.Fatal(err)
		}
		aw, err := advisory.NewWatcher(context.Background(), advisory.WatcherConfig{Sources: p.Advisories.Sources, Refresh: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { aw.Close() })
		pe.advisory = aw
		opts.Advisories = policy.Advisories(aw.Current, block)
	}
	engine, err := policy.New(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	pe.env = startVerifier(t, w, nil, func(c *sumdb.Config) { c.Now = pe.clock.Now }, func(c *gateway.Config) {
		c.Policy = engine
		c.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(pe.spans))
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(pe.metrics))
		if edit != nil {
			edit(c)
		}
	})
	return pe
}

// goEnv is the environment of the go command through the gateway, from
// the public module proxy.
func (pe *policyEnv) goEnv() []string {
	return []string{"GOPROXY=" + pe.w.ProxyURL, "HTTPS_PROXY=http://" + pe.addr, "SSL_CERT_FILE=" + pe.rootFile}
}

// expect runs `go mod download mod` through the gateway and fails t
// unless it is delivered (no wantErr) or refused with an error that says
// each of wantErr.
func (pe *policyEnv) expect(t testing.TB, mod string, wantErr ...string) {
	t.Helper()
	d := pe.download(t, pe.w.ProxyURL, mod)
	if m := pe.w.Module(d.Path, d.Version); d.Error == "" && (m == nil || d.Sum != m.ZipHash) {
		t.Fatalf("%s delivered with %q, not the database's hash", mod, d.Sum)
	}
	got := d.Error
	switch {
	case len(wantErr) == 0 && got != "":
		t.Errorf("%s refused: %s", mod, got)
	case len(wantErr) > 0 && got == "":
		t.Errorf("%s delivered; want a refusal", mod)
	default:
		wantAll(t, "the go command's error", got, wantErr...)
	}
}

// requestSpans returns the attributes, as strings, of the request spans
// that ended for URLs ending in suffix, in the order they ended. Call it
// after pe.stop(), which ends every span.
func (pe *policyEnv) requestSpans(suffix string) []map[string]string {
	var out []map[string]string
	for _, s := range pe.spans.Ended() {
		a := map[string]string{}
		for _, kv := range s.Attributes() {
			a[string(kv.Key)] = kv.Value.Emit()
		}
		if s.Name() != http.MethodConnect && strings.HasSuffix(a["url.full"], suffix) {
			out = append(out, a)
		}
	}
	return out
}

// decisions returns the sumgate.policy.decisions counts by decision and
// objection ("would-block/rule").
func (pe *policyEnv) decisions(t testing.TB) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := pe.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != "sumgate.policy.decisions" || !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				d, _ := dp.Attributes.Value("sumgate.policy.decision")
				o, _ := dp.Attributes.Value("sumgate.policy.objection")
				out[d.Emit()+"/"+o.Emit()] += dp.Value
			}
		}
	}
	return out
}

// publishPackage publishes path@version in w: a module with one package
// at its root, which `go get path` needs.
func publishPackage(t testing.TB, w *testworld.World, path, version string) *testworld.Module {
	t.Helper()
	m := module.Version{Path: path, Version: version}
	mod := []byte("module " + path + "\n")
	var zip bytes.Buffer
	if err := modzip.Create(&zip, m, []modzip.File{memFile{"go.mod", mod}, memFile{"p.go", []byte("package p\n\nconst V = \"" + version + "\"\n")}}); err != nil {
		t.Fatal(err)
	}
	return w.Publish(t, m, zip.Bytes(), mod)
}

// wantAll fails t for each of wants that got lacks.
func wantAll(t testing.TB, what, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("%s lacks %q:\n%s", what, want, got)
		}
	}
}

// TestDeniedVersionIsRefusedWithTheRule: a deny rule with a version range
// refuses the versions in it with a 403 that names the rule and its
// reason; a version outside the range, or of another module, passes.
func TestDeniedVersionIsRefusedWithTheRule(t *testing.T) {
	t.Parallel()
	pe := startPolicy(t, testworld.New(t), config.Policy{Rules: []config.Rule{
		{ID: "no-old-good", Deny: testworld.GoodPath, Versions: "< v1.1.0", Reason: "CVE-2099-0001; use v1.1.0 or later"},
	}}, nil)
	for _, tt := range []struct {
		name    string
		mod     string
		wantErr []string // none: delivered
	}{
		{name: "in the range", mod: testworld.GoodPath + "@v1.0.0",
			wantErr: []string{"403 Forbidden", "sumgate: policy blocks " + testworld.GoodPath + "@v1.0.0",
				"rule no-old-good: CVE-2099-0001; use v1.1.0 or later", "Use another version, or ask for a waiver"}},
		{name: "out of the range", mod: testworld.GoodPath + "@v1.1.0"},
		{name: "another module", mod: testworld.UpperPath + "@v1.0.0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pe.expect(t, tt.mod, tt.wantErr...)
		})
	}

	pe.stop()
	for _, tt := range []struct{ suffix, decision, rules, status string }{
		{"/example.com/good/@v/v1.0.0.zip", "block", `["no-old-good"]`, "403"},
		{"/example.com/good/@v/v1.1.0.zip", "pass", "", "200"},
	} {
		ss := pe.requestSpans(tt.suffix)
		if len(ss) == 0 {
			t.Errorf("no span for %s", tt.suffix)
		}
		for _, s := range ss {
			if s["sumgate.policy.decision"] != tt.decision || s["sumgate.policy.rules"] != tt.rules || s["http.response.status_code"] != tt.status {
				t.Errorf("%s: decision %q, rules %q, status %s; want %s, %q, %s", tt.suffix,
					s["sumgate.policy.decision"], s["sumgate.policy.rules"], s["http.response.status_code"], tt.decision, tt.rules, tt.status)
			}
		}
	}
}

// TestDirectGitOfADeniedVersionIsRefused: in direct mode (GOPROXY=direct,
// vcs: verify), a tagged version that a deny rule covers is refused
// after its verification, and the go command prints the rule, although it
// falls back to fetching every branch and tag, which sumgate cannot map
// to a version: that fallback is refused for the same reason, under
// on_unverified: allow too, where it would otherwise pass.
func TestDirectGitOfADeniedVersionIsRefused(t *testing.T) {
	t.Parallel()
	const repoPath = testworld.GitHubHost + "/owner/denied"
	for _, onUnverified := range []gateway.UnverifiedPolicy{gateway.UnverifiedBlock, gateway.UnverifiedAllow} {
		t.Run(string(onUnverified), func(t *testing.T) {
			t.Parallel()
			w := testworld.New(t)
			r := w.NewGitRepo(t, testworld.GitHubHost, "owner/denied", testworld.GitRepoOptions{})
			r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module " + repoPath + "\n", "a.go": "package a\n"}))
			w.LogGit(t, repoPath, "v1.0.0")
			pe := startPolicy(t, w, config.Policy{Rules: []config.Rule{
				{ID: "no-owner", Deny: "github.com/owner/*", Reason: "a repository under review"},
			}}, func(c *gateway.Config) { c.OnUnverified = onUnverified })
			d, out := pe.goDirect(t, nil, repoPath+"@v1.0.0")
			if d.Error == "" || d.Sum != "" {
				t.Fatalf("a denied version was delivered:\n%s", out)
			}
			wantAll(t, "the go command's output", out, "remote error: sumgate: policy blocks "+repoPath+"@v1.0.0",
				"rule no-owner: a repository under review")

			pe.stop()
			var blocked int
			for _, s := range pe.requestSpans("/git-upload-pack") {
				if s["sumgate.policy.decision"] == "block" {
					blocked++
					if s["sumgate.policy.rules"] != `["no-owner"]` || s["sumgate.module.version"] != "v1.0.0" {
						t.Errorf("a refused git fetch's span: rules %s, version %s", s["sumgate.policy.rules"], s["sumgate.module.version"])
					}
				}
			}
			if blocked == 0 {
				t.Error("no git-upload-pack span records the policy's block")
			}
		})
	}
}

// TestCooldownServesTheNewestOldEnoughVersion: under a 72h cooldown, with
// the age of each version taken from the tree-head history (when sumgate
// first saw a tree containing its record), `go get M@latest` resolves to
// the newest version old enough, the young one is absent from `go list
// -m -versions`, and asking for it by name is a 403 saying when it
// becomes available.
func TestCooldownServesTheNewestOldEnoughVersion(t *testing.T) {
	t.Parallel()
	const path = "example.com/cooled"
	w := testworld.New(t)
	pe := startPolicy(t, w, config.Policy{Cooldown: 72 * time.Hour}, nil)

	// Ten days ago sumgate first saw the database (a corpus module, dated
	// by its .info time: the history is too short for it).
	pe.clock.Set(policyNow.Add(-10 * 24 * time.Hour))
	pe.expect(t, testworld.GoodPath+"@v1.0.0") // old by its .info time
	// Five days ago v1.0.0 was published and first asked for: its record
	// is in the tree seen then, so it is too young then.
	publishPackage(t, w, path, "v1.0.0")
	seen := policyNow.Add(-5 * 24 * time.Hour)
	pe.clock.Set(seen)
	// The module proxy's @latest names v1.0.0, whose .info time, the
	// publisher's word, says 2024: the history says it is new.
	status, body := get(t, pe.oneShot(), w.ProxyURL+"/"+path+"/@latest")
	if status != http.StatusForbidden {
		t.Errorf("@latest: %d %s; want 403: v1.0.0 is 0h old", status, body)
	}
	wantAll(t, "the @latest refusal", string(body), "cooldown 72h: available from "+seen.Add(72*time.Hour).Format(time.RFC3339))
	pe.expect(t, path+"@v1.0.0", "403 Forbidden",
		"cooldown 72h: available from "+seen.Add(72*time.Hour).Format(time.RFC3339))
	// Now v1.1.0 is published; both are listed upstream.
	publishPackage(t, w, path, "v1.1.0")
	pe.clock.Set(policyNow)
	resp, err := w.HTTPClient().Get(w.ProxyURL + "/" + path + "/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	list, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(list) != "v1.0.0\nv1.1.0\n" {
		t.Fatalf("the test world lists %q", list)
	}

	dir, home := t.TempDir(), t.TempDir()
	goCmd := func(args ...string) string {
		t.Helper()
		out, err := testworld.Go(t, dir, home, pe.goEnv(), args...)
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	goCmd("mod", "init", "example.com/client")
	goCmd("get", path+"@latest")
	if got := goCmd("list", "-m", "-f", "{{.Version}}", path); strings.TrimSpace(got) != "v1.0.0" {
		t.Errorf("go get %s@latest chose %s, want v1.0.0 (v1.1.0 is 0h old)", path, got)
	}
	if got := goCmd("list", "-m", "-versions", path); strings.TrimSpace(got) != path+" v1.0.0" {
		t.Errorf("go list -m -versions: %q, want only v1.0.0", got)
	}
	pe.expect(t, path+"@v1.1.0", "403 Forbidden",
		"sumgate: policy blocks "+path+"@v1.1.0",
		"cooldown 72h: available from "+policyNow.Add(72*time.Hour).Format(time.RFC3339),
		"checksum database record", "Use an older version, or wait")

	pe.stop()
	lists := pe.requestSpans("/" + path + "/@v/list")
	if len(lists) == 0 {
		t.Fatal("no span for the version list")
	}
	for _, s := range lists {
		if s["sumgate.policy.left_out"] != `["v1.1.0 (cooldown)"]` || s["http.response.status_code"] != "200" {
			t.Errorf("the list's span: left out %s, status %s; want v1.1.0 (cooldown), 200", s["sumgate.policy.left_out"], s["http.response.status_code"])
		}
	}
	if ss := pe.requestSpans("/" + path + "/@latest"); len(ss) != 1 || ss[0]["sumgate.policy.decision"] != "block" ||
		!strings.HasPrefix(ss[0]["sumgate.policy.cooldown.evidence"], "checksum database record") {
		t.Errorf("the @latest spans: %v", ss)
	}
	young := pe.requestSpans("/" + path + "/@v/v1.1.0.zip")
	if len(young) == 0 {
		t.Error("no span for the young zip")
	}
	for _, s := range young {
		if s["sumgate.policy.decision"] != "block" || !strings.HasPrefix(s["sumgate.policy.cooldown.evidence"], "checksum database record") ||
			s["sumgate.policy.cooldown.until"] != policyNow.Add(72*time.Hour).Format(time.RFC3339) {
			t.Errorf("the young zip's span: decision %s, evidence %q, until %s", s["sumgate.policy.decision"],
				s["sumgate.policy.cooldown.evidence"], s["sumgate.policy.cooldown.until"])
		}
	}
}

// advisoryDB writes, in dir, the Go vulnerability database's v1 layout
// (zipped: the offline form) holding vulns, and a malicious-packages tree
// holding mal; it returns the two sources.
func advisoryDB(t testing.TB, dir string, vulns []*osvschema.Vulnerability, mal ...*osvschema.Vulnerability) []string {
	t.Helper()
	v1 := filepath.Join(dir, "v1")
	advisorytest.WriteV1(t, v1, vulns...)
	advisorytest.Zip(t, v1, filepath.Join(dir, "vulndb.zip"))
	tree := filepath.Join(dir, "malicious-packages")
	advisorytest.WriteTree(t, tree, mal...)
	return []string{filepath.Join(dir, "vulndb.zip"), tree}
}

// lowSeverity gives v a CVSS 3.1 vector scoring 1.6.
func lowSeverity(v *osvschema.Vulnerability) *osvschema.Vulnerability {
	v.Severity = []*osvschema.Severity{{Type: osvschema.Severity_CVSS_V3, Score: "CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:L"}}
	return v
}

// TestAdvisoriesBlockVersions: versions covered by an OSV advisory the
// block list selects (a Go vulnerability database entry, selected by its
// CVE alias) are refused with its IDs; a MAL- entry blocks under
// "malicious" whatever its severity, where an unselected advisory of the
// same severity does not; a fixed version passes.
func TestAdvisoriesBlockVersions(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)
	publishPackage(t, w, "example.com/typosquat", "v1.0.0")
	sources := advisoryDB(t, t.TempDir(), []*osvschema.Vulnerability{
		advisorytest.Vuln("GO-2099-0001", []string{"CVE-2099-0001", "GHSA-xxxx-yyyy-zzzz"},
			advisorytest.Affected(testworld.GoodPath, "introduced:0", "fixed:1.1.0")),
		lowSeverity(advisorytest.Vuln("GO-2099-0002", []string{"CVE-2099-0002"}, advisorytest.Affected(testworld.UpperPath, "introduced:0"))),
	}, lowSeverity(advisorytest.Malicious("MAL-2099-0001", "example.com/typosquat")))
	pe := startPolicy(t, w, config.Policy{Advisories: config.Advisories{Sources: sources,
		Block: []string{"malicious", "CVE-2099-0001", "cvss>=7.0"}}}, nil)

	for _, tt := range []struct {
		name    string
		mod     string
		wantErr []string // none: delivered
	}{
		{name: "an affected version", mod: testworld.GoodPath + "@v1.0.0",
			wantErr: []string{"403 Forbidden", "sumgate: policy blocks " + testworld.GoodPath + "@v1.0.0",
				"advisory GO-2099-0001 (CVE-2099-0001, GHSA-xxxx-yyyy-zzzz)"}},
		{name: "the fixed version", mod: testworld.GoodPath + "@v1.1.0"},
		{name: "a malicious package of low severity", mod: "example.com/typosquat@v1.0.0",
			wantErr: []string{"403 Forbidden", "advisory MAL-2099-0001: a known malicious version"}},
		{name: "an unselected advisory of the same severity", mod: testworld.UpperPath + "@v1.0.0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pe.expect(t, tt.mod, tt.wantErr...)
		})
	}

	pe.stop()
	for _, tt := range []struct{ suffix, want string }{
		{"/example.com/good/@v/v1.0.0.zip", `["GO-2099-0001","CVE-2099-0001","GHSA-xxxx-yyyy-zzzz"]`},
		{"/example.com/typosquat/@v/v1.0.0.zip", `["MAL-2099-0001"]`},
	} {
		ss := pe.requestSpans(tt.suffix)
		if len(ss) == 0 {
			t.Errorf("no span for %s", tt.suffix)
		}
		for _, s := range ss { // the go command asks again after a 403
			if s["sumgate.policy.advisories"] != tt.want || s["sumgate.policy.decision"] != "block" {
				t.Errorf("%s: decision %s, advisories %s; want block, %s", tt.suffix, s["sumgate.policy.decision"], s["sumgate.policy.advisories"], tt.want)
			}
		}
	}
}

// TestWaiverLetsOneVersionThroughUntilItExpires: a waiver of a deny rule
// for one module@version lets that version through, with the waiver and
// its owner on the span, and not the rule's other versions; after the
// end of its last day (UTC) it no longer does, and the 403 says it
// expired.
func TestWaiverLetsOneVersionThroughUntilItExpires(t *testing.T) {
	t.Parallel()
	pe := startPolicy(t, testworld.New(t), config.Policy{
		Rules: []config.Rule{{ID: "no-good", Deny: testworld.GoodPath, Reason: "under review"}},
		Waivers: []config.Waiver{{Rule: "no-good", Module: testworld.GoodPath + "@v1.0.0", Owner: "security@corp.example",
			Expires: policyNow.Format(time.DateOnly)}},
	}, nil)
	for _, tt := range []struct {
		name    string
		now     time.Time
		mod     string
		wantErr []string // none: delivered
	}{
		{name: "the waived version", now: policyNow, mod: testworld.GoodPath + "@v1.0.0"},
		{name: "another version", now: policyNow, mod: testworld.GoodPath + "@v1.1.0",
			wantErr: []string{"rule no-good: under review"}},
		{name: "the waived version on its last second", now: policyNow.Truncate(24 * time.Hour).Add(24*time.Hour - time.Second),
			mod: testworld.GoodPath + "@v1.0.0"},
		{name: "the waived version after its last day", now: policyNow.Truncate(24 * time.Hour).Add(24 * time.Hour),
			mod: testworld.GoodPath + "@v1.0.0",
			wantErr: []string{"403 Forbidden", "rule no-good: under review",
				"waiver of no-good by security@corp.example expired at the end of " + policyNow.Format(time.DateOnly)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pe.clock.Set(tt.now)
			pe.expect(t, tt.mod, tt.wantErr...)
		})
	}

	pe.stop()
	ss := pe.requestSpans("/example.com/good/@v/v1.0.0.zip")
	if len(ss) < 3 {
		t.Fatalf("%d spans for the waived zip, want 2 and those after expiry", len(ss))
	}
	waiver := `["no-good (security@corp.example, until ` + policyNow.Format(time.DateOnly) + `)"]`
	for i, s := range ss {
		want, waivers := "pass", waiver
		if i >= 2 {
			want, waivers = "block", ""
		}
		if s["sumgate.policy.decision"] != want || s["sumgate.policy.waivers"] != waivers {
			t.Errorf("request %d of the waived zip: decision %s, waivers %q; want %s, %q", i, s["sumgate.policy.decision"], s["sumgate.policy.waivers"], want, waivers)
		}
	}
}

// TestDryRunPassesAndRecords: in dry-run a version a rule would block is
// delivered, and the span and the sumgate.policy.decisions metric record
// that it would have been blocked, by what.
func TestDryRunPassesAndRecords(t *testing.T) {
	t.Parallel()
	pe := startPolicy(t, testworld.New(t), config.Policy{Mode: config.PolicyDryRun,
		Rules: []config.Rule{{ID: "no-good", Deny: testworld.GoodPath, Reason: "rolling out"}}}, nil)
	pe.expect(t, testworld.GoodPath+"@v1.0.0")
	pe.stop()
	ss := pe.requestSpans("/example.com/good/@v/v1.0.0.zip")
	if len(ss) != 1 || ss[0]["sumgate.policy.would_block"] != "true" || ss[0]["sumgate.policy.decision"] != "would-block" ||
		ss[0]["sumgate.policy.rules"] != `["no-good"]` || ss[0]["http.response.status_code"] != "200" {
		t.Errorf("the zip's spans: %v", ss)
	}
	if got := pe.decisions(t); got["would-block/rule"] != 1 || got["block/rule"] != 0 {
		t.Errorf("sumgate.policy.decisions: %v, want would-block/rule 1", got)
	}
}

// TestCachedFileIsRefusedAfterAnAdvisoryArrives: a verified zip in the
// gateway's cache is checked against the policy on every hit, so an
// advisory that arrives with a refresh of the database refuses it.
func TestCachedFileIsRefusedAfterAnAdvisoryArrives(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	advisorytest.WriteV1(t, dir, advisorytest.Vuln("GO-2099-0009", nil, advisorytest.Affected("example.com/other", "introduced:0")))
	pe := startPolicy(t, testworld.New(t), config.Policy{Advisories: config.Advisories{Sources: []string{dir}, Block: []string{"all"}}}, nil)
	mod := testworld.GoodPath + "@v1.0.0"
	pe.expect(t, mod)
	advisorytest.WriteV1(t, dir, advisorytest.Vuln("GO-2099-0010", []string{"CVE-2099-0010"}, advisorytest.Affected(testworld.GoodPath, "introduced:0")))
	if err := pe.advisory.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	pe.expect(t, mod, "403 Forbidden", "advisory GO-2099-0010 (CVE-2099-0010)")

	pe.stop()
	ss := pe.requestSpans("/example.com/good/@v/v1.0.0.zip")
	if len(ss) < 2 || ss[0]["sumgate.policy.decision"] != "pass" {
		t.Fatalf("the zip's spans: %v; want one passed, then those after the advisory", ss)
	}
	for _, s := range ss[1:] {
		if s["sumgate.cache.hit"] != "true" || s["sumgate.policy.decision"] != "block" || s["sumgate.policy.advisories"] != `["GO-2099-0010","CVE-2099-0010"]` {
			t.Errorf("after the advisory: cache hit %s, decision %s, advisories %s; want a cache hit, blocked by GO-2099-0010",
				s["sumgate.cache.hit"], s["sumgate.policy.decision"], s["sumgate.policy.advisories"])
		}
	}
}

// TestUnverifiedDirectGitIsDecidedOnItsPath: under on_unverified: allow,
// a direct git fetch that maps to no version (a commit) passes
// unverified, but not past a deny rule on its module path: with no
// version, it is inside every deny range.
func TestUnverifiedDirectGitIsDecidedOnItsPath(t *testing.T) {
	t.Parallel()
	const repoPath = testworld.GitHubHost + "/owner/denied"
	w := testworld.New(t)
	r := w.NewGitRepo(t, testworld.GitHubHost, "owner/denied", testworld.GitRepoOptions{})
	commit := r.Commit(t, map[string]string{"go.mod": "module " + repoPath + "\n", "a.go": "package a\n"})
	pe := startPolicy(t, w, config.Policy{Rules: []config.Rule{
		{ID: "no-owner", Deny: "github.com/owner/*", Versions: "< v2.0.0", Reason: "a repository under review"},
	}}, func(c *gateway.Config) { c.OnUnverified = gateway.UnverifiedAllow })
	d, out := pe.goDirect(t, nil, repoPath+"@"+commit)
	if d.Error == "" || d.Sum != "" {
		t.Fatalf("an unverified commit of a denied module was delivered:\n%s", out)
	}
	wantAll(t, "the go command's output", out, "sumgate: policy blocks "+repoPath, "rule no-owner: a repository under review")
}
