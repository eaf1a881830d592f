package gateway

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// A fileCache keeps verified module files on disk, at most max bytes,
// evicting the least recently served. Only files the verifier proved
// (outcome verified) are ever put in; a module version's files are
// immutable, so a hit needs no upstream fetch and no new check.
type fileCache struct {
	dir string
	max int64

	mu      sync.Mutex
	size    int64                    // bytes held
	entries map[string]*list.Element // name -> element of lru
	lru     *list.List               // *cacheEntry, most recently served first
}

type cacheEntry struct {
	name string // file name in dir: hex SHA-256 of the key
	size int64
}

// newFileCache opens the cache in dir, adopting the files already there
// (oldest modification first in the eviction order). A max of zero or
// less disables the cache.
func newFileCache(dir string, max int64) (*fileCache, error) {
	c := &fileCache{dir: dir, max: max, entries: map[string]*list.Element{}, lru: list.New()}
	if max <= 0 {
		return c, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type found struct {
		name  string
		size  int64
		mtime time.Time
	}
	var files []found
	for _, de := range des {
		info, err := de.Info()
		if err != nil || !info.Mode().IsRegular() || len(de.Name()) != 64 {
			os.Remove(filepath.Join(dir, de.Name())) // not ours: a leftover or a stray
			continue
		}
		files = append(files, found{de.Name(), info.Size(), info.ModTime()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mtime.After(files[j].mtime) })
	for _, f := range files {
		c.entries[f.name] = c.lru.PushBack(&cacheEntry{f.name, f.size})
		c.size += f.size
	}
	c.evict()
	return c, nil
}

func cacheName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// get opens the cached file for key, if any.
func (c *fileCache) get(key string) (*os.File, int64, bool) {
	if c.max <= 0 {
		return nil, 0, false
	}
	name := cacheName(key)
	c.mu.Lock()
	e, ok := c.entries[name]
	if ok {
		c.lru.MoveToFront(e)
	}
	c.mu.Unlock()
	if !ok {
		return nil, 0, false
	}
	path := filepath.Join(c.dir, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, false
	}
	info, err := f.Stat()
	if err != nil || info.Size() != e.Value.(*cacheEntry).size {
		f.Close()
		return nil, 0, false
	}
	now := time.Now()
	os.Chtimes(path, now, now) // recency survives a restart
	return f, info.Size(), true
}

// put adds the verified file at path (a complete, checked spool file on
// the same file system) under key, by hard link, then evicts down to max.
func (c *fileCache) put(key, path string, size int64) {
	if c.max <= 0 || size > c.max {
		return
	}
	name := cacheName(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[name]; ok {
		return
	}
	if err := os.Link(path, filepath.Join(c.dir, name)); err != nil {
		return
	}
	c.entries[name] = c.lru.PushFront(&cacheEntry{name, size})
	c.size += size
	c.evict()
}

// evict removes least recently served files until the cache fits; files
// being served stay readable through their descriptors. Callers hold mu,
// or own c exclusively.
func (c *fileCache) evict() {
	for c.size > c.max && c.lru.Len() > 0 {
		e := c.lru.Back()
		ce := e.Value.(*cacheEntry)
		os.Remove(filepath.Join(c.dir, ce.name))
		c.lru.Remove(e)
		delete(c.entries, ce.name)
		c.size -= ce.size
	}
}
