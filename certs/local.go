package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/softcas"
	"go.step.sm/crypto/pemutil"

	"github.com/sumgate/sumgate/internal/hostpattern"
)

// Files of the embedded CA, under <data_dir>/ca.
const (
	rootCertName  = "root.crt"
	rootKeyName   = "root.key"
	interCertName = "intermediate.crt"
	interKeyName  = "intermediate.key"
)

// Lifetimes of the embedded CA's certificates.
const (
	rootLifetime  = 10 * 365 * 24 * time.Hour
	interLifetime = 2 * 365 * 24 * time.Hour
)

// ErrNoCA reports that the local CA has not been created yet.
var ErrNoCA = errors.New("no CA yet: run 'sumgate ca init' (or 'sumgate run', which creates it)")

func caDir(dataDir string) string { return filepath.Join(dataDir, "ca") }

// openLocal loads the local CA (imported, or embedded under
// <data_dir>/ca, created there if create is set and it does not exist),
// and returns the softcas service over the signing certificate, the root
// and the chain served after leaves.
func openLocal(ctx context.Context, cfg Config, create bool) (apiv1.CertificateAuthorityService, *x509.Certificate, []*x509.Certificate, error) {
	var (
		chain  []*x509.Certificate // signing certificate first
		signer crypto.Signer
		err    error
	)
	if cfg.Cert != "" || cfg.Key != "" {
		chain, signer, err = importCA(cfg)
	} else {
		chain, signer, err = embeddedCA(cfg, create)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	root := chain[len(chain)-1]
	if !isSelfSigned(root) {
		return nil, nil, nil, fmt.Errorf("CA certificate chain in %s does not end in a self-signed root; append the root to the file", cfg.Cert)
	}
	svc, err := softcas.New(ctx, apiv1.Options{Type: apiv1.SoftCAS, CertificateChain: chain, Signer: signer})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("starting the local CA: %w", err)
	}
	return svc, root, chain, nil
}

// importCA reads an operator's root or intermediate (the certificate file
// may hold the chain up to the root) and its key.
func importCA(cfg Config) ([]*x509.Certificate, crypto.Signer, error) {
	if cfg.Cert == "" || cfg.Key == "" {
		return nil, nil, errors.New("ca.cert and ca.key must be given together")
	}
	chain, err := pemutil.ReadCertificateBundle(cfg.Cert)
	if err != nil {
		return nil, nil, fmt.Errorf("reading ca.cert: %w", err)
	}
	signer, err := readKey(cfg.Key, cfg.Password)
	if err != nil {
		return nil, nil, err
	}
	if !publicKeysEqual(chain[0].PublicKey, signer.Public()) {
		return nil, nil, fmt.Errorf("ca.key %s does not belong to the first certificate in ca.cert %s", cfg.Key, cfg.Cert)
	}
	if !chain[0].IsCA {
		return nil, nil, fmt.Errorf("ca.cert %s is not a CA certificate", cfg.Cert)
	}
	return chain, signer, nil
}

// embeddedCA loads, or creates, the root and intermediate under
// <data_dir>/ca. The intermediate is name-constrained to the intercept
// list (see nameConstraints), so its key, the one used every day, cannot
// mint for any other name; it is reissued whenever the constraints the
// list needs change.
func embeddedCA(cfg Config, create bool) ([]*x509.Certificate, crypto.Signer, error) {
	dir := caDir(cfg.DataDir)
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("creating the CA folder: %w", err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("%s: %w", dir, ErrNoCA)
	case err != nil:
		return nil, nil, fmt.Errorf("reading the CA folder: %w", err)
	case info.Mode().Perm()&0o077 != 0:
		return nil, nil, fmt.Errorf("CA folder %s has mode %v: it must not be accessible to group or others (chmod 700 %s)", dir, info.Mode().Perm(), dir)
	}

	rootCert, rootKey := filepath.Join(dir, rootCertName), filepath.Join(dir, rootKeyName)
	if _, err := os.Stat(rootCert); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, nil, fmt.Errorf("%s: %w", dir, ErrNoCA)
		}
		if err := createRoot(rootCert, rootKey); err != nil {
			return nil, nil, err
		}
	}
	root, err := pemutil.ReadCertificate(rootCert)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA root: %w", err)
	}

	want, err := constraintsFor(cfg.Intercept)
	if err != nil {
		return nil, nil, err
	}
	interCert, interKey := filepath.Join(dir, interCertName), filepath.Join(dir, interKeyName)
	inter, err := pemutil.ReadCertificate(interCert)
	if err == nil && want.heldBy(inter) && time.Until(inter.NotAfter) > 30*24*time.Hour {
		signer, err := readKey(interKey, cfg.Password)
		if err != nil {
			return nil, nil, err
		}
		return []*x509.Certificate{inter, root}, signer, nil
	}
	// Missing, near expiry, or constrained otherwise than the intercept
	// list now needs (a name or pattern added or removed, "*" set or
	// dropped): issue a new intermediate with the root key. Leaves already
	// minted keep the intermediate they were issued under, which the root
	// still signs, until they expire.
	rootSigner, err := readKey(rootKey, cfg.Password)
	if err != nil {
		return nil, nil, err
	}
	inter, signer, err := createIntermediate(root, rootSigner, want, interCert, interKey)
	if err != nil {
		return nil, nil, err
	}
	return []*x509.Certificate{inter, root}, signer, nil
}

