// Package certs is sumgate's enterprise CA: it mints the leaf certificates
// sumgate presents for the hosts it intercepts.
//
// One type, [CA], serves every backend. Behind it sits a smallstep
// apiv1.CertificateAuthorityService: cas/softcas over an embedded (or
// imported) root and intermediate for the "local" backend, cas/stepcas
// against a real step-ca for the "step" backend. Leaves are minted on
// demand during the TLS handshake (and, with [Config.Premint], at start
// for the names listed exactly) through certmagic, which caches and
// renews them; they are served once signed and written to the data
// directory in the background, or, with [Config.Etcd], to etcd, where
// replicas holding the same CA share them and lock each name's issuance.
// Only names on the intercept list are ever minted.
//
// The step backend is compiled in only with the build tag "step", which
// costs about 270 packages (smallstep's client package is also the step-ca
// server). Without it the API is the same, and a step configuration fails
// [New], [Init] and [LoadRoot] with an error wrapping [ErrStepNotBuilt].
package certs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/smallstep/certificates/cas/apiv1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/internal/hostpattern"
)

// Backends.
const (
	BackendLocal = "local" // embedded or imported CA, signing with cas/softcas
	BackendStep  = "step"  // a step-ca, through cas/stepcas; needs the build tag "step"
)

// ErrStepNotBuilt reports that this binary was built without the step
// backend (build tag "step"). A binary built with it never returns it.
var ErrStepNotBuilt = errors.New("this sumgate was built without the step backend; build it with: go build -tags step ./cmd/sumgate")

// PatternCacheCapacity is the number of leaves held in memory when the
// intercept list has a pattern ("*.example.com" or "*"): names a pattern
// matches are unbounded in number, so the in-memory cache is bounded by
// this constant rather than by the list. A leaf evicted from it is read
// back from storage on its next handshake.
const PatternCacheCapacity = 1000

// DefaultLeafLifetime is the lifetime of a leaf certificate when
// Config.LeafLifetime is zero.
const DefaultLeafLifetime = 24 * time.Hour

// Config configures a [CA]. The zero value of every field but DataDir and
// Intercept is usable: a local CA under DataDir/ca with 24 h leaves.
type Config struct {
	// Backend is BackendLocal (zero value) or BackendStep.
	Backend string
	// DataDir holds the local CA in DataDir/ca (0700) and minted leaves in
	// DataDir/ca/leaves.
	DataDir string
	// Intercept lists the host names leaves may be minted for: exact
	// names, "*.example.com" (every name under example.com, at any depth,
	// not example.com itself) and "*" (every DNS name, never an IP
	// literal); see package internal/hostpattern. Nothing else is ever
	// minted. The local intermediate is name-constrained to these names
	// (to the example.com subtree for "*.example.com"); under "*" it can
	// carry no DNS name constraint, and excludes every IP address instead.
	Intercept []string
	// Splice lists names and patterns never minted for, even when
	// Intercept matches them.
	Splice []string
	// Cert and Key, if set, import an existing root or intermediate (the
	// file may hold its chain) instead of the embedded CA.
	Cert, Key string
	// Password decrypts Key, if it is encrypted.
	Password []byte
	// LeafLifetime is how long a leaf is valid. Zero means 24 h.
	LeafLifetime time.Duration
	// Premint has New ready, in the background, the leaf of every name
	// listed exactly in Intercept and not spliced (a pattern names no
	// host): loaded from storage if held there, minted otherwise, so that
	// no client's first handshake waits for it. A handshake for a name
	// still being minted shares that issuance. A failure is logged and
	// the name's first handshake tries again. Stop cancels what is left.
	// False mints each leaf on its first handshake only.
	Premint bool
	// Step configures the step backend.
	Step StepConfig
	// Etcd, if set, holds minted leaves in etcd, under EtcdPrefix+"certs/",
	// instead of DataDir/ca/leaves, and locks each name's issuance there:
	// replicas holding the same CA (the same Cert and Key, or the same
	// step-ca) on one etcd then mint each name once, and serve the same
	// leaf. Leaf private keys are then stored in etcd: it must be reached
	// over TLS with client certificates, and its data protected as the
	// CA's (encryption at rest is etcd's or Kubernetes' business). A leaf
	// read from etcd is served only if it chains to this CA's root (to
	// the configured fingerprint alone, when a step-ca was unreachable at
	// startup), names its host and matches its key; any other is
	// treated as absent and minted anew. The caller closes the client,
	// after Stop. Nil keeps leaves in the data directory.
	Etcd *clientv3.Client
	// EtcdPrefix starts every key written to Etcd: "/sumgate/" for
	// instance (see config.Etcd.Prefix).
	EtcdPrefix string
	// EtcdTimeout bounds each request to Etcd, but the wait for another
	// replica's lock. Zero means DefaultEtcdTimeout.
	EtcdTimeout time.Duration
	// Logger receives issuance events and failures. Zero means slog.Default().
	Logger *slog.Logger
	// TracerProvider records a span for each mint. Zero records nothing.
	TracerProvider trace.TracerProvider
	// MeterProvider counts mints (sumgate.certs.minted). Zero counts nothing.
	MeterProvider metric.MeterProvider
}

