package sumdb

import (
	"archive/zip"
	"bytes"
	"errors"
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
		if serial, err := hashZip(m, file, 1); serial != h || err != nil {
			t.Fatalf("serial hash %q, %v; parallel %q", serial, err, h)
		}
	})
}
