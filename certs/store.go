package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// maxUnwritten bounds the stores a leafStore holds in memory before they
// reach the disk: three per leaf (key, certificate, metadata), so a
// thousand leaves, about 2 MiB. Past it, Store waits for the disk, as
// certmagic's FileStorage always does.
const maxUnwritten = 3 * 1000

// errClosed reports a write or a lock asked of a closed leafStore.
var errClosed = errors.New("the leaf storage is closed")

// maxBatch bounds the queue entries the writer takes at once, and so the
// files it holds open.
const maxBatch = 64

// leafStore is the certmagic.Storage of minted leaves: certmagic's
// FileStorage, with its layout, under data_dir/ca/leaves, whose writes
// reach the disk in the background, so that a first-contact handshake
// waits for no fsync.
//
// A Store is visible to Load, Exists and Stat at once, from memory, and is
// written as FileStorage writes (a temporary file, fsync, rename) by one
// writer goroutine, in call order. The writer takes what is queued in
// batches and fsyncs a batch's files one after another once all are
// written, which lets the file system commit them together: a burst of
// new names is not held to one fsync per file. A crash loses only the
// leaves not yet written; they are minted again when next needed. A write
// that fails is logged, and the leaf's folder removed, so that the disk
// never holds one issuance's key beside another's certificate. Delete and
// List first wait for every earlier write.
//
// Locks are per name: within the process, and across processes sharing
// the folder through a record lock in locks/issuance.lock (see
// fileLocks). A lock is released only once every write queued before its
// Unlock is on disk, so whoever takes it next, here or in another
// process, finds the leaf whole. certmagic's own FileStorage lock
// creates, fsyncs, refreshes and polls a lock file per name, to work over
// network file systems, which sumgate does not support under data_dir
// (see the README).
//
// Close writes everything queued and stops the writer; after it, Store
// and Lock fail, so that nothing is written once Close has returned (a
// handshake still in flight at shutdown then fails). A leafStore is safe
// for concurrent use.
type leafStore struct {
	disk  certmagic.FileStorage // the folder and its layout; every write ends here
	files *fileLocks            // the cross-process half of each lock
	log   *slog.Logger
	slots chan struct{} // one token per store not yet on disk
	wake  chan struct{} // the queue grew, or Close was called (capacity 1)
	done  chan struct{} // closed when the writer has exited
	shut  sync.Once     // guards files.close

	mu       sync.Mutex
	pending  map[string]*writeOp  // key -> its latest store not yet on disk
	folders  map[string]int       // folder -> keys under it in pending
	queue    []*writeOp           // stores, releases and barriers, in call order
	locks    map[string]*nameLock // lock name -> the lock this process holds
	stopping bool                 // Close was called: the writer exits once the queue is empty
	closed   bool                 // the writer has exited: Store and Lock fail
}

// writeOp is one entry of the writer's queue: exactly one of a store (key
// and value), a lock release or a barrier.
type writeOp struct {
	key     string
	value   []byte
	at      time.Time     // when Store was called
	release *nameLock     // release this lock
	barrier chan struct{} // close this: every earlier op is done
}

// nameLock is a lock this process holds.
type nameLock struct {
	name     string
	unlocked bool          // Unlock was called (guarded by leafStore.mu)
	released chan struct{} // closed once released
}

// newLeafStore opens the leaf folder dir (0700), checks that it is
// writable, and starts the writer.
func newLeafStore(dir string, log *slog.Logger) (*leafStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "locks"), 0o700); err != nil {
		return nil, fmt.Errorf("creating the leaf folder: %w", err)
	}
	// certmagic checks its storage before every issuance (write, read and
	// delete 10 KiB, fsynced); the folder is checked once here instead.
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("leaf folder %s is not writable: %w", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	files, err := openFileLocks(filepath.Join(dir, "locks", "issuance.lock"))
	if err != nil {
		return nil, err
	}
	s := &leafStore{
		disk:    certmagic.FileStorage{Path: dir},
		files:   files,
		log:     log,
		slots:   make(chan struct{}, maxUnwritten),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		pending: map[string]*writeOp{},
		folders: map[string]int{},
		locks:   map[string]*nameLock{},
	}
	go s.write()
	return s, nil
}

