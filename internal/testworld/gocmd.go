package testworld

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// GoBinary returns the go command of the toolchain running the tests.
func GoBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		t.Skip("no go command")
	}
	return p
}

// GoModDownload runs the real go command: `go mod download -json mods...` with a fresh GOPATH
// and module cache, every client-side check off, and env added. It
// returns standard output (standard error too, on failure).
func GoModDownload(t testing.TB, env []string, mods ...string) ([]byte, error) {
	t.Helper()
	return GoModDownloadVia(t, nil, env, mods...)
}

// GoModDownloadVia is GoModDownload with the go command run through wrap,
// such as {"ip", "netns", "exec", "client"}.
func GoModDownloadVia(t testing.TB, wrap []string, env []string, mods ...string) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	return goCommand(t, wrap, dir, dir, env, append([]string{"mod", "download", "-json"}, mods...)...)
}

// Go runs the real go command with args in dir, as GoModDownload does
// (every client-side check off, env added), with HOME, GOPATH, the module
// cache and the build cache under home: commands given the same home
// share a module cache, as one developer's do.
func Go(t testing.TB, dir, home string, env []string, args ...string) ([]byte, error) {
	t.Helper()
	return goCommand(t, nil, dir, home, env, args...)
}

func goCommand(t testing.TB, wrap []string, dir, home string, env []string, args ...string) ([]byte, error) {
	t.Helper()
	args = append(append(append([]string(nil), wrap...), GoBinary(t)), args...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append([]string{
		"HOME=" + home,
		"PATH=" + os.Getenv("PATH"),
		"GOPATH=" + filepath.Join(home, "gopath"),
		"GOMODCACHE=" + filepath.Join(home, "modcache"),
		"GOCACHE=" + filepath.Join(home, "cache"),
		// Threat 5: the client's own checks are off; only sumgate stands
		// between it and the bytes. (Not GOINSECURE: it switches the go
		// command to a client with a 5-second timeout, which a loaded CI
		// machine can exceed on a first, minting handshake.)
		"GOSUMDB=off",
		"GONOSUMDB=*",
		"GOFLAGS=-modcacherw",
		"GOTOOLCHAIN=local",
		"GOTELEMETRY=off",
		"GOENV=off",
	}, env...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		out = append(out, ee.Stderr...)
	}
	return out, err
}
