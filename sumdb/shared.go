package sumdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"golang.org/x/mod/sumdb"
)

// ErrStateUnavailable wraps every failure to read or write the state that
// replicas share in etcd. A lookup that meets it fails closed with the
// [StateUnavailable] outcome, whatever the on_unverified policy.
var ErrStateUnavailable = errors.New("shared state unavailable")

// sharedCacheTTL is how long a lookup record or tile stays in etcd after
// it was last written: they are caches, re-verified by every reader, and
// etcd is sized for small state, not for a copy of the checksum database.
const sharedCacheTTL = 7 * 24 * time.Hour

// leaseReuse is how long one lease serves the shared cache's writes
// before a new one is granted, so that an entry lives between
// sharedCacheTTL-leaseReuse and sharedCacheTTL.
const leaseReuse = time.Hour

// claimTTL is the lifetime of a replica's claims on lookups if it stops
// renewing them (it died): the other replicas then look up themselves.
const claimTTL = 10 // seconds

// A shared is the state of one checksum database key that replicas share
// through etcd, under one key prefix:
//
//	key                the verifier key the state belongs to
//	latest             the latest signed tree head (compare-and-swap)
//	alert              evidence of a fork, once seen; removed by `sumgate alert clear`
//	alert-cleared/<t>  who cleared an alert, when, and its evidence
//	cache/lookup/…     lookup records, as the database served them (lease sharedCacheTTL)
//	cache/tile/…       tiles, as the database served them (lease sharedCacheTTL)
//	claim/<m>@<v>      a replica is looking m@v up (lease claimTTL, kept alive)
//
// Nothing read from it is believed: the tree head is a signed note the
// client opens with the database's key, and records and tiles go through
// the client's checks against a signed head, as if they came from the
// database. A writer to etcd can deny service, never pass a file.
type shared struct {
	c       *clientv3.Client
	dir     string        // key prefix of this database's state, ending in "/"
	timeout time.Duration // bounds each request to etcd

	alert atomic.Pointer[sharedAlert] // the alert on record in etcd, as last seen; nil if none

	leaseMu sync.Mutex
	lease   clientv3.LeaseID // shared cache entries' lease, granted at leaseAt
	leaseAt time.Time

	sessMu  sync.Mutex
	session *concurrency.Session // keeps this replica's claims alive

	stop context.CancelFunc // ends watchAlert
	done chan struct{}      // closed when watchAlert has returned
	// outboxPending wakes watchAlert to move an alert left in the local
	// outbox into etcd: its watch survives an outage without ending (the
	// client reconnects it), so it would not otherwise try again.
	outboxPending chan struct{}
}

// sharedAlert is an alert on record in etcd.
type sharedAlert struct {
	since    time.Time
	evidence string
}

// openShared opens the shared state of key under prefix, recording the key
// there if it is the first, and refusing state recorded for another key.
func openShared(ctx context.Context, c *clientv3.Client, prefix, key string, timeout time.Duration) (*shared, error) {
	s := &shared{c: c, dir: prefix + "sumdb/" + stateName(key) + "/", timeout: timeout, outboxPending: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.dir+"key"), "=", 0)).
		Then(clientv3.OpPut(s.dir+"key", key)).
		Else(clientv3.OpGet(s.dir + "key")).Commit()
	if err != nil {
		return nil, fmt.Errorf("recording checksum database key in etcd: %w: %w", ErrStateUnavailable, err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 && string(kvs[0].Value) != key {
			return nil, fmt.Errorf("checksum database state %s in etcd belongs to key %q, not %q", s.dir, kvs[0].Value, key)
		}
	}
	return s, nil
}

// openSharedFor opens the shared state cfg names (cfg.Etcd is set), with
// the defaults of cfg's etcd fields applied.
func openSharedFor(ctx context.Context, cfg Config) (*shared, error) {
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	if cfg.EtcdPrefix == "" {
		cfg.EtcdPrefix = "/sumgate/"
	}
	if cfg.EtcdTimeout <= 0 {
		cfg.EtcdTimeout = 5 * time.Second
	}
	return openShared(ctx, cfg.Etcd, cfg.EtcdPrefix, cfg.Key, cfg.EtcdTimeout)
}

