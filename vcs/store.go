package vcs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// An entry is a verified revision kept on disk to serve fetches from: a
// bare repository holding the commit at depth 1 and the tag objects
// naming it, with those tags as its refs. Objects the code host sent
// besides (a stuffed pack) may be in it, but are never served: a fetch is
// answered with what its checked wants reach at depth 1.
type entry struct {
	key    string
	dir    string            // the bare repository
	result Result            // the passing verdict (without entries)
	tags   map[string]string // verified tag -> its object
	inUse  int               // fetches holding it; not removed while > 0
	used   time.Time
}

// acquire returns the store entry for key, held for a fetch, or nil.
func (v *Verifier) acquire(key string) *entry {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.store[key]
	if e == nil {
		return nil
	}
	e.inUse++
	e.used = time.Now()
	return e
}

// release lets entries go.
func (v *Verifier) release(es []*entry) {
	if len(es) == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range es {
		e.inUse--
	}
	v.evict()
}

// evict removes the least recently used entries not in use while there
// are more than StoreEntries. v.mu must be held.
func (v *Verifier) evict() {
	for len(v.store) > v.cfg.StoreEntries {
		var oldest *entry
		for _, e := range v.store {
			if e.inUse == 0 && (oldest == nil || e.used.Before(oldest.used)) {
				oldest = e
			}
		}
		if oldest == nil {
			return
		}
		delete(v.store, oldest.key)
		os.RemoveAll(filepath.Dir(oldest.dir))
	}
}

// keep puts a verified revision into the store under key: a new
// repository holding only what objs (the verified commit and tag objects)
// reach at depth 1, copied from the scratch repository r (whatever else
// the code host sent stays behind), with the verified tags as refs.
func (v *Verifier) keep(ctx context.Context, key string, r *repo, res Result, tags map[string]string, objs []string) error {
	d, err := os.MkdirTemp(v.cfg.WorkDir, "store-")
	if err != nil {
		return fmt.Errorf("vcs: keeping a verified revision: %w", err)
	}
	dst := filepath.Join(d, "repo.git")
	s, err := r.copyReachable(ctx, dst, objs)
	if err == nil {
		err = s.serveConfig(ctx, tags)
	}
	if err != nil {
		os.RemoveAll(d)
		return fmt.Errorf("vcs: keeping a verified revision: %w", err)
	}
	res.entries = nil
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.store[key] != nil {
		os.RemoveAll(d) // verified twice: keep the one fetches may be using
		return nil
	}
	v.store[key] = &entry{key: key, dir: dst, result: res, tags: tags, used: time.Now()}
	v.evict()
	return nil
}

// copyReachable makes a bare repository at dst holding exactly the
// objects objs reach in r (at r's shallow boundary), and r's shallow
// file.
func (r *repo) copyReachable(ctx context.Context, dst string, objs []string) (*repo, error) {
	var list bytes.Buffer
	args := append([]string{"rev-list", "--objects", "--no-object-names", "--end-of-options"}, objs...)
	if err := r.run(ctx, nil, &list, args...); err != nil {
		return nil, err
	}
	pack, err := os.Create(dst + ".pack")
	if err != nil {
		return nil, err
	}
	defer os.Remove(pack.Name())
	defer pack.Close()
	if err := r.run(ctx, &list, pack, "pack-objects", "--stdout", "-q"); err != nil {
		return nil, err
	}
	if _, err := pack.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	s, err := initRepo(ctx, r.git, dst)
	if err != nil {
		return nil, err
	}
	if err := s.run(ctx, pack, nil, "index-pack", "--stdin"); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(r.dir, "shallow")); err == nil {
		if err := os.WriteFile(filepath.Join(dst, "shallow"), b, 0o644); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// serveConfig makes r answer fetches of any object it holds, with tags as
// its refs (for want-ref).
func (r *repo) serveConfig(ctx context.Context, tags map[string]string) error {
	for _, kv := range [][2]string{
		{"uploadpack.allowAnySHA1InWant", "true"},
		{"uploadpack.allowFilter", "true"},
		{"uploadpack.allowRefInWant", "true"},
		{"uploadpack.allowSidebandAll", "true"},
	} {
		if err := r.run(ctx, nil, io.Discard, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	for t, o := range tags {
		if err := r.run(ctx, nil, io.Discard, "update-ref", "refs/tags/"+t, o); err != nil {
			return err
		}
	}
	return nil
}

// An Answer is a served fetch's response body, spooled to a file that
// closing removes.
type Answer struct {
	*os.File
	Size int64 // bytes
}

// Serve answers a verified fetch (res.Serves) from the store: git
// upload-pack in stateless-RPC mode, over a repository that borrows the
// verified revisions' objects (git alternates) and has their tags as
// refs, reads body (the request, decoded; v2 says it is protocol v2).
// The answer is spooled whole before it is returned, so a failure is an
// error, never half an answer. res's revisions are released.
func (v *Verifier) Serve(ctx context.Context, res Result, body []byte, v2 bool) (*Answer, error) {
	defer v.release(res.entries)
	if len(res.entries) == 0 {
		return nil, fmt.Errorf("vcs: nothing verified to serve")
	}
	dir, err := os.MkdirTemp(v.cfg.WorkDir, "serve-")
	if err != nil {
		return nil, fmt.Errorf("vcs: %w", err)
	}
	defer os.RemoveAll(dir) // the answer stays readable through its descriptor
	r, err := initRepo(ctx, v.cfg.Git, filepath.Join(dir, "repo.git"))
	if err != nil {
		return nil, fmt.Errorf("vcs: %w", err)
	}
	var alternates, shallow []string
	tags := map[string]string{}
	for _, e := range res.entries {
		alternates = append(alternates, filepath.Join(e.dir, "objects"))
		if b, err := os.ReadFile(filepath.Join(e.dir, "shallow")); err == nil {
			shallow = append(shallow, strings.TrimSpace(string(b)))
		}
		for t, o := range e.tags {
			tags[t] = o
		}
	}
	if err := os.WriteFile(filepath.Join(r.dir, "objects", "info", "alternates"), []byte(strings.Join(alternates, "\n")+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("vcs: %w", err)
	}
	if len(shallow) > 0 {
		if err := os.WriteFile(filepath.Join(r.dir, "shallow"), []byte(strings.Join(shallow, "\n")+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("vcs: %w", err)
		}
	}
	if err := r.serveConfig(ctx, tags); err != nil {
		return nil, fmt.Errorf("vcs: serving a verified fetch: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "answer"))
	if err != nil {
		return nil, fmt.Errorf("vcs: %w", err)
	}
	if v2 {
		r.env = append(r.env, "GIT_PROTOCOL=version=2")
	}
	cw := &capWriter{w: f, n: v.cfg.MaxPackBytes * int64(len(res.entries))}
	if err := r.run(ctx, strings.NewReader(string(body)), cw, "upload-pack", "--stateless-rpc", r.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("vcs: serving a verified fetch: %w", err)
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("vcs: %w", err)
	}
	return &Answer{File: f, Size: size}, nil
}
