//go:build step

// The step backend: leaves signed by a step-ca through smallstep's
// cas/stepcas. It is compiled in only with the build tag "step": stepcas
// lives in smallstep's client package, which is also the step-ca server
// (authority, ACME, SCEP, database drivers, cloud SDKs) and would add
// about 270 packages to every build. Without the tag, nostep.go takes its
// place.

package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/stepcas"
	"go.step.sm/crypto/pemutil"
)

// openStep connects to the step-ca: it resolves the root (from the root
// file, or fetched and checked against the fingerprint), builds the
// cas/stepcas service, and checks that the CA answers. The returned root
// is set, from the root file, even when the CA does not answer.
func openStep(ctx context.Context, cfg Config) (apiv1.CertificateAuthorityService, *x509.Certificate, error) {
	s := cfg.Step
	var root *x509.Certificate
	fp := strings.ToLower(strings.ReplaceAll(s.Fingerprint, ":", ""))
	if s.Root != "" {
		var err error
		if root, err = pemutil.ReadCertificate(s.Root); err != nil {
			return nil, nil, fmt.Errorf("reading ca.step.root: %w", err)
		}
		if fp != "" && fp != Fingerprint(root) {
			return nil, nil, fmt.Errorf("ca.step.root %s has fingerprint %s, not the configured %s", s.Root, Fingerprint(root), fp)
		}
		fp = Fingerprint(root)
	}
	switch {
	case s.URL == "":
		return nil, root, errors.New("ca.step.url is required for the step backend")
	case fp == "":
		return nil, root, errors.New("ca.step.root or ca.step.fingerprint is required for the step backend")
	case s.Provisioner == "":
		return nil, root, errors.New("ca.step.provisioner is required for the step backend")
	case len(s.Password) == 0:
		// stepcas would otherwise prompt on a terminal.
		return nil, root, errors.New("the step provisioner password is missing: set ca.step.password_file or $SUMGATE_STEP_PASSWORD")
	case s.Type != "jwk" && s.Type != "x5c":
		return nil, root, fmt.Errorf("ca.step.type %q: want jwk or x5c", s.Type)
	case s.Type == "x5c" && (s.Cert == "" || s.Key == ""):
		return nil, root, errors.New("the x5c provisioner needs ca.step.cert and ca.step.key")
	}
	svc, err := stepcas.New(ctx, apiv1.Options{
		Type:                            apiv1.StepCAS,
		CertificateAuthority:            s.URL,
		CertificateAuthorityFingerprint: fp,
		CertificateIssuer: &apiv1.CertificateIssuer{
			Type:        s.Type,
			Provisioner: s.Provisioner,
			Certificate: s.Cert,
			Key:         s.Key,
			Password:    string(s.Password),
		},
	})
	if err != nil {
		return nil, root, fmt.Errorf("connecting to step-ca at %s: %w", s.URL, err)
	}
	// Fetching the root by fingerprint proves the CA answers and is the
	// one configured.
	got, err := svc.GetCertificateAuthority(&apiv1.GetCertificateAuthorityRequest{})
	if err != nil {
		return nil, root, fmt.Errorf("step-ca at %s does not answer: %w", s.URL, err)
	}
	if Fingerprint(got.RootCertificate) != fp {
		return nil, root, fmt.Errorf("step-ca at %s serves root %s, not %s", s.URL, Fingerprint(got.RootCertificate), fp)
	}
	return svc, got.RootCertificate, nil
}

// loadStepRoot returns the step-ca's root: the root file if one is
// configured, or else the root the CA serves, checked against the
// fingerprint.
func loadStepRoot(ctx context.Context, cfg Config) (*x509.Certificate, error) {
	if cfg.Step.Root != "" {
		return pemutil.ReadCertificate(cfg.Step.Root)
	}
	fp := strings.ToLower(strings.ReplaceAll(cfg.Step.Fingerprint, ":", ""))
	svc, err := stepcas.New(ctx, apiv1.Options{Type: apiv1.StepCAS, CertificateAuthority: cfg.Step.URL,
		CertificateAuthorityFingerprint: fp, IsCAGetter: true})
	if err != nil {
		return nil, fmt.Errorf("connecting to step-ca at %s: %w", cfg.Step.URL, err)
	}
	resp, err := svc.GetCertificateAuthority(&apiv1.GetCertificateAuthorityRequest{})
	if err != nil {
		return nil, fmt.Errorf("fetching the root from step-ca at %s: %w", cfg.Step.URL, err)
	}
	return resp.RootCertificate, nil
}
