// Package sumdb decides whether the bytes of a module's .zip or go.mod are
// the ones the Go checksum database has logged.
//
// A [Verifier] looks module versions up with golang.org/x/mod/sumdb's
// client, which checks the signed tree head, the record's inclusion proof
// and the consistency of every new tree head with the latest one seen. The
// latest tree head, the authenticated tiles and the hashes proven for each
// module version persist under a data directory, so a restart neither
// forgets the tree (which would let a fork go unnoticed) nor refetches
// what it has proven.
package sumdb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/singleflight"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/internal/upstream"
)

// DefaultKey is the go command's built-in verifier key for the public Go
// checksum database, sum.golang.org.
const DefaultKey = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"

// Config configures a [Verifier]. Only DataDir is required.
type Config struct {
	// Key is the checksum database's note verifier key; its name is the
	// database's name. Zero means [DefaultKey].
	Key string
	// DataDir is where the persistent state lives, in a subdirectory
	// sumdb/<name>+<keyhash> created with mode 0700.
	DataDir string
	// URLs, if set, are the database's base URLs, tried in order.
	// Otherwise the verifier tries https://<name>, then
	// <proxy>/sumdb/<name> on each of ModuleProxies that supports it, in
	// order. Only a 200 or a 404/410 to a lookup is an answer; any other
	// failure of one URL moves on to the next (see README, "Where the
	// checksum database is read").
	URLs []string
	// ModuleProxies are module proxy base URLs that may serve the database.
	ModuleProxies []string
	// Private lists module path patterns in GOPRIVATE syntax. Matching
	// modules are never looked up: their verdict is [Private].
	Private string
	// HTTPClient fetches from the database. Zero means a client with the
	// system roots and bounded timeouts.
	HTTPClient *http.Client
	// Logger receives the client's log lines and security alerts. Zero
	// means slog.Default().
	Logger *slog.Logger
	// LookupTimeout bounds one lookup, all its requests included. Zero
	// means 30s.
	LookupTimeout time.Duration
	// HashWorkers bounds the goroutines that inflate one zip's entries
	// while it is hashed. Zero means GOMAXPROCS; 1 hashes serially.
	HashWorkers int
	// MaxZipEntries bounds the entries of a module zip; a zip that may
	// have more is malformed. Zero means [DefaultMaxZipEntries].
	MaxZipEntries int
	// TracerProvider records a span for each check, with the lookup and
	// the hash as its children. Zero records nothing.
	TracerProvider trace.TracerProvider
	// Etcd, if set, holds the state that replicas share: the latest tree
	// head, the security alert (watched, so that a fork one replica sees
	// blocks every replica), and the lookup records and tiles one replica
	// fetched, which the others verify again instead of asking the
	// database (see shared). DataDir then holds only this replica's
	// caches: its tiles, its proven hashes, and an alert it could not
	// yet record in etcd. Nil keeps all the state in DataDir.
	Etcd *clientv3.Client
	// EtcdPrefix is the key prefix of the shared state; every key lives
	// under it. Zero means "/sumgate/".
	EtcdPrefix string
	// EtcdTimeout bounds each request to etcd. Zero means 5s.
	EtcdTimeout time.Duration
	// Now is the clock the tree-head history is kept by. Zero means
	// time.Now.
	Now func() time.Time
}

// A Verifier checks module files against a checksum database. It is safe
// for concurrent use; concurrent checks of the same module version share
// one lookup.
type Verifier struct {
	key       string         // verifier key
	name      string         // database name, from the key
	verifiers note.Verifiers // for reading tree sizes of stored heads
	private   string         // GOPRIVATE-syntax patterns
	timeout   time.Duration  // per lookup
	workers   int            // goroutines inflating one zip
	maxFiles  int            // bound on a zip's entries
	log       *slog.Logger   // where alerts and client messages go
	store     *store         // persistent state; with shared, this replica's caches
	shared    *shared        // state shared through etcd; nil for the file backend
	history   *history       // when trees of each size were first verified
	now       func() time.Time
	remote    *remote // access to the database
	lookups   singleflight.Group
	ahead     chan struct{}  // one token per lookup Prefetch has in flight
	bgMu      sync.Mutex     // guards closed and the Add of bg
	bg        sync.WaitGroup // the lookups Prefetch started
	closed    bool           // Close was called: Prefetch starts nothing
	tracer    trace.Tracer
	reached   atomic.Bool // the database has answered with a signed head or a record
}