// stateName names a key's state after the key's name and hash, so that
// state for a different key is never mixed up with it.
func stateName(key string) string {
	name, rest, _ := strings.Cut(key, "+")
	hash, _, _ := strings.Cut(rest, "+")
	return name + "+" + hash
}

// unavailable wraps an etcd failure while doing what.
func unavailable(what string, err error) error {
	return fmt.Errorf("%s: %w: etcd: %w", what, ErrStateUnavailable, err)
}

// readLatest returns the latest signed tree head, or no bytes if none.
func (s *shared) readLatest(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.c.Get(ctx, s.dir+"latest")
	if err != nil {
		return nil, unavailable("reading tree head", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// swapLatest replaces the latest tree head old with new in one etcd
// transaction, or returns sumdb.ErrWriteConflict if the stored one is not
// old. The first head is written only where none exists yet.
func (s *shared) swapLatest(ctx context.Context, old, new []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cmp := clientv3.Compare(clientv3.Value(s.dir+"latest"), "=", string(old))
	if len(old) == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(s.dir+"latest"), "=", 0)
	}
	resp, err := s.c.Txn(ctx).If(cmp).Then(clientv3.OpPut(s.dir+"latest", string(new))).Commit()
	if err != nil {
		return unavailable("writing tree head", err)
	}
	if !resp.Succeeded {
		return sumdb.ErrWriteConflict
	}
	return nil
}

// readCache returns a cached lookup record or tile ("lookup/…", "tile/…").
func (s *shared) readCache(ctx context.Context, file string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// A serializable read, answered by the nearest member without a round
	// trip to the leader: a stale or missing answer costs a lookup at
	// most, since what is read is verified again anyway.
	resp, err := s.c.Get(ctx, s.dir+"cache/"+file, clientv3.WithSerializable())
	if err != nil {
		return nil, unavailable("reading "+file, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, os.ErrNotExist
	}
	return resp.Kvs[0].Value, nil
}

// maxCacheOps bounds the writes of one etcd transaction, under etcd's
// default --max-txn-ops of 128.
const maxCacheOps = 100

// writeCache stores lookup records and tiles the client has
// authenticated, in as few transactions as etcd allows, under the current
// cache lease.
func (s *shared) writeCache(ctx context.Context, files map[string][]byte) error {
	if len(files) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.writeCacheOnce(ctx, files)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// The lease is gone before its time: revoked by hand, or lost
		// to an etcd restored from a backup. Grant another, once.
		s.dropLease()
		err = s.writeCacheOnce(ctx, files)
	}
	return err
}

// writeCacheOnce is one try of writeCache, under the current lease.
func (s *shared) writeCacheOnce(ctx context.Context, files map[string][]byte) error {
	lease, err := s.cacheLease(ctx)
	if err != nil {
		return err
	}
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := s.c.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		if err != nil {
			return unavailable("writing the shared cache", err)
		}
		return nil
	}
	for file, data := range files {
		ops = append(ops, clientv3.OpPut(s.dir+"cache/"+file, string(data), clientv3.WithLease(lease)))
		if len(ops) == maxCacheOps {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// cacheLease returns the lease the shared cache's writes carry, granting
// a new one every leaseReuse.
func (s *shared) cacheLease(ctx context.Context) (clientv3.LeaseID, error) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.lease != 0 && time.Since(s.leaseAt) < leaseReuse {
		return s.lease, nil
	}
	resp, err := s.c.Grant(ctx, int64(sharedCacheTTL/time.Second))
	if err != nil {
		return 0, unavailable("granting the shared cache's lease", err)
	}
	s.lease, s.leaseAt = resp.ID, time.Now()
	return s.lease, nil
}

// dropLease makes the next write to the shared cache grant a new lease.
func (s *shared) dropLease() {
	s.leaseMu.Lock()
	s.lease = 0
	s.leaseMu.Unlock()
}

// claim tries to become the one replica that looks file ("lookup/…") up.
// It returns a release function if this replica holds the claim now.
// Otherwise another replica does: claim waits until that one has stored
// the record, given up its claim or died, or until ctx ends, and returns
// nil so that the caller looks up itself, finding the record in the
// shared cache if it is there by then. Claims save work, and are never
// needed for safety: a failure while waiting returns nil at once. A
// failure to reach etcd at all is returned (wrapping
// ErrStateUnavailable), so that the lookup, which could not read the
// tree head either, fails at once rather than after a second timeout.
func (s *shared) claim(ctx context.Context, file string) (release func(), err error) {
	sess, err := s.claimSession(ctx)
	if err != nil {
		return nil, unavailable("claiming a lookup", err)
	}
	key := s.dir + "claim/" + strings.TrimPrefix(file, "lookup/")
	tctx, cancel := context.WithTimeout(ctx, s.timeout)
	resp, err := s.c.Txn(tctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.FormatInt(int64(sess.Lease()), 16), clientv3.WithLease(sess.Lease()))).
		Commit()
	cancel()
	if err != nil {
		return nil, unavailable("claiming a lookup", err)
	}
	if resp.Succeeded {
		return func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			defer cancel()
			s.c.Delete(ctx, key)
		}, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rev := clientv3.WithRev(resp.Header.Revision + 1)
	claims := s.c.Watch(wctx, key, rev)
	records := s.c.Watch(wctx, s.dir+"cache/"+file, rev)
	for {
		select {
		case w, ok := <-claims:
			if !ok || w.Err() != nil {
				return nil, nil
			}
			for _, ev := range w.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return nil, nil
				}
			}
		case w, ok := <-records:
			if !ok || w.Err() != nil || len(w.Events) > 0 {
				return nil, nil
			}
		case <-ctx.Done():
			return nil, nil
		}
	}
}

