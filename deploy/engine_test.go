package deploy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/testworld"
)

// engine is a Docker engine the tests build and run images with: one
// already running (docker info answers), or a daemon the test started.
type engine struct {
	client string   // a docker client that builds with BuildKit
	env    []string // the client's environment: DOCKER_HOST, DOCKER_BUILDKIT
}

// docker runs the client with args and stdin, and returns its combined
// output.
func (e *engine) docker(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, e.client, args...)
	cmd.Env = e.env
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// buildKitClient returns a docker client that can build with BuildKit
// (which builds only the stages the target needs, so that unused stages
// pull nothing): one with the buildx plugin, or a client from before
// Docker 23, which has BuildKit built in.
func buildKitClient() (string, bool) {
	var seen []string
	for _, c := range []string{"docker", "/usr/bin/docker", "/usr/local/bin/docker"} {
		p, err := exec.LookPath(c)
		if err != nil || strings.Contains(strings.Join(seen, "\n"), p) {
			continue
		}
		seen = append(seen, p)
		if exec.Command(p, "buildx", "version").Run() == nil {
			return p, true
		}
		out, err := exec.Command(p, "--version").Output() // "Docker version 20.10.24+dfsg1, build 297e128"
		if err != nil {
			continue
		}
		v, _ := strings.CutPrefix(strings.TrimSpace(string(out)), "Docker version ")
		major, _, _ := strings.Cut(v, ".")
		if n, err := strconv.Atoi(major); err == nil && n < 23 {
			return p, true
		}
	}
	return "", false
}

// startEngine returns an engine, or skips t saying why there is none. With
// no engine running and dockerd installed, it starts one as root in a
// temporary folder, with --iptables=false, --ip-forward=false and
// --bridge=none, so that it changes no firewall rule, sysctl or interface
// of the machine; it is stopped at cleanup.
func startEngine(t *testing.T) *engine {
	t.Helper()
	if testing.Short() {
		t.Skip("-short")
	}
	client, ok := buildKitClient()
	if !ok {
		t.Skip("no docker client that builds with BuildKit (the buildx plugin, or a client older than Docker 23)")
	}
	e := &engine{client: client, env: append(os.Environ(), "DOCKER_BUILDKIT=1")}
	if exec.Command(client, "info").Run() == nil {
		return e
	}
	dockerd, err := exec.LookPath("dockerd")
	if err != nil || os.Geteuid() != 0 {
		t.Skipf("no Docker engine runs, and none can be started here (dockerd: %v; root: %v); TestImageRunsAsConfiguredForAContainer checks the Dockerfile", err, os.Geteuid() == 0)
	}
	// A short folder: the daemon's and containerd's sockets live in it.
	dir, err := os.MkdirTemp("", "sgdk")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	logFile, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	d := exec.Command(dockerd,
		"--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "--host", "unix://"+sock)
	d.Stdout, d.Stderr = logFile, logFile
	if err := d.Start(); err != nil {
		t.Skipf("starting dockerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	t.Cleanup(func() {
		d.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			d.Process.Kill()
			<-exited
		}
		logFile.Close()
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("removing the daemon's folder: %v", err)
		}
	})
	e.env = append(e.env, "DOCKER_HOST=unix://"+sock)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if _, err := e.docker(t.Context(), nil, "info"); err == nil {
			return e
		}
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logFile.Name())
			t.Skipf("dockerd exited at start (%v), so no engine can run here:\n%s", err, tail(log, 20))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			t.Skipf("dockerd did not answer within 60s:\n%s", tail(log, 20))
		}
	}
}

