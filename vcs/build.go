package vcs

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

// The go command's limits (cmd/go/internal/modfetch/codehost): a module
// zip, a go.mod and a LICENSE file.
const (
	maxZipFile = 500 << 20
	maxGoMod   = 16 << 20
	maxLICENSE = 16 << 20
)

// repo is a local bare repository holding one shallow commit, fetched by
// sumgate itself; the go command's own steps (cmd/go/internal/modfetch)
// are reproduced on it. A repo is used by one goroutine.
type repo struct {
	git   string                // the git binary
	dir   string                // the bare repository (GIT_DIR)
	env   []string              // more environment for git
	files map[string]readResult // readFile's answers: the repository's objects never change
}

type readResult struct {
	data []byte
	err  error
}

// run runs git with a closed environment: no system or global
// configuration, no prompts, no network protocol allowed.
func (r *repo) run(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) error {
	sub := args[0]
	args = append([]string{"-c", "protocol.allow=never", "-c", "core.autocrlf=input", "-c", "core.eol=lf"}, args...)
	cmd := exec.CommandContext(ctx, r.git, args...)
	cmd.Env = []string{"GIT_DIR=" + r.dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + os.DevNull,
		"HOME=" + r.dir, "GIT_TERMINAL_PROMPT=0", "LC_ALL=C", "GIT_NO_REPLACE_OBJECTS=1"}
	cmd.Env = append(cmd.Env, r.env...)
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, n: 4096}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("git %s: %w: %s", sub, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// limitedBuffer keeps the first n bytes written to it.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// initRepo makes an empty bare repository in dir whose archives are
// built as the go command builds them: export-subst and export-ignore
// neutralised (ensureGitAttributes in cmd/go's codehost/git.go, see
// golang.org/issue/27153).
func initRepo(ctx context.Context, git, dir string) (*repo, error) {
	r := &repo{git: git, dir: dir}
	if err := r.run(ctx, nil, io.Discard, "init", "--quiet", "--bare", dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "info"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "info", "attributes"), []byte("\n* -export-subst -export-ignore\n"), 0o644); err != nil {
		return nil, err
	}
	return r, nil
}

// readFile returns file at commit, or fs.ErrNotExist for any failure to
// read it, as the go command's gitRepo.ReadFile does. A file larger than
// max is an error.
func (r *repo) readFile(ctx context.Context, commit, file string, max int64) ([]byte, error) {
	// findDir and declaredRoots read the same go.mod files for every
	// reading of every tag: one git process each is enough.
	key := commit + ":" + file
	if res, ok := r.files[key]; ok {
		return res.data, res.err
	}
	data, err := r.readFile1(ctx, commit, file, max)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		if r.files == nil {
			r.files = map[string]readResult{}
		}
		r.files[key] = readResult{data, err}
	}
	return data, err
}

func (r *repo) readFile1(ctx context.Context, commit, file string, max int64) ([]byte, error) {
	var out bytes.Buffer
	lw := &capWriter{w: &out, n: max}
	if err := r.run(ctx, nil, lw, "cat-file", "--end-of-options", "blob", commit+":"+file); err != nil {
		if lw.over {
			return nil, fmt.Errorf("%s is larger than %d bytes", file, max)
		}
		return nil, fs.ErrNotExist
	}
	if lw.over {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, max)
	}
	return out.Bytes(), nil
}

// capWriter writes at most n bytes to w and fails after that.
type capWriter struct {
	w    io.Writer
	n    int64
	over bool
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.n {
		c.over = true
		return 0, errors.New("too large")
	}
	c.n -= int64(len(p))
	return c.w.Write(p)
}

// A reading is one way the go command could read a tag as a module
// version: module path, version, and where in the repository the module
// lives.
type reading struct {
	mod       module.Version
	codeRoot  string // the module path of the repository's root
	codeDir   string // the tag's prefix directory: "" or "sub"
	pathMajor string // "", "/v2", ".v2" (gopkg.in)
}

// A root is a module path prefix that a repository's root, or one of its
// subdirectories, stands for.
type root struct {
	path   string // module path prefix: github.com/o/r, or a vanity import path
	subdir string // the repository directory it stands for; "" for the root
}