// New returns a Verifier for cfg, creating its state directory.
func New(cfg Config) (*Verifier, error) {
	if cfg.Key == "" {
		cfg.Key = DefaultKey
	}
	if cfg.DataDir == "" {
		return nil, errors.New("sumdb: no data directory")
	}
	verifier, err := note.NewVerifier(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("sumdb: invalid verifier key %q: %w", cfg.Key, err)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = upstream.NewClient(upstream.Options{})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LookupTimeout == 0 {
		cfg.LookupTimeout = 30 * time.Second
	}
	if cfg.MaxZipEntries <= 0 {
		cfg.MaxZipEntries = DefaultMaxZipEntries
	}
	if cfg.HashWorkers <= 0 {
		cfg.HashWorkers = runtime.GOMAXPROCS(0)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = nooptrace.NewTracerProvider()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := openStore(cfg.DataDir, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("sumdb: %w", err)
	}
	verifiers := note.VerifierList(verifier)
	remote := newRemote(cfg.HTTPClient, verifier.Name(), cfg.URLs, cfg.ModuleProxies)
	remote.accept = func(path string, data []byte) error { return plausibleAnswer(verifiers, path, data) }
	v := &Verifier{
		key:       cfg.Key,
		name:      verifier.Name(),
		verifiers: verifiers,
		private:   cfg.Private,
		timeout:   cfg.LookupTimeout,
		workers:   cfg.HashWorkers,
		maxFiles:  cfg.MaxZipEntries,
		log:       cfg.Logger.With("sumdb", verifier.Name()),
		store:     st,
		remote:    remote,
		ahead:     make(chan struct{}, maxPrefetches),
		tracer:    cfg.TracerProvider.Tracer("github.com/sumgate/sumgate/sumdb"),
		now:       cfg.Now,
	}
	if cfg.Etcd != nil {
		if err := v.openShared(cfg); err != nil {
			return nil, fmt.Errorf("sumdb: %w", err)
		}
	}
	if v.history, err = loadHistory(context.Background(), st, v.shared, v.now()); err != nil {
		v.Close()
		return nil, fmt.Errorf("sumdb: %w", err)
	}
	return v, nil
}

// openShared opens the state shared in etcd, moves an alert left in the
// local outbox there, reads the alert on record, and starts watching it,
// so that a replica that starts while an alert stands fails closed from
// its first check.
func (v *Verifier) openShared(cfg Config) error {
	ctx := context.Background()
	sh, err := openSharedFor(ctx, cfg)
	if err != nil {
		return err
	}
	v.shared = sh
	if err := v.pushAlert(ctx); err != nil {
		return err
	}
	resp, err := sh.getAlert(ctx)
	if err != nil {
		return err
	}
	sh.setAlert(resp.Kvs)
	wctx, stop := context.WithCancel(ctx)
	sh.stop, sh.done = stop, make(chan struct{})
	go sh.watchAlert(wctx, v.pushAlert, v.log)
	return nil
}

// pushAlert moves an alert recorded in the local outbox (the
// SECURITY-ALERT file, written when etcd could not be) into etcd.
func (v *Verifier) pushAlert(ctx context.Context) error {
	data, err := os.ReadFile(v.store.alertPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the local security alert: %w", err)
	}
	a := parseAlert(data)
	if err := v.shared.raiseAlert(ctx, a.since, a.evidence); err != nil {
		return err
	}
	return os.Remove(v.store.alertPath())
}

// alerted reports whether a fork is on record, and since when: in the
// data directory, or, with shared state, in etcd as last seen.
func (v *Verifier) alerted() (time.Time, bool) {
	if since, ok := v.store.alerted(); ok {
		return since, ok
	}
	if v.shared != nil {
		return v.shared.alerted()
	}
	return time.Time{}, false
}

// Proven returns the Verified verdict of kind of m when its hashes were
// proven before and are on disk: Got and Want are the logged hash, and
// Cached is true. It never touches the network, and answers false while
// a fork is on record.
func (v *Verifier) Proven(m module.Version, kind Kind) (Verdict, bool) {
	if _, alerted := v.alerted(); alerted || v.IsPrivate(m.Path) {
		return Verdict{}, false
	}
	p, ok := v.store.readProven(m)
	if !ok {
		return Verdict{}, false
	}
	h := p.Zip
	if kind == KindMod {
		h = p.Mod
	}
	return Verdict{Module: m, Kind: kind, Outcome: Verified, Got: h, Want: h, TreeSize: p.Tree, Cached: true}, true
}

// maxPrefetches bounds the lookups [Verifier.Prefetch] has in flight.
const maxPrefetches = 64

// Prefetch starts looking m up in the background and returns at once, so
// that a check of m that follows finds the proof proven or its lookup in
// flight (checks of one version share one lookup). The go command asks a
// module proxy for a version's .info before its .mod and .zip: a gateway
// that prefetches on the .info overlaps the lookup with that round trip.
// It does nothing for a private module, an invalid path or non-canonical
// version, a version already proven, while a fork is on record, or while
// maxPrefetches lookups it started are in flight, or after Close. The
// lookup is bounded by the lookup timeout, not by ctx, whose span it is
// recorded under.
func (v *Verifier) Prefetch(ctx context.Context, m module.Version) {
	if CheckModule(m) != nil || v.IsPrivate(m.Path) {
		return
	}
	if _, alerted := v.alerted(); alerted {
		return
	}
	if _, ok := v.store.readProven(m); ok {
		return
	}
	v.bgMu.Lock()
	defer v.bgMu.Unlock()
	if v.closed {
		return
	}
	select {
	case v.ahead <- struct{}{}:
	default:
		return
	}
	v.bg.Add(1)
	ch := v.lookups.DoChan(m.String(), func() (any, error) { return v.lookup(ctx, m), nil })
	go func() {
		defer v.bg.Done()
		<-ch
		<-v.ahead
	}()
}

// Prove looks m up in the database, unless it is proven already, so that
// its proof (and its record index, which dates it for a cooldown) is
// kept, without a file to check. It returns nil once m is proven, and an
// error saying why not otherwise (a private module, not found, an
// outage, a fork on record).
func (v *Verifier) Prove(ctx context.Context, m module.Version) error {
	if err := CheckModule(m); err != nil {
		return fmt.Errorf("proving %s: %w", m, err)
	}
	if v.IsPrivate(m.Path) {
		return fmt.Errorf("proving %s: a private module is never looked up", m)
	}
	if since, ok := v.alerted(); ok {
		return fmt.Errorf("proving %s: %s", m, v.alertReason(since))
	}
	ch := v.lookups.DoChan(m.String(), func() (any, error) { return v.lookup(ctx, m), nil })
	select {
	case r := <-ch:
		if res := r.Val.(lookupResult); res.outcome != Verified {
			return fmt.Errorf("proving %s: %s: %s", m, res.outcome, res.reason)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("proving %s: %w", m, ctx.Err())
	}
}

// Close makes later Prefetch calls do nothing and waits for the lookups
// Prefetch started, each bounded by the lookup timeout, so that nothing
// reads the database or writes under the data directory on their behalf
// once it returns. Call it once the gateway has shut down. Checks still
// work after it. It may be called more than once.
func (v *Verifier) Close() {
	v.bgMu.Lock()
	v.closed = true
	v.bgMu.Unlock()
	v.bg.Wait()
	if v.shared != nil {
		v.shared.close()
	}
}

// background runs f in a goroutine that Close waits for, or runs it
// before returning once Close was called.
func (v *Verifier) background(f func()) {
	v.bgMu.Lock()
	defer v.bgMu.Unlock()
	if v.closed {
		f()
		return
	}
	v.bg.Add(1)
	go func() {
		defer v.bg.Done()
		f()
	}()
}

// Probe fetches the database's latest signed tree head and checks its
// signature, without changing the stored tree. Success marks the
// database [Verifier.Reached].
func (v *Verifier) Probe(ctx context.Context) error {
	ctx, span := v.tracer.Start(ctx, "sumdb.probe", trace.WithAttributes(auditkey.SumDB.String(v.name)))
	defer span.End()
	data, err := v.remote.get(ctx, "/latest")
	if err == nil {
		_, err = note.Open(data, v.verifiers)
	}
	if err != nil {
		err = fmt.Errorf("probing checksum database %s: %w", v.name, err)
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	v.reached.Store(true)
	return nil
}

// StateReady checks, with a quorum read of the tree head bounded by ctx,
// that the shared state in etcd answers; it returns nil for the file
// backend. While it fails, lookups fail closed with [StateUnavailable]
// and only versions proven before on this replica pass.
func (v *Verifier) StateReady(ctx context.Context) error {
	if v.shared == nil {
		return nil
	}
	_, err := v.shared.readLatest(ctx)
	return err
}

// Reached reports whether the database has answered, with a validly
// signed tree head or a record, since New.
func (v *Verifier) Reached() bool { return v.reached.Load() }

// Name returns the checksum database's name, such as "sum.golang.org".
func (v *Verifier) Name() string { return v.name }

// Source returns the base URL the database was last read from: the last
// source whose 200 answer (to a probe, a lookup or a tile) carried what it
// should, such as "https://sum.golang.org" or
// "https://goproxy.io/sumdb/sum.golang.org". It is "" until one has
// answered since New; checks answered from disk do not change it. A
// source that then fails keeps the name until another one answers. The
// next request is sent to this source first.
func (v *Verifier) Source() string { return v.remote.source() }

// Alerted reports whether a checksum-database fork is on record, and
// since when. While it is, every non-private check fails closed.
func (v *Verifier) Alerted() (time.Time, bool) { return v.alerted() }

// Private returns the private module path patterns, in GOPRIVATE syntax.
func (v *Verifier) Private() string { return v.private }

// IsPrivate reports whether path matches the private patterns.
func (v *Verifier) IsPrivate(path string) bool {
	return module.MatchPrefixPatterns(v.private, path)
}

// ParseEscaped decodes a case-encoded module path and version, as they
// appear in module proxy URLs ("github.com/!azure/x", "v1.0.0"), and
// checks that the result is a valid module path with a canonical version
// that matches its major-version suffix.
func ParseEscaped(escPath, escVersion string) (module.Version, error) {
	path, err := module.UnescapePath(escPath)
	if err != nil {
		return module.Version{}, fmt.Errorf("invalid module path %q: %w", escPath, err)
	}
	vers, err := module.UnescapeVersion(escVersion)
	if err != nil {
		return module.Version{}, fmt.Errorf("invalid version %q of %s: %w", escVersion, path, err)
	}
	m := module.Version{Path: path, Version: vers}
	return m, CheckModule(m)
}

// CheckModule accepts only a valid module path with a canonical version
// that matches the path's major-version suffix.
func CheckModule(m module.Version) error {
	if err := module.Check(m.Path, m.Version); err != nil {
		return err
	}
	if c := module.CanonicalVersion(m.Version); c != m.Version {
		return fmt.Errorf("%s: version %q is not canonical (want %q)", m.Path, m.Version, c)
	}
	return nil
}

// Check decides whether file holds the genuine kind of file of module
// version m. m is decoded (not case-encoded); an invalid path or a
// non-canonical version is an error, and so is a file that cannot be read.
// Everything else, including a malformed file and an unreachable database,
// is a [Verdict]. Check hashes file while the lookup is in flight.
//
// A version whose hashes were proven before is answered from disk without
// touching the network. Once a fork has been recorded, every check that is
// not private answers [SecurityError] until the alert file is removed.
//
// file must be the caller's own and must not change while Check runs: it
// is read more than once, and the SHA-256 of a zip verified as m is
// remembered under the data directory, so that those bytes pass later
// checks of m without being inflated (see knownZip). A file another party
// can change (a path given by a user) must be copied first.
func (v *Verifier) Check(ctx context.Context, m module.Version, kind Kind, file string) (vd Verdict, err error) {
	ctx, span := v.tracer.Start(ctx, "sumdb.check", trace.WithAttributes(
		auditkey.ModulePath.String(m.Path), auditkey.ModuleVersion.String(m.Version),
		auditkey.ModuleKind.String(kind.String()), auditkey.SumDB.String(v.name)))
	defer func() {
		endCheckSpan(span, vd, err)
		span.End()
	}()
	return v.check(ctx, m, kind, file)
}

// endCheckSpan records a check's verdict on its span.
func endCheckSpan(span trace.Span, vd Verdict, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return
	}
	span.SetAttributes(VerdictAttributes(vd)...)
	switch vd.Outcome {
	case Verified, Private:
	case SecurityError:
		span.AddEvent(auditkey.SecurityEvent, trace.WithAttributes(auditkey.Reason.String(vd.Reason)))
		span.SetStatus(codes.Error, vd.String())
	default:
		span.SetStatus(codes.Error, vd.String())
	}
}

// VerdictAttributes are the audit attributes of a verdict: its outcome,
// both hashes, the tree size, whether the proof was cached, and the reason.
func VerdictAttributes(vd Verdict) []attribute.KeyValue {
	as := []attribute.KeyValue{auditkey.Verdict.String(vd.Outcome.String())}
	if vd.Got != "" {
		as = append(as, auditkey.HashGot.String(vd.Got))
	}
	if vd.Want != "" {
		as = append(as, auditkey.HashWant.String(vd.Want))
	}
	if vd.TreeSize > 0 {
		as = append(as, auditkey.TreeSize.Int64(vd.TreeSize))
	}
	if vd.Outcome != Private {
		as = append(as, auditkey.Cached.Bool(vd.Cached))
	}
	if vd.Reason != "" {
		as = append(as, auditkey.Reason.String(vd.Reason))
	}
	return as
}

func (v *Verifier) check(ctx context.Context, m module.Version, kind Kind, file string) (Verdict, error) {
	if err := CheckModule(m); err != nil {
		return Verdict{}, fmt.Errorf("checking %s: %w", kind, err)
	}
	if kind != KindZip && kind != KindMod {
		return Verdict{}, fmt.Errorf("checking %s: unknown kind %v", m, kind)
	}
	vd := Verdict{Module: m, Kind: kind}
	if v.IsPrivate(m.Path) {
		got, _, err := v.hash(ctx, m, kind, file)
		return v.withHash(vd, got, err, Private)
	}
	if since, ok := v.alerted(); ok {
		vd.Outcome = SecurityError
		vd.Reason = v.alertReason(since)
		return vd, nil
	}
	if kind == KindZip {
		if known, ok := v.knownZip(ctx, m, file); ok {
			return known, nil
		}
	}

	ch := v.lookups.DoChan(m.String(), func() (any, error) { return v.lookup(ctx, m), nil })
	got, raw, hashErr := v.hash(ctx, m, kind, file)
	var res lookupResult
	select {
	case r := <-ch:
		res = r.Val.(lookupResult)
	case <-ctx.Done():
		return Verdict{}, fmt.Errorf("checking %s of %s: %w", kind, m, ctx.Err())
	}

	vd.Lookup, vd.Cached, vd.TreeSize = res.took, res.cached, res.proof.Tree
	if kind == KindZip {
		vd.Want = res.proof.Zip
	} else {
		vd.Want = res.proof.Mod
	}
	if res.outcome == SecurityError {
		vd.Outcome, vd.Reason = SecurityError, res.reason
		return vd, nil
	}
	vd, err := v.withHash(vd, got, hashErr, res.outcome)
	if err != nil || vd.Outcome != Verified {
		if vd.Outcome != Mismatch {
			vd.Reason = res.reason
		}
		return vd, err
	}
	if got != vd.Want {
		vd.Outcome = Mismatch
	} else if raw != "" {
		v.rememberZip(m, raw)
	}
	return vd, nil
}

// maxKnownZips bounds the zip digests remembered per module version:
// mirrors that build their own zips serve other bytes with the same h1:
// hash, and a few of them is all a gateway meets.
const maxKnownZips = 4

// knownZip recognises a zip whose bytes, by their SHA-256, are bytes this
// verifier already hashed to the logged h1: hash of m: the same bytes
// give the same entries, the same checks and the same h1: hash, so it is
// Verified without inflating it again. It costs one SHA-256 pass over the
// compressed file, a fraction of inflating it (see README, Performance).
// Anything else, including an error reading the file, answers false and
// the zip is checked in full.
func (v *Verifier) knownZip(ctx context.Context, m module.Version, file string) (Verdict, bool) {
	p, ok := v.store.readProven(m)
	if !ok || len(p.Known) == 0 {
		return Verdict{}, false
	}
	_, span := v.tracer.Start(ctx, "sumdb.hash")
	defer span.End()
	raw, err := scanZip(file, v.maxFiles)
	if err != nil || !slices.Contains(p.Known, raw) {
		return Verdict{}, false
	}
	span.SetAttributes(auditkey.HashKnown.Bool(true))
	return Verdict{Module: m, Kind: KindZip, Outcome: Verified, Got: p.Zip, Want: p.Zip, TreeSize: p.Tree, Cached: true}, true
}

// rememberZip records that the zip whose bytes have SHA-256 raw hashed to
// m's logged h1: hash (see knownZip).
func (v *Verifier) rememberZip(m module.Version, raw string) {
	p, ok := v.store.readProven(m)
	if !ok || slices.Contains(p.Known, raw) {
		return
	}
	p.Known = append([]string{raw}, p.Known[:min(len(p.Known), maxKnownZips-1)]...)
	if err := v.store.writeProven(m, p); err != nil {
		v.log.Warn("cannot record a verified zip's digest", "module", m.String(), "err", err)
	}
}

// hash hashes file, in a span; for a zip it also returns the SHA-256 of
// its bytes.
func (v *Verifier) hash(ctx context.Context, m module.Version, kind Kind, file string) (h1, raw string, err error) {
	_, span := v.tracer.Start(ctx, "sumdb.hash")
	defer span.End()
	h1, raw, err = hash(m, kind, file, v.workers, v.maxFiles)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return h1, raw, err
}

// withHash records the hash result in vd: a malformed file is a Mismatch
// with the reason; an I/O error is returned; otherwise the outcome is o.
func (v *Verifier) withHash(vd Verdict, got string, err error, o Outcome) (Verdict, error) {
	if mal := (*MalformedError)(nil); errors.As(err, &mal) {
		vd.Outcome, vd.Reason = Mismatch, oneLine(mal.Error())
		return vd, nil
	}
	if err != nil {
		return Verdict{}, err
	}
	vd.Got, vd.Outcome = got, o
	return vd, nil
}

func (v *Verifier) alertReason(since time.Time) string {
	if v.shared != nil {
		return fmt.Sprintf("a fork of %s was detected at %s (evidence in etcd, key %salert); every check on every replica is blocked until an operator has investigated and run sumgate alert clear",
			v.name, since.UTC().Format(time.RFC3339), v.shared.dir)
	}
	return fmt.Sprintf("a fork of %s was detected at %s (evidence in %s); every check is blocked until an operator has investigated and run sumgate alert clear",
		v.name, since.UTC().Format(time.RFC3339), v.store.alertPath())
}

// lookupResult is what one lookup of a module version found.
type lookupResult struct {
	outcome Outcome       // Verified (hashes known), NotFound, Unavailable or SecurityError
	proof   proven        // the hashes, when found
	reason  string        // why not found
	took    time.Duration // time spent
	cached  bool          // answered from the proven cache
}

// lookup finds the hashes the database has for m. Each network lookup
// uses a fresh x/mod client: the client remembers failures for its
// lifetime and grows without bound, while everything worth keeping lives
// in the store.
func (v *Verifier) lookup(ctx context.Context, m module.Version) (res lookupResult) {
	ctx, span := v.tracer.Start(ctx, "sumdb.lookup")
	defer func() {
		span.SetAttributes(auditkey.Cached.Bool(res.cached), auditkey.Verdict.String(res.outcome.String()))
		if res.proof.Tree > 0 {
			span.SetAttributes(auditkey.TreeSize.Int64(res.proof.Tree))
		}
		switch res.outcome {
		case Verified:
		case SecurityError:
			span.AddEvent(auditkey.SecurityEvent, trace.WithAttributes(auditkey.Reason.String(res.reason)))
			span.SetStatus(codes.Error, res.reason)
		default:
			span.SetStatus(codes.Error, res.reason)
		}
		span.End()
	}()
	if p, ok := v.store.readProven(m); ok {
		return lookupResult{outcome: Verified, proof: p, cached: true}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.timeout)
	defer cancel()
	var release func()
	if v.shared != nil {
		// Another replica looking m up now is waited for, and its record
		// read from the shared cache; never more than a third of the
		// lookup's time, which the lookup itself then still has.
		wctx, cancel := context.WithTimeout(ctx, v.timeout/3)
		var err error
		release, err = v.shared.claim(wctx, recordFile(m))
		cancel()
		if err != nil {
			return lookupResult{outcome: StateUnavailable, reason: oneLine(err.Error()), took: time.Since(start)}
		}
	}
	ops, zipLines, modLines, err := v.lookupOnce(ctx, m, true)
	if err != nil && ops.localFailure() && ops.dropStoredTiles() {
		// With every read of the database answered, a tile read from
		// disk, or a record or tile read from the shared cache, is what
		// failed: tiles are written without fsync, and a power loss can
		// leave one its width of zeros; anyone who can write to etcd can
		// write anything there. A second try reads neither the shared
		// cache nor those tiles: it fetches them anew from the database
		// (and authenticates them, as every tile is), and what it fetches
		// replaces what was shared.
		ops, zipLines, modLines, err = v.lookupOnce(ctx, m, false)
	}
	v.share(ops, release)
	res = lookupResult{took: time.Since(start)}
	switch {
	case ops.securityErr() != "":
		res.outcome, res.reason = SecurityError, v.alertReason(time.Now())
		return res
	case ops.stateErr() != nil:
		res.outcome, res.reason = StateUnavailable, oneLine(ops.stateErr().Error())
		return res
	case ops.isNotFound():
		res.outcome, res.reason = NotFound, fmt.Sprintf("%s has no record of %s", v.name, m)
		return res
	case err != nil:
		res.outcome, res.reason = Unavailable, oneLine(err.Error())
		return res
	}
	res.proof.Zip = hashFromLines(zipLines, m.Path+" "+m.Version+" ")
	res.proof.Mod = hashFromLines(modLines, m.Path+" "+m.Version+"/go.mod ")
	if res.proof.Zip == "" || res.proof.Mod == "" {
		res.outcome, res.reason = NotFound, fmt.Sprintf("%s's record of %s lacks an h1: hash for the zip or go.mod", v.name, m)
		return res
	}
	res.proof.Tree = v.treeSize(ops.latestHead())
	res.proof.Record = ops.recordIndex()
	res.outcome = Verified
	if err := v.history.saw(ctx, res.proof.Tree, v.now()); err != nil {
		v.log.Warn("cannot record the tree head in the history", "err", err)
	}
	if v.shared != nil {
		v.raiseFloor(ctx, ops.latestHead())
	}
	v.reached.Store(true)
	_, wspan := v.tracer.Start(ctx, "sumdb.store", trace.WithAttributes(auditkey.SumDBPath.String("proven")))
	defer wspan.End()
	if err := v.store.writeProven(m, res.proof); err != nil {
		v.log.Warn("cannot cache proven hashes", "module", m.String(), "err", err)
	}
	return res
}

// lookupOnce looks m's zip and go.mod up with a fresh x/mod client, and
// returns its ops, which say what the database answered. fromShared
// lets the client read records and tiles from the shared cache.
func (v *Verifier) lookupOnce(ctx context.Context, m module.Version, fromShared bool) (ops *clientOps, zipLines, modLines []string, err error) {
	ops = &clientOps{v: v, ctx: ctx, fromShared: fromShared && v.shared != nil}
	c := sumdb.NewClient(ops)
	zipLines, err = c.Lookup(m.Path, m.Version)
	if err == nil {
		modLines, err = c.Lookup(m.Path, m.Version+"/go.mod")
	}
	return ops, zipLines, modLines, err
}

// oneLine shortens an error message to one line for a verdict: x/mod
// appends whole signed notes to some errors, and joined errors span lines.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\nnote:")
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

// hashFromLines returns the h1: hash on the go.sum line starting with prefix.
func hashFromLines(lines []string, prefix string) string {
	for _, l := range lines {
		if h, ok := strings.CutPrefix(l, prefix); ok && strings.HasPrefix(h, "h1:") {
			return h
		}
	}
	return ""
}

// raiseFloor keeps head, which a lookup verified, as this replica's floor
// (see clientOps.floor) if it is larger than the floor. The floor is a
// cache: a power loss may lose a raise, which weakens only the check
// against a head planted in etcd, back to an older floor.
func (v *Verifier) raiseFloor(ctx context.Context, head []byte) {
	_, span := v.tracer.Start(ctx, "sumdb.store", trace.WithAttributes(auditkey.SumDBPath.String("floor")))
	defer span.End()
	if err := v.store.raiseLatest(head, v.treeSize); err != nil {
		v.log.Warn("cannot keep the tree head as this replica's floor", "err", err)
	}
}

// recordFile names m's lookup record in the client's cache, without the
// database's name: "lookup/<escaped path>@<escaped version>".
func recordFile(m module.Version) string {
	p, _ := module.EscapePath(m.Path) // checked by CheckModule
	vers, _ := module.EscapeVersion(m.Version)
	return "lookup/" + p + "@" + vers
}

// share writes to the shared cache, in the background, the records and
// tiles the client authenticated during a lookup, then releases the
// lookup's claim, so that a replica waiting on it finds the record.
func (v *Verifier) share(ops *clientOps, release func()) {
	if v.shared == nil {
		return
	}
	ops.mu.Lock()
	files := ops.toShare
	ops.toShare = nil
	ops.mu.Unlock()
	if len(files) == 0 && release == nil {
		return
	}
	v.background(func() {
		if err := v.shared.writeCache(context.Background(), files); err != nil {
			v.log.Warn("cannot share lookup proofs", "err", err)
		}
		if release != nil {
			release()
		}
	})
}

// treeSize returns the size of a signed tree head, or 0 if it does not
// verify.
func (v *Verifier) treeSize(msg []byte) int64 {
	if len(msg) == 0 {
		return 0
	}
	n, err := note.Open(msg, v.verifiers)
	if err != nil {
		return 0
	}
	t, err := tlog.ParseTree([]byte(n.Text))
	if err != nil {
		return 0
	}
	return t.N
}

// clientOps implements sumdb.ClientOps for one lookup, over the verifier's
// store, shared state and remote, and notes what the client cannot return
// as a detectable error: a 404 for the record, a security error, and a
// failure of the shared state.
type clientOps struct {
	v          *Verifier
	ctx        context.Context // bounds every remote read of this lookup
	fromShared bool            // ReadCache may serve from the shared cache

	mu        sync.Mutex
	notFound  bool              // a /lookup/ answered with an authoritative 404 or 410
	security  string            // message passed to SecurityError
	stored    []string          // tiles ReadCache served from disk
	shared    bool              // ReadCache served something from the shared cache
	failed    bool              // a read of the database failed
	state     error             // the shared tree head could not be read or written
	latest    []byte            // the tree head last read or written
	floorRead bool              // the floor was offered (shared state)
	toShare   map[string][]byte // authenticated records and tiles, for the shared cache
	record    *int64            // the index of the record the lookup read
}

// localFailure reports whether a failed lookup failed with every read
// of the database and of the shared tree head answered, and no fork or
// missing record seen.
func (o *clientOps) localFailure() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.failed && !o.notFound && o.security == "" && o.state == nil
}

func (o *clientOps) isNotFound() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.notFound
}

func (o *clientOps) securityErr() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.security
}