// StepConfig configures the step backend.
type StepConfig struct {
	URL         string // the step-ca's base URL
	Root        string // PEM file of its root; or give Fingerprint
	Fingerprint string // hex SHA-256 of the root certificate
	Provisioner string // provisioner name
	Type        string // "jwk" or "x5c"
	Key         string // provisioner key (jwk: optional, else fetched from the CA) or x5c leaf key
	Cert        string // x5c certificate chain
	Password    []byte // decrypts Key (or the fetched JWK); required
}

// A CA mints leaf certificates for intercepted hosts. Create it with [New]
// and stop it with [CA.Stop]. It is safe for concurrent use.
type CA struct {
	cfg         Config
	log         *slog.Logger
	service     apiv1.CertificateAuthorityService // the backend that signs
	root        *x509.Certificate                 // what clients trust
	chain       []*x509.Certificate               // certificates served after the leaf
	id          string                            // fingerprint of the root; names this CA's leaves in storage
	allowed     hostpattern.Policy                // what may be minted: intercept minus splice
	magic       *certmagic.Config                 // on-demand issuance, storage, renewal
	cache       *certmagic.Cache                  // bounded leaf cache; owns a maintenance goroutine
	store       *leafStore                        // leaf storage in the data directory, owns the goroutine that writes it; nil with Config.Etcd
	shared      *etcdStore                        // leaf storage in etcd; nil without Config.Etcd
	size        int                               // the cache's capacity (see cacheCapacity)
	issued      atomic.Int64                      // leaves minted since New
	stop        sync.Once                         // Stop runs once: cache.Stop panics if called twice
	stopPremint context.CancelFunc                // cancels pre-minting (see Config.Premint); nil without it
	premintDone chan struct{}                     // closed when pre-minting has ended, or never started
	tracer      trace.Tracer
	mints       metric.Int64Counter
	parents     sync.Map // lower-case name -> context of a handshake waiting for its leaf
	ours        sync.Map // leaf DER -> struct{}: leaves seen to chain to root (see own)
	nOurs       atomic.Int64
}

