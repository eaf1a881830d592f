//go:build !step

// The step backend's stand-in in a binary built without the build tag
// "step" (see step.go): a step configuration is refused at start, with
// the command that builds a binary that has it.

package certs

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/smallstep/certificates/cas/apiv1"
)

// errNoStep is what the step backend answers in this build.
var errNoStep = fmt.Errorf("ca.backend: step: %w", ErrStepNotBuilt)

func openStep(context.Context, Config) (apiv1.CertificateAuthorityService, *x509.Certificate, error) {
	return nil, nil, errNoStep
}

func loadStepRoot(context.Context, Config) (*x509.Certificate, error) {
	return nil, errNoStep
}