func (o *clientOps) stateErr() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state
}

// noteRecord keeps the index of a lookup record read from the database
// or the shared cache; the client authenticates it before the lookup
// succeeds.
func (o *clientOps) noteRecord(path string, data []byte) {
	if !strings.Contains(path, "lookup/") {
		return
	}
	if id, _, _, err := tlog.ParseRecord(data); err == nil {
		o.mu.Lock()
		o.record = &id
		o.mu.Unlock()
	}
}

// recordIndex returns the index of the record the lookup read, if any.
func (o *clientOps) recordIndex() *int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.record
}

// latestHead returns the tree head the client last read or wrote, which
// it verified and which contains every record it proved.
func (o *clientOps) latestHead() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest
}

// ReadRemote fetches path from the database.
func (o *clientOps) ReadRemote(path string) ([]byte, error) {
	ctx, span := o.v.tracer.Start(o.ctx, "sumdb.read", trace.WithAttributes(auditkey.SumDBPath.String(path)))
	defer span.End()
	data, err := o.v.remote.get(ctx, path)
	if err == nil {
		o.noteRecord(path, data)
	}
	o.mu.Lock()
	o.failed = o.failed || err != nil
	o.notFound = o.notFound || final(path, err)
	o.mu.Unlock()
	return data, err
}

