package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(args ...string) (status int, stdout, stderr string) {
	var out, errb bytes.Buffer
	status = run(args, &out, &errb)
	return status, out.String(), errb.String()
}

func TestCACommands(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sumgate.yaml")
	os.WriteFile(cfg, []byte("data_dir: "+filepath.Join(dir, "data")+"\n"), 0o600)

	// Nothing exists yet: export says what to do.
	if status, _, stderr := runCLI("ca", "export", "-config", cfg); status != 2 || !strings.Contains(stderr, "run 'sumgate ca init'") {
		t.Fatalf("export before init: status %d, stderr %q", status, stderr)
	}
	status, stdout, stderr := runCLI("ca", "init", "-config", cfg)
	if status != 0 || !strings.Contains(stdout, "root SHA-256 fingerprint: ") {
		t.Fatalf("init: status %d\n%s%s", status, stdout, stderr)
	}
	fp := strings.TrimSpace(stdout[strings.LastIndex(stdout, " ")+1:])

	status, exported, stderr := runCLI("ca", "export", "-config", cfg)
	block, _ := pem.Decode([]byte(exported))
	if status != 0 || block == nil {
		t.Fatalf("export: status %d, %q %q", status, exported, stderr)
	}
	if sum := sha256.Sum256(block.Bytes); hex.EncodeToString(sum[:]) != fp {
		t.Errorf("exported root has fingerprint %x, init printed %s", sum, fp)
	}

	// init again keeps the same CA.
	if _, again, _ := runCLI("ca", "init", "-config", cfg); !strings.Contains(again, fp) {
		t.Errorf("a second init changed the root:\n%s", again)
	}

	system := filepath.Join(dir, "system.pem")
	os.WriteFile(system, []byte(exported), 0o644) // any PEM stands in for the system roots
	status, bundle, _ := runCLI("ca", "bundle", "-config", cfg, "-system-roots", system)
	if status != 0 || strings.Count(bundle, "BEGIN CERTIFICATE") != 2 || !strings.HasSuffix(bundle, exported) {
		t.Errorf("bundle: status %d\n%s", status, bundle)
	}

	// A key others can read stops every command that needs it.
	key := filepath.Join(dir, "data", "ca", "intermediate.key")
	os.Chmod(key, 0o644)
	if status, _, stderr := runCLI("ca", "init", "-config", cfg); status != 2 || !strings.Contains(stderr, "refusing a key file") {
		t.Errorf("init with a 0644 key: status %d, stderr %q", status, stderr)
	}
	os.Chmod(key, 0o600)

	if status, _, stderr := runCLI("ca", "frob", "-config", cfg); status != 2 || !strings.Contains(stderr, "unknown command") {
		t.Errorf("unknown subcommand: status %d, stderr %q", status, stderr)
	}
}
