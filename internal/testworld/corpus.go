package testworld

import (
	"archive/zip"
	"bytes"
	"cmp"
	"compress/flate"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

// Versions of the corpus. Every corpus module exists at Version;
// GoodPath also exists at NextVersion.
const (
	Version     = "v1.0.0"
	NextVersion = "v1.1.0"
)

// Module paths of the corpus.
const (
	// GoodPath is served by the proxies exactly as the database logs it.
	GoodPath = "example.com/good"
	// TamperedZipPath: the database logs the genuine zip's hash, the proxies
	// serve a zip with the same file names but different content.
	TamperedZipPath = "example.com/tampered/zip"
	// TamperedModPath: the database logs the genuine go.mod's hash, the
	// proxies serve a go.mod with an added require. Its zip is genuine.
	TamperedModPath = "example.com/tampered/mod"
	// UnknownPath is served by the proxies but has no database record:
	// lookups answer 404.
	UnknownPath = "example.com/unknown"
	// PrivatePattern is the GOPRIVATE/GONOSUMDB pattern covering PrivatePath.
	PrivatePattern = "corp.example"
	// PrivatePath is a private module: served by the proxies, never in the database.
	PrivatePath = PrivatePattern + "/private"
	// UpperPath has upper-case letters: proxies serve it under its
	// case-escaped URL path (github.com/!upper/!case) and the database
	// answers lookups for it. Served bytes are genuine.
	UpperPath = "github.com/Upper/Case"
)

// Hostile zip classes, the values of Module.Hostile. Each class has one
// module, at path "example.com/hostile/<class>" (the Hostile*Path constants),
// whose genuine go.mod is served and logged. Where dirhash.HashZip succeeds on
// the served zip, the database logs exactly that hash, so only structural
// checks can reject the zip.
const (
	// HostileTraversal has an entry named "<path>@<version>/../../evil.go".
	// zip.CheckZip rejects it.
	HostileTraversal = "traversal"
	// HostileCasefold has entries "<prefix>/a.go" and "<prefix>/A.go".
	// zip.CheckZip rejects it.
	HostileCasefold = "casefold"
	// HostileSymlink has the genuine files, but lib.go's mode is a symlink,
	// so its HashZip equals the genuine module's hash. zip.CheckZip does NOT
	// reject it (it ignores modes); a gateway needs its own mode check.
	HostileSymlink = "symlink"
	// HostilePrefix has entries without the "<path>@<version>/" prefix.
	// zip.CheckZip rejects it.
	HostilePrefix = "prefix"
	// HostileOversize declares 600 MiB of uncompressed content (over
	// zip.MaxZipFile) but stores a few bytes. zip.CheckZip rejects it;
	// HashZip fails, so the database logs the hash of the stored content.
	HostileOversize = "oversize"
	// HostileInflate has an entry whose deflated data expands beyond its
	// declared size. zip.CheckZip does NOT reject it (it reads no data);
	// zip.Unzip and HashZip do. The database logs the hash of the real content.
	HostileInflate = "inflate"
)

// Module paths of the hostile corpus entries, one per Hostile* class.
const (
	HostileTraversalPath = "example.com/hostile/" + HostileTraversal
	HostileCasefoldPath  = "example.com/hostile/" + HostileCasefold
	HostileSymlinkPath   = "example.com/hostile/" + HostileSymlink
	HostilePrefixPath    = "example.com/hostile/" + HostilePrefix
	HostileOversizePath  = "example.com/hostile/" + HostileOversize
	HostileInflatePath   = "example.com/hostile/" + HostileInflate
)

// infoTime is the commit time every .info answer reports.
const infoTime = "2024-01-01T00:00:00Z"

// A Module is one corpus entry. Its byte slices are shared with the world's
// servers and must not be modified.
type Module struct {
	module.Version        // decoded (not case-escaped) path and version
	Zip            []byte // the zip bytes the world's module proxies serve
	Mod            []byte // the go.mod bytes the proxies serve
	ZipHash        string // "h1:" hash the checksum database logs for the zip ("" if not logged)
	ModHash        string // "h1:" hash the database logs for go.mod ("" if not logged)
	InSumDB        bool   // whether the honest database has a record for it
	Private        bool   // a private module (path under PrivatePattern), never in the database
	Hostile        string // for malformed zips, the Hostile* class; else ""
}

// WriteZip writes the served zip into a fresh t.TempDir() and returns its path.
func (m *Module) WriteZip(t testing.TB) string {
	t.Helper()
	return writeTemp(t, t.TempDir(), m.Version.Version+".zip", m.Zip)
}

// WriteMod writes the served go.mod into a fresh t.TempDir() and returns its path.
func (m *Module) WriteMod(t testing.TB) string {
	t.Helper()
	return writeTemp(t, t.TempDir(), m.Version.Version+".mod", m.Mod)
}

func writeTemp(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatalf("testworld: %v", err)
	}
	return file
}

