package advisory_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/policy/advisory"
	"github.com/sumgate/sumgate/policy/advisory/advisorytest"
)

// writeZip writes a zip of the given names and contents.
func writeZip(t *testing.T, file string, files map[string][]byte) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestHostileSourcesFailClosed checks that a source over a limit, or
// inconsistent, is an error naming the problem, never a partial snapshot.
func TestHostileSourcesFailClosed(t *testing.T) {
	entry := advisorytest.Marshal(t, advisorytest.Vuln("GO-2024-0001", nil, advisorytest.Affected("example.com/a", "introduced:0")))
	dir := t.TempDir()
	mk := func(name string, files map[string][]byte) string {
		root := filepath.Join(dir, name)
		for n, data := range files {
			p := filepath.Join(root, filepath.FromSlash(n))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	index := func(ids ...string) map[string][]byte {
		mods := `[{"path":"example.com/a","vulns":[`
		for i, id := range ids {
			if i > 0 {
				mods += ","
			}
			mods += `{"id":"` + id + `"}`
		}
		return map[string][]byte{
			"index/db.json":      []byte(`{"modified":"2025-01-01T00:00:00Z"}`),
			"index/modules.json": []byte(mods + `]}]`),
		}
	}
	with := func(m map[string][]byte, name string, data []byte) map[string][]byte {
		m[name] = data
		return m
	}
	bomb := filepath.Join(dir, "bomb.zip")
	writeZip(t, bomb, map[string][]byte{"x/GO-1.json": bytes.Repeat([]byte(" "), 64<<20)})
	many := filepath.Join(dir, "many.zip")
	files := map[string][]byte{}
	for i := range 50 {
		files[strings.Repeat("d", i+1)+".txt"] = nil
	}
	writeZip(t, many, files)

	for _, tc := range []struct {
		name    string
		source  string
		lim     advisory.Limits
		wantErr string
		limit   bool // errors.Is(err, ErrLimit)
	}{
		{"too many files in a tree", mk("tree", map[string][]byte{"a.json": entry, "b.json": entry, "c.json": entry}),
			advisory.Limits{MaxFiles: 2}, "more than 2 JSON files", true},
		{"a file too large", mk("large", map[string][]byte{"a.json": append(entry, bytes.Repeat([]byte(" "), 100)...)}),
			advisory.Limits{MaxFileSize: 100}, "larger than 100 bytes", true},
		{"too much in all", mk("total", map[string][]byte{"a.json": entry, "b.json": entry}),
			advisory.Limits{MaxTotalSize: int64(len(entry)) + 10}, "bytes in all", true},
		{"a zip bomb", bomb, advisory.Limits{MaxFileSize: 1 << 20}, "larger than 1048576 bytes", true},
		{"a zip with too many entries", many, advisory.Limits{MaxFiles: 40}, "may hold 50 entries", true},
		{"a zip too large", many, advisory.Limits{MaxTotalSize: 100}, "larger than 100 bytes", true},
		{"an index listing too many entries", mk("idxmany", index("GO-1", "GO-2", "GO-3")),
			advisory.Limits{MaxFiles: 2}, "lists more than 2 entries", true},
		{"an ID escaping ID/", mk("escape", index("../../etc/passwd")), advisory.Limits{}, "is not an advisory ID", false},
		{"a listed entry missing", mk("missing", index("GO-2024-0001")), advisory.Limits{}, "ID/GO-2024-0001.json", false},
		{"an entry under another ID", mk("otherid", with(index("GO-2024-0002"), "ID/GO-2024-0002.json", entry)),
			advisory.Limits{}, `holds the entry "GO-2024-0001"`, false},
		{"malformed JSON", mk("malformed", map[string][]byte{"a.json": []byte(`{"id":`)}), advisory.Limits{}, "a.json: parsing OSV entry", false},
		{"an entry without an ID", mk("noid", map[string][]byte{"a.json": []byte(`{"summary":"x"}`)}), advisory.Limits{}, "no id", false},
		{"deep nesting", mk("deep", map[string][]byte{"a.json": []byte(`{"id":"X-1","database_specific":{"a":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`)}),
			advisory.Limits{}, "parsing OSV entry", false},
		{"a bad db.json", mk("baddb", with(index(), "index/db.json", []byte(`{}`))), advisory.Limits{}, "not a v1 database index", false},
		{"a plaintext URL", "http://127.0.0.1:1/", advisory.Limits{}, "must be https", false},
		{"a missing path", filepath.Join(dir, "nothing"), advisory.Limits{}, "no such file", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := advisory.Load(context.Background(), tc.source, nil, tc.lim)
			if err == nil {
				t.Fatalf("Load succeeded with %d entries, want an error containing %q", db.Len(), tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Load: %v, want an error containing %q", err, tc.wantErr)
			}
			if errors.Is(err, advisory.ErrLimit) != tc.limit {
				t.Errorf("errors.Is(%v, ErrLimit) = %v, want %v", err, !tc.limit, tc.limit)
			}
		})
	}
}

func TestHTTPSourceFailsClosed(t *testing.T) {
	v1 := t.TempDir()
	advisorytest.WriteV1(t, v1, advisorytest.Vuln("GO-2024-0001", nil, advisorytest.Affected("example.com/a", "introduced:0")))
	files := http.FileServer(http.Dir(v1))
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
	}{
		{"an entry answered 500", func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/ID/") {
				http.Error(w, "oops", http.StatusInternalServerError)
				return
			}
			files.ServeHTTP(w, r)
		}, "500 Internal Server Error"},
		{"the index answered 404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, "index/db.json: 404"},
		{"an endless entry", func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/ID/") {
				for range 64 {
					if _, err := w.Write(bytes.Repeat([]byte(" "), 64<<10)); err != nil {
						return
					}
				}
				return
			}
			files.ServeHTTP(w, r)
		}, "larger than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(tc.handler)
			defer srv.Close()
			_, err := advisory.Load(context.Background(), srv.URL, srv.Client(), advisory.Limits{MaxFileSize: 1 << 20})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Load: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	if _, err := advisory.Load(context.Background(), "https://127.0.0.1:1/", nil, advisory.Limits{}); err == nil || !strings.Contains(err.Error(), "needs an HTTP client") {
		t.Errorf("Load of https without a client: %v", err)
	}
}
