package sumdb

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/mod/module"
)

// The tests' prefetch limits: small, so that a few megabytes exercise
// entries too large to prefetch and a full budget.
const (
	testMaxEntry = 256 << 10
	testBudget   = 1 << 20
)

// mixedZip writes a module zip whose entries range from empty to larger
// than prefetchMaxEntry, with a directory entry, in unsorted order.
func mixedZip(t testing.TB, m module.Version) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	block := make([]byte, 1<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for j := range block {
		block[j] = byte('a' + r.IntN(4))
	}
	sizes := []int{0, 1, 100, 64 << 10, testMaxEntry, testMaxEntry + 1, 9 << 20, 3 * testMaxEntry / 4, 3 * testMaxEntry / 4, 3 * testMaxEntry / 4, 3 * testMaxEntry / 4, 3 * testMaxEntry / 4, 3 * testMaxEntry / 4}
	for i, size := range sizes {
		w, err := zw.Create(fmt.Sprintf("%s@%s/f%02d.go", m.Path, m.Version, len(sizes)-i))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(bytes.Repeat(block, size/len(block)+1)[:size])
	}
	zw.Create(m.Path + "@" + m.Version + "/dir/")
	w, _ := zw.Create(m.Path + "@" + m.Version + "/go.mod")
	w.Write([]byte("module " + m.Path + "\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "m.zip")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestParallelHashEqualsSerial(t *testing.T) {
	m := module.Version{Path: "example.com/mixed", Version: "v1.0.0"}
	file := mixedZip(t, m)
	serial, err := hashZip(m, file, 1, DefaultMaxZipEntries)
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{2, 3, 8} {
		if got, err := hashZip(m, file, workers, DefaultMaxZipEntries); err != nil || got != serial {
			t.Errorf("%d workers: %q, %v; serial %q", workers, got, err, serial)
		}
	}
}

// TestPrefetchAnyOrderAndBudget: reading in another order than the
// prefetch's still works and terminates, and every byte of the budget is
// returned.
func TestPrefetchAnyOrderAndBudget(t *testing.T) {
	m := module.Version{Path: "example.com/mixed", Version: "v1.0.0"}
	z, err := zip.OpenReader(mixedZip(t, m))
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	entries := map[string]*zip.File{}
	var names []string
	for _, f := range z.File {
		entries[f.Name] = f
		names = append(names, f.Name)
	}
	for _, order := range [][]string{slices.Sorted(slices.Values(names)), reversed(slices.Sorted(slices.Values(names)))} {
		p := startPrefetch(entries, names, 2, testBudget, testMaxEntry)
		done := make(chan error, 1)
		go func() {
			for _, name := range order {
				r, err := p.open(name)
				if err != nil {
					done <- err
					return
				}
				n, err := io.Copy(io.Discard, r)
				r.Close()
				if err != nil || uint64(n) != entries[name].UncompressedSize64 {
					done <- fmt.Errorf("%s: read %d, %v", name, n, err)
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("prefetch deadlocked")
		}
		p.stop()
		if !p.sem.TryAcquire(testBudget) {
			t.Error("prefetch budget not fully returned")
		}
	}
}

func reversed(s []string) []string {
	slices.Reverse(s)
	return s
}