// memFile is an in-memory file, usable as a modzip.File.
type memFile struct {
	name string
	data []byte
}

func (f memFile) Path() string                 { return f.name }
func (f memFile) Lstat() (fs.FileInfo, error)  { return memInfo(f), nil }
func (f memFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.data)), nil }

type memInfo memFile

func (i memInfo) Name() string       { return path.Base(i.name) }
func (i memInfo) Size() int64        { return int64(len(i.data)) }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

func goMod(modPath string) []byte { return []byte("module " + modPath + "\n\ngo 1.21\n") }

func goSrc(m module.Version) []byte {
	return []byte("// Package lib is the test-world module " + m.String() + ".\npackage lib\n\n" +
		"// Version is the module version.\nconst Version = " + strconv.Quote(m.Version) + "\n")
}

// corpusBuilder builds corpus entries, hashing zips through files in dir.
type corpusBuilder struct {
	t   testing.TB
	dir string
	n   int
}

func (b *corpusBuilder) fatal(err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatalf("testworld: building corpus: %v", err)
	}
}

// create makes a module zip with modzip.Create.
func (b *corpusBuilder) create(m module.Version, files ...memFile) []byte {
	b.t.Helper()
	var buf bytes.Buffer
	zf := make([]modzip.File, len(files))
	for i, f := range files {
		zf[i] = f
	}
	b.fatal(modzip.Create(&buf, m, zf))
	return buf.Bytes()
}

// hashZip is dirhash.HashZip over a temporary copy of data.
func (b *corpusBuilder) hashZip(data []byte) (string, error) {
	b.n++
	file := writeTemp(b.t, b.dir, strconv.Itoa(b.n)+".zip", data)
	return dirhash.HashZip(file, dirhash.Hash1)
}

// hashFiles is dirhash.Hash1 over in-memory files.
func hashFiles(files ...memFile) string {
	names := make([]string, len(files))
	byName := make(map[string][]byte)
	for i, f := range files {
		names[i] = f.name
		byName[f.name] = f.data
	}
	h, err := dirhash.Hash1(names, func(name string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(byName[name])), nil
	})
	if err != nil {
		panic(err) // only for names with newlines, which the corpus has none of
	}
	return h
}

// hashMod is the go.sum "/go.mod" hash of a go.mod file, as the go command computes it.
func hashMod(mod []byte) string { return hashFiles(memFile{"go.mod", mod}) }

// genuine builds an honest module: served bytes equal logged hashes.
func (b *corpusBuilder) genuine(modPath, version string) *Module {
	b.t.Helper()
	m := &Module{Version: module.Version{Path: modPath, Version: version}, Mod: goMod(modPath), InSumDB: true}
	m.Zip = b.create(m.Version, memFile{"go.mod", m.Mod}, memFile{"lib.go", goSrc(m.Version)})
	var err error
	m.ZipHash, err = b.hashZip(m.Zip)
	b.fatal(err)
	m.ModHash = hashMod(m.Mod)
	return m
}