// ReadConfig serves the configured key and the latest tree head, from the
// data directory or the shared state.
func (o *clientOps) ReadConfig(file string) ([]byte, error) {
	switch file {
	case "key":
		return []byte(o.v.key), nil
	case o.v.name + "/latest":
		var data []byte
		var err error
		if o.v.shared != nil {
			if floor := o.floor(); floor != nil {
				return floor, nil
			}
			data, err = o.v.shared.readLatest(o.ctx)
			if err == nil && len(data) > 0 && o.v.treeSize(data) == 0 {
				// Not a head this database signed: written by hand. The
				// database is not to blame, so on_unverified does not
				// apply: the lookup fails closed.
				err = fmt.Errorf("reading tree head: %w: the tree head in etcd (key %slatest) is not signed by %s's key",
					ErrStateUnavailable, o.v.shared.dir, o.v.name)
			}
		} else {
			data, err = o.v.store.readLatest()
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		if errors.Is(err, ErrStateUnavailable) {
			o.state = err
		}
		if err == nil {
			o.latest = data
		}
		return data, err
	}
	return nil, fmt.Errorf("sumdb: unknown config file %q", file)
}

// floor returns, to the client's first read of the latest tree head only,
// the head this replica last saw, kept in its data directory, if it
// verifies. The client's next read gets the head in etcd, which it then
// merges with that floor as with any head it meets: a newer one must
// prove consistent with it, and an older one (etcd rolled back, by a
// restore or by hand) must be contained in it and is then moved forward.
// So a head planted in etcd, even one signed by the database's key, is
// not believed without a proof, and a fork between what this replica saw
// and what etcd holds is a security error.
func (o *clientOps) floor() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.floorRead {
		return nil
	}
	o.floorRead = true
	data, err := o.v.store.readLatest()
	if err != nil || o.v.treeSize(data) == 0 {
		return nil
	}
	o.latest = data
	return data
}