// New opens the configured CA, creating the embedded local CA on first
// use, and starts certmagic's cache. The step backend must answer at
// startup unless leaves already in storage are still valid; in a binary
// built without it, the error wraps [ErrStepNotBuilt], whatever is stored.
func New(ctx context.Context, cfg Config) (*CA, error) {
	if cfg.LeafLifetime == 0 {
		cfg.LeafLifetime = DefaultLeafLifetime
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = nooptrace.NewTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = noopmetric.NewMeterProvider()
	}
	c := &CA{cfg: cfg, log: cfg.Logger.With("component", "ca"),
		tracer: cfg.TracerProvider.Tracer("github.com/sumgate/sumgate/certs")}
	var err error
	if c.allowed, err = hostpattern.NewPolicy(cfg.Intercept, cfg.Splice); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	c.mints, err = cfg.MeterProvider.Meter("github.com/sumgate/sumgate/certs").Int64Counter("sumgate.certs.minted",
		metric.WithDescription("Leaf certificates minted, by backend and outcome."), metric.WithUnit("{certificate}"))
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	switch cfg.Backend {
	case "", BackendLocal:
		c.service, c.root, c.chain, err = openLocal(ctx, cfg, true)
	case BackendStep:
		c.service, c.root, err = openStep(ctx, cfg)
		c.id = strings.ToLower(strings.ReplaceAll(cfg.Step.Fingerprint, ":", ""))
		if c.root != nil {
			c.id = Fingerprint(c.root)
		}
		if err != nil && !errors.Is(err, ErrStepNotBuilt) && c.id != "" && c.holdsValidLeaves(ctx) {
			c.log.Warn("step-ca unreachable at startup; serving the leaves already held until they expire", "url", cfg.Step.URL, "err", err)
			err = nil
		}
	default:
		err = fmt.Errorf("unknown CA backend %q (want %q or %q)", cfg.Backend, BackendLocal, BackendStep)
	}
	if err != nil {
		return nil, err
	}
	if c.root != nil {
		c.id = Fingerprint(c.root)
	}

	var storage certmagic.Storage
	if cfg.Etcd != nil {
		c.shared = c.etcdStore()
		storage = c.shared
	} else {
		if c.store, err = newLeafStore(c.leafDir(), c.log); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		storage = c.store
	}
	c.size = c.cacheCapacity()
	c.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return c.magic, nil },
		Capacity:         c.size,
		// certmagic renews any leaf with less than five check intervals
		// left; scale the interval so that short lifetimes are not renewed
		// on every handshake.
		RenewCheckInterval: min(10*time.Minute, max(time.Second, cfg.LeafLifetime/30)),
		Logger:             zap.NewNop(),
	})
	c.magic = certmagic.New(c.cache, c.magicConfig(storage))
	c.premintDone = make(chan struct{})
	if !cfg.Premint {
		close(c.premintDone)
		return c, nil
	}
	// Pre-minting outlives New's context (a deadline on starting up) and
	// ends with Stop.
	ctx, c.stopPremint = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(c.premintDone)
		c.premintAll(ctx)
	}()
	return c, nil
}

// premintAll readies the leaf of every name listed exactly on the
// intercept list, one at a time, as a handshake for it would.
func (c *CA) premintAll(ctx context.Context) {
	names := c.exactNames()
	ctx, span := c.tracer.Start(ctx, "certs.premint", trace.WithAttributes(auditkey.CABackend.String(c.cfg.Backend)))
	defer span.End()
	start, failed := time.Now(), 0
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		if _, err := c.magic.GetCertificateWithContext(ctx, &tls.ClientHelloInfo{ServerName: name}); err != nil && ctx.Err() == nil {
			failed++
			c.log.WarnContext(ctx, "pre-minting a leaf failed; its first handshake will try again", "host", name, "err", err)
		}
	}
	if failed > 0 {
		span.SetStatus(codes.Error, fmt.Sprintf("%d of %d leaves failed", failed, len(names)))
	}
	c.log.InfoContext(ctx, "leaves ready for the names listed in intercept", "names", len(names), "failed", failed,
		"took_ms", float64(time.Since(start).Microseconds())/1000)
}

// exactNames returns the names listed exactly on the intercept list and
// not spliced: the hosts whose leaves can be had before any handshake.
func (c *CA) exactNames() []string {
	var names []string
	for _, name := range c.allowed.Intercept.Exact() {
		if c.allowed.Intercepts(name) {
			names = append(names, name)
		}
	}
	return names
}

// cacheCapacity bounds the leaves certmagic keeps in memory: four per
// name listed exactly, at least 100. Names matched by a pattern are
// unbounded in number: then the cache holds at least PatternCacheCapacity
// leaves (see BenchmarkMintUnderWildcard), and one evicted is read back
// from storage, not minted again.
func (c *CA) cacheCapacity() int {
	capacity := max(100, 4*len(c.allowed.Intercept.Exact()))
	if c.allowed.Intercept.HasPatterns() {
		capacity = max(capacity, PatternCacheCapacity)
	}
	return capacity
}