// build returns the whole corpus sorted by path, then semver.
func (b *corpusBuilder) build() []*Module {
	b.t.Helper()
	mods := []*Module{
		b.genuine(GoodPath, Version),
		b.genuine(GoodPath, NextVersion),
		b.genuine(UpperPath, Version),
	}

	tz := b.genuine(TamperedZipPath, Version)
	tz.Zip = b.create(tz.Version, memFile{"go.mod", tz.Mod},
		memFile{"lib.go", []byte("package lib\n\n// Version was altered in transit.\nconst Version = \"evil\"\n")})
	tm := b.genuine(TamperedModPath, Version)
	tm.Mod = append(slices.Clone(tm.Mod), "\nrequire example.com/evil v1.0.0\n"...)
	mods = append(mods, tz, tm)

	for _, p := range []string{UnknownPath, PrivatePath} {
		m := b.genuine(p, Version)
		m.ZipHash, m.ModHash, m.InSumDB = "", "", false
		m.Private = p == PrivatePath
		mods = append(mods, m)
	}

	for _, class := range []string{HostileTraversal, HostileCasefold, HostileSymlink, HostilePrefix, HostileOversize, HostileInflate} {
		mods = append(mods, b.hostile(class))
	}

	slices.SortFunc(mods, func(x, y *Module) int {
		return cmp.Or(cmp.Compare(x.Path, y.Path), semver.Compare(x.Version.Version, y.Version.Version))
	})
	return mods
}

// hostile builds the module of one Hostile* class with archive/zip by hand.
func (b *corpusBuilder) hostile(class string) *Module {
	b.t.Helper()
	v := module.Version{Path: "example.com/hostile/" + class, Version: Version}
	m := &Module{Version: v, Mod: goMod(v.Path), ModHash: hashMod(goMod(v.Path)), InSumDB: true, Hostile: class}
	prefix := v.String() + "/"
	src := goSrc(v)

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var content []memFile // the content each entry declares, for hashing
	add := func(name string, data []byte, mode fs.FileMode) {
		fh := &zip.FileHeader{Name: name, Method: zip.Deflate}
		if mode != 0 {
			fh.SetMode(mode)
		}
		w, err := zw.CreateHeader(fh)
		b.fatal(err)
		_, err = w.Write(data)
		b.fatal(err)
		content = append(content, memFile{name, data})
	}
	// raw writes stored (already compressed by method) as the entry's data
	// while declaring size bytes of uncompressed content.
	raw := func(name string, method uint16, stored, data []byte, size uint64) {
		w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: method, CRC32: crc32.ChecksumIEEE(data),
			CompressedSize64: uint64(len(stored)), UncompressedSize64: size})
		b.fatal(err)
		_, err = w.Write(stored)
		b.fatal(err)
		content = append(content, memFile{name, data})
	}

	switch class {
	case HostileTraversal:
		add(prefix+"go.mod", m.Mod, 0)
		add(prefix+"lib.go", src, 0)
		add(prefix+"../../evil.go", []byte("package evil\n"), 0)
	case HostileCasefold:
		add(prefix+"go.mod", m.Mod, 0)
		add(prefix+"a.go", []byte("package lib\n\nconst A = 1\n"), 0)
		add(prefix+"A.go", []byte("package lib\n\nconst B = 2\n"), 0)
	case HostileSymlink:
		add(prefix+"go.mod", m.Mod, 0)
		add(prefix+"lib.go", src, fs.ModeSymlink|0o777)
	case HostilePrefix:
		add("go.mod", m.Mod, 0)
		add("lib.go", src, 0)
	case HostileOversize:
		add(prefix+"go.mod", m.Mod, 0)
		add(prefix+"lib.go", src, 0)
		tiny := []byte("tiny")
		raw(prefix+"big.dat", zip.Store, tiny, tiny, 600<<20)
	case HostileInflate:
		add(prefix+"go.mod", m.Mod, 0)
		data := append(slices.Clone(src), bytes.Repeat([]byte("// padding\n"), 200)...)
		var def bytes.Buffer
		fw, err := flate.NewWriter(&def, flate.BestCompression)
		b.fatal(err)
		_, err = fw.Write(data)
		b.fatal(err)
		b.fatal(fw.Close())
		raw(prefix+"lib.go", zip.Deflate, def.Bytes(), data, 64)
	default:
		b.t.Fatalf("testworld: unknown hostile class %q", class)
	}
	b.fatal(zw.Close())
	m.Zip = buf.Bytes()

	// Log what HashZip computes for the served bytes where it can; otherwise
	// the hash of the content the entries declare.
	h, err := b.hashZip(m.Zip)
	if err != nil {
		h = hashFiles(content...)
	}
	m.ZipHash = h
	return m
}