// Close writes every queued store and releases every lock whose Unlock
// was called, then stops the writer and releases every lock. It may be
// called more than once.
func (s *leafStore) Close() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.signal()
	<-s.done
	s.shut.Do(func() { s.files.close() })
}

func (s *leafStore) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// enqueue appends op to the writer's queue, recording a store as pending,
// and reports whether it did: not after Close.
func (s *leafStore) enqueue(op *writeOp) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	if op.release == nil && op.barrier == nil {
		if s.pending[op.key] == nil {
			for dir := path.Dir(op.key); dir != "."; dir = path.Dir(dir) {
				s.folders[dir]++
			}
		}
		s.pending[op.key] = op
	}
	s.queue = append(s.queue, op)
	s.mu.Unlock()
	s.signal()
	return true
}

// write is the writer goroutine: it applies the queue in order.
func (s *leafStore) write() {
	defer close(s.done)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 {
			if s.stopping {
				s.closed = true
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			<-s.wake
			s.mu.Lock()
		}
		n := batchLen(s.queue)
		batch := slices.Clone(s.queue[:n])
		clear(s.queue[:n])
		s.queue = s.queue[n:]
		s.mu.Unlock()
		s.apply(batch)
	}
}

// batchLen is how many entries at the head of queue the writer takes at
// once: maxBatch, and past it the rest of the files of the last entry's
// certificate, so that no certificate's files (key, certificate,
// metadata) are split between two batches, one fsynced and renamed into
// place before the other is written.
func batchLen(queue []*writeOp) int {
	n := min(len(queue), maxBatch)
	if n == 0 {
		return 0
	}
	site, ok := siteOf(queue[n-1].key)
	for ok && n < len(queue) {
		next, same := siteOf(queue[n].key)
		if !same || next != site {
			break
		}
		n++
	}
	return n
}

// apply writes the stores of batch, then releases its locks and barriers
// in order. Every store queued before a release or a barrier is in its
// batch or an earlier one; a store queued after a release cannot be made
// under the lock it releases.
func (s *leafStore) apply(batch []*writeOp) {
	var stores []*writeOp
	for _, op := range batch {
		if op.release == nil && op.barrier == nil {
			stores = append(stores, op)
		}
	}
	s.persist(stores)
	s.mu.Lock()
	for _, op := range stores {
		if s.pending[op.key] != op {
			continue // stored again since
		}
		delete(s.pending, op.key)
		for dir := path.Dir(op.key); dir != "."; dir = path.Dir(dir) {
			if s.folders[dir]--; s.folders[dir] == 0 {
				delete(s.folders, dir)
			}
		}
	}
	s.mu.Unlock()
	for range stores {
		<-s.slots
	}
	for _, op := range batch {
		switch {
		case op.barrier != nil:
			close(op.barrier)
		case op.release != nil:
			s.release(op.release)
		}
	}
}

// persist writes stores to disk, each as FileStorage.Store does, all
// fsynced before any is renamed into place, in order.
func (s *leafStore) persist(stores []*writeOp) {
	files := make([]*os.File, len(stores))
	errs := make([]error, len(stores))
	for i, op := range stores {
		files[i], errs[i] = stage(s.disk.Filename(op.key), op.value)
	}
	for i, f := range files {
		if errs[i] == nil {
			errs[i] = f.Sync()
		}
		if f != nil {
			if err := f.Close(); errs[i] == nil {
				errs[i] = err
			}
		}
	}
	for i, op := range stores {
		if errs[i] == nil {
			errs[i] = os.Rename(files[i].Name(), s.disk.Filename(op.key))
		}
		if errs[i] == nil {
			continue
		}
		if files[i] != nil {
			os.Remove(files[i].Name())
		}
		s.log.Error("writing a leaf to storage failed; it will be minted again when next needed", "key", op.key, "err", errs[i])
		// The other files of this leaf may be written, or be another
		// issuance's: remove them all rather than leave a key and a
		// certificate that do not belong together.
		if site, ok := siteOf(op.key); ok {
			if err := s.disk.Delete(context.Background(), site); err != nil {
				s.log.Error("removing a partly written leaf failed", "key", site, "err", err)
			}
		}
	}
}

// stage writes value to a new temporary file (0600) beside name, in a
// folder created 0700, and returns it open and not yet synced.
func stage(name string, value []byte) (*os.File, error) {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(value); err != nil {
		return f, err
	}
	return f, nil
}