// magicConfig is certmagic's configuration: our issuer only (no ACME), no
// OCSP stapling, no ARI, ECDSA P-256 keys, storage (the leaf folder under
// the data directory), and on-demand issuance for intercepted names only.
func (c *CA) magicConfig(storage certmagic.Storage) certmagic.Config {
	return certmagic.Config{
		Issuers:   []certmagic.Issuer{issuer{c}},
		KeySource: certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
		OCSP:      certmagic.OCSPConfig{DisableStapling: true},
		// Leaves live in a 0700 folder under the data directory, keys 0600,
		// or in etcd (Config.Etcd), so restarts reuse them, and a step-ca
		// outage at startup does not stop sumgate while they last.
		Storage: storage,
		// newLeafStore checks the folder once, not before every issuance;
		// the caller of New checked that etcd answers.
		DisableStorageCheck: true,
		DisableARI:          true,
		OnDemand: &certmagic.OnDemandConfig{DecisionFunc: func(_ context.Context, name string) error {
			if !c.allowed.Intercepts(name) {
				return fmt.Errorf("%q is not on the intercept list", name)
			}
			return nil
		}},
		Logger: zap.NewNop(),
	}
}

func (c *CA) leafDir() string { return filepath.Join(c.cfg.DataDir, "ca", "leaves") }

// etcdStore returns the leaf storage in Config.Etcd, whose leaves must
// pass checkLeaf.
func (c *CA) etcdStore() *etcdStore {
	return newEtcdStore(c.cfg.Etcd, c.cfg.EtcdPrefix+"certs/", c.cfg.EtcdTimeout, c.checkLeaf, c.log)
}

// holdsValidLeaves reports whether storage holds an unexpired leaf for
// every name listed exactly on the intercept list (and not spliced).
// Names that only a pattern matches cannot be listed: a new one fails its
// handshake while the CA is away, as any new name does. A list of
// patterns alone holds no such promise, so the answer is then false.
func (c *CA) holdsValidLeaves(ctx context.Context) bool {
	names := c.exactNames()
	if len(names) == 0 {
		return false
	}
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return nil, errors.New("unused") },
		Logger:           zap.NewNop(),
	})
	defer cache.Stop()
	var storage certmagic.Storage = &certmagic.FileStorage{Path: c.leafDir()} // read only
	if c.cfg.Etcd != nil {
		shared := c.etcdStore()
		defer shared.Close()
		storage = shared
	}
	cfg := c.magicConfig(storage)
	cfg.OnDemand = nil
	magic := certmagic.New(cache, cfg)
	for _, name := range names {
		cert, err := magic.CacheManagedCertificate(ctx, name)
		if err != nil || time.Now().After(cert.Leaf.NotAfter) {
			return false
		}
	}
	return true
}

// Stop cancels pre-minting, stops certmagic's maintenance goroutine and
// writes to storage every leaf not yet written. It may be called more
// than once.
func (c *CA) Stop() {
	c.stop.Do(func() {
		if c.stopPremint != nil {
			c.stopPremint()
		}
		<-c.premintDone
		c.cache.Stop()
		if c.store != nil {
			c.store.Close()
		}
		if c.shared != nil {
			c.shared.Close()
		}
	})
}

// Root returns the root certificate clients must trust.
func (c *CA) Root() *x509.Certificate { return c.root }

// Issued returns how many leaves this CA has minted since New.
func (c *CA) Issued() int64 { return c.issued.Load() }

// GetCertificate returns the leaf for hello.ServerName, minting it on
// first use (concurrent handshakes for one name share one issuance). A
// name not on the intercept list fails the handshake.
func (c *CA) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.getCertificate(hello)
}

