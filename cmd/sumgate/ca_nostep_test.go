//go:build !step

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStepBackendNotBuilt: a sumgate built without the build tag "step"
// refuses a step configuration in every command that opens the CA, and
// says how to build one that has the step backend.
func TestStepBackendNotBuilt(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sumgate.yaml")
	os.WriteFile(cfg, []byte("data_dir: "+filepath.Join(dir, "data")+"\nlisten: 127.0.0.1:0\nadmin_listen: off\n"+
		"ca:\n  backend: step\n  step:\n    url: https://127.0.0.1:1\n    fingerprint: "+strings.Repeat("ab", 32)+"\n    provisioner: sumgate\n"), 0o600)
	const want = ": ca.backend: step: this sumgate was built without the step backend; build it with: go build -tags step ./cmd/sumgate\n"
	for _, args := range [][]string{{"ca", "init"}, {"ca", "export"}, {"ca", "bundle"}, {"run"}} {
		status, _, stderr := runCLI(append(args, "-config", cfg)...)
		if status != exitError || !strings.HasSuffix(stderr, want) {
			t.Errorf("sumgate %s: status %d, stderr %q; want %d and an error ending %q", strings.Join(args, " "), status, stderr, exitError, want)
		}
	}
}