// nameConstraints is what the local intermediate is constrained to, so
// that its key, the one used every day, cannot mint a certificate clients
// accept for a name sumgate does not intercept (threat 17).
//
//   - DNS: the fewest subtrees that permit every exact name and every
//     name a "*.d" pattern matches. A DNS constraint d permits d and every
//     name under it, so "*.d" needs d; that admits the apex d too, which
//     sumgate never mints unless it is listed, but a leading-dot form
//     (".d", subdomains only) is read differently by different verifiers.
//     Under "*" no DNS constraint can be set: the intermediate may sign
//     for any name, as sumgate then does. An empty list permits only
//     "invalid", the top-level domain that never resolves.
//   - IP addresses: every one is excluded, always. sumgate mints DNS
//     names only, and without an IP constraint a DNS-constrained
//     intermediate could still sign for any address.
type nameConstraints struct {
	dns []string // PermittedDNSDomains, sorted; nil under "*"
}

// excludedIPs returns the ExcludedIPRanges of every intermediate: all of
// IPv4 and all of IPv6.
func excludedIPs() []*net.IPNet {
	return []*net.IPNet{
		{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
	}
}

// constraintsFor returns the name constraints the intercept list needs.
func constraintsFor(intercept []string) (nameConstraints, error) {
	l, err := hostpattern.New(intercept)
	if err != nil {
		return nameConstraints{}, fmt.Errorf("intercept: %w", err)
	}
	if l.MatchesAll() {
		return nameConstraints{}, nil
	}
	dns := constraintDomains(append(l.Exact(), l.Domains()...))
	if len(dns) == 0 {
		// No constraint at all would permit every name: permit only the
		// reserved top-level domain that never resolves (RFC 6761).
		dns = []string{"invalid"}
	}
	return nameConstraints{dns: dns}, nil
}

// heldBy reports whether c carries exactly these constraints, and no
// other: an intermediate constrained more loosely than the list needs
// (after "*" was dropped, or a name removed) is reissued as surely as one
// that does not cover a new name.
func (n nameConstraints) heldBy(c *x509.Certificate) bool {
	var ips, want []string
	for _, r := range c.ExcludedIPRanges {
		ips = append(ips, r.String())
	}
	for _, r := range excludedIPs() {
		want = append(want, r.String())
	}
	return slices.Equal(slices.Sorted(slices.Values(c.PermittedDNSDomains)), n.dns) && slices.Equal(ips, want) &&
		len(c.ExcludedDNSDomains)+len(c.PermittedIPRanges)+len(c.PermittedEmailAddresses)+len(c.ExcludedEmailAddresses)+
			len(c.PermittedURIDomains)+len(c.ExcludedURIDomains) == 0
}

// constraintDomains returns the fewest DNS name constraints that permit
// every host: a constraint permits its subdomains, so a host under
// another listed host adds nothing (and every byte of the intermediate is
// sent in every handshake).
func constraintDomains(hosts []string) []string {
	set := map[string]bool{}
	for _, h := range hosts {
		set[strings.ToLower(h)] = true
	}
	var out []string
	for h := range set {
		covered := false
		for p := h; !covered; {
			i := strings.IndexByte(p, '.')
			if i < 0 {
				break
			}
			p = p[i+1:]
			covered = set[p]
		}
		if !covered {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

func createRoot(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := caTemplate("sumgate root CA", rootLifetime)
	tmpl.MaxPathLen = 1
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("creating the CA root: %w", err)
	}
	if err := writeKey(keyFile, key); err != nil {
		return err
	}
	return writePEM(certFile, der, 0o644)
}

func createIntermediate(root *x509.Certificate, rootKey crypto.Signer, nc nameConstraints, certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := caTemplate("sumgate intermediate CA", interLifetime)
	tmpl.MaxPathLenZero = true
	tmpl.PermittedDNSDomainsCritical = true // marks the whole name constraints extension critical
	tmpl.PermittedDNSDomains = nc.dns
	tmpl.ExcludedIPRanges = excludedIPs()
	if tmpl.NotAfter.After(root.NotAfter) {
		tmpl.NotAfter = root.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CA intermediate: %w", err)
	}
	if err := writeKey(keyFile, key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(certFile, der, 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func caTemplate(cn string, lifetime time.Duration) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"sumgate"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// readKey reads a private key file, refusing one that group or others
// may read or write. An encrypted key needs password; there is never a
// prompt.
func readKey(file string, password []byte) (crypto.Signer, error) {
	info, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("CA key %s has mode %v: refusing a key file that group or others can access (chmod 600 %s)", file, info.Mode().Perm(), file)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}
	if block, _ := pem.Decode(data); block != nil && len(password) == 0 &&
		(block.Type == "ENCRYPTED PRIVATE KEY" || x509.IsEncryptedPEMBlock(block)) { //nolint:staticcheck // detecting legacy encryption is the point
		return nil, fmt.Errorf("CA key %s is encrypted: give its password in ca.password_file or $SUMGATE_CA_PASSWORD", file)
	}
	opts := []pemutil.Options{pemutil.WithFilename(file)}
	if len(password) > 0 {
		opts = append(opts, pemutil.WithPassword(password))
	}
	key, err := pemutil.ParseKey(data, opts...)
	if err != nil {
		return nil, fmt.Errorf("reading CA key %s: %w", file, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key %s is not a private key", file)
	}
	return signer, nil
}

func writeKey(file string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEMBlock(file, &pem.Block{Type: "PRIVATE KEY", Bytes: der}, 0o600)
}

func writePEM(file string, der []byte, mode os.FileMode) error {
	return writePEMBlock(file, &pem.Block{Type: "CERTIFICATE", Bytes: der}, mode)
}

// writePEMBlock writes b to file atomically with mode.
func writePEMBlock(file string, b *pem.Block, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := pem.Encode(tmp, b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, err1 := x509.MarshalPKIXPublicKey(a)
	kb, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ka, kb)
}
