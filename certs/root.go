package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.step.sm/crypto/pemutil"
)

// Init makes the configured CA ready and returns its root: it creates the
// embedded local CA if there is none, checks an imported one (key
// permissions, password, that the key matches), or checks that the step-ca
// answers with the configured root.
func Init(ctx context.Context, cfg Config) (*x509.Certificate, error) {
	switch cfg.Backend {
	case "", BackendLocal:
		_, root, _, err := openLocal(ctx, cfg, true)
		return root, err
	case BackendStep:
		_, root, err := openStep(ctx, cfg)
		return root, err
	}
	return nil, fmt.Errorf("unknown CA backend %q", cfg.Backend)
}

// LoadRoot returns the root certificate clients must trust, without
// creating anything or reading any private key. For the local CA that is
// not yet created, the error wraps [ErrNoCA].
func LoadRoot(ctx context.Context, cfg Config) (*x509.Certificate, error) {
	switch cfg.Backend {
	case "", BackendLocal:
		if cfg.Cert != "" {
			chain, err := pemutil.ReadCertificateBundle(cfg.Cert)
			if err != nil {
				return nil, fmt.Errorf("reading ca.cert: %w", err)
			}
			if root := chain[len(chain)-1]; isSelfSigned(root) {
				return root, nil
			}
			return nil, fmt.Errorf("ca.cert %s does not end in a self-signed root; append the root to the file", cfg.Cert)
		}
		file := filepath.Join(caDir(cfg.DataDir), rootCertName)
		root, err := pemutil.ReadCertificate(file)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", caDir(cfg.DataDir), ErrNoCA)
		}
		if err != nil {
			return nil, fmt.Errorf("reading the CA root %s: %w", file, err)
		}
		return root, nil
	case BackendStep:
		return loadStepRoot(ctx, cfg)
	}
	return nil, fmt.Errorf("unknown CA backend %q", cfg.Backend)
}

// PEM encodes cert.
func PEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// systemBundles are where Linux distributions keep the system roots, as
// crypto/x509 looks for them.
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Arch
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine
}

// Bundle returns the system roots followed by root, in PEM: one file a
// client can use as SSL_CERT_FILE and still reach hosts sumgate does not
// intercept. systemFile overrides where the system roots are read from;
// "" searches the usual places.
func Bundle(root *x509.Certificate, systemFile string) ([]byte, error) {
	files := systemBundles
	if systemFile != "" {
		files = []string{systemFile}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var b bytes.Buffer
		b.Write(bytes.TrimRight(data, "\n"))
		b.WriteString("\n# sumgate enterprise root, SHA-256 " + Fingerprint(root) + "\n")
		b.Write(PEM(root))
		return b.Bytes(), nil
	}
	return nil, fmt.Errorf("no system root bundle found in %v", files)
}
