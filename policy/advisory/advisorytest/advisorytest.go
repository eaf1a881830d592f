// Package advisorytest builds advisory databases in the real formats for
// tests and benchmarks: the Go vulnerability database's v1 layout, its zip
// form, an OSV tree in the malicious-packages layout, and a synthetic
// database of the real one's size and shape.
package advisorytest

import (
	"archive/zip"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ossf/osv-schema/bindings/go/osvschema"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Modified is the modification time every entry built here carries.
var Modified = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// Affected returns an affected item for the Go module path with one
// SEMVER range. Each event is "kind:version" with kind introduced, fixed,
// last_affected or limit, the version written as the Go vulnerability
// database writes it (without "v"), e.g. Affected(p, "introduced:0",
// "fixed:1.2.4").
func Affected(path string, events ...string) *osvschema.Affected {
	return &osvschema.Affected{
		Package: &osvschema.Package{Ecosystem: "Go", Name: path},
		Ranges:  []*osvschema.Range{{Type: osvschema.Range_SEMVER, Events: Events(events...)}},
	}
}

// Events parses "kind:version" items as [Affected] does. It panics on an
// unknown kind: the caller is a test.
func Events(events ...string) []*osvschema.Event {
	var out []*osvschema.Event
	for _, e := range events {
		kind, v, _ := strings.Cut(e, ":")
		switch kind {
		case "introduced":
			out = append(out, &osvschema.Event{Introduced: v})
		case "fixed":
			out = append(out, &osvschema.Event{Fixed: v})
		case "last_affected":
			out = append(out, &osvschema.Event{LastAffected: v})
		case "limit":
			out = append(out, &osvschema.Event{Limit: v})
		default:
			panic("advisorytest: unknown event kind " + kind)
		}
	}
	return out
}

// Vuln returns an entry with the given ID, aliases and affected items, a
// summary naming the ID and the time Modified.
func Vuln(id string, aliases []string, affected ...*osvschema.Affected) *osvschema.Vulnerability {
	return &osvschema.Vulnerability{
		SchemaVersion: "1.3.1",
		Id:            id,
		Modified:      timestamppb.New(Modified),
		Published:     timestamppb.New(Modified),
		Aliases:       aliases,
		Summary:       "Test advisory " + id,
		Details:       "Details of " + id + ".",
		Affected:      affected,
	}
}

// Malicious returns an entry in the malicious-packages repository's form:
// ID MAL-…, every version of module path affected (an ECOSYSTEM range
// introduced at 0), and a malicious-packages-origins record.
func Malicious(id, path string) *osvschema.Vulnerability {
	v := Vuln(id, nil, &osvschema.Affected{
		Package: &osvschema.Package{Ecosystem: "Go", Name: path},
		Ranges:  []*osvschema.Range{{Type: osvschema.Range_ECOSYSTEM, Events: Events("introduced:0")}},
	})
	v.Summary = "Malicious code in " + path + " (Go)"
	ds, err := structpb.NewStruct(map[string]any{
		"malicious-packages-origins": []any{map[string]any{"source": "test", "sha256": strings.Repeat("0", 64)}},
	})
	if err != nil {
		panic(err)
	}
	v.DatabaseSpecific = ds
	return v
}

// Marshal returns v as OSV JSON.
func Marshal(tb testing.TB, v *osvschema.Vulnerability) []byte {
	tb.Helper()
	data, err := protojson.Marshal(v)
	if err != nil {
		tb.Fatalf("marshaling %s: %v", v.GetId(), err)
	}
	return data
}

// WriteV1 writes entries into dir in the Go vulnerability database's v1
// layout: index/db.json, index/modules.json, index/vulns.json and
// ID/<id>.json. Modules are listed in the order they first appear.
func WriteV1(tb testing.TB, dir string, entries ...*osvschema.Vulnerability) {
	tb.Helper()
	type vuln struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
		Fixed    string    `json:"fixed,omitempty"`
	}
	type mod struct {
		Path  string `json:"path"`
		Vulns []vuln `json:"vulns"`
	}
	type idx struct {
		ID       string    `json:"id"`
		Modified time.Time `json:"modified"`
		Aliases  []string  `json:"aliases,omitempty"`
	}
	var mods []*mod
	var vulns []idx
	for _, v := range entries {
		vulns = append(vulns, idx{v.GetId(), v.GetModified().AsTime(), v.GetAliases()})
		writeFile(tb, filepath.Join(dir, "ID", v.GetId()+".json"), Marshal(tb, v))
		for _, a := range v.GetAffected() {
			i := slices.IndexFunc(mods, func(m *mod) bool { return m.Path == a.GetPackage().GetName() })
			if i < 0 {
				mods = append(mods, &mod{Path: a.GetPackage().GetName()})
				i = len(mods) - 1
			}
			fixed := ""
			for _, r := range a.GetRanges() {
				for _, e := range r.GetEvents() {
					if e.GetFixed() != "" {
						fixed = e.GetFixed()
					}
				}
			}
			mods[i].Vulns = append(mods[i].Vulns, vuln{v.GetId(), v.GetModified().AsTime(), fixed})
		}
	}
	writeJSON(tb, filepath.Join(dir, "index", "db.json"), map[string]time.Time{"modified": Modified})
	writeJSON(tb, filepath.Join(dir, "index", "modules.json"), mods)
	writeJSON(tb, filepath.Join(dir, "index", "vulns.json"), vulns)
}

// WriteTree writes entries into dir as the malicious-packages repository
// lays them out: osv/malicious/go/<module path>/<id>.json, one file per
// entry, under the first affected module's path.
func WriteTree(tb testing.TB, dir string, entries ...*osvschema.Vulnerability) {
	tb.Helper()
	for _, v := range entries {
		p := "unknown"
		if as := v.GetAffected(); len(as) > 0 {
			p = as[0].GetPackage().GetName()
		}
		writeFile(tb, filepath.Join(dir, "osv", "malicious", "go", filepath.FromSlash(p), v.GetId()+".json"), Marshal(tb, v))
	}
}

// Zip writes the files under dir into a new zip file at file, with their
// paths relative to dir.
func Zip(tb testing.TB, dir, file string) {
	tb.Helper()
	f, err := os.Create(file)
	if err != nil {
		tb.Fatal(err)
	}
	zw := zip.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		w, err := zw.Create(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		r, err := os.Open(p)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = io.Copy(w, r)
		return err
	})
	if err == nil {
		err = zw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatalf("zipping %s: %v", dir, err)
	}
}

// NewServer serves the files under dir over https on 127.0.0.1 until the
// test ends. Use the server's Client() to load from its URL.
func NewServer(tb testing.TB, dir string) *httptest.Server {
	tb.Helper()
	srv := httptest.NewTLSServer(http.FileServer(http.Dir(dir)))
	tb.Cleanup(srv.Close)
	return srv
}

func writeJSON(tb testing.TB, file string, v any) {
	tb.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	writeFile(tb, file, data)
}

func writeFile(tb testing.TB, file string, data []byte) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}
