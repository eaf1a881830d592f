package advisory_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ossf/osv-schema/bindings/go/osvschema"
	"golang.org/x/mod/module"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sumgate/sumgate/policy/advisory"
	"github.com/sumgate/sumgate/policy/advisory/advisorytest"
)

// testEntries is a small database exercising every kind of range.
func testEntries() []*osvschema.Vulnerability {
	at := advisorytest.Affected
	gitOnly := &osvschema.Affected{
		Package: &osvschema.Package{Ecosystem: "Go", Name: "example.com/gitonly"},
		Ranges:  []*osvschema.Range{{Type: osvschema.Range_GIT, Repo: "https://example.com/r", Events: advisorytest.Events("introduced:0", "fixed:abc123")}},
	}
	listed := &osvschema.Affected{
		Package:  &osvschema.Package{Ecosystem: "Go", Name: "example.com/listed"},
		Versions: []string{"v1.0.0", "1.0.1", "not-semver"},
	}
	npm := &osvschema.Affected{
		Package: &osvschema.Package{Ecosystem: "npm", Name: "example.com/npmonly"},
		Ranges:  []*osvschema.Range{{Type: osvschema.Range_SEMVER, Events: advisorytest.Events("introduced:0")}},
	}
	withdrawn := advisorytest.Vuln("GO-2024-0009", nil, at("example.com/withdrawn", "introduced:0"))
	withdrawn.Withdrawn = timestamppb.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	return []*osvschema.Vulnerability{
		advisorytest.Vuln("GO-2024-0001", []string{"CVE-2024-0001", "GHSA-aaaa-bbbb-cccc"},
			at("example.com/a", "introduced:0", "fixed:1.2.4")),
		advisorytest.Vuln("GO-2024-0002", nil,
			at("example.com/a", "introduced:1.5.0", "fixed:1.5.3", "introduced:1.7.0")),
		advisorytest.Vuln("GO-2024-0003", nil, at("example.com/b", "introduced:0.3.0", "last_affected:0.4.2")),
		advisorytest.Vuln("GO-2024-0004", nil, listed),
		advisorytest.Vuln("GO-2024-0005", nil, at("example.com/rc", "introduced:1.1.0-rc.2", "fixed:1.1.0")),
		advisorytest.Vuln("GO-2024-0006", nil, gitOnly),
		advisorytest.Vuln("GO-2024-0007", nil, npm),
		advisorytest.Vuln("GO-2024-0008", nil, at("example.com/limit", "introduced:0", "limit:2.0.0")),
		withdrawn,
		advisorytest.Vuln("GO-2024-0010", nil, at("example.com/badversion", "introduced:0", "fixed:one.two")),
		advisorytest.Malicious("MAL-2025-0001", "example.com/evil"),
	}
}