// siteOf returns the folder of one certificate's files, for a key in
// certmagic's layout: certificates/ISSUER/NAME/FILE.
func siteOf(key string) (string, bool) {
	parts := strings.Split(key, "/")
	if len(parts) != 4 || parts[0] != "certificates" {
		return "", false
	}
	return strings.Join(parts[:3], "/"), true
}

// flush waits until every op queued before it is done.
func (s *leafStore) flush(ctx context.Context) error {
	op := &writeOp{barrier: make(chan struct{})}
	if !s.enqueue(op) {
		return nil
	}
	select {
	case <-op.barrier:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Store implements certmagic.Storage: value is visible at once and
// written in the background; after Close, Store fails.
func (s *leafStore) Store(ctx context.Context, key string, value []byte) error {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !s.enqueue(&writeOp{key: key, value: bytes.Clone(value), at: time.Now()}) {
		<-s.slots
		return fmt.Errorf("storing %s: %w", key, errClosed)
	}
	return nil
}

// unwritten returns the pending store of key, if there is one.
func (s *leafStore) unwritten(key string) *writeOp {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[key]
}

// Load implements certmagic.Storage.
func (s *leafStore) Load(ctx context.Context, key string) ([]byte, error) {
	if op := s.unwritten(key); op != nil {
		return bytes.Clone(op.value), nil
	}
	return s.disk.Load(ctx, key)
}

// Exists implements certmagic.Storage: a key, or a folder, exists if it
// is pending or on disk.
func (s *leafStore) Exists(ctx context.Context, key string) bool {
	s.mu.Lock()
	found := s.pending[key] != nil || s.folders[key] > 0
	s.mu.Unlock()
	return found || s.disk.Exists(ctx, key)
}

// Stat implements certmagic.Storage.
func (s *leafStore) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if op := s.unwritten(key); op != nil {
		return certmagic.KeyInfo{Key: key, Modified: op.at, Size: int64(len(op.value)), IsTerminal: true}, nil
	}
	return s.disk.Stat(ctx, key)
}

// Delete implements certmagic.Storage, once every earlier write is done.
func (s *leafStore) Delete(ctx context.Context, key string) error {
	if err := s.flush(ctx); err != nil {
		return err
	}
	return s.disk.Delete(ctx, key)
}

// List implements certmagic.Storage, once every earlier write is done.
func (s *leafStore) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	return s.disk.List(ctx, prefix, recursive)
}

// Lock implements certmagic.Locker: it waits for this process's holder of
// name, then for another process's, while ctx lasts.
func (s *leafStore) Lock(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return fmt.Errorf("locking %s: %w", name, errClosed)
		}
		held := s.locks[name]
		if held == nil {
			l := &nameLock{name: name, released: make(chan struct{})}
			s.locks[name] = l
			s.mu.Unlock()
			if err := s.files.lock(ctx, name); err != nil {
				s.forget(l)
				return fmt.Errorf("locking %s: %w", name, err)
			}
			return nil
		}
		s.mu.Unlock()
		select {
		case <-held.released:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Unlock implements certmagic.Locker: the lock is released once every
// write queued before it is on disk.
func (s *leafStore) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	l := s.locks[name]
	if l == nil || l.unlocked {
		s.mu.Unlock()
		return fmt.Errorf("unlocking %s: not locked", name)
	}
	l.unlocked = true
	s.mu.Unlock()
	if !s.enqueue(&writeOp{release: l}) {
		s.release(l)
	}
	return nil
}

// release releases l, in other processes and then in this one.
func (s *leafStore) release(l *nameLock) {
	s.mu.Lock()
	closed := s.closed // then Close releases every lock
	s.mu.Unlock()
	if closed {
		s.forget(l)
		return
	}
	if err := s.files.unlock(l.name); err != nil {
		s.log.Error("releasing a leaf lock failed", "lock", l.name, "err", err)
	}
	s.forget(l)
}

// forget releases l in this process.
func (s *leafStore) forget(l *nameLock) {
	s.mu.Lock()
	if s.locks[l.name] == l {
		delete(s.locks, l.name)
	}
	s.mu.Unlock()
	close(l.released)
}

var _ certmagic.Storage = (*leafStore)(nil)