// readings returns every module version a tag can be, for a repository
// whose directories the roots name: the tag's directory prefix names the
// module's directory (below the root's own subdirectory, if it has one);
// a major version 2 or more is the /vN module or, with no go.mod,
// +incompatible; a gopkg.in path carries its major itself. A tag that is
// not "[dir/]vX.Y.Z[-pre]" in canonical form is no version.
func readings(roots []root, tag string) []reading {
	dir, vers := "", tag
	if i := strings.LastIndexByte(tag, '/'); i >= 0 {
		dir, vers = tag[:i], tag[i+1:]
	}
	if !semver.IsValid(vers) || semver.Canonical(vers) != vers || semver.Build(vers) != "" {
		return nil
	}
	major := semver.Major(vers)
	var out []reading
	add := func(codeRoot, modPath, v, pathMajor string) {
		m := module.Version{Path: modPath, Version: v}
		if module.Check(m.Path, m.Version) == nil {
			out = append(out, reading{mod: m, codeRoot: codeRoot, codeDir: dir, pathMajor: pathMajor})
		}
	}
	for _, rt := range roots {
		rel, ok := dir, true
		if rt.subdir != "" {
			rel, ok = strings.CutPrefix(dir, rt.subdir)
			ok = ok && (rel == "" || rel[0] == '/')
			rel = strings.TrimPrefix(rel, "/")
		}
		if !ok {
			continue
		}
		base := rt.path
		if rel != "" {
			base += "/" + rel
		}
		if _, pm, ok := module.SplitPathVersion(base); ok && strings.HasPrefix(pm, ".") {
			add(rt.path, base, vers, pm) // gopkg.in/yaml.v2: the major is in the path
			continue
		}
		if major == "v0" || major == "v1" {
			add(rt.path, base, vers, "")
			continue
		}
		add(rt.path, base+"/"+major, vers, "/"+major)
		add(rt.path, base, vers+"+incompatible", "")
	}
	return out
}

// findDir is cmd/go's codeRepo.findDir for one reading at commit: the
// directory the module's files are in, its go.mod (nil if it has none)
// and the module path that go.mod declares. An error means the go command
// would refuse this reading, so no client can use it.
func (r *repo) findDir(ctx context.Context, commit string, rd reading) (dir string, gomod []byte, declared string, err error) {
	dir, gomod, err = r.findDir1(ctx, commit, rd)
	return dir, gomod, modfile.ModulePath(gomod), err
}

func (r *repo) findDir1(ctx context.Context, commit string, rd reading) (dir string, gomod []byte, err error) {
	file1 := path.Join(rd.codeDir, "go.mod")
	gomod1, err1 := r.readFile(ctx, commit, file1, maxGoMod)
	if err1 != nil && !errors.Is(err1, fs.ErrNotExist) {
		return "", nil, err1
	}
	mpath1 := modfile.ModulePath(gomod1)
	found1 := err1 == nil && (isMajor(mpath1, rd.pathMajor) || rd.pathMajor == "" && strings.HasPrefix(mpath1, "gopkg.in/"))

	if rd.pathMajor != "" && rd.codeRoot != rd.mod.Path && !strings.HasPrefix(rd.pathMajor, ".") {
		dir2 := path.Join(rd.codeDir, rd.pathMajor[1:])
		gomod2, err2 := r.readFile(ctx, commit, path.Join(dir2, "go.mod"), maxGoMod)
		if err2 != nil && !errors.Is(err2, fs.ErrNotExist) {
			return "", nil, err2
		}
		found2 := err2 == nil && isMajor(modfile.ModulePath(gomod2), rd.pathMajor)
		switch {
		case found1 && found2:
			return "", nil, errors.New("both go.mod files claim the major version")
		case found2:
			return dir2, gomod2, nil
		case err2 == nil:
			return "", nil, errors.New("the major subdirectory's go.mod has another module path")
		}
	}
	switch {
	case found1:
		return rd.codeDir, gomod1, nil
	case err1 == nil:
		return "", nil, errors.New("go.mod has a module path of another major version")
	case rd.codeDir == "" && (rd.pathMajor == "" || strings.HasPrefix(rd.pathMajor, ".")):
		return "", nil, nil // an implicit go.mod at the root, for v0, v1 and gopkg.in
	}
	return "", nil, errors.New("no go.mod")
}

// isMajor is cmd/go's isMajor: whether the versions mpath allows are
// compatible with the major version pathMajor implies.
func isMajor(mpath, pathMajor string) bool {
	if mpath == "" {
		return false
	}
	_, mpathMajor, ok := module.SplitPathVersion(mpath)
	if !ok {
		return false
	}
	if pathMajor == "" {
		switch module.PathMajorPrefix(mpathMajor) {
		case "", "v0", "v1":
			return true
		}
		return false
	}
	if mpathMajor == "" {
		return false
	}
	return pathMajor[1:] == mpathMajor[1:]
}