// WriteConfig swaps the latest tree head, in the data directory or the
// shared state. A head smaller than the one it replaces is refused: the
// client never writes one, and the tree only grows.
func (o *clientOps) WriteConfig(file string, old, new []byte) error {
	if file != o.v.name+"/latest" {
		return fmt.Errorf("sumdb: cannot write config file %q", file)
	}
	if n, m := o.v.treeSize(new), o.v.treeSize(old); n == 0 || n < m {
		return fmt.Errorf("sumdb: refusing to replace a tree head of size %d with one of size %d", m, n)
	}
	_, span := o.v.tracer.Start(o.ctx, "sumdb.store", trace.WithAttributes(auditkey.SumDBPath.String("latest")))
	defer span.End()
	var err error
	if o.v.shared != nil {
		err = o.v.shared.swapLatest(o.ctx, old, new)
	} else {
		err = o.v.store.swapLatest(old, new)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if errors.Is(err, ErrStateUnavailable) {
		o.state = err
	}
	if err == nil {
		o.latest = new
	}
	return err
}

// ReadCache reads an authenticated tile from disk, or a tile or lookup
// record from the shared cache. Lookup records are not cached on disk:
// the verifier keeps the proven hashes itself.
func (o *clientOps) ReadCache(file string) ([]byte, error) {
	rel := strings.TrimPrefix(file, o.v.name+"/")
	if strings.HasPrefix(rel, "tile/") {
		data, err := o.v.store.readTile(rel)
		if err == nil {
			o.mu.Lock()
			o.stored = append(o.stored, rel)
			o.mu.Unlock()
			return data, nil
		}
	}
	if !o.fromShared {
		return nil, fs.ErrNotExist
	}
	ctx, span := o.v.tracer.Start(o.ctx, "sumdb.read", trace.WithAttributes(auditkey.SumDBPath.String("etcd:"+rel)))
	defer span.End()
	data, err := o.v.shared.readCache(ctx, rel)
	if err == nil && !recordNames(rel, data) {
		// The client authenticates a record's place in the tree, not
		// that it is the record of the version asked for: a genuine
		// record of another version, planted under this name, would
		// make the version look unknown to the database (NotFound).
		o.v.log.Warn("a lookup record in the shared cache is not the record of its version; asking the database", "file", rel)
		return nil, fs.ErrNotExist
	}
	if err == nil {
		o.noteRecord(rel, data)
		o.mu.Lock()
		o.shared = true
		o.mu.Unlock()
	}
	return data, err
}

// recordNames reports whether data, read as the lookup record file
// ("lookup/<escaped path>@<escaped version>"), has a go.sum line of that
// module version; anything but a lookup record passes.
func recordNames(file string, data []byte) bool {
	name, ok := strings.CutPrefix(file, "lookup/")
	if !ok {
		return true
	}
	i := strings.LastIndex(name, "@")
	if i < 0 {
		return false
	}
	path, err1 := module.UnescapePath(name[:i])
	vers, err2 := module.UnescapeVersion(name[i+1:])
	_, text, _, err := tlog.ParseRecord(data)
	if err1 != nil || err2 != nil || err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(text), "\n") {
		if strings.HasPrefix(line, path+" "+vers+" ") || strings.HasPrefix(line, path+" "+vers+"/go.mod ") {
			return true
		}
	}
	return false
}