// getCertificate asks certmagic for hello's leaf, and serves it only if
// it chains to this CA's root. certmagic (v0.25) coordinates handshakes
// waiting for a leaf in package-level maps keyed by name alone, and hands
// a waiter the leader's leaf, whichever Config it belongs to: in a
// process with two CAs (tests, a CA being replaced), one CA's handshake
// could serve the other's leaf. Asking again then finds this CA's own.
func (c *CA) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	for range 3 {
		cert, err := c.magic.GetCertificate(hello)
		if err != nil || c.own(cert) {
			return cert, err
		}
	}
	return nil, fmt.Errorf("certs: the leaf for %q was issued by another CA in this process", hello.ServerName)
}

// own reports whether cert chains to this CA's root (always, when the
// root is not known). A leaf the local backend signed is known from its
// issuance; any other is verified once. Later handshakes find either in a
// bounded set.
func (c *CA) own(cert *tls.Certificate) bool {
	if c.root == nil {
		return true
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return false
	}
	key := string(cert.Certificate[0])
	if _, ok := c.ours.Load(key); ok {
		return true
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return false
		}
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(c.root)
	for _, der := range cert.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return false
	}
	c.remember(cert.Certificate[0])
	return true
}

// checkLeaf verifies a leaf read from etcd, which is no root of trust:
// its certificate must chain to this CA's root for serverAuth and name
// the host name (in certmagic's safe form, which leaves a host name as
// it is), its key must be the certificate's, and its metadata must be
// certmagic's. Without a root (a step-ca unreachable at startup) the
// chain cannot be checked; the rest is. A leaf that passes is
// remembered as this CA's (see own), and its chain not verified again.
func (c *CA) checkLeaf(name string, crt, key, meta []byte) error {
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return fmt.Errorf("the key and certificate of %s: %w", name, err)
	}
	var res certmagic.CertificateResource
	if err := json.Unmarshal(meta, &res); err != nil {
		return fmt.Errorf("the metadata of %s: %w", name, err)
	}
	if _, known := c.ours.Load(string(pair.Certificate[0])); c.root == nil || known {
		return pair.Leaf.VerifyHostname(name)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(c.root)
	for _, der := range pair.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("the chain of %s: %w", name, err)
		}
		inter.AddCert(ic)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the certificate of %s: %w", name, err)
	}
	c.remember(pair.Certificate[0])
	return nil
}

// remember records the leaf der as this CA's, in a set bounded to four
// times the cache's capacity.
func (c *CA) remember(der []byte) {
	if c.nOurs.Add(1) > 4*int64(c.size) {
		c.ours.Clear()
		c.nOurs.Store(1)
	}
	c.ours.Store(string(der), struct{}{})
}

// GetCertificateContext is GetCertificate for a handshake that belongs to
// ctx's span: a leaf minted for it is recorded as a child span, and the
// span of ctx is marked with sumgate.cert.minted.
func (c *CA) GetCertificateContext(ctx context.Context, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(hello.ServerName)
	if _, waiting := c.parents.LoadOrStore(name, ctx); !waiting {
		defer c.parents.CompareAndDelete(name, ctx)
	}
	return c.getCertificate(hello)
}

// TLSConfig returns a server configuration that presents minted leaves,
// with TLS 1.2 as the minimum.
func (c *CA) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: c.GetCertificate, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
}

// issuer adapts the CA service to certmagic.
type issuer struct{ c *CA }

// IssuerKey separates leaves of different CAs in storage.
func (i issuer) IssuerKey() string {
	return "sumgate-" + i.c.id[:min(16, len(i.c.id))]
}