// peel returns the commit obj is, or that the annotated tag obj names,
// as this repository's objects say.
func (r *repo) peel(ctx context.Context, obj string) (string, error) {
	var out bytes.Buffer
	if err := r.run(ctx, nil, &capWriter{w: &out, n: 128}, "rev-parse", "--verify", "--end-of-options", obj+"^{commit}"); err != nil {
		return "", err
	}
	c := strings.TrimSpace(out.String())
	if !isObjectID(c) {
		return "", fmt.Errorf("%s peels to %q", obj, c)
	}
	return c, nil
}

// archive writes commit's tree under subdir ("" for all of it) to a zip
// file at dst with git archive, exactly as the go command's
// gitRepo.ReadZip runs it (the repository's attributes were neutralised by
// initRepo).
func (r *repo) archive(ctx context.Context, commit, subdir, dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	cw := &capWriter{w: f, n: maxZipFile}
	args := []string{"archive", "--format=zip", "--prefix=prefix/", "--end-of-options", commit}
	if subdir != "" {
		args = append(args, subdir) // a pathspec, as the go command passes it: its limit is the module's
	}
	err = r.run(ctx, nil, cw, args...)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if cw.over {
		return fmt.Errorf("the archive of %s is larger than %d bytes", commit, maxZipFile)
	}
	return err
}

// moduleZip writes to dst the module zip of m from the archive at src,
// for the module in dir: cmd/go's codeRepo.Zip, which takes the files
// under dir, adds the repository's root LICENSE to a module in a
// subdirectory that has none, and leaves the rest to
// golang.org/x/mod/zip.Create (vendor directories, nested modules,
// irregular files, limits).
func (r *repo) moduleZip(ctx context.Context, commit, src, dir string, m module.Version, dst string) error {
	zr, err := zip.OpenReader(src)
	if err != nil {
		return fmt.Errorf("reading the archive of %s: %w", commit, err)
	}
	defer zr.Close()
	if dir != "" {
		dir += "/"
	}
	var files []modzip.File
	haveLICENSE := false
	top := ""
	for _, zf := range zr.File {
		if top == "" {
			i := strings.Index(zf.Name, "/")
			if i < 0 {
				return errors.New("the archive has no top-level directory")
			}
			top = zf.Name[:i+1]
		}
		name, ok := strings.CutPrefix(zf.Name, top)
		if !ok {
			return errors.New("the archive has more than one top-level directory")
		}
		if name, ok = strings.CutPrefix(name, dir); !ok || name == "" || strings.HasSuffix(name, "/") {
			continue
		}
		files = append(files, archiveFile{name: name, f: zf})
		haveLICENSE = haveLICENSE || name == "LICENSE"
	}
	if !haveLICENSE && dir != "" {
		if data, err := r.readFile(ctx, commit, "LICENSE", maxLICENSE); err == nil {
			files = append(files, dataFile{name: "LICENSE", data: data})
		}
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	err = modzip.Create(f, m, files)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("building the module zip of %s: %w", m, err)
	}
	return nil
}

// archiveFile is a file of git's archive, as x/mod/zip reads it.
type archiveFile struct {
	name string
	f    *zip.File
}

func (f archiveFile) Path() string                 { return f.name }
func (f archiveFile) Lstat() (fs.FileInfo, error)  { return f.f.FileInfo(), nil }
func (f archiveFile) Open() (io.ReadCloser, error) { return f.f.Open() }

// dataFile is a file read whole, as x/mod/zip reads it.
type dataFile struct {
	name string
	data []byte
}

func (f dataFile) Path() string                 { return f.name }
func (f dataFile) Lstat() (fs.FileInfo, error)  { return dataInfo(f), nil }
func (f dataFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.data)), nil }

type dataInfo dataFile

func (i dataInfo) Name() string       { return path.Base(i.name) }
func (i dataInfo) Size() int64        { return int64(len(i.data)) }
func (i dataInfo) Mode() fs.FileMode  { return 0o644 }
func (i dataInfo) ModTime() time.Time { return time.Time{} }
func (i dataInfo) IsDir() bool        { return false }
func (i dataInfo) Sys() any           { return nil }

// legacyGoMod is the go.mod the go command makes for a module that has
// none (cmd/go's modfetch.LegacyGoMod).
func legacyGoMod(modPath string) []byte {
	return fmt.Appendf(nil, "module %s\n", modfile.AutoQuote(modPath))
}
