//go:build !step

package certs

import (
	"context"
	"errors"
	"testing"
)

// TestStepNotBuilt: a binary built without the step backend refuses a
// step configuration at every entry point, with an error that names the
// build tag and the command that builds a binary with it. Leaves held for
// every intercepted name under the configured fingerprint do not let it
// start: there would be nothing to renew them with.
func TestStepNotBuilt(t *testing.T) {
	// Leaves minted by a local CA are stored under its root's fingerprint,
	// as a step-ca's would be.
	dir := t.TempDir()
	local := newCA(t, Config{DataDir: dir})
	addr := serve(t, local)
	for _, host := range testHosts {
		if _, err := handshake(addr, host, pool(local.Root())); err != nil {
			t.Fatal(err)
		}
	}
	local.Stop()

	cfg := Config{Backend: BackendStep, DataDir: dir, Intercept: testHosts, Step: StepConfig{
		URL: "https://127.0.0.1:1", Fingerprint: Fingerprint(local.Root()), Provisioner: "sumgate", Type: "jwk", Password: []byte("x")}}
	const want = "ca.backend: step: this sumgate was built without the step backend; build it with: go build -tags step ./cmd/sumgate"
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrStepNotBuilt) || err.Error() != want {
			t.Errorf("%s: err = %v, want %q", what, err, want)
		}
	}
	c, err := New(context.Background(), cfg)
	if err == nil {
		c.Stop()
	}
	check("New", err)
	_, err = Init(context.Background(), cfg)
	check("Init", err)
	_, err = LoadRoot(context.Background(), cfg)
	check("LoadRoot", err)
	cfg.Step.Root = "root.pem" // a root file alone would need no CA; still refused
	_, err = LoadRoot(context.Background(), cfg)
	check("LoadRoot with ca.step.root", err)
}
