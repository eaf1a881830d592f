package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultEtcdTimeout bounds each request to etcd when Config.EtcdTimeout
// is zero.
const DefaultEtcdTimeout = 5 * time.Second

// etcdLockTTL is the lease, in seconds, behind the locks an etcdStore
// takes: a replica that dies holding one delays the others by at most
// this long.
const etcdLockTTL = 15

// valueHeader starts every value an etcdStore writes, followed by the
// time of the write in Unix nanoseconds and a newline: etcd records no
// time of its own, and certmagic's Stat reports one.
const valueHeader = "sumgate-storage-v1 "

// leafCheck verifies one leaf read from shared storage: name is its
// folder's name (the host, in certmagic's safe form), crt, key and meta
// its three files. A leaf that fails is treated as absent: not loaded,
// and minted anew (under the lock) when next needed.
type leafCheck func(name string, crt, key, meta []byte) error

// etcdStore is the certmagic.Storage of leaves shared by replicas: every
// key lives in etcd under data/ (a prefix of its own), every lock under
// locks/, so that two CAs (replicas holding the same CA) on one etcd
// mint each name once: the second waits on the lock, then finds the
// first's leaf.
//
// Stores are written to etcd before Store returns, with no write-behind:
// a leaf must be in etcd before its lock is released, for the replica
// waiting on it to find it. A leaf's three files (key,
// certificate, metadata; certmagic's layout certificates/ISSUER/NAME/)
// are read together, in one request, so a reader sees them from one
// revision; Load and Exists of any of them answer as if the whole leaf
// were absent unless check accepts it. etcd is not a root of trust: a
// writer to etcd could plant a key and certificate of its own, or garbage,
// which must neither be served nor stop the name from being minted.
//
// Locks are etcd's (package concurrency): one Mutex per lock name, on a
// session whose lease lives etcdLockTTL seconds past this process, made
// anew if it is lost. Within the process, a name is also locked in
// memory: etcd's Mutex does not exclude two holders on one session.
//
// Close ends the session, releasing every lock; Store and Lock then fail.
// An etcdStore is safe for concurrent use.
type etcdStore struct {
	client  *clientv3.Client
	data    string        // prefix of every stored key
	locks   string        // prefix of every lock
	timeout time.Duration // bounds each request, but the wait for a lock
	check   leafCheck     // nil accepts every leaf
	log     *slog.Logger

	mu      sync.Mutex
	session *concurrency.Session // the lease behind locks; nil until the first Lock, or once lost
	held    map[string]*etcdLock // lock name -> the lock this process holds, or is taking
	closed  bool                 // Close was called
}

// etcdLock is a lock this process holds, or is taking.
type etcdLock struct {
	mutex    *concurrency.Mutex // nil until taken in etcd
	released chan struct{}      // closed once released (or not taken)
}

// newEtcdStore returns the storage under prefix in the etcd client
// reaches. It makes no request.
func newEtcdStore(client *clientv3.Client, prefix string, timeout time.Duration, check leafCheck, log *slog.Logger) *etcdStore {
	if timeout <= 0 {
		timeout = DefaultEtcdTimeout
	}
	return &etcdStore{client: client, data: prefix + "data/", locks: prefix + "locks/", timeout: timeout,
		check: check, log: log, held: map[string]*etcdLock{}}
}

// Close releases every lock this store holds, and ends the lease behind
// them. It may be called more than once.
func (s *etcdStore) Close() {
	s.mu.Lock()
	s.closed = true
	session := s.session
	s.session = nil
	s.mu.Unlock()
	if session != nil {
		session.Close() // revokes the lease: etcd drops every lock key on it
	}
}

// Store implements certmagic.Storage: value is in etcd once it returns.
func (s *etcdStore) Store(ctx context.Context, key string, value []byte) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fmt.Errorf("storing %s: %w", key, errClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.client.Put(ctx, s.data+key, encodeValue(value, time.Now())); err != nil {
		return fmt.Errorf("storing %s in etcd: %w", key, err)
	}
	return nil
}

func encodeValue(value []byte, at time.Time) string {
	return valueHeader + strconv.FormatInt(at.UnixNano(), 10) + "\n" + string(value)
}

