//go:build step

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/stepcatest"
)

func TestCAStepBackendCommands(t *testing.T) {
	s := stepcatest.Start(t)
	dir := t.TempDir()
	write := func(password string) string {
		cfg := filepath.Join(dir, "sumgate.yaml")
		y := fmt.Sprintf("data_dir: %s\nca:\n  backend: step\n  step:\n    url: %s\n    root: %s\n    provisioner: %s\n    type: jwk\n    key: %s\n",
			filepath.Join(dir, "data"), s.URL, s.RootFile, s.JWK.Name, s.JWK.KeyFile)
		if password != "" {
			y += "    password_file: " + password + "\n"
		}
		os.WriteFile(cfg, []byte(y), 0o600)
		return cfg
	}
	t.Setenv("SUMGATE_STEP_PASSWORD", "")
	if status, _, stderr := runCLI("ca", "init", "-config", write("")); status != 2 || !strings.Contains(stderr, "password is missing") {
		t.Fatalf("no password: status %d, stderr %q", status, stderr)
	}
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, []byte(s.JWK.Password), 0o644)
	if status, _, stderr := runCLI("ca", "init", "-config", write(loose)); status != 2 || !strings.Contains(stderr, "refusing a file") {
		t.Fatalf("password file others can read: status %d, stderr %q", status, stderr)
	}
	status, stdout, stderr := runCLI("ca", "init", "-config", write(s.JWK.PasswordFile))
	if status != 0 || !strings.Contains(stdout, s.Fingerprint) {
		t.Fatalf("init: status %d\n%s%s", status, stdout, stderr)
	}
	t.Setenv("SUMGATE_STEP_PASSWORD", s.JWK.Password)
	if status, stdout, stderr := runCLI("ca", "init", "-config", write("")); status != 0 || !strings.Contains(stdout, s.Fingerprint) {
		t.Fatalf("init with the password from the environment: status %d\n%s%s", status, stdout, stderr)
	}
	s.Stop()
	if status, _, stderr := runCLI("ca", "init", "-config", write(s.JWK.PasswordFile)); status != 2 || !strings.Contains(stderr, s.URL) {
		t.Fatalf("CA down: status %d, stderr %q; want the URL named", status, stderr)
	}
}
