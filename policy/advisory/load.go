package advisory

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// ErrLimit is wrapped by every error of a source that exceeds one of its
// [Limits].
var ErrLimit = errors.New("advisory source exceeds a limit")

// Limits bounds what [Load] reads from one source, so that a hostile or
// broken source costs bounded memory and time. A zero field takes its
// default.
type Limits struct {
	MaxFiles     int   // JSON files read, and entries of a zip (folders too); default 100,000
	MaxFileSize  int64 // bytes of one JSON file; default 16 MiB
	MaxTotalSize int64 // bytes read in all, and bytes of a zip; default 1 GiB
}

// Default limits. The Go vulnerability database holds about 5,000 entries
// of a few KiB each (the largest, with long symbol lists, under 1 MiB);
// the Go part of the malicious-packages repository fewer.
const (
	DefaultMaxFiles     = 100_000
	DefaultMaxFileSize  = 16 << 20
	DefaultMaxTotalSize = 1 << 30
)

func (l Limits) withDefaults() Limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultMaxFileSize
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = DefaultMaxTotalSize
	}
	return l
}

// parallelism is how many entries are fetched and parsed at once.
const parallelism = 8

// Load reads one advisory source into a snapshot. source is one of
//
//   - an https URL of a database in the Go vulnerability database's v1
//     layout (index/db.json, index/modules.json, ID/<id>.json under it),
//     read with client; or of a .zip of such a tree (a URL whose path ends
//     in .zip), spooled to a temporary file;
//   - a local directory or .zip file. When it holds index/db.json (at its
//     root or, in a zip, under its single top folder) it is read as the v1
//     layout: the entries index/modules.json lists, each from ID/<id>.json.
//     Otherwise every .json file in it, at any depth, is an OSV entry (the
//     malicious-packages layout); folders starting with "." are skipped.
//
// In the v1 layout the pseudo-modules "stdlib" and "toolchain" are not
// read: no module proxy serves them. An entry that is withdrawn, or names
// no module of the ecosystem "Go", is left out. Anything that does not
// parse, any listed entry that is missing or has another ID, any answer
// but 200, and anything over lim (see [ErrLimit]) fails the whole load:
// a snapshot is never partial. client is used for https sources only;
// it must be non-nil for them.
func Load(ctx context.Context, source string, client *http.Client, lim Limits) (*DB, error) {
	l := &loader{source: source, lim: lim.withDefaults(), now: time.Now(), client: client}
	if err := l.load(ctx); err != nil {
		return nil, fmt.Errorf("loading advisories from %s: %w", redact(source), err)
	}
	return l.db, nil
}

// redact hides a URL's password, so that a source can be named in errors
// and metrics.
func redact(source string) string {
	if u, err := url.Parse(source); err == nil && u.User != nil {
		return u.Redacted()
	}
	return source
}

// loader is the state of one Load.
type loader struct {
	source string
	lim    Limits
	now    time.Time
	client *http.Client
	total  atomic.Int64 // bytes read so far
	db     *DB
}

// getter reads the file at a slash-separated name of a source, bounded
// by the loader's limits.
type getter func(ctx context.Context, name string) ([]byte, error)

func (l *loader) load(ctx context.Context) error {
	if u, err := url.Parse(l.source); err == nil && u.Scheme != "" && len(u.Scheme) > 1 {
		if u.Scheme != "https" {
			return fmt.Errorf("a URL source must be https, not %s", u.Scheme)
		}
		if l.client == nil {
			return errors.New("an https source needs an HTTP client")
		}
		if strings.HasSuffix(u.Path, ".zip") {
			return l.loadZipURL(ctx, u)
		}
		return l.loadV1(ctx, l.httpGetter(u))
	}
	fi, err := os.Stat(l.source)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return l.loadFS(ctx, os.DirFS(l.source))
	}
	return l.loadZipFile(ctx, l.source)
}