// claimSession returns the session whose lease keeps this replica's
// claims, starting a new one if there is none or it expired.
func (s *shared) claimSession(ctx context.Context) (*concurrency.Session, error) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.session != nil {
		select {
		case <-s.session.Done():
			s.session = nil
		default:
			return s.session, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.c.Grant(ctx, claimTTL)
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(s.c, concurrency.WithLease(resp.ID))
	if err != nil {
		return nil, err
	}
	s.session = sess
	return sess, nil
}

// raiseAlert records evidence of a fork in etcd, where every replica
// watches for it. The first alert's evidence is kept; a later one, while
// it stands, changes nothing.
func (s *shared) raiseAlert(ctx context.Context, since time.Time, evidence string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.dir+"alert"), "=", 0)).
		Then(clientv3.OpPut(s.dir+"alert", formatAlert(since, evidence))).
		Commit()
	if err != nil {
		return unavailable("recording the security alert", err)
	}
	s.alert.CompareAndSwap(nil, &sharedAlert{since: since, evidence: evidence})
	return nil
}

// formatAlert and parseAlert are the alert's form, in etcd as in the
// SECURITY-ALERT file: the time (RFC 3339), a newline, the evidence.
func formatAlert(since time.Time, evidence string) string {
	return since.UTC().Format(time.RFC3339) + "\n" + evidence + "\n"
}

func parseAlert(data []byte) *sharedAlert {
	first, rest, _ := bytes.Cut(data, []byte("\n"))
	since, err := time.Parse(time.RFC3339, string(first))
	if err != nil {
		// Not sumgate's form: still an alert, dated when seen.
		return &sharedAlert{since: time.Now(), evidence: string(data)}
	}
	return &sharedAlert{since: since, evidence: string(bytes.TrimSpace(rest))}
}

// retryOutbox makes watchAlert try again, at once and then until it
// succeeds, to move the alert in the local outbox into etcd.
func (s *shared) retryOutbox() {
	select {
	case s.outboxPending <- struct{}{}:
	default:
	}
}

