// Package deploy_test checks the deployment material at the top of the
// repository and under deploy/: what can be checked without a container
// engine is checked here, and the image is built where one runs.
package deploy_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/config"
)

// instruction is one Dockerfile instruction, its continuation lines
// joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, USER, ...
	args string
}

// readDockerfile reads the repository's Dockerfile into the instructions
// of its final stage.
func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var all []instruction
	var cur strings.Builder
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		cont := strings.HasSuffix(line, `\`)
		cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
		if cont {
			continue
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		all = append(all, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	last := 0
	for i, in := range all {
		if in.cmd == "FROM" {
			last = i
		}
	}
	return all[last:]
}

// TestImageRunsAsConfiguredForAContainer: the final stage runs as uid
// 65532, carries git (vcs: verify builds modules with it) and the CA
// roots, keeps data_dir on a volume, exposes exactly the ports its
// configuration listens on, on every interface, and checks its health
// with sumgate itself (the image has no curl), with the configuration
// the gateway runs with; that configuration loads with sumgate's own
// loader.
func TestImageRunsAsConfiguredForAContainer(t *testing.T) {
	stage := readDockerfile(t)
	get := func(cmd string) []string {
		var out []string
		for _, in := range stage {
			if in.cmd == cmd {
				out = append(out, in.args)
			}
		}
		return out
	}
	if u := get("USER"); len(u) != 1 || u[0] != "65532:65532" {
		t.Errorf("USER %v, want 65532:65532", u)
	}
	run := strings.Join(get("RUN"), " ")
	for _, pkg := range []string{"git", "ca-certificates"} {
		if !strings.Contains(run, " "+pkg) {
			t.Errorf("the final stage does not install %s: %s", pkg, run)
		}
	}
	var confDst string
	for _, c := range get("COPY") {
		if f := strings.Fields(c); len(f) == 2 && strings.HasSuffix(f[1], ".yaml") {
			confDst = f[1]
			cfg, err := config.Load(filepath.Join("..", f[0]))
			if err != nil {
				t.Fatalf("the image's configuration: %v", err)
			}
			if v := get("VOLUME"); len(v) != 1 || v[0] != cfg.DataDir {
				t.Errorf("VOLUME %v, want data_dir %s", v, cfg.DataDir)
			}
			var ports []string
			for _, addr := range []string{cfg.Listen, cfg.AdminListen} {
				host, port, err := net.SplitHostPort(addr)
				if err != nil || host != "0.0.0.0" {
					t.Errorf("listen address %q: want every interface (0.0.0.0), for probes and a Service", addr)
				}
				ports = append(ports, port)
			}
			if e := get("EXPOSE"); len(e) != 1 || !slices.Equal(strings.Fields(e[0]), ports) {
				t.Errorf("EXPOSE %v, want %v", e, ports)
			}
		}
	}
	if confDst == "" {
		t.Fatal("the final stage copies in no configuration file")
	}
	hc := strings.Join(get("HEALTHCHECK"), " ")
	if !strings.Contains(hc, `CMD ["sumgate", "healthcheck", "-config", "`+confDst+`"]`) {
		t.Errorf("HEALTHCHECK %q, want sumgate healthcheck with %s", hc, confDst)
	}
	if cmd := get("CMD"); len(cmd) != 1 || cmd[0] != `["run", "-config", "`+confDst+`"]` {
		t.Errorf("CMD %v, want run with %s", cmd, confDst)
	}
	if l := strings.Join(get("LABEL"), " "); !strings.Contains(l, "org.opencontainers.image.source=") {
		t.Errorf("no OCI source label: %s", l)
	}
}

// TestImageBuilds builds the image where a Docker engine runs; there is
// none on the CI machine, where it skips.
func TestImageBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skipf("no Docker engine to build the image with (docker info: %v); TestImageRunsAsConfiguredForAContainer checks the Dockerfile", err)
	}
	out, err := exec.Command("docker", "build", "-q", "-t", "sumgate:test", "..").CombinedOutput()
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	out, err = exec.Command("docker", "run", "--rm", "sumgate:test", "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "sumgate ") {
		t.Fatalf("sumgate version in the image: %v\n%s", err, out)
	}
}
