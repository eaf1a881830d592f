package advisory

import (
	"testing"
	"time"

	"golang.org/x/mod/module"
)

// FuzzParseEntry feeds arbitrary bytes to the OSV entry parser and
// matches the result: it may reject them, never panic, and a parsed entry
// must answer Affecting for any version.
func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{
		`{"id":"GO-2024-0001","aliases":["CVE-2024-1"],"affected":[{"package":{"ecosystem":"Go","name":"example.com/a"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.2.4"}]}]}]}`,
		`{"id":"MAL-2025-1","affected":[{"package":{"ecosystem":"Go","name":"m"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"last_affected":"v1.0.0-rc.1"}]}],"versions":["v0.1.0"]}],"database_specific":{"malicious-packages-origins":[]}}`,
		`{"id":"GHSA-x","severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],"affected":[{"package":{"ecosystem":"Go","name":"m"}}]}`,
		`{"id":"X","withdrawn":"2020-01-01T00:00:00Z"}`,
	} {
		f.Add([]byte(s), "v1.2.3")
	}
	f.Fuzz(func(t *testing.T, data []byte, version string) {
		p, err := parseEntry(data, "fuzz", time.Now())
		if err != nil || p == nil {
			return
		}
		if p.entry.ID == "" || len(p.paths) != len(p.affects) {
			t.Fatalf("parsed entry %+v is inconsistent", p.entry)
		}
		if p.entry.HasCVSS && (p.entry.CVSS < 0 || p.entry.CVSS > 10) {
			t.Errorf("CVSS = %v", p.entry.CVSS)
		}
		db := &DB{byPath: map[string][]affect{}}
		for i, path := range p.paths {
			db.byPath[path] = append(db.byPath[path], p.affects[i])
		}
		for _, path := range p.paths {
			db.Affecting(module.Version{Path: path, Version: version})
		}
	})
}
