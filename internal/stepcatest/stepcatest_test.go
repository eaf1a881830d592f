//go:build step

package stepcatest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/stepcas"

	"github.com/sumgate/sumgate/internal/stepcatest"
)

func issuers(c *stepcatest.CA) map[string]*apiv1.CertificateIssuer {
	return map[string]*apiv1.CertificateIssuer{
		"jwk-keyfile": {Type: "jwk", Provisioner: c.JWK.Name, Key: c.JWK.KeyFile, Password: c.JWK.Password},
		"jwk-fetched": {Type: "jwk", Provisioner: c.JWK.Name, Password: c.JWK.Password}, // encrypted key fetched from the CA
		"x5c":         {Type: "x5c", Provisioner: c.X5C.Name, Certificate: c.X5C.CertFile, Key: c.X5C.KeyFile, Password: c.X5C.Password},
	}
}

func newStepCAS(t testing.TB, c *stepcatest.CA, iss *apiv1.CertificateIssuer) *stepcas.StepCAS {
	t.Helper()
	s, err := stepcas.New(context.Background(), apiv1.Options{
		Type:                            apiv1.StepCAS,
		CertificateAuthority:            c.URL,
		CertificateAuthorityFingerprint: c.Fingerprint,
		CertificateIssuer:               iss,
	})
	if err != nil {
		t.Fatalf("stepcas.New: %v", err)
	}
	return s
}

func request(t testing.TB, lifetime time.Duration, names ...string) *apiv1.CreateCertificateRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return &apiv1.CreateCertificateRequest{Template: &x509.Certificate{DNSNames: names}, CSR: csr, Lifetime: lifetime}
}

// issue gets a leaf for names from s and checks names, lifetime and chain.
func issue(t testing.TB, c *stepcatest.CA, s *stepcas.StepCAS, lifetime time.Duration, names ...string) *x509.Certificate {
	t.Helper()
	resp, err := s.CreateCertificate(request(t, lifetime, names...))
	if err != nil {
		t.Fatalf("CreateCertificate(%v): %v", lifetime, err)
	}
	leaf := resp.Certificate
	if !slices.Equal(leaf.DNSNames, names) {
		t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, names)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < lifetime-time.Second || d > lifetime+time.Second {
		t.Errorf("lifetime = %v, want %v", d, lifetime)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(c.Root)
	for _, ic := range resp.CertificateChain {
		inters.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName: names[0], Roots: roots, Intermediates: inters, CurrentTime: leaf.NotBefore,
	}); err != nil {
		t.Errorf("Verify: %v", err)
	}
	return leaf
}

func TestStepCAS(t *testing.T) {
	t.Parallel()
	c := stepcatest.Start(t)
	for name, iss := range issuers(c) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newStepCAS(t, c, iss)
			issue(t, c, s, time.Hour, "proxy.example")
			issue(t, c, s, 2*time.Second, "proxy.example", "sum.golang.org")
		})
	}
}

func TestCredentialsAndClaims(t *testing.T) {
	t.Parallel()
	c := stepcatest.Start(t)
	for file, want := range map[string]string{c.JWK.PasswordFile: c.JWK.Password, c.X5C.PasswordFile: c.X5C.Password} {
		if b, err := os.ReadFile(file); err != nil || string(b) != want || want == "" {
			t.Errorf("%s = %q, %v; want %q", file, b, err, want)
		}
	}
	if b, err := os.ReadFile(c.RootFile); err != nil || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
		t.Errorf("RootFile: %q, %v", b, err)
	}
	// The key files are encrypted: without the password stepcas fails (it
	// does not prompt when Key is a file and pemutil.PromptPassword is unset).
	for _, iss := range []*apiv1.CertificateIssuer{
		{Type: "jwk", Provisioner: c.JWK.Name, Key: c.JWK.KeyFile},
		{Type: "x5c", Provisioner: c.X5C.Name, Certificate: c.X5C.CertFile, Key: c.X5C.KeyFile},
	} {
		if _, err := stepcas.New(context.Background(), apiv1.Options{
			Type: apiv1.StepCAS, CertificateAuthority: c.URL, CertificateAuthorityFingerprint: c.Fingerprint, CertificateIssuer: iss,
		}); err == nil || !strings.Contains(err.Error(), "password") {
			t.Errorf("%s without password: err = %v, want password error", iss.Type, err)
		}
	}
	// Lifetimes above the maximum are rejected.
	s := newStepCAS(t, c, issuers(c)["jwk-keyfile"])
	if _, err := s.CreateCertificate(request(t, stepcatest.MaxTLSDuration+time.Hour, "proxy.example")); err == nil {
		t.Error("lifetime above MaxTLSDuration: no error")
	}
	// Lifetime 0 gets the default.
	resp, err := s.CreateCertificate(request(t, 0, "proxy.example"))
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.Certificate.NotAfter.Sub(resp.Certificate.NotBefore); d != stepcatest.DefaultTLSDuration {
		t.Errorf("default lifetime = %v", d)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	c := stepcatest.Start(t)
	s := newStepCAS(t, c, issuers(c)["jwk-keyfile"])
	issue(t, c, s, time.Hour, "proxy.example")
	c.Stop()
	c.Stop()
	_, err := s.CreateCertificate(request(t, time.Hour, "proxy.example"))
	// "connection refused", or "broken pipe"/"EOF" if the client reuses a
	// keep-alive connection that Stop closed.
	if err == nil || !strings.Contains(err.Error(), "client POST "+c.URL+"/sign failed") {
		t.Fatalf("after Stop: err = %v, want a failed POST to %s", err, c.URL)
	}
	t.Log(err)
}

func TestTwoCAs(t *testing.T) {
	t.Parallel()
	a, b := stepcatest.Start(t), stepcatest.Start(t)
	if a.URL == b.URL || a.Fingerprint == b.Fingerprint {
		t.Fatalf("CAs share URL or root: %s %s", a.URL, b.URL)
	}
	issue(t, a, newStepCAS(t, a, issuers(a)["x5c"]), time.Hour, "proxy.example")
	issue(t, b, newStepCAS(t, b, issuers(b)["x5c"]), time.Hour, "proxy.example")
	// A stepcas client pinned to a's fingerprint refuses b.
	if _, err := stepcas.New(context.Background(), apiv1.Options{
		Type: apiv1.StepCAS, CertificateAuthority: b.URL, CertificateAuthorityFingerprint: a.Fingerprint,
		CertificateIssuer: issuers(b)["jwk-fetched"],
	}); err == nil {
		t.Error("stepcas.New with the wrong fingerprint succeeded")
	}
}

func BenchmarkStart(b *testing.B) {
	for b.Loop() {
		stepcatest.Start(b).Stop()
	}
}