// loadV1 writes entries in the v1 layout and loads them.
func loadV1(t *testing.T, entries ...*osvschema.Vulnerability) *advisory.DB {
	t.Helper()
	dir := t.TempDir()
	advisorytest.WriteV1(t, dir, entries...)
	db, err := advisory.Load(context.Background(), dir, nil, advisory.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func ids(es []advisory.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func TestAffecting(t *testing.T) {
	db := loadV1(t, testEntries()...)
	for _, tc := range []struct {
		path, version string
		want          []string
	}{
		// introduced 0, fixed 1.2.4
		{"example.com/a", "v0.0.0-20190101000000-abcdef123456", []string{"GO-2024-0001"}},
		{"example.com/a", "v1.2.3", []string{"GO-2024-0001"}},
		{"example.com/a", "v1.2.4-rc.1", []string{"GO-2024-0001"}},                          // a pre-release of the fix is not the fix
		{"example.com/a", "v1.2.4-0.20240101000000-abcdef123456", []string{"GO-2024-0001"}}, // a pseudo-version before v1.2.4
		{"example.com/a", "v1.2.4", nil},
		{"example.com/a", "v1.2.5-0.20240101000000-abcdef123456", nil}, // a pseudo-version after v1.2.4
		// introduced 1.5.0, fixed 1.5.3, introduced 1.7.0
		{"example.com/a", "v1.5.0-rc.1", nil}, // before the introduction
		{"example.com/a", "v1.5.0", []string{"GO-2024-0002"}},
		{"example.com/a", "v1.5.3-0.20240101000000-abcdef123456", []string{"GO-2024-0002"}},
		{"example.com/a", "v1.5.3", nil},
		{"example.com/a", "v1.6.9", nil},
		{"example.com/a", "v1.7.0-0.20240101000000-abcdef123456", nil}, // before v1.7.0
		{"example.com/a", "v1.7.0", []string{"GO-2024-0002"}},
		{"example.com/a", "v2.0.0+incompatible", []string{"GO-2024-0002"}},
		// a version that cannot be placed is affected by every entry
		{"example.com/a", "latest", []string{"GO-2024-0001", "GO-2024-0002"}},
		// introduced 0.3.0, last_affected 0.4.2
		{"example.com/b", "v0.2.9", nil},
		{"example.com/b", "v0.3.0", []string{"GO-2024-0003"}},
		{"example.com/b", "v0.4.2", []string{"GO-2024-0003"}},
		{"example.com/b", "v0.4.3-0.20240101000000-abcdef123456", nil},
		{"example.com/b", "v0.4.3", nil},
		// explicit versions, with and without "v"
		{"example.com/listed", "v1.0.0", []string{"GO-2024-0004"}},
		{"example.com/listed", "v1.0.1", []string{"GO-2024-0004"}},
		{"example.com/listed", "v1.0.2", nil},
		// introduced at a release candidate
		{"example.com/rc", "v1.1.0-rc.1", nil},
		{"example.com/rc", "v1.1.0-rc.2", []string{"GO-2024-0005"}},
		{"example.com/rc", "v1.1.0-rc.10", []string{"GO-2024-0005"}},
		{"example.com/rc", "v1.1.0", nil},
		// only a GIT range: cannot be placed, every version (fail closed)
		{"example.com/gitonly", "v9.9.9", []string{"GO-2024-0006"}},
		{"example.com/npmonly", "v1.0.0", nil},
		{"example.com/limit", "v1.9.9", []string{"GO-2024-0008"}},
		{"example.com/limit", "v2.0.0", nil},
		{"example.com/withdrawn", "v1.0.0", nil},
		// an event version that is not semver widens to every version
		{"example.com/badversion", "v5.0.0", []string{"GO-2024-0010"}},
		{"example.com/evil", "v0.0.1", []string{"MAL-2025-0001"}},
		{"example.com/evil", "v99.0.0-0.20250101000000-abcdef123456", []string{"MAL-2025-0001"}},
		{"example.com/unknown", "v1.0.0", nil},
	} {
		got := ids(db.Affecting(module.Version{Path: tc.path, Version: tc.version}))
		if !slices.Equal(got, tc.want) {
			t.Errorf("Affecting(%s@%s) = %v, want %v", tc.path, tc.version, got, tc.want)
		}
	}
	if got, want := db.Len(), 9; got != want { // 11 less the npm-only and the withdrawn entries
		t.Errorf("Len() = %d, want %d", got, want)
	}
}

func TestEntryFields(t *testing.T) {
	mal := advisorytest.Malicious("MAL-2025-0001", "example.com/evil")
	origin := advisorytest.Malicious("GHSA-mmmm-mmmm-mmmm", "example.com/evil2") // malicious by origin only
	long := advisorytest.Vuln("GO-2024-0020", nil, advisorytest.Affected("example.com/long", "introduced:0"))
	long.Summary = ""
	long.Details = "first line\twith a tab\nsecond line"
	db := loadV1(t, testEntries()[0], mal, origin, long)

	e, ok := db.Lookup("ghsa-AAAA-bbbb-cccc")
	if !ok || e.ID != "GO-2024-0001" || !slices.Equal(e.Aliases, []string{"CVE-2024-0001", "GHSA-aaaa-bbbb-cccc"}) || e.Malicious || e.HasCVSS {
		t.Errorf("Lookup(GHSA alias) = %+v, %v", e, ok)
	}
	if e.Summary != "Test advisory GO-2024-0001" {
		t.Errorf("Summary = %q", e.Summary)
	}
	for _, id := range []string{"MAL-2025-0001", "GHSA-mmmm-mmmm-mmmm"} {
		if e, _ := db.Lookup(id); !e.Malicious {
			t.Errorf("%s: Malicious = false, want true", id)
		}
	}
	if e, _ := db.Lookup("GO-2024-0020"); e.Summary != "first line with a tab" {
		t.Errorf("summary from details = %q", e.Summary)
	}
}

func TestCVSS(t *testing.T) {
	const (
		v31 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"                    // 9.8
		v30 = "CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:N/A:N"                    // 4.3
		v40 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N" // 9.3
	)
	sev := func(t osvschema.Severity_Type, s string) *osvschema.Severity {
		return &osvschema.Severity{Type: t, Score: s}
	}
	for _, tc := range []struct {
		name     string
		top      []*osvschema.Severity
		affected []*osvschema.Severity
		has      bool
		want     float64
	}{
		{"none", nil, nil, false, 0},
		{"v3.1", []*osvschema.Severity{sev(osvschema.Severity_CVSS_V3, v31)}, nil, true, 9.8},
		{"v3.0", []*osvschema.Severity{sev(osvschema.Severity_CVSS_V3, v30)}, nil, true, 4.3},
		{"v4.0", []*osvschema.Severity{sev(osvschema.Severity_CVSS_V4, v40)}, nil, true, 9.3},
		{"highest of top and affected", []*osvschema.Severity{sev(osvschema.Severity_CVSS_V3, v30)},
			[]*osvschema.Severity{sev(osvschema.Severity_CVSS_V4, v40)}, true, 9.3},
		{"malformed", []*osvschema.Severity{sev(osvschema.Severity_CVSS_V3, "CVSS:3.1/AV:N")}, nil, false, 0},
		{"v2 is not scored", []*osvschema.Severity{sev(osvschema.Severity_CVSS_V2, "AV:N/AC:L/Au:N/C:P/I:P/A:P")}, nil, false, 0},
		{"vector under the wrong type", []*osvschema.Severity{sev(osvschema.Severity_CVSS_V4, v31)}, nil, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := advisorytest.Affected("example.com/m", "introduced:0")
			a.Severity = tc.affected
			v := advisorytest.Vuln("GHSA-cvss-cvss-cvss", nil, a)
			v.Severity = tc.top
			db := loadV1(t, v)
			e, _ := db.Lookup("GHSA-cvss-cvss-cvss")
			if e.HasCVSS != tc.has || e.CVSS != tc.want {
				t.Errorf("HasCVSS, CVSS = %v, %v; want %v, %v", e.HasCVSS, e.CVSS, tc.has, tc.want)
			}
		})
	}
}

// TestLoadForms loads the same advisories from every kind of source.
func TestLoadForms(t *testing.T) {
	entries := testEntries()
	v1 := t.TempDir()
	advisorytest.WriteV1(t, v1, entries...)
	tree := t.TempDir()
	advisorytest.WriteTree(t, tree, entries...)
	if err := os.MkdirAll(filepath.Join(tree, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, ".git", "junk.json"), []byte("not json"), 0o644); err != nil {
		t.Fatal(err) // skipped: folders starting with "." are not read
	}
	zips := t.TempDir()
	advisorytest.Zip(t, v1, filepath.Join(zips, "vulndb.zip"))
	advisorytest.Zip(t, tree, filepath.Join(zips, "malicious.zip"))
	nested := t.TempDir()
	if err := os.CopyFS(filepath.Join(nested, "vulndb"), os.DirFS(v1)); err != nil {
		t.Fatal(err)
	}
	advisorytest.Zip(t, nested, filepath.Join(zips, "nested.zip"))
	srv := advisorytest.NewServer(t, v1)
	zsrv := advisorytest.NewServer(t, zips)

	for _, tc := range []struct {
		name, source string
	}{
		{"v1 directory", v1},
		{"v1 zip", filepath.Join(zips, "vulndb.zip")},
		{"v1 zip under a top folder", filepath.Join(zips, "nested.zip")},
		{"malicious-packages tree", tree},
		{"malicious-packages tree, its go folder", filepath.Join(tree, "osv", "malicious", "go")},
		{"tree zip", filepath.Join(zips, "malicious.zip")},
		{"https v1", srv.URL},
		{"https v1 with a trailing slash", srv.URL + "/"},
		{"https zip", zsrv.URL + "/vulndb.zip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := advisory.Load(context.Background(), tc.source, srv.Client(), advisory.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if db.Len() != 9 {
				t.Errorf("Len() = %d, want 9", db.Len())
			}
			for _, probe := range []struct {
				m    module.Version
				want string
			}{
				{module.Version{Path: "example.com/a", Version: "v1.2.3"}, "GO-2024-0001"},
				{module.Version{Path: "example.com/evil", Version: "v1.0.0"}, "MAL-2025-0001"},
			} {
				if got := ids(db.Affecting(probe.m)); !slices.Equal(got, []string{probe.want}) {
					t.Errorf("Affecting(%v) = %v, want [%s]", probe.m, got, probe.want)
				}
			}
		})
	}
}

func TestMergeReportsAnIDOnce(t *testing.T) {
	a := loadV1(t, testEntries()[0])
	b := loadV1(t, testEntries()[0], advisorytest.Malicious("MAL-2025-0001", "example.com/a"))
	db := advisory.Merge(a, nil, b)
	got := ids(db.Affecting(module.Version{Path: "example.com/a", Version: "v1.0.0"}))
	if want := []string{"GO-2024-0001", "MAL-2025-0001"}; !slices.Equal(got, want) {
		t.Errorf("Affecting = %v, want %v", got, want)
	}
	var nilDB *advisory.DB
	if nilDB.Affecting(module.Version{Path: "example.com/a", Version: "v1.0.0"}) != nil || nilDB.Len() != 0 {
		t.Error("a nil DB holds something")
	}
}
