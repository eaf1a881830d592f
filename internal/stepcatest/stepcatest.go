//go:build step

// Package stepcatest runs smallstep's real step-ca authority in-process on
// 127.0.0.1 for tests of code that talks to it through smallstep's client side
// (cas/stepcas, ca.Client).
//
// The server is smallstep's own code: authority.New (soft CAS signing with an
// intermediate key, JWK and X5C provisioners, in-memory token DB) serving
// smallstep's api.Route handlers (chi router, mounted at / and /1.0, with the
// request-id middleware) over TLS with the certificate the authority issues
// for itself (authority.GetTLSCertificate), i.e. what ca.New assembles. ca.New
// itself is not used because it cannot listen on port 0 (it binds
// config.Address inside Run and does not expose the listener) and it writes to
// the process-wide standard logger; here the listener is opened first, so
// Start returns with the CA already accepting connections, and all server
// logs (http.Server errors, API error responses) go to t.Log.
//
// Start needs no package-level state and may be called from parallel tests;
// every CA has its own PKI, port and state directory.
package stepcatest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/smallstep/certificates/api"
	apilog "github.com/smallstep/certificates/api/log"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/db"
	"github.com/smallstep/certificates/middleware/requestid"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/randutil"
	"go.step.sm/crypto/x509util"
)

// TLS certificate duration claims of both provisioners, and the authority's
// backdate. Backdate is 0 (step-ca's default is 1m) so that a leaf's
// NotAfter-NotBefore equals the requested lifetime exactly.
const (
	MinTLSDuration                   = time.Second
	DefaultTLSDuration               = 24 * time.Hour
	MaxTLSDuration                   = 72 * time.Hour
	Backdate           time.Duration = 0
)

// jwePBES2Count is the PBKDF2 iteration count of the provisioner's encrypted
// JWK served by the CA. step uses 600000; a low count keeps Start and
// stepcas.New (which decrypts it when CertificateIssuer.Key is empty) fast.
const jwePBES2Count = 1000

// CA is a running step-ca. All files live in the test's t.TempDir().
type CA struct {
	URL         string            // "https://127.0.0.1:PORT"
	RootFile    string            // PEM file of the CA's root certificate
	Root        *x509.Certificate // the CA's root certificate
	Fingerprint string            // the root's SHA-256 fingerprint, lowercase hex (as step and stepcas expect)
	JWK         JWKProvisioner    // the JWK provisioner
	X5C         X5CProvisioner    // the X5C provisioner

	stopOnce sync.Once
	stop     func()
}

// JWKProvisioner describes the CA's JWK provisioner and its credentials.
type JWKProvisioner struct {
	Name         string // provisioner name
	KeyFile      string // the provisioner's private key (P-256) as a PEM file encrypted with Password (legacy "Proc-Type: 4,ENCRYPTED" EC key), usable as CertificateIssuer.Key
	Password     string // password of KeyFile and of the encrypted JWK the CA serves
	PasswordFile string // file containing exactly Password (no trailing newline)
}

// X5CProvisioner describes the CA's X5C provisioner and a client credential
// it accepts.
type X5CProvisioner struct {
	Name         string // provisioner name
	CertFile     string // PEM chain with a single leaf cert (clientAuth, digitalSignature, valid 30 days) signed by the provisioner's trusted root; usable as CertificateIssuer.Certificate
	KeyFile      string // the leaf's private key (P-256) as a PEM file encrypted with Password, usable as CertificateIssuer.Key
	Password     string // password of KeyFile
	PasswordFile string // file containing exactly Password (no trailing newline)
}

