package sumdb_test

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/sumdb"
)

// benchFileSize is the size of each source file in a benchmark module.
const benchFileSize = 256 << 10

// sourceText fills p with deterministic Go-like text (which compresses
// about as well as real module source), seeded by seed.
func sourceText(p []byte, seed uint64) {
	words := []string{"func", "return", "err", "if", "nil", "{", "}", "ctx", "context.Context",
		"fmt.Errorf(\"%w\", err)", "for", "range", "string", "int64", "\n\t", "\n", ":=", "==", "x", "buf"}
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < len(p); {
		w := words[r.IntN(len(words))]
		i += copy(p[i:], w)
		if i < len(p) {
			p[i] = ' '
			i++
		}
	}
}

// genFile is a module file whose content is generated on Open.
type genFile struct {
	name string
	size int64
	seed uint64
}

func (f genFile) Path() string { return f.name }
func (f genFile) Lstat() (fs.FileInfo, error) {
	return genInfo(f), nil
}
func (f genFile) Open() (io.ReadCloser, error) {
	p := make([]byte, f.size)
	if f.name == "go.mod" {
		copy(p, "module example.com/bench\n")
	} else {
		sourceText(p, f.seed)
	}
	return io.NopCloser(bytes.NewReader(p)), nil
}

type genInfo genFile

func (i genInfo) Name() string       { return filepath.Base(i.name) }
func (i genInfo) Size() int64        { return i.size }
func (i genInfo) Mode() fs.FileMode  { return 0o644 }
func (i genInfo) ModTime() time.Time { return time.Time{} }
func (i genInfo) IsDir() bool        { return false }
func (i genInfo) Sys() any           { return nil }

// benchModule writes a module zip with size bytes of content, and its
// go.mod, and has w's database log both. It returns the zip's path.
func benchModule(b *testing.B, w *testworld.World, m module.Version, size int) (zipFile, modFile string) {
	b.Helper()
	dir := b.TempDir()
	mod := []byte("module " + m.Path + "\n")
	files := []modzip.File{genFile{name: "go.mod", size: int64(len("module example.com/bench\n"))}}
	for i := 0; i*benchFileSize < size; i++ {
		files = append(files, genFile{name: fmt.Sprintf("f%05d.go", i), size: benchFileSize, seed: uint64(i)})
	}
	zipFile, modFile = filepath.Join(dir, "m.zip"), filepath.Join(dir, "go.mod")
	f, err := os.Create(zipFile)
	if err != nil {
		b.Fatal(err)
	}
	if err := modzip.Create(f, m, files); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(modFile, mod, 0o600); err != nil {
		b.Fatal(err)
	}
	zh, err := sumdb.Hash(m, sumdb.KindZip, zipFile)
	if err != nil {
		b.Fatal(err)
	}
	mh, err := sumdb.Hash(m, sumdb.KindMod, modFile)
	if err != nil {
		b.Fatal(err)
	}
	w.Log(m, zh, mh)
	return zipFile, modFile
}

// BenchmarkCheckZip reports zip verification throughput: CheckZip, the
// entry-mode check, inflating and hashing every entry, and the (warm)
// lookup, with entries inflated serially (workers=1) and ahead on
// GOMAXPROCS goroutines (the default). MB/s counts module content; zipMB/s
// counts the zip file.
func BenchmarkCheckZip(b *testing.B) {
	for _, mib := range []int{1, 50, 400} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			w := testworld.New(b)
			m := module.Version{Path: fmt.Sprintf("example.com/bench/m%d", mib), Version: "v1.0.0"}
			zipFile, _ := benchModule(b, w, m, mib<<20)
			info, _ := os.Stat(zipFile)
			dir := b.TempDir()
			for _, workers := range []int{1, 0} {
				name := "workers=1"
				if workers == 0 {
					name = "workers=default"
				}
				b.Run(name, func(b *testing.B) {
					v := newVerifier(b, w, dir, func(c *sumdb.Config) { c.HashWorkers = workers })
					if vd, err := v.Check(context.Background(), m, sumdb.KindZip, zipFile); err != nil || vd.Outcome != sumdb.Verified {
						b.Fatalf("%v %v", vd, err)
					}
					b.SetBytes(int64(mib) << 20)
					b.ResetTimer()
					for b.Loop() {
						if vd, err := v.Check(context.Background(), m, sumdb.KindZip, zipFile); err != nil || vd.Outcome != sumdb.Verified {
							b.Fatalf("%v %v", vd, err)
						}
					}
					b.ReportMetric(float64(info.Size())/1e6/(b.Elapsed().Seconds()/float64(b.N)), "zipMB/s")
				})
			}
		})
	}
}

// BenchmarkLookup reports the latency of a check of a small go.mod: cold
// (empty data directory, so tree head, tiles and record all come over
// TLS from the test world) and warm (proven hashes on disk).
func BenchmarkLookup(b *testing.B) {
	w := testworld.New(b)
	m := w.Module(testworld.GoodPath, testworld.Version)
	modFile := m.WriteMod(b)
	client := w.HTTPClient() // shared, as in a long-running gateway: connections are reused
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			v := newVerifier(b, w, b.TempDir(), func(c *sumdb.Config) { c.HTTPClient = client })
			b.StartTimer()
			if vd, err := v.Check(context.Background(), m.Version, sumdb.KindMod, modFile); err != nil || vd.Outcome != sumdb.Verified || vd.Cached {
				b.Fatalf("%v %v", vd, err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		v := newVerifier(b, w, "", func(c *sumdb.Config) { c.HTTPClient = client })
		v.Check(context.Background(), m.Version, sumdb.KindMod, modFile)
		for b.Loop() {
			if vd, err := v.Check(context.Background(), m.Version, sumdb.KindMod, modFile); err != nil || !vd.Cached {
				b.Fatalf("%v %v", vd, err)
			}
		}
	})
}

// BenchmarkSHA256 is the machine's SHA-256 throughput, the floor under
// hashing, for comparison with BenchmarkCheckZip in the same run.
func BenchmarkSHA256(b *testing.B) {
	p := make([]byte, 1<<20)
	sourceText(p, 1)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		sha256.Sum256(p)
	}
}

// BenchmarkInflate is the machine's DEFLATE decompression throughput on
// module-like text, counted in decompressed bytes.
func BenchmarkInflate(b *testing.B) {
	p := make([]byte, 16<<20)
	sourceText(p, 2)
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, flate.DefaultCompression)
	fw.Write(p)
	fw.Close()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		r := flate.NewReader(bytes.NewReader(z.Bytes()))
		if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(p)) {
			b.Fatal(n, err)
		}
	}
}
