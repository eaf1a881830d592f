package sumdb_test

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/note"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/internal/upstream"
	"github.com/sumgate/sumgate/sumdb"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// newVerifier returns a verifier for w's checksum database with its state
// in dataDir (a fresh directory if ""), after applying edit to the config.
func newVerifier(t testing.TB, w *testworld.World, dataDir string, edit func(*sumdb.Config)) *sumdb.Verifier {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := sumdb.Config{
		Key:           w.SumDBKey,
		DataDir:       dataDir,
		ModuleProxies: append([]string{w.ProxyURL}, w.MirrorURLs...),
		Private:       testworld.PrivatePattern,
		HTTPClient:    w.HTTPClient(),
		Logger:        slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&cfg)
	}
	v, err := sumdb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// check runs one check of the served file of kind for path@version.
func check(t testing.TB, w *testworld.World, v *sumdb.Verifier, path, version string, kind sumdb.Kind) sumdb.Verdict {
	t.Helper()
	m := w.Module(path, version)
	if m == nil {
		t.Fatalf("no module %s@%s in the test world", path, version)
	}
	file := m.WriteMod(t)
	if kind == sumdb.KindZip {
		file = m.WriteZip(t)
	}
	vd, err := v.Check(context.Background(), m.Version, kind, file)
	if err != nil {
		t.Fatalf("Check(%s, %s): %v", m.Version, kind, err)
	}
	return vd
}

func TestCheckVerdicts(t *testing.T) {
	w := testworld.New(t)
	v := newVerifier(t, w, "", nil)
	tests := []struct {
		name    string
		path    string
		kind    sumdb.Kind
		want    sumdb.Outcome
		wantMsg string // substring of the verdict's String
	}{
		{"genuine zip", testworld.GoodPath, sumdb.KindZip, sumdb.Verified, "matches the checksum database"},
		{"genuine go.mod", testworld.GoodPath, sumdb.KindMod, sumdb.Verified, "matches the checksum database"},
		{"tampered zip", testworld.TamperedZipPath, sumdb.KindZip, sumdb.Mismatch, "checksum mismatch: downloaded h1:"},
		{"tampered go.mod", testworld.TamperedModPath, sumdb.KindMod, sumdb.Mismatch, "checksum mismatch: downloaded h1:"},
		{"genuine zip beside tampered go.mod", testworld.TamperedModPath, sumdb.KindZip, sumdb.Verified, "matches"},
		{"unknown version", testworld.UnknownPath, sumdb.KindZip, sumdb.NotFound, "not in the checksum database"},
		{"private module", testworld.PrivatePath, sumdb.KindZip, sumdb.Private, "private module"},
		{"upper-case path", testworld.UpperPath, sumdb.KindZip, sumdb.Verified, "matches"},
		{"upper-case path go.mod", testworld.UpperPath, sumdb.KindMod, sumdb.Verified, "matches"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vd := check(t, w, v, tt.path, testworld.Version, tt.kind)
			if vd.Outcome != tt.want {
				t.Fatalf("outcome = %v, want %v; verdict: %s", vd.Outcome, tt.want, vd)
			}
			if !strings.Contains(vd.String(), tt.wantMsg) || !strings.Contains(vd.String(), tt.path+"@"+testworld.Version) {
				t.Errorf("verdict %q does not name the module or say %q", vd, tt.wantMsg)
			}
			m := w.Module(tt.path, testworld.Version)
			logged := m.ZipHash
			if tt.kind == sumdb.KindMod {
				logged = m.ModHash
			}
			if vd.Got == "" || !strings.HasPrefix(vd.Got, "h1:") {
				t.Errorf("Got = %q, want the h1: hash of the served bytes", vd.Got)
			}
			switch tt.want {
			case sumdb.Verified:
				if vd.Got != logged || vd.Want != logged || vd.TreeSize == 0 {
					t.Errorf("got %s want %s tree %d; database logged %s", vd.Got, vd.Want, vd.TreeSize, logged)
				}
			case sumdb.Mismatch:
				if vd.Want != logged || vd.Got == logged || !strings.Contains(vd.String(), vd.Got) || !strings.Contains(vd.String(), vd.Want) {
					t.Errorf("mismatch verdict %q must name both hashes; logged %s", vd, logged)
				}
				if vd.Advice() == "" {
					t.Error("a mismatch must say what to do")
				}
			}
		})
	}
}

