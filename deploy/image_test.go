// Package deploy_test checks the deployment material at the top of the
// repository and under deploy/: what can be checked without a container
// engine is checked on every run, and the image is built and run where an
// engine runs or can be started.
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

// stage is one build stage of a Dockerfile.
type stage struct {
	name string // the AS name, or "" for an unnamed (final) stage
	from string // the base, as written: "${RUNTIME}", "scratch", ...
	body []instruction
}

// dockerfile is a parsed Dockerfile: the global ARG defaults before the
// first FROM, and the stages in order.
type dockerfile struct {
	args   map[string]string
	stages []stage
}

// readDockerfile parses the repository's Dockerfile. It knows only what
// these tests need: instructions, continuation lines and comments.
func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := dockerfile{args: map[string]string{}}
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
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		cur.Reset()
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			df.stages = append(df.stages, s)
		case len(df.stages) == 0 && in.cmd == "ARG":
			name, def, _ := strings.Cut(in.args, "=")
			df.args[name] = def
		case len(df.stages) > 0:
			s := &df.stages[len(df.stages)-1]
			s.body = append(s.body, in)
		}
	}
	if len(df.stages) == 0 {
		t.Fatal("the Dockerfile has no FROM")
	}
	return df
}

// stage returns the stage named name, following a FROM of a global ARG
// ("${RUNTIME}") to the stage its default names.
func (df dockerfile) stage(t *testing.T, name string) stage {
	t.Helper()
	if arg, ok := strings.CutPrefix(name, "${"); ok {
		name = df.args[strings.TrimSuffix(arg, "}")]
	}
	for _, s := range df.stages {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("the Dockerfile has no stage %q", name)
	return stage{}
}

// stageNamed returns the stage named name, or nil.
func (df dockerfile) stageNamed(name string) *stage {
	for i := range df.stages {
		if df.stages[i].name == name {
			return &df.stages[i]
		}
	}
	return nil
}

// final is the stage the image is.
func (df dockerfile) final() stage { return df.stages[len(df.stages)-1] }

// get returns the arguments of every cmd instruction of s.
func (s stage) get(cmd string) []string {
	var out []string
	for _, in := range s.body {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// TestImageRunsAsConfiguredForAContainer: the final stage runs as uid
// 65532 on a runtime that carries git (vcs: verify builds modules with
// it), the CA roots and data_dir owned by that uid, keeps data_dir on a
// volume, exposes exactly the ports its configuration listens on, on every
// interface, and checks its health with sumgate itself (the image has no
// curl), with the configuration the gateway runs with; that configuration
// loads with sumgate's own loader. The final stage runs nothing, so that
// it builds on any base (TestImageServesFromALocalBinary builds it on one
// it makes); the binary comes from the Go build or a prebuilt one, at the
// same path.
func TestImageRunsAsConfiguredForAContainer(t *testing.T) {
	df := readDockerfile(t)
	final := df.final()
	if final.from != "${RUNTIME}" {
		t.Fatalf("the final stage is FROM %s, want ${RUNTIME}", final.from)
	}
	if r := final.get("RUN"); len(r) != 0 {
		t.Errorf("the final stage runs %q: it must build on any base, with no pull", r)
	}
	if u := final.get("USER"); len(u) != 1 || u[0] != "65532:65532" {
		t.Errorf("USER %v, want 65532:65532", u)
	}

	runtime := df.stage(t, final.from)
	run := strings.Join(runtime.get("RUN"), " ")
	for _, want := range []string{" git", " ca-certificates", "--uid 65532", "chown 65532:65532 /var/lib/sumgate", "chmod 0700 /var/lib/sumgate"} {
		if !strings.Contains(run, want) {
			t.Errorf("the runtime stage does not run %q: %s", want, run)
		}
	}

	if b := df.stage(t, "binary"); b.from != "${BINARY}" {
		t.Errorf("the binary stage is FROM %s, want ${BINARY}", b.from)
	}
	build := df.stage(t, "${BINARY}")
	if b := strings.Join(build.get("RUN"), " "); !strings.Contains(b, "CGO_ENABLED=0 go build") || !strings.Contains(b, "-o /out/sumgate ") {
		t.Errorf("the build stage does not build a static /out/sumgate: %s", b)
	}
	for _, x := range []string{"-X main.linkedVersion=${SUMGATE_VERSION}", "-X main.linkedRevision=${SUMGATE_REVISION}"} {
		if b := strings.Join(build.get("RUN"), " "); !strings.Contains(b, x) {
			t.Errorf("the build stage does not link %q: the image has no .git, so 'sumgate version' would name no revision", x)
		}
	}
	if v := df.args["GO_VERSION"]; strings.Count(v, ".") != 2 {
		t.Errorf("GO_VERSION=%s: pin the Go release (1.26.8), not a moving minor tag", v)
	}
	for _, st := range df.stages {
		if strings.HasSuffix(st.from, ":latest") || !strings.ContainsAny(st.from, ":$") && st.from != "scratch" && df.stageNamed(st.from) == nil {
			t.Errorf("FROM %s: name a tag (and pin a digest in the pipeline), never latest", st.from)
		}
	}
	if c := df.stage(t, "prebuilt").get("COPY"); len(c) != 1 || !strings.HasSuffix(c[0], " /out/sumgate") {
		t.Errorf("the prebuilt stage copies %q, want the binary to /out/sumgate", c)
	}

	var confDst string
	for _, c := range final.get("COPY") {
		f := strings.Fields(c)
		if len(f) == 3 && f[0] == "--from=binary" && f[1] == "/out/sumgate" && f[2] == "/usr/local/bin/sumgate" {
			continue
		}
		if len(f) != 2 || !strings.HasSuffix(f[1], ".yaml") {
			t.Errorf("the final stage copies %q: only the binary and the configuration belong there", c)
			continue
		}
		confDst = f[1]
		cfg, err := config.Load(filepath.Join("..", f[0]))
		if err != nil {
			t.Fatalf("the image's configuration: %v", err)
		}
		if v := final.get("VOLUME"); len(v) != 1 || v[0] != cfg.DataDir {
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
		if e := final.get("EXPOSE"); len(e) != 1 || !slices.Equal(strings.Fields(e[0]), ports) {
			t.Errorf("EXPOSE %v, want %v", e, ports)
		}
	}
	if confDst == "" {
		t.Fatal("the final stage copies in no configuration file")
	}
	hc := strings.Join(final.get("HEALTHCHECK"), " ")
	if !strings.Contains(hc, `CMD ["sumgate", "healthcheck", "-config", "`+confDst+`"]`) {
		t.Errorf("HEALTHCHECK %q, want sumgate healthcheck with %s", hc, confDst)
	}
	if cmd := final.get("CMD"); len(cmd) != 1 || cmd[0] != `["run", "-config", "`+confDst+`"]` {
		t.Errorf("CMD %v, want run with %s", cmd, confDst)
	}
	l := strings.Join(final.get("LABEL"), " ")
	for _, want := range []string{"org.opencontainers.image.source=", `org.opencontainers.image.revision="${SUMGATE_REVISION}"`, `org.opencontainers.image.version="${SUMGATE_VERSION}"`} {
		if !strings.Contains(l, want) {
			t.Errorf("no OCI label %s: %s", want, l)
		}
	}
	if a := final.get("ARG"); !slices.Contains(a, "SUMGATE_REVISION=") || !slices.Contains(a, "SUMGATE_VERSION=") {
		t.Errorf("the final stage declares ARG %q: its labels need SUMGATE_VERSION and SUMGATE_REVISION", a)
	}
}

// TestImageContextIsAnAllowList: .dockerignore leaves out everything but
// what the image builds from, so that a CA folder or key lying in the
// working tree never reaches the builder, and it lets in every folder of
// this module that the binary is built from (else the build fails).
func TestImageContextIsAnAllowList(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for line := range strings.Lines(string(data)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	if len(patterns) == 0 || patterns[0] != "*" {
		t.Fatalf(".dockerignore starts with %q, want * (an allow-list)", patterns)
	}
	for _, want := range []string{"**/*.key", "**/*.pem", "**/*_test.go"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
	allowed := func(rel string) bool {
		for _, p := range patterns {
			if dir, ok := strings.CutPrefix(p, "!"); ok && (rel == dir || strings.HasPrefix(rel, dir+"/")) {
				return true
			}
		}
		return false
	}
	for _, tags := range []string{"", "step"} {
		out, err := exec.Command("go", "list", "-tags", tags, "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", "../cmd/sumgate").Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		root, _ := filepath.Abs("..")
		for _, dir := range strings.Fields(string(out)) {
			rel, _ := filepath.Rel(root, dir)
			if !allowed(filepath.ToSlash(rel)) {
				t.Errorf("%s is built into sumgate (-tags %q) but .dockerignore leaves it out", rel, tags)
			}
		}
	}
	for _, f := range []string{"go.mod", "go.sum", "deploy/docker/sumgate.yaml", "dist/sumgate"} {
		if !allowed(f) {
			t.Errorf(".dockerignore leaves out %s, which the Dockerfile copies", f)
		}
	}
}