// decodeValue returns the value and time of a stored value.
func decodeValue(key string, stored []byte) ([]byte, time.Time, error) {
	rest, ok := bytes.CutPrefix(stored, []byte(valueHeader))
	nanos, value, found := bytes.Cut(rest, []byte("\n"))
	n, err := strconv.ParseInt(string(nanos), 10, 64)
	if !ok || !found || err != nil {
		return nil, time.Time{}, fmt.Errorf("reading %s from etcd: malformed value", key)
	}
	return value, time.Unix(0, n), nil
}

// siteFiles returns the folder of key's leaf and the leaf's three file
// names, for a key in certmagic's layout certificates/ISSUER/NAME/FILE
// where FILE is one of them.
func siteFiles(key string) (site string, files [3]string, ok bool) {
	site, ok = siteOf(key)
	if !ok {
		return "", files, false
	}
	name := path.Base(site)
	files = [3]string{site + "/" + name + ".crt", site + "/" + name + ".key", site + "/" + name + ".json"}
	return site, files, slices.Contains(files[:], key)
}

// get returns the stored value of key, and whether it is there. The
// value of a leaf's file is returned only if the whole leaf passes check.
func (s *etcdStore) get(ctx context.Context, key string) ([]byte, time.Time, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	site, files, isLeaf := siteFiles(key)
	if !isLeaf || s.check == nil {
		resp, err := s.client.Get(ctx, s.data+key)
		if err != nil {
			return nil, time.Time{}, false, fmt.Errorf("reading %s from etcd: %w", key, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, time.Time{}, false, nil
		}
		value, at, err := decodeValue(key, resp.Kvs[0].Value)
		return value, at, err == nil, err
	}
	// One request, so one revision, for the leaf's three files.
	resp, err := s.client.Get(ctx, s.data+site+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("reading %s from etcd: %w", site, err)
	}
	var values [3][]byte
	var times [3]time.Time
	for _, kv := range resp.Kvs {
		i := slices.Index(files[:], strings.TrimPrefix(string(kv.Key), s.data))
		if i < 0 {
			continue
		}
		if values[i], times[i], err = decodeValue(files[i], kv.Value); err != nil {
			s.log.WarnContext(ctx, "a leaf in etcd is malformed; it will be minted anew", "key", files[i])
			return nil, time.Time{}, false, nil
		}
	}
	i := slices.Index(files[:], key)
	if values[i] == nil {
		return nil, time.Time{}, false, nil
	}
	if values[0] == nil || values[1] == nil || values[2] == nil {
		return nil, time.Time{}, false, nil // being written, or partly deleted: not whole
	}
	if err := s.check(path.Base(site), values[0], values[1], values[2]); err != nil {
		s.log.WarnContext(ctx, "a leaf in etcd failed verification; it will be minted anew", "key", site, "err", err)
		return nil, time.Time{}, false, nil
	}
	return values[i], times[i], true, nil
}

// Load implements certmagic.Storage: a key not stored (or a leaf's file,
// of a leaf that fails its check) is an error wrapping fs.ErrNotExist.
func (s *etcdStore) Load(ctx context.Context, key string) ([]byte, error) {
	value, _, found, err := s.get(ctx, key)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("loading %s: %w", key, fs.ErrNotExist)
	}
	return value, nil
}

// Exists implements certmagic.Storage: a key exists if it is stored (a
// leaf's file only if the leaf passes its check), or is the folder of a
// stored key (a leaf's file never is). An error reading etcd is logged, and the answer is false.
func (s *etcdStore) Exists(ctx context.Context, key string) bool {
	_, _, found, err := s.get(ctx, key)
	if _, _, isLeaf := siteFiles(key); err == nil && !found && !isLeaf {
		found, err = s.isFolder(ctx, key)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "reading leaf storage in etcd failed", "key", key, "err", err)
		return false
	}
	return found
}

// isFolder reports whether some key is stored under the folder key.
func (s *etcdStore) isFolder(ctx context.Context, key string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.client.Get(ctx, s.folder(key), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("reading %s from etcd: %w", key, err)
	}
	return resp.Count > 0, nil
}

// folder is the etcd prefix of the keys under the folder key ("" is the
// top).
func (s *etcdStore) folder(key string) string {
	if key == "" {
		return s.data
	}
	return s.data + key + "/"
}

