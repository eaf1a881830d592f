package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

// TestVersionNamesTheBuild: a binary built from this repository says its
// module version, the commit it was built at and the Go version, both as
// 'version' and as '-version'.
func TestVersionNamesTheBuild(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "sumgate")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"version", "-version"} {
		out, err := exec.Command(bin, arg).Output()
		if err != nil {
			t.Fatalf("sumgate %s: %v", arg, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) < 3 || !strings.HasPrefix(lines[0], "sumgate v") ||
			!strings.HasPrefix(lines[1], "revision "+strings.TrimSpace(string(head))) ||
			lines[len(lines)-1] != runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH {
			t.Errorf("sumgate %s printed:\n%s\nwant the module version, revision %s and %s", arg, out, head, runtime.Version())
		}
	}
	// A build with no VCS information (the image's: no .git in its
	// context) says what the linker was given.
	build = exec.Command("go", "build", "-buildvcs=false", "-ldflags", "-X main.linkedVersion=v9.8.7 -X main.linkedRevision=0123abcd", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "version").Output(); err != nil || !strings.HasPrefix(string(out), "sumgate v9.8.7\nrevision 0123abcd\n") {
		t.Errorf("a build with the version and revision linked in printed %q (%v)", out, err)
	}
	// In a test binary there is no VCS stamp: the version is "devel".
	if status, stdout, _ := runCLI("version"); status != 0 || !strings.HasPrefix(stdout, "sumgate devel\n") {
		t.Errorf("in-process version: %d %q", status, stdout)
	}
}

// TestHealthcheckAsksReadyz: 'sumgate healthcheck' exits 0 only when
// /readyz answers 200, asks an unspecified listen address on loopback,
// and says why it is not ready.
func TestHealthcheckAsksReadyz(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if !ready.Load() {
			http.Error(w, "not ready: checksum database not reached yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	status, _, stderr := runCLI("healthcheck", "-admin", srv.Listener.Addr().String())
	if status != 1 || !strings.Contains(stderr, "503") || !strings.Contains(stderr, "checksum database not reached yet") {
		t.Errorf("not ready: status %d, stderr %q", status, stderr)
	}
	ready.Store(true)
	for _, addr := range []string{srv.Listener.Addr().String(), "0.0.0.0:" + port, ":" + port} {
		if status, stdout, stderr := runCLI("healthcheck", "-admin", addr); status != 0 || stdout != "ready\n" {
			t.Errorf("ready, asked at %s: status %d, stdout %q, stderr %q", addr, status, stdout, stderr)
		}
	}
	if status, _, stderr := runCLI("healthcheck", "-admin", deadAddr); status != 1 || !strings.Contains(stderr, "not ready") {
		t.Errorf("nothing listening: status %d, stderr %q", status, stderr)
	}
	cfg := filepath.Join(t.TempDir(), "sumgate.yaml")
	os.WriteFile(cfg, []byte("admin_listen: \"off\"\n"), 0o644)
	if status, _, stderr := runCLI("healthcheck", "-config", cfg); status != 1 || !strings.Contains(stderr, "admin_listen off") {
		t.Errorf("admin_listen off: status %d, stderr %q (Docker reserves 2 in a HEALTHCHECK)", status, stderr)
	}
	if status, _, _ := runCLI("healthcheck", "-nosuchflag"); status != 1 {
		t.Errorf("a bad flag: status %d, want 1 (Docker reserves 2 in a HEALTHCHECK)", status)
	}
}
