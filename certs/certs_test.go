package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"
)

var testHosts = []string{"sum.golang.org", "goproxy.io", "github.com"}

// newCA starts a CA for cfg (a local CA in a fresh data directory if
// cfg.DataDir is empty) and stops it in t.Cleanup.
func newCA(t testing.TB, cfg Config) *CA {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Intercept == nil {
		cfg.Intercept = testHosts
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// serve runs a TLS server on loopback presenting c's leaves and returns
// its address.
func serve(t testing.TB, c *CA) string {
	t.Helper()
	return serveTLS(t, c.TLSConfig())
}

// serveTLS runs a TLS server on loopback that completes handshakes and
// hangs up, and returns its address.
func serveTLS(t testing.TB, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				conn.(*tls.Conn).Handshake()
				conn.Close()
			}()
		}
	}()
	return l.Addr().String()
}

// handshake connects to addr as host, trusting roots, and returns the
// chain the server sent.
func handshake(addr, host string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{ServerName: host, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates, nil
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// checkLeaf checks a served chain: full chain, SAN, usages, ECDSA P-256,
// lifetime, and that it verifies to root for host.
func checkLeaf(t testing.TB, chain []*x509.Certificate, host string, root *x509.Certificate, lifetime time.Duration) {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("server sent %d certificates, want the leaf and its intermediate", len(chain))
	}
	leaf := chain[0]
	inter := pool(chain[1:]...)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool(root), Intermediates: inter}); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != host {
		t.Errorf("SAN %v, want [%s]", leaf.DNSNames, host)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Errorf("key usage %v lacks digitalSignature", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) == 0 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("extended key usage %v, want serverAuth", leaf.ExtKeyUsage)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("leaf key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < lifetime || got > lifetime+time.Minute+2*time.Second {
		t.Errorf("lifetime %v, want %v (plus backdating)", got, lifetime)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
}

func TestLocalLeafChainVerifies(t *testing.T) {
	c := newCA(t, Config{})
	addr := serve(t, c)
	for _, host := range testHosts {
		chain, err := handshake(addr, host, pool(c.Root()))
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		checkLeaf(t, chain, host, c.Root(), DefaultLeafLifetime)
	}
	if c.Issued() != int64(len(testHosts)) {
		t.Errorf("issued %d leaves, want %d", c.Issued(), len(testHosts))
	}
}

// TestMintingOnlyForInterceptedNames holds threat 10: random SNI names
// mint nothing.
func TestMintingOnlyForInterceptedNames(t *testing.T) {
	c := newCA(t, Config{})
	addr := serve(t, c)
	for i := range 50 {
		host := fmt.Sprintf("random-%d.example", i)
		if _, err := handshake(addr, host, pool(c.Root())); err == nil {
			t.Fatalf("handshake for %s succeeded", host)
		}
	}
	for _, host := range []string{"", "localhost", "127.0.0.1", "sum.golang.org.evil.example", "evil.sum.golang.org"} {
		if _, err := handshake(addr, host, pool(c.Root())); err == nil {
			t.Errorf("handshake for %q succeeded", host)
		}
	}
	if c.Issued() != 0 {
		t.Errorf("minted %d leaves for names not on the intercept list", c.Issued())
	}
	// The issuer refuses too, whoever calls it.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"bank.example"}}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	if _, err := (issuer{c}).Issue(context.Background(), csr); err == nil {
		t.Error("the issuer minted for a name not on the intercept list")
	}
}

func TestConcurrentHandshakesMintOnce(t *testing.T) {
	c := newCA(t, Config{})
	addr := serve(t, c)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			if _, err := handshake(addr, "sum.golang.org", pool(c.Root())); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c.Issued() != 1 {
		t.Errorf("100 concurrent handshakes minted %d leaves, want 1", c.Issued())
	}
}

