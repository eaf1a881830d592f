package sumdb

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

func TestHashGoModTooLarge(t *testing.T) {
	file := filepath.Join(t.TempDir(), "go.mod")
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), modzip.MaxGoMod+1), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Hash(module.Version{Path: "example.com/m", Version: "v1.0.0"}, KindMod, file)
	if mal := (*MalformedError)(nil); !errors.As(err, &mal) {
		t.Fatalf("err = %v, want a MalformedError", err)
	}
}

func TestHashMissingFileIsNotMalformed(t *testing.T) {
	_, err := Hash(module.Version{Path: "example.com/m", Version: "v1.0.0"}, KindZip, filepath.Join(t.TempDir(), "nope.zip"))
	if mal := (*MalformedError)(nil); err == nil || errors.As(err, &mal) {
		t.Fatalf("err = %v, want an I/O error", err)
	}
}

// FuzzHashZip feeds arbitrary bytes to the zip checks: they must never
// panic, and anything they accept must be a zip the go command accepts.
func FuzzHashZip(f *testing.F) {
	m := module.Version{Path: "example.com/m", Version: "v1.0.0"}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"go.mod", "a.go", "dir/b.go"} {
		w, _ := zw.Create("example.com/m@v1.0.0/" + name)
		w.Write([]byte("package a\n"))
	}
	zw.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(dir, "m.zip")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		h, err := Hash(m, KindZip, file)
		if err != nil {
			if mal := (*MalformedError)(nil); !errors.As(err, &mal) {
				t.Fatalf("unexpected non-malformed error: %v", err)
			}
			return
		}
		if _, err := modzip.CheckZip(m, file); err != nil || len(h) < 4 {
			t.Fatalf("accepted %q but CheckZip says %v", h, err)
		}
		if serial, err := hashZip(m, file, 1, DefaultMaxZipEntries); serial != h || err != nil {
			t.Fatalf("serial hash %q, %v; parallel %q", serial, err, h)
		}
	})
}

func TestCheckEntryCount(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range 10 {
		zw.Create(fmt.Sprintf("example.com/m@v1.0.0/f%d.go", i))
	}
	zw.Close()
	tenEntries := write("ten.zip", buf.Bytes())
	straddle := make([]byte, 1<<20+64)
	copy(straddle[1<<20-2:], centralHeader) // split across the first two reads
	tests := []struct {
		name  string
		file  string
		limit int
		ok    bool
	}{
		{"ten entries, limit ten", tenEntries, 10, true},
		{"ten entries, limit nine", tenEntries, 9, false},
		{"signature across a read boundary", write("straddle", straddle), 0, false},
		{"no signature", write("zeros", make([]byte, 3<<20)), 0, true},
		{"empty file", write("empty", nil), 0, true},
	}
	for _, tt := range tests {
		err := checkEntryCount(tt.file, tt.limit)
		if mal := (*MalformedError)(nil); tt.ok != (err == nil) || (err != nil && !errors.As(err, &mal)) {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
