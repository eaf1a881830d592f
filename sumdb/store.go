package sumdb

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/tlog"
)

// A store is the persistent state for one checksum database key, in one
// directory (mode 0700) under the data directory:
//
//	key             the verifier key the state belongs to
//	latest          the latest signed tree head (compare-and-swap, atomic)
//	latest.lock     flock(2) lock serialising writers of latest across processes
//	tile/…          tiles, written only after the client authenticated them
//	proven/…        hashes proven for a module version (JSON, immutable)
//	SECURITY-ALERT  present once a fork was seen; removed by an operator
//
// Every file is replaced atomically (write, rename), so a reader never
// sees a torn file. The security state (key, latest, SECURITY-ALERT) is
// also made durable (fsync of the file and its directory) before it is
// acted on. Tiles and proven hashes are caches, written without fsync: on
// a cold lookup the fsyncs were most of the wait (see README,
// Performance), and after a power loss a cache file that did not reach
// the disk reads as absent (a tile not exactly its width of hashes, a
// proof that does not parse), so it is fetched again; a tile of the right
// length whose bytes did not (zeros) fails authentication, and the lookup
// then drops the tiles it read from disk and tries once more. A store is
// safe for concurrent use, also by several processes sharing the
// directory.
type store struct {
	dir string
	mu  sync.Mutex // serialises WriteConfig within this process; flock covers other processes
}

// openStore opens or creates the state directory for key under dataDir.
// The directory is named after the key's name and hash, so state for a
// different key is never mixed up with it.
func openStore(dataDir, key string) (*store, error) {
	dir := filepath.Join(dataDir, "sumdb", stateName(key))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating checksum database state: %w", err)
	}
	s := &store{dir: dir}
	keyFile := filepath.Join(dir, "key")
	old, err := os.ReadFile(keyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeFileAtomic(keyFile, []byte(key+"\n"), durable); err != nil {
			return nil, fmt.Errorf("recording checksum database key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("reading checksum database state: %w", err)
	case strings.TrimSpace(string(old)) != key:
		return nil, fmt.Errorf("checksum database state %s belongs to key %q, not %q", dir, strings.TrimSpace(string(old)), key)
	}
	return s, nil
}

// readLatest returns the latest signed tree head, or no bytes if none.
func (s *store) readLatest() ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, "latest"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// swapLatest replaces the latest tree head old with new, or returns
// sumdb.ErrWriteConflict if the stored one is not old.
func (s *store) swapLatest(old, new []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := lockFile(filepath.Join(s.dir, "latest.lock"))
	if err != nil {
		return fmt.Errorf("locking tree head: %w", err)
	}
	defer unlock()
	cur, err := s.readLatest()
	if err != nil {
		return fmt.Errorf("reading tree head: %w", err)
	}
	if !bytes.Equal(cur, old) {
		return sumdb.ErrWriteConflict
	}
	if err := writeFileAtomic(filepath.Join(s.dir, "latest"), new, durable); err != nil {
		return fmt.Errorf("writing tree head: %w", err)
	}
	return nil
}

// raiseLatest replaces the latest tree head with head if head is larger,
// as size measures them, without fsync: with shared state, the local
// head is only a floor (see Verifier.raiseFloor).
func (s *store) raiseLatest(head []byte, size func([]byte) int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.readLatest()
	if err != nil {
		return err
	}
	if size(head) <= size(cur) {
		return nil
	}
	return writeFileAtomic(filepath.Join(s.dir, "latest"), head, cache)
}

// tilePath maps a tile path ("tile/8/0/001") to its file. Anything that
// is not a well-formed tile path, such as a lookup record, is refused.
func (s *store) tilePath(tile string) (string, error) {
	if _, err := tlog.ParseTilePath(tile); err != nil {
		return "", fmt.Errorf("sumdb: not a tile: %q", tile)
	}
	return filepath.Join(s.dir, filepath.FromSlash(tile)), nil
}

// readTile returns a stored tile. A tile that is not exactly its width of
// hashes (one a power loss cut short) is removed and reported missing, so
// that the client fetches and authenticates it again.
func (s *store) readTile(tile string) ([]byte, error) {
	path, err := s.tilePath(tile)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if t, _ := tlog.ParseTilePath(tile); t.L >= 0 && len(data) != t.W*tlog.HashSize {
		os.Remove(path)
		return nil, fmt.Errorf("sumdb: stored tile %s: %d bytes, want %d: %w", tile, len(data), t.W*tlog.HashSize, fs.ErrNotExist)
	}
	return data, nil
}

// removeTile removes a stored tile, so that it is fetched again.
func (s *store) removeTile(tile string) {
	if path, err := s.tilePath(tile); err == nil {
		os.Remove(path)
	}
}

// writeTile stores a tile the client has authenticated.
func (s *store) writeTile(tile string, data []byte) error {
	path, err := s.tilePath(tile)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, cache)
}

// proven is what the database proved for one module version.
type proven struct {
	Zip  string `json:"zip"`  // h1: hash of the zip
	Mod  string `json:"mod"`  // h1: hash of go.mod
	Tree int64  `json:"tree"` // size of the tree head it was proven against
	// Record is the index of the version's record in the log, for the
	// cooldown's evidence (see Verifier.LoggedBefore); nil in proofs
	// written before it was kept.
	Record *int64 `json:"record,omitempty"`
	// Known are the hex SHA-256 digests of zip files (newest first, at
	// most maxKnownZips) that this verifier hashed to Zip.
	Known []string `json:"known_zips,omitempty"`
}

func (s *store) provenPath(m module.Version) (string, error) {
	p, err := module.EscapePath(m.Path)
	if err != nil {
		return "", err
	}
	v, err := module.EscapeVersion(m.Version)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.dir, "proven", filepath.FromSlash(p), "@v", v), nil
}

// readProven returns the proven hashes for m, if any.
func (s *store) readProven(m module.Version) (proven, bool) {
	path, err := s.provenPath(m)
	if err != nil {
		return proven{}, false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return proven{}, false
	}
	var p proven
	if json.Unmarshal(data, &p) != nil || p.Zip == "" || p.Mod == "" {
		return proven{}, false
	}
	return p, true
}

func (s *store) writeProven(m module.Version, p proven) error {
	path, err := s.provenPath(m)
	if err != nil {
		return err
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, cache)
}

func (s *store) alertPath() string { return filepath.Join(s.dir, "SECURITY-ALERT") }

// alert records a security error durably. It keeps the first alert's
// evidence and appends later ones.
func (s *store) alert(msg string) error {
	f, err := os.OpenFile(s.alertPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%s\n%s\n\n", time.Now().UTC().Format(time.RFC3339), msg)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// alerted reports whether a security alert is on record, and since when.
func (s *store) alerted() (time.Time, bool) {
	info, err := os.Stat(s.alertPath())
	if err != nil {
		return time.Time{}, false
	}
	return info.ModTime(), true
}

// Durability of a write (see writeFileAtomic).
const (
	durable = true  // security state: on disk before the write returns
	cache   = false // re-fetchable: atomic for readers, not fsynced
)

// writeFileAtomic replaces path with data (mode 0600), creating its
// directory (0700) if needed, so that readers see either the old or the
// new content. With sync (durable) the file and its directory are fsynced
// too, so that after a power loss the file holds the old or the new
// content; without (cache), it may then be missing or empty.
func writeFileAtomic(path string, data []byte, sync bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var suffix [8]byte
	rand.Read(suffix[:])
	tmp := path + ".tmp-" + hex.EncodeToString(suffix[:])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if !sync {
		return nil
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