// unmountUnder detaches whatever a stopped daemon left mounted under dir
// (its network namespace file), deepest first, so that dir can be removed.
func unmountUnder(t *testing.T, dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for line := range strings.Lines(string(data)) {
		// "36 35 98:0 /mnt1 /mnt/parent rw ...": the fifth field is the mount point.
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			t.Logf("unmounting %s: %v", p, err)
		}
	}
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// runtimeBase is a tar of the smallest file system sumgate's final stage
// runs on: data_dir owned by uid 65532 and 0700, as the Dockerfile's
// runtime stage makes it, and /tmp. It stands in for Debian slim, which
// the test cannot pull.
func runtimeBase(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []tar.Header{
		{Name: "etc/", Mode: 0o755},
		{Name: "tmp/", Mode: 0o1777},
		{Name: "var/", Mode: 0o755},
		{Name: "var/lib/", Mode: 0o755},
		{Name: "var/lib/sumgate/", Mode: 0o700, Uid: 65532, Gid: 65532},
	} {
		h.Typeflag = tar.TypeDir
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestImageServesFromALocalBinary builds the Dockerfile's final stage
// from a binary built here (BINARY=prebuilt) on a base the test imports
// (RUNTIME), so nothing is pulled, then runs the image against a test
// world: Docker's own HEALTHCHECK, the image's command, reports healthy,
// the gateway inside passes a verified module and blocks a tampered one,
// and it stops cleanly on docker stop. It needs a Docker engine, or root
// and dockerd to start one (.ci/run installs Debian's docker.io); it skips
// with the reason where there is none.
func TestImageServesFromALocalBinary(t *testing.T) {
	e := startEngine(t)
	ctx := t.Context()
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	base, tag := "sumgate-test-runtime:"+id, "sumgate-test:"+id

	// The build context: the Dockerfile, the configuration it copies and
	// the binary, as a pipeline that built it outside lays them out.
	dir := t.TempDir()
	mkdir := func(p string) string {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, p)
	}
	revision := "test" + id // what a pipeline passes as SUMGATE_REVISION
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-X main.linkedRevision="+revision, "-o", filepath.Join(mkdir("dist"), "sumgate"), "./cmd/sumgate")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, f := range []string{"Dockerfile", "deploy/docker/sumgate.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		mkdir(filepath.Dir(f))
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := e.docker(ctx, bytes.NewReader(runtimeBase(t)), "import", "-", base); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.docker(context.Background(), nil, "rmi", "-f", tag, base) })
	if _, err := e.docker(ctx, nil, "build", "--build-arg", "BINARY=prebuilt", "--build-arg", "RUNTIME="+base, "--build-arg", "SUMGATE_REVISION="+revision, "-t", tag, dir); err != nil {
		t.Fatal(err)
	}
	out, err := e.docker(ctx, nil, "run", "--rm", "--network", "none", tag, "version")
	if err != nil || !strings.HasPrefix(string(out), "sumgate ") || !strings.Contains(string(out), "\nrevision "+revision+"\n") {
		t.Fatalf("sumgate version in the image: %v\n%s\nwant revision %s", err, out, revision)
	}
	out, err = e.docker(ctx, nil, "inspect", "--format", `{{index .Config.Labels "org.opencontainers.image.revision"}}`, tag)
	if err != nil || strings.TrimSpace(string(out)) != revision {
		t.Errorf("the image's revision label is %q (%v), want %s", out, err, revision)
	}

	// The gateway, on the host's network so that it reaches the test
	// world on loopback, with a configuration at the image's own path
	// (the one its CMD and HEALTHCHECK name) pointing it at that world.
	w := testworld.New(t)
	proxyPort, adminPort := freePort(t), freePort(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "data_dir: /var/lib/sumgate\nlisten: 127.0.0.1:%s\nadmin_listen: 127.0.0.1:%s\n", proxyPort, adminPort)
	cfg.WriteString(w.UpstreamConfig("/etc/sumgate/world.pem"))
	cfg.WriteString("vcs: deny\n") // the stand-in base has no git for vcs: verify
	conf := filepath.Join(t.TempDir(), "sumgate.yaml")
	roots, err := os.ReadFile(w.RootsFile)
	if err != nil {
		t.Fatal(err)
	}
	world := filepath.Join(filepath.Dir(conf), "world.pem")
	for f, data := range map[string][]byte{conf: []byte(cfg.String()), world: roots} {
		if err := os.WriteFile(f, data, 0o644); err != nil { // read by uid 65532
			t.Fatal(err)
		}
	}
	out, err = e.docker(ctx, nil, "run", "--detach", "--network", "host", "--health-interval", "1s",
		"--volume", conf+":/etc/sumgate/sumgate.yaml:ro", "--volume", world+":/etc/sumgate/world.pem:ro", tag)
	if err != nil {
		t.Fatal(err)
	}
	container := strings.TrimSpace(string(out))
	t.Cleanup(func() { e.docker(context.Background(), nil, "rm", "--force", "--volumes", container) })
	logs := func() string { out, _ := e.docker(context.Background(), nil, "logs", container); return tail(out, 30) }

	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		out, err := e.docker(ctx, nil, "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}} {{.Config.User}}", container)
		state := strings.Fields(string(out))
		if err == nil && len(state) == 3 && state[1] == "healthy" {
			if state[2] != "65532:65532" {
				t.Errorf("the container runs as %q, want 65532:65532", state[2])
			}
			break
		}
		if err != nil || state[0] != "running" || time.Now().After(deadline) {
			t.Fatalf("the container is %q (%v), never healthy:\n%s", out, err, logs())
		}
	}

	admin := &http.Client{Timeout: 10 * time.Second}
	resp, err := admin.Get("http://127.0.0.1:" + adminPort + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	pemData, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatalf("/ca.pem holds no certificate: %q", pemData)
	}
	proxyURL, _ := url.Parse("http://127.0.0.1:" + proxyPort)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, tc := range []struct {
		path   string
		status int
		body   []byte
	}{
		{testworld.GoodPath, http.StatusOK, w.Module(testworld.GoodPath, testworld.Version).Zip},
		{testworld.TamperedZipPath, http.StatusForbidden, []byte(testworld.TamperedZipPath + "@" + testworld.Version)},
	} {
		resp, err := c.Get(w.ProxyURL + "/" + tc.path + "/@v/" + testworld.Version + ".zip")
		if err != nil {
			t.Fatalf("%s through the container: %v\n%s", tc.path, err, logs())
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !bytes.Contains(body, tc.body) {
			t.Errorf("%s through the container: %d (%d bytes), want %d carrying %.40q", tc.path, resp.StatusCode, len(body), tc.status, tc.body)
		}
	}

	if _, err := e.docker(ctx, nil, "stop", "--time", "40", container); err != nil {
		t.Fatal(err)
	}
	if out, _ := e.docker(ctx, nil, "inspect", "--format", "{{.State.ExitCode}}", container); strings.TrimSpace(string(out)) != "0" {
		t.Errorf("sumgate exited %s on docker stop, want 0 (SIGTERM drains)\n%s", out, logs())
	}
}