// Stat implements certmagic.Storage. A folder's Modified is zero: etcd
// keeps no folders.
func (s *etcdStore) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	value, at, found, err := s.get(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if found {
		return certmagic.KeyInfo{Key: key, Modified: at, Size: int64(len(value)), IsTerminal: true}, nil
	}
	folder, err := s.isFolder(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if !folder {
		return certmagic.KeyInfo{}, fmt.Errorf("stat %s: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key}, nil
}

// Delete implements certmagic.Storage: key and every key under it go, in
// one transaction.
func (s *etcdStore) Delete(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.client.Txn(ctx).Then(
		clientv3.OpDelete(s.data+key),
		clientv3.OpDelete(s.folder(key), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return fmt.Errorf("deleting %s from etcd: %w", key, err)
	}
	return nil
}

// List implements certmagic.Storage as FileStorage does: the keys and
// folders directly under the folder prefix, or (recursive) every key and
// folder under it, each named in full; an error wrapping fs.ErrNotExist
// if there is no such key or folder.
func (s *etcdStore) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.client.Get(rctx, s.folder(prefix), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("listing %s in etcd: %w", prefix, err)
	}
	seen := map[string]bool{}
	var keys []string
	for _, kv := range resp.Kvs {
		rel := strings.TrimPrefix(string(kv.Key), s.folder(prefix))
		parts := strings.Split(rel, "/")
		if !recursive {
			parts = parts[:1]
		}
		for i := range parts {
			name := path.Join(prefix, strings.Join(parts[:i+1], "/"))
			if !seen[name] {
				seen[name] = true
				keys = append(keys, name)
			}
		}
	}
	if len(keys) == 0 && prefix != "" {
		if _, _, found, err := s.get(ctx, prefix); err != nil || !found {
			return nil, errors.Join(fmt.Errorf("listing %s: %w", prefix, fs.ErrNotExist), err)
		}
	}
	return keys, nil
}

// Lock implements certmagic.Locker: it waits for this process's holder
// of name, then for another replica's, while ctx lasts.
func (s *etcdStore) Lock(ctx context.Context, name string) error {
	l := &etcdLock{released: make(chan struct{})}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return fmt.Errorf("locking %s: %w", name, errClosed)
		}
		held := s.held[name]
		if held == nil {
			s.held[name] = l
			s.mu.Unlock()
			break
		}
		s.mu.Unlock()
		select {
		case <-held.released:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	session, err := s.lease(ctx)
	if err == nil {
		m := concurrency.NewMutex(session, s.locks+name)
		if err = m.Lock(ctx); err == nil {
			l.mutex = m
			return nil
		}
	}
	s.forget(name, l)
	return fmt.Errorf("locking %s in etcd: %w", name, err)
}

// lease returns the session behind locks, making it if there is none or
// it was lost.
func (s *etcdStore) lease(ctx context.Context) (*concurrency.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.session != nil {
		select {
		case <-s.session.Done():
			s.session = nil // the lease expired: its locks are gone too
		default:
			return s.session, nil
		}
	}
	gctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	grant, err := s.client.Grant(gctx, etcdLockTTL)
	if err != nil {
		return nil, err
	}
	// The session's keep-alive outlives ctx: it ends with Close.
	session, err := concurrency.NewSession(s.client, concurrency.WithLease(grant.ID),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, err
	}
	s.session = session
	return session, nil
}

// Unlock implements certmagic.Locker.
func (s *etcdStore) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	l := s.held[name]
	s.mu.Unlock()
	if l == nil || l.mutex == nil {
		return fmt.Errorf("unlocking %s: not locked", name)
	}
	defer s.forget(name, l)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// A lock whose lease was lost, or revoked by Close, is already gone.
	if err := l.mutex.Unlock(ctx); err != nil {
		return fmt.Errorf("unlocking %s in etcd: %w", name, err)
	}
	return nil
}

// forget releases name's lock l in this process.
func (s *etcdStore) forget(name string, l *etcdLock) {
	s.mu.Lock()
	if s.held[name] == l {
		delete(s.held, name)
	}
	s.mu.Unlock()
	close(l.released)
}

var _ certmagic.Storage = (*etcdStore)(nil)