// loadFS reads a v1 tree or a tree of OSV files.
func (l *loader) loadFS(ctx context.Context, fsys fs.FS) error {
	get := l.fsGetter(fsys)
	if _, err := fs.Stat(fsys, "index/db.json"); err == nil {
		return l.loadV1(ctx, get)
	}
	var names []string
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && name != "." && strings.HasPrefix(d.Name(), "."):
			return fs.SkipDir
		case d.Type().IsRegular() && strings.HasSuffix(name, ".json"):
			if len(names) == l.lim.MaxFiles {
				return fmt.Errorf("%w: more than %d JSON files", ErrLimit, l.lim.MaxFiles)
			}
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return l.loadEntries(ctx, get, names, nil)
}

// v1Modules is index/modules.json of the v1 layout.
type v1Modules []struct {
	Path  string `json:"path"`
	Vulns []struct {
		ID string `json:"id"`
	} `json:"vulns"`
}

// loadV1 reads a database in the Go vulnerability database's v1 layout.
func (l *loader) loadV1(ctx context.Context, get getter) error {
	data, err := get(ctx, "index/db.json")
	if err != nil {
		return err
	}
	var meta struct {
		Modified time.Time `json:"modified"`
	}
	if err := json.Unmarshal(data, &meta); err != nil || meta.Modified.IsZero() {
		return fmt.Errorf("index/db.json: not a v1 database index (want {\"modified\": time}): %v", err)
	}
	if data, err = get(ctx, "index/modules.json"); err != nil {
		return err
	}
	var mods v1Modules
	if err := json.Unmarshal(data, &mods); err != nil {
		return fmt.Errorf("index/modules.json: %w", err)
	}
	var names, ids []string
	seen := map[string]bool{}
	for _, m := range mods {
		if m.Path == "stdlib" || m.Path == "toolchain" {
			continue
		}
		for _, v := range m.Vulns {
			if seen[v.ID] {
				continue
			}
			if !validID(v.ID) {
				return fmt.Errorf("index/modules.json: module %q: %q is not an advisory ID", m.Path, v.ID)
			}
			if len(ids) == l.lim.MaxFiles {
				return fmt.Errorf("%w: index/modules.json lists more than %d entries", ErrLimit, l.lim.MaxFiles)
			}
			seen[v.ID] = true
			ids = append(ids, v.ID)
			names = append(names, "ID/"+v.ID+".json")
		}
	}
	return l.loadEntries(ctx, get, names, ids)
}

// validID reports whether id can name a file in ID/: letters, digits and
// "-", "_", ".", not starting with ".".
func validID(id string) bool {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return false
	}
	for _, r := range id {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// loadEntries reads and parses the named files, several at once, and
// builds the snapshot in the order of names. With ids non-nil, the entry
// in names[i] must have the ID ids[i].
func (l *loader) loadEntries(ctx context.Context, get getter, names, ids []string) error {
	out := make([]*parsed, len(names))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelism)
	for i, name := range names {
		g.Go(func() error {
			data, err := get(ctx, name)
			if err != nil {
				return err
			}
			p, err := parseEntry(data, l.source, l.now)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if ids != nil && p != nil && p.entry.ID != ids[i] {
				return fmt.Errorf("%s: holds the entry %q", name, p.entry.ID)
			}
			out[i] = p
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	db := &DB{byPath: map[string][]affect{}, byID: map[string]*Entry{}}
	for _, p := range out {
		if p == nil {
			continue
		}
		db.entries++
		for _, id := range p.entry.IDs() {
			if _, ok := db.byID[strings.ToUpper(id)]; !ok {
				db.byID[strings.ToUpper(id)] = p.entry
			}
		}
		for i, path := range p.paths {
			db.byPath[path] = append(db.byPath[path], p.affects[i])
		}
	}
	l.db = db
	return nil
}

// readBounded reads r whole, failing past the file and total limits.
func (l *loader) readBounded(name string, r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, l.lim.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if int64(len(data)) > l.lim.MaxFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrLimit, name, l.lim.MaxFileSize)
	}
	if t := l.total.Add(int64(len(data))); t > l.lim.MaxTotalSize {
		return nil, fmt.Errorf("%w: more than %d bytes in all", ErrLimit, l.lim.MaxTotalSize)
	}
	return data, nil
}

// fsGetter reads files of fsys.
func (l *loader) fsGetter(fsys fs.FS) getter {
	return func(ctx context.Context, name string) ([]byte, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		f, err := fsys.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return l.readBounded(name, f)
	}
}

// httpGetter reads files under the base URL u with the loader's client.
func (l *loader) httpGetter(u *url.URL) getter {
	return func(ctx context.Context, name string) ([]byte, error) {
		resp, err := l.get(ctx, u.JoinPath(name))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return l.readBounded(name, resp.Body)
	}
}

// get sends a GET for u and returns the response if it is a 200.
func (l *loader) get(ctx context.Context, u *url.URL) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", u.Redacted(), resp.Status)
	}
	return resp, nil
}

