package testworld

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"path"
	"testing"
	"time"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// generatedFileSize is the content of each file of a generated module
// but the last.
const generatedFileSize = 256 << 10

// PublishGenerated publishes path@Version (see Publish): a module whose
// zip holds its go.mod ("module <path>") and size bytes of GoText (which
// deflates about 5:1) in files of 256 KiB, f00000.go, f00001.go, …. The
// bytes depend only on path and size, so every benchmark that publishes
// the same module measures the same bytes. It fails t if the zip cannot
// be built.
func (w *World) PublishGenerated(t testing.TB, path string, size int64) *Module {
	t.Helper()
	m := module.Version{Path: path, Version: Version}
	mod := []byte("module " + path + "\n")
	files := []modzip.File{memFile{"go.mod", mod}}
	for i := int64(0); i*generatedFileSize < size; i++ {
		files = append(files, genFile{
			name: fmt.Sprintf("f%05d.go", i),
			size: min(generatedFileSize, size-i*generatedFileSize),
			seed: uint64(i) + uint64(len(path)),
		})
	}
	var zip bytes.Buffer
	if err := modzip.Create(&zip, m, files); err != nil {
		t.Fatalf("testworld: building %s: %v", m, err)
	}
	return w.Publish(t, m, zip.Bytes(), mod)
}

// GoText returns n bytes of Go-like text: keywords, identifiers, braces
// and newlines drawn at random from a generator seeded with seed, so the
// same n and seed give the same bytes.
func GoText(n int64, seed uint64) []byte {
	words := []string{"func", "return", "err", "if", "nil", "{", "}", "ctx", "for", "range", "string", "\n\t", ":=", "x"}
	r := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	for int64(b.Len()) < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

// genFile is a module file of GoText, generated when opened, so that a
// large module holds one file's content in memory at a time.
type genFile struct {
	name string
	size int64
	seed uint64
}

func (f genFile) Path() string                { return f.name }
func (f genFile) Lstat() (fs.FileInfo, error) { return genInfo(f), nil }
func (f genFile) Open() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(GoText(f.size, f.seed))), nil
}

type genInfo genFile

func (i genInfo) Name() string       { return path.Base(i.name) }
func (i genInfo) Size() int64        { return i.size }
func (i genInfo) Mode() fs.FileMode  { return 0o644 }
func (i genInfo) ModTime() time.Time { return time.Time{} }
func (i genInfo) IsDir() bool        { return false }
func (i genInfo) Sys() any           { return nil }
