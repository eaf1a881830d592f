package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"
)

// TestMintingUnderPatterns holds threat 10 for patterns: "*.example.com"
// mints for names under example.com only, "*" for DNS names only (never
// an IP literal or a malformed name), and splice wins over both, in
// certmagic's decision and in the issuer.
func TestMintingUnderPatterns(t *testing.T) {
	tests := []struct {
		name              string
		intercept, splice []string
		mint, refuse      []string
	}{
		{name: "*.example.com", intercept: []string{"*.example.com"},
			mint:   []string{"a.example.com", "a.b.example.com"},
			refuse: []string{"example.com", "badexample.com", "example.com.evil.net", "127.0.0.1"}},
		{name: "*", intercept: []string{"*"},
			mint:   []string{"random-1.anything.example", "mirror.unlisted.example"},
			refuse: []string{"127.0.0.1", "1.2.3", ""}},
		{name: "* with splice", intercept: []string{"*"}, splice: []string{"pinned.example", "*.bank.example"},
			mint:   []string{"other.example", "bank.example"},
			refuse: []string{"pinned.example", "app.bank.example"}},
		{name: "exact name spliced", intercept: []string{"github.com", "goproxy.io"}, splice: []string{"github.com"},
			mint:   []string{"goproxy.io"},
			refuse: []string{"github.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCA(t, Config{Intercept: tt.intercept, Splice: tt.splice})
			addr := serve(t, c)
			for _, host := range tt.mint {
				chain, err := handshake(addr, host, pool(c.Root()))
				if err != nil {
					t.Fatalf("handshake for %s: %v", host, err)
				}
				checkLeaf(t, chain, host, c.Root(), DefaultLeafLifetime)
			}
			minted := c.Issued()
			for _, host := range tt.refuse {
				if _, err := handshake(addr, host, pool(c.Root())); err == nil {
					t.Errorf("handshake for %q succeeded", host)
				}
				if host == "" || net.ParseIP(host) != nil {
					continue // not a DNS name a CSR could carry
				}
				key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{host}}, key)
				csr, _ := x509.ParseCertificateRequest(der)
				if _, err := (issuer{c}).Issue(context.Background(), csr); err == nil {
					t.Errorf("the issuer minted for %q", host)
				}
			}
			if c.Issued() != minted {
				t.Errorf("minted %d leaves for names the lists refuse", c.Issued()-minted)
			}
		})
	}
}

// forge signs a leaf with the intermediate stored under dir, as a thief
// of its key would, for the DNS name or IP address host, and verifies it
// as a client trusting root would.
func forge(t testing.TB, dir string, root *x509.Certificate, host string) error {
	t.Helper()
	signer, err := readKey(filepath.Join(dir, "ca", interKeyName), nil)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := pemutil.ReadCertificate(filepath.Join(dir, "ca", interCertName))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, key.Public(), signer)
	if err != nil {
		return err
	}
	leaf, _ := x509.ParseCertificate(der)
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool(root), Intermediates: pool(inter)})
	return err
}

// TestIntermediateConstraintsFollowTheList holds threat 17 as the
// intercept list changes: a stolen intermediate key can sign only for
// what the current list intercepts; "*.example.com" permits the
// example.com subtree, "*" lifts the DNS constraint, and dropping "*"
// (or a name) reissues a constrained intermediate. No list lets it sign
// for an IP address.
func TestIntermediateConstraintsFollowTheList(t *testing.T) {
	dir := t.TempDir()
	var root *x509.Certificate
	for _, step := range []struct {
		intercept      []string
		valid, invalid []string
	}{
		{[]string{"github.com"}, []string{"github.com", "api.github.com"}, []string{"bank.example", "10.0.0.1"}},
		{[]string{"github.com", "*.example.com"}, []string{"github.com", "a.b.example.com"}, []string{"bank.test", "10.0.0.1", "::1"}},
		{[]string{"*"}, []string{"bank.test", "anything.example"}, []string{"10.0.0.1", "192.0.2.7", "::1"}},
		{[]string{"github.com"}, []string{"github.com"}, []string{"bank.test", "a.example.com", "10.0.0.1"}}, // "*" dropped: constrained again
		{[]string{}, nil, []string{"github.com", "bank.test", "10.0.0.1"}},                                   // nothing intercepted: nothing signable
	} {
		c := newCA(t, Config{DataDir: dir, Intercept: step.intercept})
		c.Stop()
		if root == nil {
			root = c.Root()
		}
		for _, host := range step.valid {
			if err := forge(t, dir, root, host); err != nil {
				t.Errorf("intercept %q: a leaf for %s does not verify: %v", step.intercept, host, err)
			}
		}
		for _, host := range step.invalid {
			if err := forge(t, dir, root, host); err == nil {
				t.Errorf("intercept %q: a stolen intermediate key can sign for %s", step.intercept, host)
			}
		}
	}
}