// dropStoredTiles removes the tiles ReadCache served from disk, and
// reports whether ReadCache served anything, from disk or the shared
// cache.
func (o *clientOps) dropStoredTiles() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, tile := range o.stored {
		o.v.store.removeTile(tile)
	}
	return len(o.stored) > 0 || o.shared
}

// WriteCache stores an authenticated tile on disk, and queues tiles and
// lookup records for the shared cache.
func (o *clientOps) WriteCache(file string, data []byte) {
	rel := strings.TrimPrefix(file, o.v.name+"/")
	if o.v.shared != nil && (strings.HasPrefix(rel, "tile/") || strings.HasPrefix(rel, "lookup/")) {
		o.mu.Lock()
		if o.toShare == nil {
			o.toShare = make(map[string][]byte)
		}
		o.toShare[rel] = data
		o.mu.Unlock()
	}
	if !strings.HasPrefix(rel, "tile/") {
		return
	}
	_, span := o.v.tracer.Start(o.ctx, "sumdb.store", trace.WithAttributes(auditkey.SumDBPath.String(rel)))
	defer span.End()
	if err := o.v.store.writeTile(rel, data); err != nil {
		o.v.log.Warn("cannot cache tile", "tile", file, "err", err)
	}
}

// Log passes the client's messages on.
func (o *clientOps) Log(msg string) { o.v.log.Info(msg) }

// SecurityError records the fork durably and in the log; from then on
// every check fails closed. With shared state the evidence goes to etcd,
// where every replica sees it; it is first written to the data directory,
// which holds it (and this replica fails closed) until etcd has it.
func (o *clientOps) SecurityError(msg string) {
	o.mu.Lock()
	o.security = msg
	o.mu.Unlock()
	o.v.log.Error("checksum database fork detected: failing closed", "evidence", msg, "alert_file", o.v.store.alertPath())
	if err := o.v.store.alert(msg); err != nil {
		o.v.log.Error("cannot record security alert", "err", err)
	}
	if o.v.shared != nil {
		// Not bounded by the lookup's time, which the fork may have used
		// up: raiseAlert has its own timeout.
		if err := o.v.pushAlert(context.WithoutCancel(o.ctx)); err != nil {
			o.v.log.Error("cannot record security alert in etcd yet; this replica fails closed, and records it once etcd answers", "err", err)
			o.v.shared.retryOutbox()
		}
	}
}