// Issue mints a leaf for the CSR certmagic made: ECDSA P-256, SAN equal to
// the host, serverAuth, digitalSignature, the configured lifetime.
func (i issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	c := i.c
	for _, name := range csr.DNSNames {
		if !c.allowed.Intercepts(name) {
			return nil, certmagic.ErrNoRetry{Err: fmt.Errorf("refusing to mint for %q: not on the intercept list", name)}
		}
	}
	if len(csr.DNSNames) != 1 || len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) != 0 {
		return nil, certmagic.ErrNoRetry{Err: fmt.Errorf("refusing to mint: want exactly one DNS name, got %v", csr.DNSNames)}
	}
	if p, ok := c.parents.Load(strings.ToLower(csr.DNSNames[0])); ok {
		parent := trace.SpanFromContext(p.(context.Context))
		parent.SetAttributes(auditkey.CertMinted.Bool(true))
		ctx = trace.ContextWithSpan(ctx, parent)
	}
	ctx, span := c.tracer.Start(ctx, "certs.mint", trace.WithAttributes(
		semconv.ServerAddress(csr.DNSNames[0]), auditkey.CABackend.String(c.cfg.Backend)))
	defer span.End()
	outcome := "error"
	defer func() {
		c.mints.Add(ctx, 1, metric.WithAttributes(auditkey.CABackend.String(c.cfg.Backend), attribute.String("outcome", outcome)))
	}()
	if c.service == nil {
		span.SetStatus(codes.Error, "CA unreachable at startup")
		return nil, certmagic.ErrNoRetry{Err: fmt.Errorf("minting a leaf for %s: the %s CA at %s was unreachable at startup", csr.DNSNames[0], c.cfg.Backend, c.cfg.Step.URL)}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: csr.DNSNames[0]},
		DNSNames:              csr.DNSNames,
		PublicKey:             csr.PublicKey,
		PublicKeyAlgorithm:    csr.PublicKeyAlgorithm,
		KeyUsage:              x509.KeyUsageDigitalSignature, // softcas sets no usage itself
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	start := time.Now()
	resp, err := c.create(ctx, &apiv1.CreateCertificateRequest{
		Template: tmpl,
		CSR:      csr,
		Lifetime: c.cfg.LeafLifetime,
		// Tolerate clients whose clock is a little behind, without pulling
		// a short-lived leaf into its renewal window at birth.
		Backdate: min(time.Minute, c.cfg.LeafLifetime/10),
	})
	if err != nil {
		c.log.ErrorContext(ctx, "minting a leaf failed", "host", csr.DNSNames[0], "backend", c.cfg.Backend, "err", err)
		span.SetStatus(codes.Error, err.Error())
		// Fail this handshake now rather than hold it open through
		// certmagic's retries; the next handshake tries again.
		return nil, certmagic.ErrNoRetry{Err: fmt.Errorf("minting a leaf for %s: %w", csr.DNSNames[0], err)}
	}
	c.issued.Add(1)
	outcome = "ok"
	if c.cfg.Backend != BackendStep {
		// Signed here, by the chain loaded in New: it is this CA's, and
		// its first handshake need not verify it again (see own).
		c.remember(resp.Certificate.Raw)
	}
	c.log.InfoContext(ctx, "minted a leaf", "host", csr.DNSNames[0], "serial", resp.Certificate.SerialNumber.Text(16),
		"not_after", resp.Certificate.NotAfter, "took_ms", float64(time.Since(start).Microseconds())/1000)
	var chainPEM []byte
	chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.Certificate.Raw})...)
	chain := resp.CertificateChain
	if len(chain) == 0 {
		chain = c.chain
	}
	for _, ic := range chain {
		if isSelfSigned(ic) {
			continue // clients have the root; sending it only costs bytes
		}
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ic.Raw})...)
	}
	return &certmagic.IssuedCertificate{Certificate: chainPEM}, nil
}

// create calls the CA service, giving up when ctx ends: a hung step-ca
// must fail the handshake, not hold it (and every handshake waiting on the
// same name) open. The local backend signs in memory and cannot hang: it
// is called directly.
func (c *CA) create(ctx context.Context, req *apiv1.CreateCertificateRequest) (*apiv1.CreateCertificateResponse, error) {
	if c.cfg.Backend != BackendStep {
		return c.service.CreateCertificate(req)
	}
	type result struct {
		resp *apiv1.CreateCertificateResponse
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		resp, err := c.service.CreateCertificate(req)
		ch <- result{resp, err}
	}()
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Fingerprint returns the hex SHA-256 of cert's DER encoding, the form
// step and browsers show.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