// watchAlert keeps s.alert in step with the alert key until ctx ends:
// it reads the key, then watches it from the revision read, and starts
// over after any failure (etcd unreachable, a compacted revision, an
// alert in the local outbox that etcd did not take). Before each read,
// and whenever retryOutbox asks, it moves an alert recorded in the local
// outbox into etcd. It logs an alert raised, and one cleared with who
// cleared it.
func (s *shared) watchAlert(ctx context.Context, outbox func(context.Context) error, log *slog.Logger) {
	defer close(s.done)
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := s.followAlert(ctx, outbox, log); err != nil && ctx.Err() == nil {
			log.Warn("following the shared security alert", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// followAlert is one round of watchAlert.
func (s *shared) followAlert(ctx context.Context, outbox func(context.Context) error, log *slog.Logger) error {
	if err := outbox(ctx); err != nil {
		return err
	}
	resp, err := s.getAlert(ctx)
	if err != nil {
		return err
	}
	had := s.alert.Load() != nil
	s.setAlert(resp.Kvs)
	switch a := s.alert.Load(); {
	case had && a == nil:
		log.Warn("security alert no longer in etcd (cleared while this replica was not watching): serving again")
	case !had && a != nil:
		log.Error("checksum database fork on record in the shared state: failing closed", "since", a.since, "evidence", a.evidence)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	watch := s.c.Watch(wctx, s.dir+"alert", clientv3.WithRev(resp.Header.Revision+1))
	for {
		var w clientv3.WatchResponse
		var ok bool
		select {
		case w, ok = <-watch:
		case <-s.outboxPending:
			if err := outbox(ctx); err != nil {
				return err
			}
			continue
		}
		if !ok {
			return errors.New("watching the security alert: the watch ended")
		}
		if err := w.Err(); err != nil {
			return fmt.Errorf("watching the security alert: %w", err)
		}
		for _, ev := range w.Events {
			if ev.Type == clientv3.EventTypeDelete {
				s.alert.Store(nil)
				if cl, ok := s.clearanceAt(ctx, ev.Kv.ModRevision); ok {
					log.Warn("security alert cleared: serving again", "clearance", cl)
				} else {
					log.Error("security alert deleted from etcd with no record of who cleared it (not by sumgate alert clear): serving again", "deleted_at_revision", ev.Kv.ModRevision)
				}
				continue
			}
			a := parseAlert(ev.Kv.Value)
			s.alert.Store(a)
			log.Error("checksum database fork on record in the shared state: failing closed", "since", a.since, "evidence", a.evidence)
		}
	}
}

// getAlert reads the alert key.
func (s *shared) getAlert(ctx context.Context) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.c.Get(ctx, s.dir+"alert")
	if err != nil {
		return nil, unavailable("reading the security alert", err)
	}
	return resp, nil
}

// clearanceAt returns the record of the clearance written at rev, the
// revision that deleted the alert: sumgate alert clear deletes the alert
// and records who cleared it in one transaction, so a deletion with no
// record at its revision was made by hand (or the record could not be
// read), and clearanceAt reports false.
func (s *shared) clearanceAt(ctx context.Context, rev int64) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.c.Get(ctx, s.dir+"alert-cleared/", clientv3.WithPrefix(),
		clientv3.WithMinModRev(rev), clientv3.WithMaxModRev(rev), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

func (s *shared) setAlert(kvs []*mvccpb.KeyValue) {
	if len(kvs) == 0 {
		s.alert.Store(nil)
		return
	}
	s.alert.Store(parseAlert(kvs[0].Value))
}

// alerted reports whether an alert is on record in etcd, as last seen.
func (s *shared) alerted() (time.Time, bool) {
	if a := s.alert.Load(); a != nil {
		return a.since, true
	}
	return time.Time{}, false
}

// close ends the watch and the claims' session.
func (s *shared) close() {
	if s.stop != nil {
		s.stop()
		<-s.done
	}
	s.sessMu.Lock()
	if s.session != nil {
		s.session.Close()
		s.session = nil
	}
	s.sessMu.Unlock()
}