// Start starts a real step-ca (smallstep's authority and API handlers, see
// the package doc) listening on 127.0.0.1:0 with a fresh root and
// intermediate, a JWK provisioner and an X5C provisioner, both with the claims
// MinTLSDuration, DefaultTLSDuration and MaxTLSDuration and no name policy.
// It stops in t.Cleanup. State lives in t.TempDir().
func Start(t testing.TB) *CA {
	t.Helper()
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	password := func() string {
		t.Helper()
		s, err := randutil.Alphanumeric(32)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	encryptedKey := func(name string, key crypto.PrivateKey, pw string) string {
		t.Helper()
		// Without pemutil.WithPKCS8 this is the fast legacy PEM encryption.
		b, err := pemutil.Serialize(key, pemutil.WithPassword([]byte(pw)))
		if err != nil {
			t.Fatal(err)
		}
		return file(name, pem.EncodeToMemory(b))
	}

	// PKI: root -> intermediate (signs leaves); x5c root -> x5c client leaf.
	rootKey, root := newCert(t, nil, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "stepcatest root CA"}, IsCA: true, MaxPathLen: 1})
	interKey, inter := newCert(t, root, rootKey, &x509.Certificate{Subject: pkix.Name{CommonName: "stepcatest intermediate CA"}, IsCA: true, MaxPathLenZero: true})
	x5cRootKey, x5cRoot := newCert(t, nil, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "stepcatest x5c root"}, IsCA: true, MaxPathLenZero: true})
	x5cKey, x5cLeaf := newCert(t, x5cRoot, x5cRootKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "stepcatest x5c client"},
		NotAfter:    time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	interKeyPEM, err := pemutil.Serialize(interKey)
	if err != nil {
		t.Fatal(err)
	}

	c := &CA{
		RootFile:    file("root_ca.crt", certPEM(root)),
		Root:        root,
		Fingerprint: x509util.Fingerprint(root),
		JWK:         JWKProvisioner{Name: "stepcatest-jwk", Password: password()},
		X5C:         X5CProvisioner{Name: "stepcatest-x5c", Password: password()},
	}
	c.JWK.PasswordFile = file("jwk_password", []byte(c.JWK.Password))
	c.X5C.PasswordFile = file("x5c_password", []byte(c.X5C.Password))
	c.X5C.CertFile = file("x5c.crt", certPEM(x5cLeaf))
	c.X5C.KeyFile = encryptedKey("x5c.key", x5cKey, c.X5C.Password)

	// JWK provisioner: same key as a PEM file and as the JWE the CA serves.
	jwkKey := mustKey(t)
	kid, err := jose.Thumbprint(&jose.JSONWebKey{Key: jwkKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	jwk := &jose.JSONWebKey{Key: jwkKey, KeyID: kid, Algorithm: jose.ES256, Use: "sig"}
	c.JWK.KeyFile = encryptedKey("jwk.key", jwkKey, c.JWK.Password)
	jwe := encryptJWK(t, jwk, c.JWK.Password)
	pub := jwk.Public()

	claims := &provisioner.Claims{
		MinTLSDur:     &provisioner.Duration{Duration: MinTLSDuration},
		MaxTLSDur:     &provisioner.Duration{Duration: MaxTLSDuration},
		DefaultTLSDur: &provisioner.Duration{Duration: DefaultTLSDuration},
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.URL = "https://" + ln.Addr().String()
	tlsOpts := config.DefaultTLSOptions // copy: Validate would otherwise point cfg.TLS at the global
	cfg := &config.Config{
		Root:             []string{c.RootFile},
		IntermediateCert: file("intermediate_ca.crt", certPEM(inter)),
		IntermediateKey:  file("intermediate_ca_key", pem.EncodeToMemory(interKeyPEM)), // unencrypted: no CA password
		Address:          ln.Addr().String(),
		DNSNames:         []string{"127.0.0.1", "localhost"},
		TLS:              &tlsOpts,
		AuthorityConfig: &config.AuthConfig{
			Backdate: &provisioner.Duration{Duration: Backdate},
			Provisioners: provisioner.List{
				&provisioner.JWK{Type: "JWK", Name: c.JWK.Name, Key: &pub, EncryptedKey: jwe, Claims: claims},
				&provisioner.X5C{Type: "X5C", Name: c.X5C.Name, Roots: certPEM(x5cRoot), Claims: claims},
			},
		},
	}
	// Keep a copy of the effective configuration for debugging.
	if b, err := json.MarshalIndent(cfg, "", "\t"); err == nil {
		file("ca.json", b)
	}

	auth, err := authority.New(cfg, authority.WithQuietInit())
	if err != nil {
		ln.Close()
		t.Fatalf("stepcatest: authority.New: %v", err)
	}
	srvCert, err := auth.GetTLSCertificate()
	if err != nil {
		ln.Close()
		_ = auth.Shutdown()
		t.Fatalf("stepcatest: GetTLSCertificate: %v", err)
	}
	tlsCfg := cfg.TLS.TLSConfig()
	tlsCfg.Certificates = []tls.Certificate{*srvCert}
	tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven // as ca.New: allow mTLS renewals
	tlsCfg.ClientCAs = x509.NewCertPool()
	tlsCfg.ClientCAs.AddCert(root)
	tlsCfg.ClientCAs.AddCert(inter)

	mux := chi.NewRouter()
	mux.Use(middleware.GetHead)
	api.Route(mux)
	mux.Route("/1.0", func(r chi.Router) { api.Route(r) })

	logs := &testLog{t: t}
	ctx := authority.NewContext(context.Background(), auth)
	ctx = db.NewContext(ctx, auth.GetDatabase())
	ctx = apilog.WithErrorLogger(ctx, func(_ http.ResponseWriter, r *http.Request, err error) {
		logs.Printf("step-ca: %s %s: %v", r.Method, r.URL.Path, err)
	})
	srv := &http.Server{
		Handler:           requestid.New("").Middleware(mux),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 15 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          log.New(logs, "step-ca: ", 0),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			logs.Printf("step-ca: serve: %v", err)
		}
	}()
	c.stop = func() {
		_ = srv.Close() // closes the listener and all connections
		<-served
		if err := auth.Shutdown(); err != nil {
			logs.Printf("step-ca: shutdown: %v", err)
		}
		logs.close()
	}
	t.Cleanup(c.Stop)
	return c
}

// Stop stops the server now (to test an unreachable CA): the port is closed,
// so later requests fail with "connection refused". Idempotent and safe to
// call concurrently; the t.Cleanup registered by Start still works.
func (c *CA) Stop() { c.stopOnce.Do(c.stop) }

// testLog writes log lines to t.Log until closed (the server may log from
// connection goroutines, and t.Log must not be called after the test ends).
type testLog struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.Printf("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (l *testLog) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Logf(format, args...)
	}
}

func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newCert creates a P-256 key and a certificate for it from tmpl, signed by
// parent/parentKey, or self-signed if parent is nil. Zero NotBefore/NotAfter
// default to now-1m / now+10y; CA templates get cert and CRL signing usage.
func newCert(t testing.TB, parent *x509.Certificate, parentKey crypto.Signer, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key := mustKey(t)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	}
	if tmpl.IsCA {
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// encryptJWK is jose.EncryptJWK with jwePBES2Count iterations: a compact JWE
// (PBES2-HS256+A128KW, A256GCM, cty jwk+json) as step writes in ca.json.
func encryptJWK(t testing.TB, jwk *jose.JSONWebKey, password string) string {
	t.Helper()
	b, err := json.Marshal(jwk)
	if err != nil {
		t.Fatal(err)
	}
	salt, err := randutil.Salt(jose.PBKDF2SaltSize)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := jose.NewEncrypter(jose.DefaultEncAlgorithm, jose.Recipient{
		Algorithm:  jose.PBES2_HS256_A128KW,
		Key:        []byte(password),
		PBES2Count: jwePBES2Count,
		PBES2Salt:  salt,
	}, new(jose.EncrypterOptions).WithContentType("jwk+json"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt(b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