// TestHostileZipIsBlocked holds threat 2: a zip whose hash matches the
// database but whose structure is hostile is blocked, not crashed on.
func TestHostileZipIsBlocked(t *testing.T) {
	w := testworld.New(t)
	v := newVerifier(t, w, "", nil)
	why := map[string]string{ // class -> what the reason must say
		testworld.HostileTraversal: `invalid path element ".."`,
		testworld.HostileCasefold:  "case-insensitive file name collision",
		testworld.HostileSymlink:   "is not a regular file",
		testworld.HostilePrefix:    "does not have prefix",
		testworld.HostileOversize:  "too large",
		testworld.HostileInflate:   "does not inflate to its declared",
	}
	seen := map[string]bool{}
	for _, m := range w.Modules() {
		if m.Hostile == "" {
			continue
		}
		seen[m.Hostile] = true
		t.Run(m.Hostile, func(t *testing.T) {
			vd := check(t, w, v, m.Path, m.Version.Version, sumdb.KindZip)
			if vd.Outcome != sumdb.Mismatch || !strings.HasPrefix(vd.Reason, "malformed zip: ") || !strings.Contains(vd.Reason, why[m.Hostile]) {
				t.Fatalf("verdict %s, want a malformed-zip mismatch saying %q", vd, why[m.Hostile])
			}
			if vd.Want != m.ZipHash {
				t.Errorf("Want = %q, want the logged %q", vd.Want, m.ZipHash)
			}
		})
	}
	for class := range why {
		if !seen[class] {
			t.Errorf("test world has no hostile zip of class %q", class)
		}
	}
}

// TestZipWithTooManyEntriesIsBlocked: a zip that could make the verifier
// hold millions of entry headers is rejected before it is parsed.
func TestZipWithTooManyEntriesIsBlocked(t *testing.T) {
	w := testworld.New(t)
	v := newVerifier(t, w, "", func(c *sumdb.Config) { c.MaxZipEntries = 1 })
	vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip)
	if vd.Outcome != sumdb.Mismatch || !strings.Contains(vd.Reason, "more than 1 entries") {
		t.Fatalf("verdict %s, want a malformed-zip mismatch for too many entries", vd)
	}
}

// TestPrivatePathsNeverReachTheDatabase holds threat 16.
func TestPrivatePathsNeverReachTheDatabase(t *testing.T) {
	w := testworld.New(t)
	v := newVerifier(t, w, "", nil)
	w.ResetRequests()
	for _, kind := range []sumdb.Kind{sumdb.KindZip, sumdb.KindMod} {
		if vd := check(t, w, v, testworld.PrivatePath, testworld.Version, kind); vd.Outcome != sumdb.Private {
			t.Fatalf("verdict %s, want private", vd)
		}
	}
	if n := w.Requests(config.SumDBName, ""); n != 0 {
		t.Errorf("%d requests reached the checksum database for a private module", n)
	}
	for _, host := range []string{config.PublicProxyHost, "goproxy.cn", "goproxy.io", "mirrors.aliyun.com"} {
		if n := w.Requests(host, ""); n != 0 {
			t.Errorf("%d requests reached %s for a private module", n, host)
		}
	}
}