// loadZipURL spools the zip at u to a temporary file and reads it.
func (l *loader) loadZipURL(ctx context.Context, u *url.URL) error {
	resp, err := l.get(ctx, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.CreateTemp("", "sumgate-advisories-*.zip")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, io.LimitReader(resp.Body, l.lim.MaxTotalSize+1))
	if err != nil {
		return fmt.Errorf("downloading %s: %w", u.Redacted(), err)
	}
	if n > l.lim.MaxTotalSize {
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrLimit, u.Redacted(), l.lim.MaxTotalSize)
	}
	return l.loadZip(ctx, f, n)
}

// loadZipFile reads the zip file at name.
func (l *loader) loadZipFile(ctx context.Context, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > l.lim.MaxTotalSize {
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrLimit, name, l.lim.MaxTotalSize)
	}
	return l.loadZip(ctx, f, fi.Size())
}

// loadZip reads a zip of size bytes. Its entries are counted before the
// zip reader, which keeps every entry's header in memory, parses it.
func (l *loader) loadZip(ctx context.Context, f *os.File, size int64) error {
	n, err := countZipHeaders(io.NewSectionReader(f, 0, size))
	if err != nil {
		return err
	}
	if n > l.lim.MaxFiles {
		return fmt.Errorf("%w: the zip may hold %d entries, more than %d", ErrLimit, n, l.lim.MaxFiles)
	}
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return fmt.Errorf("reading zip: %w", err)
	}
	var fsys fs.FS = zr
	if _, err := fs.Stat(zr, "index/db.json"); err != nil {
		// vulndb.zip may hold the tree under one top folder.
		if top, err := fs.ReadDir(zr, "."); err == nil && len(top) == 1 && top[0].IsDir() {
			if _, err := fs.Stat(zr, path.Join(top[0].Name(), "index/db.json")); err == nil {
				fsys, _ = fs.Sub(zr, top[0].Name())
			}
		}
	}
	return l.loadFS(ctx, fsys)
}

// zipCentralHeader starts every central directory record of a zip.
const zipCentralHeader = "PK\x01\x02"

// countZipHeaders counts the central directory signatures in r: an upper
// bound on the entries any zip reader can find in it, wherever it believes
// the directory starts.
func countZipHeaders(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	n := 0
	var carry []byte // the last bytes of the previous window, shorter than a signature
	for {
		window, err := br.Peek(br.Size())
		if len(window) == 0 && err != nil {
			if err == io.EOF {
				return n, nil
			}
			return 0, fmt.Errorf("reading zip: %w", err)
		}
		joined := append(carry, window[:min(len(window), len(zipCentralHeader)-1)]...)
		n += bytes.Count(joined, []byte(zipCentralHeader)) + bytes.Count(window, []byte(zipCentralHeader))
		carry = append(carry[:0], window[max(0, len(window)-len(zipCentralHeader)+1):]...)
		if _, err := br.Discard(len(window)); err != nil {
			return 0, fmt.Errorf("reading zip: %w", err)
		}
	}
}