// TestTwoCAsInOneProcessServeOnlyTheirOwnLeaves: certmagic coordinates
// handshakes waiting for a leaf by name across every CA in the process,
// and can hand one CA's handshake the other's leaf; the CA never serves
// a leaf that does not chain to its own root.
func TestTwoCAsInOneProcessServeOnlyTheirOwnLeaves(t *testing.T) {
	for round := range 5 {
		cas := []*CA{newCA(t, Config{}), newCA(t, Config{})}
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			c := cas[i%2]
			addr := serve(t, c)
			wg.Go(func() {
				if _, err := handshake(addr, "github.com", pool(c.Root())); err != nil {
					errs <- fmt.Errorf("round %d: %w", round, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

func TestLeavesAreRenewed(t *testing.T) {
	// certmagic tracks issuance in flight per name in package-level state,
	// so this test's name is its own.
	const lifetime, host = 12 * time.Second, "renew.example"
	c := newCA(t, Config{LeafLifetime: lifetime, Intercept: []string{host}})
	addr := serve(t, c)
	first, err := handshake(addr, host, pool(c.Root()))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		chain, err := handshake(addr, host, pool(c.Root()))
		if err != nil {
			t.Fatalf("handshake during renewal: %v", err)
		}
		if chain[0].SerialNumber.Cmp(first[0].SerialNumber) != 0 {
			if time.Since(first[0].NotBefore) < lifetime/3 {
				t.Errorf("renewed after %v, long before the renewal window", time.Since(first[0].NotBefore))
			}
			checkLeaf(t, chain, host, c.Root(), lifetime)
			return
		}
	}
	t.Fatalf("the leaf was not renewed (issued %d)", c.Issued())
}

// TestLeavesSurviveRestart: leaves are kept in the data directory, so a
// restart mints nothing.
func TestLeavesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	first := newCA(t, Config{DataDir: dir})
	if _, err := handshake(serve(t, first), "goproxy.io", pool(first.Root())); err != nil {
		t.Fatal(err)
	}
	first.Stop()
	second := newCA(t, Config{DataDir: dir})
	chain, err := handshake(serve(t, second), "goproxy.io", pool(second.Root()))
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, chain, "goproxy.io", second.Root(), DefaultLeafLifetime)
	if second.Issued() != 0 {
		t.Errorf("restart minted %d leaves, want 0", second.Issued())
	}
}

// TestKeyFilePermissions holds threat 17: keys are 0600 in a 0700 folder,
// and a looser key or folder stops sumgate.
func TestKeyFilePermissions(t *testing.T) {
	dir := t.TempDir()
	newCA(t, Config{DataDir: dir}).Stop()
	ca := filepath.Join(dir, "ca")
	for name, want := range map[string]os.FileMode{"": 0o700, rootKeyName: 0o600, interKeyName: 0o600} {
		info, err := os.Stat(filepath.Join(ca, name))
		if err != nil || info.Mode().Perm() != want {
			t.Errorf("%s/%s: mode %v, want %v", ca, name, info.Mode().Perm(), want)
		}
	}
	tests := []struct {
		file string
		mode os.FileMode
		want string
	}{
		{interKeyName, 0o644, "refusing a key file"},
		{interKeyName, 0o640, "refusing a key file"},
		{interKeyName, 0o602, "refusing a key file"},
		{"", 0o755, "must not be accessible"},
		{"", 0o750, "must not be accessible"},
	}
	for _, tt := range tests {
		path := filepath.Join(ca, tt.file)
		info, _ := os.Stat(path)
		os.Chmod(path, tt.mode)
		_, err := New(context.Background(), Config{DataDir: dir, Intercept: testHosts, Logger: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s at %v: err = %v, want %q", path, tt.mode, err, tt.want)
		}
		os.Chmod(path, info.Mode().Perm())
	}
}

// TestIntermediateIsNameConstrained: the intermediate key, which signs
// every day, cannot mint a certificate clients accept for another name.
func TestIntermediateIsNameConstrained(t *testing.T) {
	dir := t.TempDir()
	c := newCA(t, Config{DataDir: dir})
	if err := forge(t, dir, c.Root(), "github.com"); err != nil {
		t.Fatalf("an intercepted name does not verify: %v", err)
	}
	if err := forge(t, dir, c.Root(), "bank.example"); err == nil {
		t.Fatal("a stolen intermediate key can mint for any name")
	}

	// Growing the intercept list reissues the intermediate.
	c.Stop()
	grown := newCA(t, Config{DataDir: dir, Intercept: append([]string{"proxy.example"}, testHosts...)})
	chain, err := handshake(serve(t, grown), "proxy.example", pool(grown.Root()))
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, chain, "proxy.example", c.Root(), DefaultLeafLifetime)
}

func TestConstraintDomains(t *testing.T) {
	got := constraintDomains([]string{"github.com", "codeload.github.com", "Sum.golang.org", "sum.golang.org", "a.b.example", "b.example", "xgithub.com"})
	want := []string{"b.example", "github.com", "sum.golang.org", "xgithub.com"}
	if !slices.Equal(got, want) {
		t.Errorf("constraintDomains = %v, want %v", got, want)
	}
}

// writeTestCA writes a root and, if withIntermediate, an intermediate
// signed by it, with the signing key encrypted under password (none if
// empty). It returns the certificate file (signing certificate first, then
// the root), the key file, and the root.
func writeTestCA(t testing.TB, withIntermediate bool, password string, legacy bool) (certFile, keyFile string, root *x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := caTemplate("Example Corp Root", time.Hour*24*365)
	der, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = x509.ParseCertificate(der)
	signing, signingKey := root, rootKey
	if withIntermediate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := caTemplate("Example Corp Issuing CA", time.Hour*24*30)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
		if err != nil {
			t.Fatal(err)
		}
		signing, _ = x509.ParseCertificate(der)
		signingKey = key
	}
	certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	var pemData []byte
	for _, c := range []*x509.Certificate{signing, root} {
		if c == root && signing == root {
			continue
		}
		pemData = append(pemData, PEM(c)...)
	}
	if signing != root {
		pemData = append(pemData, PEM(root)...)
	} else {
		pemData = PEM(root)
	}
	os.WriteFile(certFile, pemData, 0o644)
	opts := []pemutil.Options{pemutil.WithPKCS8(!legacy)}
	if password != "" {
		opts = append(opts, pemutil.WithPassword([]byte(password)))
	}
	block, err := pemutil.Serialize(signingKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePEMBlock(keyFile, block, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, root
}

func TestImportedCA(t *testing.T) {
	tests := []struct {
		name             string
		withIntermediate bool
		keyPassword      string
		legacy           bool // RFC 1423 PEM encryption, cheap to derive, instead of PKCS#8
		givenPassword    string
		wantErr          string
	}{
		{name: "root, plain key", withIntermediate: false},
		{name: "intermediate, plain key", withIntermediate: true},
		{name: "intermediate, encrypted key", withIntermediate: true, keyPassword: "s3cret", givenPassword: "s3cret"},
		{name: "encrypted key, no password", withIntermediate: true, keyPassword: "s3cret", legacy: true, wantErr: "is encrypted: give its password"},
		{name: "encrypted key, wrong password", withIntermediate: true, keyPassword: "s3cret", legacy: true, givenPassword: "wrong", wantErr: "reading CA key"},
		{name: "legacy encrypted key", withIntermediate: true, keyPassword: "s3cret", legacy: true, givenPassword: "s3cret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile, root := writeTestCA(t, tt.withIntermediate, tt.keyPassword, tt.legacy)
			cfg := Config{DataDir: t.TempDir(), Intercept: testHosts, Cert: certFile, Key: keyFile,
				Password: []byte(tt.givenPassword), Logger: slog.New(slog.DiscardHandler)}
			c, err := New(context.Background(), cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Stop()
			if Fingerprint(c.Root()) != Fingerprint(root) {
				t.Fatal("the imported root is not the CA's root")
			}
			chain, err := handshake(serve(t, c), "github.com", pool(root))
			if err != nil {
				t.Fatal(err)
			}
			if tt.withIntermediate {
				checkLeaf(t, chain, "github.com", root, DefaultLeafLifetime)
			} else if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: "github.com", Roots: pool(root)}); err != nil || len(chain) != 1 {
				t.Fatalf("leaf signed by the imported root: %d certificates, %v", len(chain), err)
			}
			if got, err := LoadRoot(context.Background(), cfg); err != nil || Fingerprint(got) != Fingerprint(root) {
				t.Errorf("LoadRoot = %v, %v", got, err)
			}
		})
	}
}

func TestLoadRootWithoutCA(t *testing.T) {
	_, err := LoadRoot(context.Background(), Config{DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "sumgate ca init") {
		t.Fatalf("err = %v, want advice to run 'sumgate ca init'", err)
	}
}

func TestBundle(t *testing.T) {
	c := newCA(t, Config{})
	system := filepath.Join(t.TempDir(), "system.pem")
	_, _, other := writeTestCA(t, false, "", false)
	os.WriteFile(system, PEM(other), 0o644)
	b, err := Bundle(c.Root(), system)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pemutil.ParseCertificateBundle(b)
	if err != nil || len(certs) != 2 || Fingerprint(certs[0]) != Fingerprint(other) || Fingerprint(certs[1]) != Fingerprint(c.Root()) {
		t.Fatalf("bundle holds %d certificates (%v), want the system root then the enterprise root", len(certs), err)
	}
}

// premintDone waits for c's pre-minting to end.
func premintDone(t testing.TB, c *CA) {
	t.Helper()
	select {
	case <-c.premintDone:
	case <-time.After(time.Minute):
		t.Fatal("pre-minting did not end")
	}
}

// TestPremint: with Premint, every name listed exactly and not spliced
// has its leaf before any handshake, and only those: not a pattern's
// names, not a spliced name. Handshakes then mint nothing.
func TestPremint(t *testing.T) {
	names := []string{"premint-a.example", "premint-b.example"}
	c := newCA(t, Config{Premint: true, Intercept: append([]string{"*.pattern.example", "spliced.example"}, names...),
		Splice: []string{"spliced.example"}})
	premintDone(t, c)
	if c.Issued() != int64(len(names)) {
		t.Fatalf("pre-minted %d leaves, want %d", c.Issued(), len(names))
	}
	for _, name := range []string{"spliced.example", "a.pattern.example"} {
		if len(c.cache.AllMatchingCertificates(name)) != 0 {
			t.Errorf("pre-minted a leaf for %s", name)
		}
	}
	addr := serve(t, c)
	for _, name := range names {
		chain, err := handshake(addr, name, pool(c.Root()))
		if err != nil {
			t.Fatal(err)
		}
		checkLeaf(t, chain, name, c.Root(), DefaultLeafLifetime)
	}
	if c.Issued() != int64(len(names)) {
		t.Errorf("handshakes after pre-minting minted %d leaves", c.Issued()-int64(len(names)))
	}
}

// TestPremintSharesIssuanceWithHandshakes: handshakes arriving while
// their names are being pre-minted wait for that issuance.
func TestPremintSharesIssuanceWithHandshakes(t *testing.T) {
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("premint-%d.shared.example", i))
	}
	c := newCA(t, Config{Premint: true, Intercept: names})
	addr := serve(t, c)
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(names))
	for range 4 {
		for _, name := range slices.Backward(names) {
			wg.Go(func() {
				if _, err := handshake(addr, name, pool(c.Root())); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	premintDone(t, c)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c.Issued() != int64(len(names)) {
		t.Errorf("pre-minting and %d handshakes minted %d leaves for %d names", 4*len(names), c.Issued(), len(names))
	}
}

// TestPremintAfterRestartReusesLeaves: pre-minting after a restart loads
// the leaves in storage and mints nothing; handshakes get the same leaf.
func TestPremintAfterRestartReusesLeaves(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Premint: true, Intercept: []string{"premint-restart.example"}}
	first := newCA(t, cfg)
	premintDone(t, first)
	before, err := handshake(serve(t, first), "premint-restart.example", pool(first.Root()))
	if err != nil {
		t.Fatal(err)
	}
	first.Stop()
	second := newCA(t, cfg)
	premintDone(t, second)
	if second.Issued() != 0 {
		t.Errorf("pre-minting after a restart minted %d leaves, want 0", second.Issued())
	}
	after, err := handshake(serve(t, second), "premint-restart.example", pool(second.Root()))
	if err != nil {
		t.Fatal(err)
	}
	if after[0].SerialNumber.Cmp(before[0].SerialNumber) != 0 {
		t.Errorf("after a restart the leaf is serial %x, want the stored %x", after[0].SerialNumber, before[0].SerialNumber)
	}
}

// TestStopCancelsPremint: Stop ends pre-minting without waiting for the
// rest of the list.
func TestStopCancelsPremint(t *testing.T) {
	var names []string
	for i := range 5000 {
		names = append(names, fmt.Sprintf("premint-%d.stop.example", i))
	}
	c := newCA(t, Config{Premint: true, Intercept: names})
	time.Sleep(20 * time.Millisecond)
	c.Stop()
	premintDone(t, c)
	if c.Issued() == int64(len(names)) {
		t.Errorf("Stop let pre-minting finish all %d names", len(names))
	}
}