// TestDatabaseOutageFailsClosed holds threat 3: an unreachable database
// and one that answers 404 to everything never turn into a pass.
func TestDatabaseOutageFailsClosed(t *testing.T) {
	tests := []struct {
		mode testworld.SumDBMode
		want sumdb.Outcome
	}{
		{testworld.SumDBDown, sumdb.Unavailable},
		{testworld.SumDBNotFound, sumdb.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.want.String(), func(t *testing.T) {
			w := testworld.New(t)
			v := newVerifier(t, w, "", nil)
			w.SetSumDB(tt.mode)
			vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip)
			if vd.Outcome != tt.want || vd.Pass() {
				t.Fatalf("verdict %s, want %v", vd, tt.want)
			}
			if vd.Got == "" || vd.Advice() == "" {
				t.Errorf("verdict %q should carry the downloaded hash and advice", vd)
			}
			// A transient failure must not stick.
			w.SetSumDB(testworld.SumDBHonest)
			if vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
				t.Fatalf("after the outage: verdict %s, want verified", vd)
			}
		})
	}
}

func TestUnreachableDatabase(t *testing.T) {
	w := testworld.New(t)
	closed := closedAddr(t)
	resolve := map[string]string{}
	for host := range w.Resolve {
		resolve[host] = closed
	}
	v := newVerifier(t, w, "", func(c *sumdb.Config) {
		c.HTTPClient = upstream.NewClient(upstream.Options{Roots: w.Roots, Resolve: resolve})
	})
	vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip)
	if vd.Outcome != sumdb.Unavailable || !strings.Contains(vd.Reason, "unreachable") {
		t.Fatalf("verdict %s, want unavailable naming the unreachable database", vd)
	}
}

// TestFallbackToProxySumDB: with sum.golang.org unreachable, the database
// is read through the first module proxy that supports it.
func TestFallbackToProxySumDB(t *testing.T) {
	w := testworld.New(t)
	resolve := map[string]string{}
	for host, addr := range w.Resolve {
		resolve[host] = addr
	}
	resolve[config.SumDBName] = closedAddr(t)
	v := newVerifier(t, w, "", func(c *sumdb.Config) {
		c.HTTPClient = upstream.NewClient(upstream.Options{Roots: w.Roots, Resolve: resolve})
	})
	vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip)
	if vd.Outcome != sumdb.Verified {
		t.Fatalf("verdict %s, want verified through the proxy", vd)
	}
	if n := w.Requests(config.PublicProxyHost, "/sumdb/"+config.SumDBName+"/supported"); n != 1 {
		t.Errorf("proxy answered %d supported probes, want 1", n)
	}
	if n := w.Requests(config.PublicProxyHost, "/sumdb/"+config.SumDBName+"/lookup/"); n != 1 {
		t.Errorf("proxy answered %d lookups, want 1", n)
	}
}

// TestBlockedDatabaseIsReadThroughProxies: sum.golang.org answering 403
// to everything (a corporate firewall) is one source failing, not the
// database's word: genuine modules still verify through a module proxy's
// /sumdb/, tampered ones are still blocked, an unknown version is still
// not found, and Source names the proxy.
func TestBlockedDatabaseIsReadThroughProxies(t *testing.T) {
	checks := []struct {
		path string
		kind sumdb.Kind
		want sumdb.Outcome
	}{
		{testworld.GoodPath, sumdb.KindZip, sumdb.Verified},
		{testworld.GoodPath, sumdb.KindMod, sumdb.Verified},
		{testworld.TamperedZipPath, sumdb.KindZip, sumdb.Mismatch},
		{testworld.TamperedModPath, sumdb.KindMod, sumdb.Mismatch},
		{testworld.UnknownPath, sumdb.KindZip, sumdb.NotFound},
	}
	for _, tt := range []struct {
		name   string
		forbid bool // sum.golang.org answers 403 to everything
	}{
		{"honest", false},
		{"sum.golang.org forbidden", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := testworld.New(t)
			source := "https://" + config.SumDBName
			if tt.forbid {
				w.Override(t, config.SumDBName, "/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
					http.Error(rw, "Forbidden by corporate policy", http.StatusForbidden)
				}))
				source = w.ProxyURL + "/sumdb/" + config.SumDBName
			}
			v := newVerifier(t, w, "", nil)
			if s := v.Source(); s != "" {
				t.Fatalf("Source() = %q before any answer, want \"\"", s)
			}
			for _, c := range checks {
				if vd := check(t, w, v, c.path, testworld.Version, c.kind); vd.Outcome != c.want {
					t.Errorf("verdict %s, want %v", vd, c.want)
				}
			}
			if s := v.Source(); s != source {
				t.Errorf("Source() = %q, want %q", s, source)
			}
			if n := w.Requests(config.SumDBName, "/lookup/"); n == 0 {
				t.Error("sum.golang.org was never asked")
			}
			if err := v.Probe(context.Background()); err != nil {
				t.Errorf("Probe: %v", err)
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestWrongSignatureKey(t *testing.T) {
	w := testworld.New(t)
	_, vkey, err := note.GenerateKey(nil, config.SumDBName)
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, w, "", func(c *sumdb.Config) { c.Key = vkey })
	vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip)
	if vd.Outcome != sumdb.Unavailable || !strings.Contains(vd.Reason, "verif") {
		t.Fatalf("verdict %s, want unavailable because the signature does not verify", vd)
	}
}

// TestForkIsDetectedAndFailsClosed holds threat 4.
func TestForkIsDetectedAndFailsClosed(t *testing.T) {
	w := testworld.New(t)
	dir := t.TempDir()
	v := newVerifier(t, w, dir, nil)
	if vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("before the fork: %s", vd)
	}
	w.SetSumDB(testworld.SumDBForked)
	vd := check(t, w, v, testworld.UpperPath, testworld.Version, sumdb.KindZip)
	if vd.Outcome != sumdb.SecurityError || vd.Pass() {
		t.Fatalf("on the fork: verdict %s, want a security error", vd)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "sumdb", "*", "SECURITY-ALERT"))
	if len(matches) != 1 {
		t.Fatalf("no durable alert file: %v", matches)
	}
	evidence, _ := os.ReadFile(matches[0])
	if !strings.Contains(string(evidence), "SECURITY ERROR") {
		t.Errorf("alert file lacks the evidence:\n%s", evidence)
	}

	// Fail closed: even with the honest database back, even for a version
	// proven before, even after a restart.
	w.SetSumDB(testworld.SumDBHonest)
	for _, v := range []*sumdb.Verifier{v, newVerifier(t, w, dir, nil)} {
		for _, path := range []string{testworld.GoodPath, testworld.UpperPath} {
			vd := check(t, w, v, path, testworld.Version, sumdb.KindZip)
			if vd.Outcome != sumdb.SecurityError || !strings.Contains(vd.Reason, matches[0]) {
				t.Fatalf("after the fork: verdict %s, want a security error naming %s", vd, matches[0])
			}
		}
	}
	if vd := check(t, w, v, testworld.PrivatePath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Private {
		t.Errorf("private modules do not involve the database: verdict %s", vd)
	}

	// The operator investigates and removes the alert.
	if err := os.Remove(matches[0]); err != nil {
		t.Fatal(err)
	}
	if vd := check(t, w, v, testworld.UpperPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("after the operator acted: %s", vd)
	}
}

// TestPersistenceAcrossRestart: a proven version needs no network after a
// restart, and authenticated tiles are reused.
func TestPersistenceAcrossRestart(t *testing.T) {
	w := testworld.New(t)
	dir := t.TempDir()
	first := newVerifier(t, w, dir, nil)
	if vd := check(t, w, first, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified || vd.Cached {
		t.Fatalf("first check: %s (cached %v)", vd, vd.Cached)
	}
	if w.Requests(config.SumDBName, "/tile/") == 0 {
		t.Fatal("the first lookup fetched no tiles; the test cannot show reuse")
	}

	w.ResetRequests()
	second := newVerifier(t, w, dir, nil)
	for _, kind := range []sumdb.Kind{sumdb.KindZip, sumdb.KindMod} {
		vd := check(t, w, second, testworld.GoodPath, testworld.Version, kind)
		if vd.Outcome != sumdb.Verified || !vd.Cached || vd.TreeSize == 0 {
			t.Fatalf("after restart: %s (cached %v)", vd, vd.Cached)
		}
	}
	if n := w.Requests("", ""); n != 0 {
		t.Errorf("a proven version made %d requests after a restart, want 0", n)
	}

	// A tampered copy of a proven version is still caught offline.
	if vd := check(t, w, second, testworld.TamperedZipPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Mismatch {
		t.Fatalf("tampered: %s", vd)
	}
	w.ResetRequests()
	if vd := check(t, w, second, testworld.TamperedZipPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Mismatch || !vd.Cached {
		t.Fatalf("tampered again: %s", vd)
	}
	if n := w.Requests("", ""); n != 0 {
		t.Errorf("re-checking a proven version made %d requests", n)
	}

	// A new version needs its lookup, but the tiles are on disk already.
	w.ResetRequests()
	third := newVerifier(t, w, dir, nil)
	if vd := check(t, w, third, testworld.UpperPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("new version: %s", vd)
	}
	if n := w.Requests(config.SumDBName, "/lookup/"); n != 1 {
		t.Errorf("%d lookups, want 1", n)
	}
	if n := w.Requests(config.SumDBName, "/tile/"); n != 0 {
		t.Errorf("%d tiles refetched after a restart, want 0", n)
	}
}

func TestConcurrentChecksShareOneLookup(t *testing.T) {
	w := testworld.New(t)
	v := newVerifier(t, w, "", nil)
	m := w.Module(testworld.GoodPath, "v1.1.0")
	zipFile, modFile := m.WriteZip(t), m.WriteMod(t)
	w.ResetRequests()
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 64 {
		wg.Go(func() {
			kind, file := sumdb.KindZip, zipFile
			if i%2 == 1 {
				kind, file = sumdb.KindMod, modFile
			}
			vd, err := v.Check(context.Background(), m.Version, kind, file)
			if err != nil || vd.Outcome != sumdb.Verified {
				errs <- vd.String() + " " + errString(err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := w.Requests(config.SumDBName, "/lookup/"); n != 1 {
		t.Errorf("64 concurrent checks made %d lookups, want 1", n)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestCheckRejectsInvalidModules(t *testing.T) {
	w := testworld.New(t)
	v := newVerifier(t, w, "", nil)
	file := w.Module(testworld.GoodPath, testworld.Version).WriteZip(t)
	for _, m := range []module.Version{
		{Path: "example.com/good", Version: "v1.0"},
		{Path: "example.com/good", Version: "latest"},
		{Path: "example.com/good/v2", Version: "v1.0.0"},
		{Path: "../etc/passwd", Version: "v1.0.0"},
		{Path: "Example.com/good", Version: "v1.0.0"},
	} {
		if vd, err := v.Check(context.Background(), m, sumdb.KindZip, file); err == nil {
			t.Errorf("Check(%v) = %s, want an error", m, vd)
		}
	}
	if n := w.Requests("", ""); n != 0 {
		t.Errorf("invalid modules made %d requests", n)
	}
}

// TestParseEscaped holds threat 6: the identity that is verified is the
// decoded one, and anything that does not decode cleanly is rejected.
func TestParseEscaped(t *testing.T) {
	tests := []struct {
		path, version string
		want          string // decoded path@version, or "" for an error
	}{
		{"github.com/!upper/!case", "v1.0.0", "github.com/Upper/Case@v1.0.0"},
		{"github.com/upper/case", "v1.0.0", "github.com/upper/case@v1.0.0"},
		{"github.com/Upper/Case", "v1.0.0", ""}, // upper case must be escaped
		{"github.com/!!x/y", "v1.0.0", ""},
		{"github.com/x!/y", "v1.0.0", ""},
		{"example.com/m", "v1.0.0-!r!c.1", "example.com/m@v1.0.0-RC.1"},
		{"example.com/m", "v1.0.0-RC.1", ""},
		{"example.com/m", "v1.0", ""},
		{"example.com/m", "v1.0.0+meta", ""},
		{"example.com/m/v2", "v1.0.0", ""},
		{"example.com/m", "v2.0.0", ""},
		{"example.com/m", "v2.0.0+incompatible", "example.com/m@v2.0.0+incompatible"},
		{"example.com/../m", "v1.0.0", ""},
		{"/example.com/m", "v1.0.0", ""},
		{"example.com/m", "", ""},
	}
	for _, tt := range tests {
		m, err := sumdb.ParseEscaped(tt.path, tt.version)
		got := ""
		if err == nil {
			got = m.String()
		}
		if got != tt.want {
			t.Errorf("ParseEscaped(%q, %q) = %q, %v; want %q", tt.path, tt.version, got, err, tt.want)
		}
	}
}

func FuzzParseEscaped(f *testing.F) {
	f.Add("github.com/!upper/!case", "v1.0.0")
	f.Add("example.com/m", "v1.0.0-!r!c.1")
	f.Fuzz(func(t *testing.T, path, version string) {
		m, err := sumdb.ParseEscaped(path, version)
		if err != nil {
			return
		}
		// What decodes must re-encode to exactly what was asked for.
		ep, err1 := module.EscapePath(m.Path)
		ev, err2 := module.EscapeVersion(m.Version)
		if err1 != nil || err2 != nil || ep != path || ev != version {
			t.Fatalf("%q@%q decoded to %s, which encodes as %q@%q (%v, %v)", path, version, m, ep, ev, err1, err2)
		}
	})
}

// rezip rewrites a module zip entry by entry with edit applied to each
// entry's content (nil: unchanged), stored rather than deflated, so that
// the bytes differ from the original whatever edit does.
func rezip(t testing.TB, data []byte, edit func(name string, content []byte) []byte) string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			content = edit(f.Name, content)
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(content)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rezipped.zip")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestKnownZipIsNotInflatedAgain: a zip whose exact bytes were hashed to
// the logged hash before is recognised by their SHA-256 and not inflated
// again; any other bytes for the same version, however close, are checked
// in full: a tampered copy is still a mismatch, and an honest re-zip is
// verified by its entries.
func TestKnownZipIsNotInflatedAgain(t *testing.T) {
	w := testworld.New(t)
	rec := tracetest.NewSpanRecorder()
	dir := t.TempDir()
	traced := func(c *sumdb.Config) { c.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)) }
	v := newVerifier(t, w, dir, traced)
	m := w.Module(testworld.GoodPath, testworld.Version)
	genuine := m.WriteZip(t)
	tampered := rezip(t, m.Zip, func(name string, content []byte) []byte {
		if strings.HasSuffix(name, ".go") {
			return append(content, "\nfunc init() { println(\"pwned\") }\n"...)
		}
		return content
	})
	honestRezip := rezip(t, m.Zip, nil)
	known := func() bool {
		t.Helper()
		for _, s := range rec.Ended() {
			for _, a := range s.Attributes() {
				if a.Key == auditkey.HashKnown && a.Value.AsBool() {
					return true
				}
			}
		}
		return false
	}
	tests := []struct {
		name      string
		v         *sumdb.Verifier
		file      string
		want      sumdb.Outcome
		wantKnown bool
	}{
		{"first sight: inflated", v, genuine, sumdb.Verified, false},
		{"same bytes: recognised", v, genuine, sumdb.Verified, true},
		{"tampered copy of a proven version: inflated, mismatch", v, tampered, sumdb.Mismatch, false},
		{"honest re-zip: inflated, verified", v, honestRezip, sumdb.Verified, false},
		{"honest re-zip again: recognised", v, honestRezip, sumdb.Verified, true},
		{"the first bytes are still known", v, genuine, sumdb.Verified, true},
		{"after a restart too", newVerifier(t, w, dir, traced), genuine, sumdb.Verified, true},
		{"tampered after a restart: mismatch", newVerifier(t, w, dir, traced), tampered, sumdb.Mismatch, false},
	}
	for _, tt := range tests {
		rec.Reset()
		vd, err := tt.v.Check(context.Background(), m.Version, sumdb.KindZip, tt.file)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if vd.Outcome != tt.want || vd.Want != m.ZipHash {
			t.Errorf("%s: verdict %s, want %v against %s", tt.name, vd, tt.want, m.ZipHash)
		}
		if tt.want == sumdb.Verified && vd.Got != m.ZipHash {
			t.Errorf("%s: Got = %s, want %s", tt.name, vd.Got, m.ZipHash)
		}
		if got := known(); got != tt.wantKnown {
			t.Errorf("%s: recognised by its digest = %v, want %v", tt.name, got, tt.wantKnown)
		}
	}
}

// TestPrefetchProvesAhead: Prefetch looks a version up in the background,
// so the checks of its files that follow need no lookup of their own.
func TestPrefetchProvesAhead(t *testing.T) {
	w := testworld.New(t)
	v := newVerifier(t, w, "", nil)
	m := w.Module(testworld.GoodPath, testworld.Version)
	w.ResetRequests()
	v.Prefetch(context.Background(), m.Version)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := v.Proven(m.Version, sumdb.KindZip); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Prefetch proved nothing within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, kind := range []sumdb.Kind{sumdb.KindMod, sumdb.KindZip} {
		if vd := check(t, w, v, testworld.GoodPath, testworld.Version, kind); vd.Outcome != sumdb.Verified || !vd.Cached {
			t.Errorf("%v after Prefetch: %s (cached %v), want verified from the proof on disk", kind, vd, vd.Cached)
		}
	}
	if n := w.Requests(config.SumDBName, "/lookup/"); n != 1 {
		t.Errorf("%d lookups, want Prefetch's one", n)
	}
	// Nothing is looked up for a private module or a version that is not
	// canonical; a tampered file of a prefetched version is still caught.
	v.Prefetch(context.Background(), module.Version{Path: testworld.PrivatePath, Version: testworld.Version})
	v.Prefetch(context.Background(), module.Version{Path: testworld.GoodPath, Version: "master"})
	if vd := check(t, w, v, testworld.TamperedZipPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Mismatch {
		t.Errorf("tampered: %s", vd)
	}
	if n := w.Requests(config.SumDBName, "/lookup/"); n != 2 {
		t.Errorf("%d lookups, want 2 (Prefetch's and the tampered module's)", n)
	}
}

// TestCorruptStoredTileIsFetchedAgain: tiles are written without fsync,
// and after a power loss a file system may keep a tile's length but not
// its bytes (zeros). Such a tile does not authenticate against the tree
// head, and the lookup that read it from disk is tried again with the
// tile fetched anew, so a damaged cache costs one more round trip and
// never an outage. It does not weaken anything: every tile, from disk or
// not, is authenticated before it is used.
func TestCorruptStoredTileIsFetchedAgain(t *testing.T) {
	w := testworld.New(t)
	dir := t.TempDir()
	if vd := check(t, w, newVerifier(t, w, dir, nil), testworld.GoodPath, testworld.Version, sumdb.KindMod); vd.Outcome != sumdb.Verified {
		t.Fatalf("first check: %s", vd)
	}
	var tiles []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(filepath.ToSlash(p), "/tile/") {
			tiles = append(tiles, p)
		}
		return err
	})
	if len(tiles) == 0 {
		t.Fatal("no tile stored")
	}
	for _, p := range tiles {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, info.Size()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	v := newVerifier(t, w, dir, nil) // as after the restart
	for _, path := range []string{testworld.UpperPath, testworld.TamperedZipPath} {
		if vd := check(t, w, v, path, testworld.Version, sumdb.KindMod); vd.Outcome != sumdb.Verified {
			t.Errorf("%s with the stored tiles zeroed: %s", path, vd)
		}
	}
	if vd := check(t, w, v, testworld.TamperedZipPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Mismatch {
		t.Errorf("tampered zip: %s", vd)
	}
	// An unreachable database is not a damaged cache: the tiles stay.
	w.SetSumDB(testworld.SumDBDown)
	defer w.SetSumDB(testworld.SumDBHonest)
	if vd := check(t, w, v, testworld.GoodPath, "v1.1.0", sumdb.KindMod); vd.Outcome != sumdb.Unavailable {
		t.Errorf("database down: %s", vd)
	}
	for _, p := range tiles {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("database down: a stored tile was dropped: %v", err)
		}
	}
}
