package deploy_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
)

// The compose stack's services. Those in oneShot run and exit: they have
// no health check, and whoever needs one waits for it to complete.
var (
	stackServices = []string{"ca-init", "client", "etcd", "etcd-certs", "jaeger", "otel-collector", "prometheus", "step-ca", "sumgate", "sumgate-a", "sumgate-b"}
	oneShot       = []string{"ca-init", "client", "etcd-certs"}
	// profiles: the services `docker compose up` leaves out, by profile.
	profiles = map[string]string{"client": "client", "etcd": "replicas", "etcd-certs": "replicas", "sumgate-a": "replicas", "sumgate-b": "replicas"}
)

// repoRoot is the repository's top folder, absolute.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// loadStack loads docker-compose.yml as `docker compose` would from the
// repository's top folder, offline: no environment is read (so nothing
// is interpolated from the machine running the test), every profile is
// enabled (so the client is checked too), paths are resolved against the
// top folder and the loader's consistency checks are on.
func loadStack(t *testing.T) *types.Project {
	t.Helper()
	root := repoRoot(t)
	details := types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml")}},
		Environment: types.Mapping{},
	}
	p, err := loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName("sumgate", true)
		o.Profiles = []string{"*"}
		o.ResolvePaths = true
		o.SkipConsistencyCheck = false
	})
	if err != nil {
		t.Fatalf("loading docker-compose.yml: %v", err)
	}
	return p
}

// service returns the named service, failing the test if there is none.
func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yml has no service %q", name)
	}
	return s
}

// mountOf returns the service's mount whose target is target or holds
// the file target.
func mountOf(s types.ServiceConfig, target string) (types.ServiceVolumeConfig, bool) {
	for _, v := range s.Volumes {
		if target == v.Target || strings.HasPrefix(target, strings.TrimSuffix(v.Target, "/")+"/") {
			return v, true
		}
	}
	return types.ServiceVolumeConfig{}, false
}

// TestComposeStackServices: the stack holds exactly its services; every
// long-running one checks its health, and every dependency waits for the
// service it needs to be healthy, or, for the one-shot ca-init, to have
// completed successfully; images are pinned to a release; `docker compose
// up` leaves the client out (its profile), `run client` starts it, and the
// replicas with their etcd (profile replicas).
func TestComposeStackServices(t *testing.T) {
	p := loadStack(t)
	if got := slices.Sorted(maps.Keys(p.Services)); !slices.Equal(got, stackServices) {
		t.Fatalf("services %v, want %v", got, stackServices)
	}
	for _, tt := range []struct {
		service string
		needs   []string // depends_on, at least
	}{
		{"step-ca", nil},
		{"ca-init", []string{"step-ca"}},
		{"sumgate", []string{"ca-init", "otel-collector", "step-ca"}},
		{"otel-collector", []string{"jaeger"}},
		{"jaeger", nil},
		{"prometheus", nil},
		{"client", []string{"sumgate"}},
		{"etcd-certs", nil},
		{"etcd", []string{"etcd-certs"}},
		{"sumgate-a", []string{"ca-init", "etcd-certs", "step-ca", "etcd", "otel-collector"}},
		{"sumgate-b", []string{"ca-init", "etcd-certs", "step-ca", "etcd", "otel-collector"}},
	} {
		t.Run(tt.service, func(t *testing.T) {
			s := service(t, p, tt.service)
			hc := s.HealthCheck
			switch {
			case slices.Contains(oneShot, tt.service):
				if hc != nil && !hc.Disable {
					t.Errorf("a one-shot service has a health check: %v", hc.Test)
				}
				if s.Restart != "" && s.Restart != types.RestartPolicyNo {
					t.Errorf("a one-shot service restarts: %s", s.Restart)
				}
			case hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] == "NONE":
				t.Errorf("no health check")
			case hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil || hc.StartPeriod == nil:
				t.Errorf("the health check leaves interval, timeout, retries or start_period to the image: %+v", hc)
			}
			for _, need := range tt.needs {
				if _, ok := s.DependsOn[need]; !ok {
					t.Errorf("does not depend on %s", need)
				}
			}
			for dep, d := range s.DependsOn {
				want := types.ServiceConditionHealthy
				if slices.Contains(oneShot, dep) {
					want = types.ServiceConditionCompletedSuccessfully
				}
				if d.Condition != want {
					t.Errorf("depends on %s with condition %q, want %q", dep, d.Condition, want)
				}
			}
			if want, ok := profiles[tt.service]; (ok && !slices.Equal(s.Profiles, []string{want})) || (!ok && len(s.Profiles) > 0) {
				t.Errorf("profiles %v, want %q: only the client and the replicas are left out of `docker compose up`", s.Profiles, want)
			}
			if s.Build == nil {
				_, tag, ok := strings.Cut(s.Image, ":")
				if !ok || tag == "" || tag == "latest" || strings.Contains(tag, "/") {
					t.Errorf("image %q is not pinned to a release", s.Image)
				}
			}
		})
	}
}

// TestComposeStackFilesExist: every file or folder the stack bind-mounts,
// and every build context and Dockerfile, is in the repository; bind
// mounts are read-only; another service's image used as a build context
// names a service of the stack.
func TestComposeStackFilesExist(t *testing.T) {
	p := loadStack(t)
	root := repoRoot(t)
	exists := func(t *testing.T, what, path string) {
		t.Helper()
		rel, err := filepath.Rel(root, path)
		if err != nil || !filepath.IsLocal(rel) {
			t.Errorf("%s %s is outside the repository", what, path)
			return
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	for _, name := range stackServices {
		s := service(t, p, name)
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				exists(t, name+": bind mount", v.Source)
				if !v.ReadOnly {
					t.Errorf("%s: bind mount %s is writable", name, v.Source)
				}
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s: volume %q is not declared", name, v.Source)
				}
			default:
				t.Errorf("%s: mount of type %s", name, v.Type)
			}
		}
		if b := s.Build; b != nil {
			exists(t, name+": build context", b.Context)
			df := cmpOr(b.Dockerfile, "Dockerfile")
			if !filepath.IsAbs(df) {
				df = filepath.Join(b.Context, df)
			}
			exists(t, name+": Dockerfile", df)
			for ctxName, src := range b.AdditionalContexts {
				if other, ok := strings.CutPrefix(src, "service:"); ok {
					if _, ok := p.Services[other]; !ok {
						t.Errorf("%s: build context %s is the image of %q, which is not a service", name, ctxName, other)
					}
				}
			}
		}
	}
	if s := service(t, p, "sumgate"); s.Build == nil || s.Build.Context != root {
		t.Errorf("sumgate is not built from the top-level Dockerfile: %+v", s.Build)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// argAfter returns the argument that follows flag in args.
func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// hostPort splits addr, failing the test if it is not host:port.
func hostPort(t *testing.T, what, addr string) (string, string) {
	t.Helper()
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", what, addr, err)
	}
	return h, port
}

// loadStackSumgateConfig loads the configuration file the sumgate service
// runs with, with sumgate's own loader. The files it names on the volume
// ca-init fills do not exist here: they are created in a temporary folder
// standing in for the volume, and the file is loaded with that folder in
// place of the mount point. It returns the configuration, with those
// files' paths as written, and sumgate's mount of that volume.
func loadStackSumgateConfig(t *testing.T, p *types.Project) (cfg *config.Config, caMount types.ServiceVolumeConfig) {
	t.Helper()
	s := service(t, p, "sumgate")
	file := argAfter(s.Command, "-config")
	if file == "" {
		t.Fatalf("sumgate's command %v names no -config", s.Command)
	}
	if hc := argAfter(s.HealthCheck.Test, "-config"); hc != file {
		t.Errorf("the health check reads %q, the gateway %q", hc, file)
	}
	conf, ok := mountOf(s, file)
	if !ok || conf.Type != types.VolumeTypeBind || conf.Target != file {
		t.Fatalf("sumgate's configuration %s is not bind-mounted from the repository", file)
	}
	data, err := os.ReadFile(conf.Source)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		CA struct {
			Step struct {
				Root         string `yaml:"root"`
				PasswordFile string `yaml:"password_file"`
			} `yaml:"step"`
		} `yaml:"ca"`
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	files := []string{raw.CA.Step.Root, raw.CA.Step.PasswordFile}
	caMount, ok = mountOf(s, raw.CA.Step.Root)
	if !ok || caMount.Type != types.VolumeTypeVolume {
		t.Fatalf("ca.step.root %s is on no volume of sumgate", raw.CA.Step.Root)
	}
	stand := t.TempDir()
	text := string(data)
	for _, f := range files {
		if m, ok := mountOf(s, f); !ok || m.Target != caMount.Target {
			t.Errorf("%s is not on the volume %s at %s", f, caMount.Source, caMount.Target)
			continue
		}
		rel := strings.TrimPrefix(f, caMount.Target+"/")
		if err := os.WriteFile(filepath.Join(stand, rel), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		text = strings.ReplaceAll(text, f, filepath.Join(stand, rel))
	}
	got, err := config.Parse(conf.Source, []byte(text))
	if err != nil {
		t.Fatalf("sumgate's loader refuses the stack's configuration: %v", err)
	}
	got.CA.Step.Root, got.CA.Step.PasswordFile = files[0], files[1]
	return got, caMount
}

// TestComposeSumgateRunsOnTheStack: the configuration sumgate runs with
// in the stack loads with sumgate's own loader; it signs leaves with a
// step-ca through a JWK provisioner (TestComposeCAScriptsRun checks that
// it is the stack's, and the files ca-init writes); the root and the
// password it reads are on a volume ca-init writes as root, mounted
// read-only; it listens on every interface of its container, on the
// ports the stack publishes, keeps data_dir on a volume, and sends its
// spans to the collector's OTLP receiver.
func TestComposeSumgateRunsOnTheStack(t *testing.T) {
	p := loadStack(t)
	cfg, caMount := loadStackSumgateConfig(t, p)
	s, initStep := service(t, p, "sumgate"), service(t, p, "ca-init")

	if cfg.CA.Backend != "step" || cfg.CA.Step.Type != "jwk" {
		t.Errorf("ca.backend %q, ca.step.type %q: want step, jwk", cfg.CA.Backend, cfg.CA.Step.Type)
	}
	env := func(s types.ServiceConfig, k string) string {
		if v := s.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	if !caMount.ReadOnly {
		t.Errorf("sumgate mounts %s writable", caMount.Source)
	}
	written := false
	for _, v := range initStep.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == caMount.Source && !v.ReadOnly {
			written = true
		}
	}
	if !written {
		t.Errorf("ca-init does not write the volume %s that sumgate reads", caMount.Source)
	}
	if initStep.User != "0:0" && initStep.User != "root" {
		t.Errorf("ca-init runs as %q: it must be root to hand the files to uid 65532", initStep.User)
	}

	published := map[string]bool{}
	for _, pc := range s.Ports {
		published[fmt.Sprint(pc.Target)] = true
	}
	for _, addr := range []string{cfg.Listen, cfg.AdminListen} {
		if host, port := hostPort(t, "listen address", addr); host != "0.0.0.0" || !published[port] {
			t.Errorf("listen address %s: want 0.0.0.0 and the port published (%v)", addr, s.Ports)
		}
	}
	if m, ok := mountOf(s, cfg.DataDir); !ok || m.Type != types.VolumeTypeVolume || m.ReadOnly {
		t.Errorf("data_dir %s is not on a writable volume", cfg.DataDir)
	}

	ep, err := url.Parse(env(s, "OTEL_EXPORTER_OTLP_ENDPOINT"))
	if err != nil || ep.Scheme != "http" {
		t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT %q: want http://<collector>:<port>", env(s, "OTEL_EXPORTER_OTLP_ENDPOINT"))
	}
	proto := cmpOr(env(s, "OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf")
	col := readCollector(t, p)
	recv := col.receiverPort(t, map[string]string{"grpc": "grpc", "http/protobuf": "http"}[proto])
	if ep.Hostname() != "otel-collector" || ep.Port() != recv {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %s (%s): want the otel-collector service's OTLP %s port %s", ep, proto, proto, recv)
	}
	if _, ok := s.DependsOn[ep.Hostname()]; !ok {
		t.Errorf("sumgate does not wait for %s", ep.Hostname())
	}
}

// collector is the otel-collector service's configuration file, decoded
// strictly: a key the struct does not name (a misspelt option, another
// component) fails the test, so the checks below see every option the
// collector is given.
type collector struct {
	file       string
	Extensions struct {
		HealthCheck struct {
			Endpoint string `yaml:"endpoint"`
			Path     string `yaml:"path"`
		} `yaml:"health_check"`
	} `yaml:"extensions"`
	Receivers struct {
		OTLP struct {
			Protocols map[string]struct {
				Endpoint string `yaml:"endpoint"`
			} `yaml:"protocols"`
		} `yaml:"otlp"`
	} `yaml:"receivers"`
	Processors struct {
		Batch struct{} `yaml:"batch"`
	} `yaml:"processors"`
	Exporters struct {
		// Jaeger's OTLP/gRPC receiver, inside the stack's network.
		Jaeger struct {
			Endpoint string `yaml:"endpoint"`
			TLS      struct {
				Insecure bool `yaml:"insecure"`
			} `yaml:"tls"`
		} `yaml:"otlp_grpc/jaeger"`
		// The span file the security team keeps.
		File struct {
			Path     string `yaml:"path"`
			Rotation struct {
				MaxMegabytes int `yaml:"max_megabytes"`
				MaxBackups   int `yaml:"max_backups"`
			} `yaml:"rotation"`
		} `yaml:"file/audit"`
	} `yaml:"exporters"`
	Service struct {
		Extensions []string `yaml:"extensions"`
		Pipelines  map[string]struct {
			Receivers  []string `yaml:"receivers"`
			Processors []string `yaml:"processors"`
			Exporters  []string `yaml:"exporters"`
		} `yaml:"pipelines"`
	} `yaml:"service"`
}

// The collector's component IDs, as the collector struct names them.
const (
	jaegerExporter = "otlp_grpc/jaeger"
	fileExporter   = "file/audit"
)

// readCollector reads the file the otel-collector service mounts as its
// configuration (the image's default --config path).
func readCollector(t *testing.T, p *types.Project) *collector {
	t.Helper()
	const target = "/etc/otelcol-contrib/config.yaml"
	m, ok := mountOf(service(t, p, "otel-collector"), target)
	if !ok || m.Type != types.VolumeTypeBind || m.Target != target {
		t.Fatalf("otel-collector mounts no configuration at %s", target)
	}
	data, err := os.ReadFile(m.Source)
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{file: m.Source}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		t.Fatalf("%s: %v", m.Source, err)
	}
	return c
}

// receiverPort returns the port of the otlp receiver's protocol.
func (c *collector) receiverPort(t *testing.T, protocol string) string {
	t.Helper()
	ep := c.Receivers.OTLP.Protocols[protocol].Endpoint
	if ep == "" {
		t.Fatalf("%s: the otlp receiver has no %s endpoint", c.file, protocol)
	}
	_, port := hostPort(t, "otlp "+protocol+" endpoint", ep)
	return port
}

// TestComposeCollectorFeedsJaegerAndAFile: the collector's traces
// pipeline receives OTLP and exports to Jaeger's OTLP/gRPC port, in plain
// gRPC (Jaeger's receiver has no TLS inside the stack's network), and to
// a rotated file on a volume; its health check asks the health_check
// extension where it listens, on the path the extension serves (by
// running the health check's own command against a stand-in).
func TestComposeCollectorFeedsJaegerAndAFile(t *testing.T) {
	p := loadStack(t)
	c := readCollector(t, p)
	svc := service(t, p, "otel-collector")
	if got := slices.Sorted(maps.Keys(c.Service.Pipelines)); !slices.Equal(got, []string{"traces"}) {
		t.Fatalf("%s: pipelines %v, want traces", c.file, got)
	}
	traces := c.Service.Pipelines["traces"]
	if !slices.Equal(traces.Receivers, []string{"otlp"}) || !slices.Equal(traces.Processors, []string{"batch"}) {
		t.Errorf("the traces pipeline receives from %v through %v, want otlp through batch", traces.Receivers, traces.Processors)
	}
	if got := slices.Sorted(maps.Keys(c.Receivers.OTLP.Protocols)); !slices.Equal(got, []string{"grpc", "http"}) {
		t.Errorf("the otlp receiver's protocols are %v, want grpc and http", got)
	}
	if want := []string{jaegerExporter, fileExporter}; !slices.Equal(slices.Sorted(slices.Values(traces.Exporters)), slices.Sorted(slices.Values(want))) {
		t.Errorf("the traces pipeline exports to %v, want %v", traces.Exporters, want)
	}

	jaeger := c.Exporters.Jaeger
	host, port := hostPort(t, jaegerExporter+" endpoint", jaeger.Endpoint)
	if _, ok := p.Services[host]; host != "jaeger" || port != "4317" || !ok { // Jaeger's OTLP/gRPC receiver
		t.Errorf("%s sends to %s, want the jaeger service's OTLP/gRPC port, jaeger:4317", jaegerExporter, jaeger.Endpoint)
	}
	if !jaeger.TLS.Insecure {
		t.Errorf("%s: tls.insecure is not true, but Jaeger's OTLP receiver speaks plain gRPC inside the stack: every export would fail its handshake", jaegerExporter)
	}

	file := c.Exporters.File
	if m, ok := mountOf(svc, file.Path); !ok || m.Type != types.VolumeTypeVolume || m.ReadOnly || !strings.HasPrefix(file.Path, m.Target+"/") {
		t.Errorf("%s writes %q, which is on no writable volume of the collector", fileExporter, file.Path)
	}
	if file.Rotation.MaxMegabytes <= 0 || file.Rotation.MaxBackups <= 0 {
		t.Errorf("%s: rotation %+v: want max_megabytes and max_backups, or the file grows without end", fileExporter, file.Rotation)
	}

	hc := c.Extensions.HealthCheck
	if !slices.Equal(c.Service.Extensions, []string{"health_check"}) {
		t.Fatalf("%s: extensions %v, want the health_check extension enabled", c.file, c.Service.Extensions)
	}
	_, port = hostPort(t, "health_check endpoint", hc.Endpoint)
	test := svc.HealthCheck.Test
	if len(test) < 3 || test[0] != "CMD" || !slices.Contains(test, "healthcheck") {
		t.Fatalf("health check %v: want [CMD sumgate healthcheck -admin ...]", test)
	}
	if _, probePort := hostPort(t, "the health check's -admin", argAfter(test, "-admin")); probePort != port {
		t.Errorf("health check %v asks port %s; the extension listens on %s", test, probePort, port)
	}
	// Run the health check's own command against a stand-in for the
	// extension that answers 200 on every path and records which one it
	// was asked.
	asked := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- r.URL.Path:
		default:
		}
	}))
	defer srv.Close()
	argv := slices.Clone(test[1:])
	argv[0] = buildStepSumgate(t)
	argv[slices.Index(argv, "-admin")+1] = srv.Listener.Addr().String()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("the health check's command %v: %v\n%s", argv, err, out)
	}
	select {
	case path := <-asked:
		if path != hc.Path {
			t.Errorf("the health check asks %s; the health_check extension serves %s", path, hc.Path)
		}
	default:
		t.Error("the health check's command asked nothing")
	}

	// Jaeger's health check: v2.20.0's built-in configuration
	// (cmd/jaeger/internal/all-in-one.yaml) enables healthcheckv2 with its
	// HTTP endpoint on ${JAEGER_LISTEN_HOST}:13133, and the extension
	// serves its status at /status.
	jt := service(t, p, "jaeger").HealthCheck.Test
	if u := jt[len(jt)-1]; u != "http://127.0.0.1:13133/status" {
		t.Errorf("jaeger's health check %v asks %s, want healthcheckv2's http://127.0.0.1:13133/status", jt, u)
	}
}

// buildStepSumgate builds cmd/sumgate with the step backend, as the
// image does (the Dockerfile's SUMGATE_TAGS=step), and returns its path.
func buildStepSumgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sumgate")
	build := exec.Command("go", "build", "-buildvcs=false", "-tags", "step", "-o", bin, "./cmd/sumgate")
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags step ./cmd/sumgate: %v\n%s", err, out)
	}
	return bin
}

// prometheusRules is the rule file's structure.
type prometheusRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// readPrometheus reads the Prometheus configuration the prometheus service
// mounts, and the rule files it names.
func readPrometheus(t *testing.T, p *types.Project) (scrape []string, job string, rules prometheusRules) {
	t.Helper()
	s := service(t, p, "prometheus")
	const target = "/etc/prometheus/prometheus.yml" // the image's --config.file
	m, ok := mountOf(s, target)
	if !ok || m.Target != target {
		t.Fatalf("prometheus mounts no configuration at %s", target)
	}
	data, err := os.ReadFile(m.Source)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &conf); err != nil {
		t.Fatal(err)
	}
	for _, sc := range conf.ScrapeConfigs {
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %s; sumgate serves /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			scrape = append(scrape, st.Targets...)
		}
		job = sc.JobName
	}
	if len(conf.ScrapeConfigs) != 1 || len(conf.RuleFiles) != 1 {
		t.Fatalf("%s: want one scrape job and one rule file", m.Source)
	}
	rm, ok := mountOf(s, conf.RuleFiles[0])
	if !ok || rm.Target != conf.RuleFiles[0] || rm.Type != types.VolumeTypeBind {
		t.Fatalf("rule file %s is not mounted from the repository", conf.RuleFiles[0])
	}
	if filepath.Base(rm.Source) != "prometheus-rules.yml" {
		t.Errorf("the rule file is %s, want deploy/compose/prometheus-rules.yml", rm.Source)
	}
	data, err = os.ReadFile(rm.Source)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("%s: %v", rm.Source, err)
	}
	return scrape, job, rules
}

// TestComposePrometheusScrapesSumgate: Prometheus scrapes sumgate's admin
// listener, and each rule of the rule file is a complete alert.
func TestComposePrometheusScrapesSumgate(t *testing.T) {
	p := loadStack(t)
	cfg, _ := loadStackSumgateConfig(t, p)
	scrape, _, rules := readPrometheus(t, p)
	_, admin := hostPort(t, "admin_listen", cfg.AdminListen)
	if want := "sumgate:" + admin; !slices.Equal(scrape, []string{want}) {
		t.Errorf("Prometheus scrapes %v, want sumgate's admin listener %s", scrape, want)
	}
	n := 0
	for _, g := range rules.Groups {
		if g.Name == "" {
			t.Error("a rule group has no name")
		}
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: want alert, expr, labels.severity and annotations.summary", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if len(promSelectors(r.Expr)) == 0 {
				t.Errorf("rule %s: %q names no metric", r.Alert, r.Expr)
			}
		}
	}
	if n == 0 {
		t.Error("the rule file holds no alert")
	}
}

// A selector is a metric name in a PromQL expression, with the label
// names its matchers test.
type selector struct {
	metric string
	labels []string
}

// promKeywords are PromQL words that are not metric names: aggregations
// (which may be followed by "by (...)" rather than their parenthesis),
// binary operators and modifiers.
var promKeywords = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
	"bottomk", "topk", "quantile", "limitk", "limit_ratio", "and", "or", "unless", "atan2", "bool", "offset",
	"inf", "nan"}

// promGroupings are followed by a parenthesised list of label names.
var promGroupings = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// promSelectors returns the metrics that a PromQL expression selects. It
// is a lexer, not a parser: an identifier is a metric name unless a
// parenthesis follows it (a function) or it is a keyword; label lists,
// strings, numbers and range durations are skipped.
func promSelectors(expr string) []selector {
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n') {
			i++
		}
		return i
	}
	skipString := func(i int) int { // at a quote; returns past its end
		q := expr[i]
		for i++; i < len(expr) && expr[i] != q; i++ {
			if expr[i] == '\\' {
				i++
			}
		}
		return i + 1
	}
	var out []selector
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(i)
		case c == '[': // a range or subquery duration
			for i < len(expr) && expr[i] != ']' {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := skipSpace(i)
			switch {
			case slices.Contains(promGroupings, word):
				if next < len(expr) && expr[next] == '(' {
					i = strings.IndexByte(expr[next:], ')') + next + 1
				}
			case slices.Contains(promKeywords, word) || next < len(expr) && expr[next] == '(':
			default:
				sel := selector{metric: word}
				if next < len(expr) && expr[next] == '{' {
					i = next + 1
					for i < len(expr) && expr[i] != '}' {
						switch j := skipSpace(i); {
						case j < len(expr) && (expr[j] == '"' || expr[j] == '\'' || expr[j] == '`'):
							i = skipString(j)
						case j < len(expr) && isIdentStart(expr[j]):
							k := j
							for k < len(expr) && isIdent(expr[k]) {
								k++
							}
							sel.labels = append(sel.labels, expr[j:k])
							i = k
						default:
							i = j + 1
						}
					}
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	return out
}

func TestPromSelectors(t *testing.T) {
	for _, tt := range []struct {
		expr string
		want []string
	}{
		{`max by (instance) (sumgate_sumdb_alert) == 1`, []string{"sumgate_sumdb_alert"}},
		{`sum by (instance, sumgate_verdict) (increase(sumgate_verdicts_total{sumgate_verdict=~"mismatch|security-error"}[5m])) > 0`,
			[]string{"sumgate_verdicts_total{sumgate_verdict}"}},
		{`up{job="sumgate"} == 0`, []string{"up{job}"}},
		{`histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="}"}[5m]))) > 1.5e3 and on (i) b offset 5m`,
			[]string{"a_bucket{x}", "b"}},
	} {
		var got []string
		for _, s := range promSelectors(tt.expr) {
			g := s.metric
			if len(s.labels) > 0 {
				g += "{" + strings.Join(s.labels, ",") + "}"
			}
			got = append(got, g)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("promSelectors(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

// TestComposeAlertsNameExportedMetrics runs a sumgate (built from
// cmd/sumgate) against the hermetic test world, with a genuine and a
// tampered download behind it so that the verdict counters exist, scrapes
// its /metrics, and checks that every sumgate metric the alert rules
// select is exported, with the labels they test. Prometheus's own "up" is
// allowed for the scrape job.
func TestComposeAlertsNameExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs sumgate")
	}
	p := loadStack(t)
	_, job, rules := readPrometheus(t, p)
	exported := scrapeRunningSumgate(t)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, s := range promSelectors(r.Expr) {
				if s.metric == "up" {
					if !slices.Equal(s.labels, []string{"job"}) || !strings.Contains(r.Expr, `job="`+job+`"`) {
						t.Errorf("rule %s: %s: want up{job=%q}", r.Alert, r.Expr, job)
					}
					continue
				}
				labels, ok := exported[s.metric]
				if !ok {
					t.Errorf("rule %s: sumgate exports no metric %s", r.Alert, s.metric)
					continue
				}
				for _, l := range s.labels {
					if !slices.Contains(labels, l) {
						t.Errorf("rule %s: %s has no label %s (it has %v)", r.Alert, s.metric, l, labels)
					}
				}
			}
		}
	}
}

// scrapeRunningSumgate builds sumgate, runs it on loopback against a test
// world, makes a genuine and a tampered download through it, and returns
// the series names of its /metrics with their label names.
func scrapeRunningSumgate(t *testing.T) map[string][]string {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "sumgate")
	build := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "./cmd/sumgate")
	build.Dir = root
	build.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sumgate: %v\n%s", err, out)
	}

	w := testworld.New(t)
	var conf strings.Builder
	fmt.Fprintf(&conf, "data_dir: %s\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n", filepath.Join(dir, "data"))
	conf.WriteString(w.UpstreamConfig(w.RootsFile))
	file := filepath.Join(dir, "sumgate.yaml")
	if err := os.WriteFile(file, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	run := exec.CommandContext(ctx, bin, "run", "-config", file)
	run.Cancel = func() error { return run.Process.Signal(os.Interrupt) }
	run.WaitDelay = 10 * time.Second
	for _, kv := range os.Environ() { // spans to the file; no proxy of the machine's
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "OTEL_") && !strings.HasSuffix(strings.ToUpper(k), "_PROXY") {
			run.Env = append(run.Env, kv)
		}
	}
	logs := &testworld.Buffer{}
	run.Stderr = logs
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		run.Wait()
	})
	var proxyAddr, adminAddr, bundle string
	banner := bufio.NewScanner(stdout)
	for banner.Scan() && adminAddr == "" {
		line := strings.TrimSpace(banner.Text())
		if v, ok := strings.CutPrefix(line, "export HTTPS_PROXY=http://"); ok {
			proxyAddr = v
		}
		if v, ok := strings.CutPrefix(line, "export SSL_CERT_FILE="); ok {
			bundle = v
		}
		if v, ok := strings.CutPrefix(line, "Admin (metrics, health, /ca.pem): "); ok && strings.HasPrefix(v, "http://127.0.0.1:") {
			adminAddr = v
		}
	}
	go io.Copy(io.Discard, stdout)
	if proxyAddr == "" || adminAddr == "" || bundle == "" {
		t.Fatalf("sumgate run did not print its addresses\n%s", logs)
	}
	pemData, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemData)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr}),
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
	for _, tt := range []struct {
		path string
		want int
	}{{testworld.GoodPath, http.StatusOK}, {testworld.TamperedZipPath, http.StatusForbidden}} {
		resp, err := client.Get(w.ProxyURL + "/" + tt.path + "/@v/" + testworld.Version + ".zip")
		if err != nil {
			t.Fatalf("%s through sumgate: %v\n%s", tt.path, err, logs)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Fatalf("%s through sumgate: %s, want %d\n%s", tt.path, resp.Status, tt.want, logs)
		}
	}

	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}).Get(strings.TrimSuffix(adminAddr, "/") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		var labels string
		if i := strings.IndexByte(name, '{'); i >= 0 {
			// Label values may hold spaces: take the whole brace.
			full := line[i:]
			labels = full[1:strings.LastIndex(full, "}")]
			name = name[:i]
		}
		for pair := range strings.SplitSeq(labels, ",") {
			if k, _, ok := strings.Cut(pair, "="); ok && !slices.Contains(out[name], k) {
				out[name] = append(out[name], k)
			}
		}
		if _, ok := out[name]; !ok {
			out[name] = nil
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok := out["sumgate_requests_total"]; !ok {
		t.Fatalf("sumgate's /metrics has no sumgate_requests_total after two downloads:\n%v", slices.Sorted(maps.Keys(out)))
	}
	return out
}

// TestComposePublishesOnLoopbackOnly: every port the stack publishes
// listens on the host's loopback only. Published on every interface, the
// proxy would be open to the whole network (and tunnel anywhere).
func TestComposePublishesOnLoopbackOnly(t *testing.T) {
	p := loadStack(t)
	n := 0
	for _, name := range stackServices {
		for _, pc := range service(t, p, name).Ports {
			n++
			if pc.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %d on host address %q, want 127.0.0.1", name, pc.Target, pc.HostIP)
			}
		}
	}
	if n == 0 {
		t.Error("the stack publishes no port")
	}
}

// stackHost lays out the stack's named volumes as temporary folders, one
// per volume, shared by every service that mounts it, as Docker does.
type stackHost struct {
	p    *types.Project
	root string
	vols map[string]string // volume name: its folder
	bin  string            // the folder of the stand-in commands, first on PATH
	log  string            // what the stand-ins were called with
}

func newStackHost(t *testing.T, p *types.Project) *stackHost {
	t.Helper()
	h := &stackHost{p: p, root: t.TempDir(), vols: map[string]string{}}
	for name := range p.Volumes {
		dir := filepath.Join(h.root, "vol-"+name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		h.vols[name] = dir
	}
	h.bin = filepath.Join(h.root, "bin")
	h.log = filepath.Join(h.root, "calls")
	if err := os.Mkdir(h.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

// stub installs a stand-in command: a shell script that appends its name
// and arguments to h.log (one call a line, the fields separated by 0x1f),
// then runs body.
func (h *stackHost) stub(t *testing.T, name, body string) string {
	t.Helper()
	script := "#!/bin/sh\nset -eu\n{ printf '%s' " + name + "; for a in \"$@\"; do printf '\\037%s' \"$a\"; done; echo; } >> " + h.log + "\n" + body + "\n"
	file := filepath.Join(h.bin, name)
	if err := os.WriteFile(file, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return file
}

// calls returns the recorded calls of the stand-in name, each its arguments.
func (h *stackHost) calls(t *testing.T, name string) [][]string {
	t.Helper()
	data, err := os.ReadFile(h.log)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for line := range strings.Lines(string(data)) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\x1f")
		if f[0] == name {
			out = append(out, f[1:])
		}
	}
	return out
}

// local rewrites a service's mount targets in s to the folders standing in
// for them (named volumes) or to their sources in the repository (bind
// mounts), the longest target first.
func (h *stackHost) local(s types.ServiceConfig, text string) string {
	mounts := slices.Clone(s.Volumes)
	slices.SortFunc(mounts, func(a, b types.ServiceVolumeConfig) int { return len(b.Target) - len(a.Target) })
	var pairs []string
	for _, v := range mounts {
		switch v.Type {
		case types.VolumeTypeVolume:
			pairs = append(pairs, v.Target, h.vols[v.Source])
		case types.VolumeTypeBind:
			pairs = append(pairs, v.Target, v.Source)
		}
	}
	return strings.NewReplacer(pairs...).Replace(text)
}

// scriptPaths finds absolute paths in a shell script's code.
var scriptPaths = regexp.MustCompile(`(?:^|[\s"'=>])(/[^\s"';|&)]*)`)

// run runs a service's entrypoint script, bind-mounted from the
// repository, with its mount targets mapped by local, under the
// entrypoint's interpreter, with the given command (mapped too), as the
// test's user, with the stand-ins first on PATH and nothing else from the
// environment. It returns the script's output; the script fails the test
// if it exits non-zero.
func (h *stackHost) run(t *testing.T, name string, command []string) string {
	t.Helper()
	s := service(t, h.p, name)
	if len(s.Entrypoint) != 2 || (s.Entrypoint[0] != "/bin/sh" && s.Entrypoint[0] != "/bin/bash") {
		t.Fatalf("%s's entrypoint %v: want [/bin/sh|/bin/bash SCRIPT]", name, s.Entrypoint)
	}
	m, ok := mountOf(s, s.Entrypoint[1])
	if !ok || m.Type != types.VolumeTypeBind || m.Target != s.Entrypoint[1] {
		t.Fatalf("%s's entrypoint %s is not bind-mounted from the repository", name, s.Entrypoint[1])
	}
	data, err := os.ReadFile(m.Source)
	if err != nil {
		t.Fatal(err)
	}
	text := h.local(s, string(data))
	// Never let a mapping miss touch this machine's own folders: every
	// path the code names is under a stand-in folder, a file the service
	// bind-mounts read-only from the repository, or a device.
	var scripts []string
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.ReadOnly {
			scripts = append(scripts, v.Source)
		}
	}
	for line := range strings.Lines(text) {
		code := strings.TrimSpace(line)
		if strings.HasPrefix(code, "#") {
			continue
		}
		code, _, _ = strings.Cut(code, " #")
		for _, p := range scriptPaths.FindAllStringSubmatch(code, -1) {
			if !strings.HasPrefix(p[1], h.root+"/") && !slices.Contains(scripts, p[1]) && p[1] != "/dev/urandom" && p[1] != "/dev/null" {
				t.Fatalf("%s: %s names %s, which is on no volume it mounts", name, m.Source, p[1])
			}
		}
	}
	script := filepath.Join(h.root, name+".sh")
	if err := os.WriteFile(script, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{script}
	for _, a := range command {
		args = append(args, h.local(s, a))
	}
	cmd := exec.Command(s.Entrypoint[0], args...)
	cmd.Env = []string{"PATH=" + h.bin + ":" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s's %s: %v\n%s", name, filepath.Base(m.Source), err, out)
	}
	return string(out)
}

// flagValues parses the arguments of `step ca init`: every flag it is
// given takes a value (--name=value or --name value).
func flagValues(t *testing.T, args []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for i := 0; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok {
			t.Fatalf("step ca init %q: %q is not a flag", args, args[i])
		}
		if k, v, ok := strings.Cut(name, "="); ok {
			out[k] = append(out[k], v)
			continue
		}
		if i+1 >= len(args) {
			t.Fatalf("step ca init %q: %s has no value", args, args[i])
		}
		out[name] = append(out[name], args[i+1])
		i++
	}
	return out
}

// testRoot makes a self-signed CA certificate, PEM.
func testRoot(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sumgate compose CA Root CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// readSecret returns a file's contents, failing the test unless it is a
// non-empty regular file with mode 0600.
func readSecret(t *testing.T, what, file string) string {
	t.Helper()
	info, err := os.Lstat(file)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !info.Mode().IsRegular() || info.Mode().Perm() != 0o600 {
		t.Errorf("%s %s: %v, want a regular file 0600", what, file, info.Mode())
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(data)) == "" {
		t.Errorf("%s %s is empty", what, file)
	}
	return string(data)
}

// TestComposeCAScriptsRun runs step-ca's entrypoint (step-ca-start.sh)
// and then ca-init.sh as the stack runs them, their volumes laid out in
// temporary folders, with a stand-in `step` that records its arguments
// and makes the files `step ca init` makes, and a stand-in for step-ca
// itself; then sumgate, built as the image builds it, loads the files
// ca-init wrote with its own configuration from the stack (`sumgate ca
// export` reads the provisioner password and the root).
//
// step-ca-start.sh: `step ca init` gets every flag that keeps it from
// prompting, the DNS name, port and provisioner sumgate's configuration
// uses, and two different random passwords, each in a 0600 file; no
// password is printed; step-ca then runs with the keys' password and the
// ca.json init wrote; a restart initialises nothing again. The image's
// own initialisation (which prints a password) is never configured.
//
// ca-init.sh: the root and the provisioner's password (never the keys')
// are copied into sumgate's volume, 0600 in a 0700 folder, owned by
// sumgate's uid 65532 (when the test runs as root; otherwise the chown
// calls are recorded), and the root alone into the clients' volume, 0644.
func TestComposeCAScriptsRun(t *testing.T) {
	p := loadStack(t)
	cfg, _ := loadStackSumgateConfig(t, p)
	stepCA, caInit, sg := service(t, p, "step-ca"), service(t, p, "ca-init"), service(t, p, "sumgate")
	for k := range stepCA.Environment {
		if strings.HasPrefix(k, "DOCKER_STEPCA_INIT_") {
			t.Errorf("step-ca sets %s: the image's own initialisation, which prints the provisioner's password, would run", k)
		}
	}
	h := newStackHost(t, p)
	root := testRoot(t)
	rootFile := filepath.Join(h.root, "root.pem")
	if err := os.WriteFile(rootFile, root, 0o644); err != nil {
		t.Fatal(err)
	}
	h.stub(t, "step", `case "$1 $2" in
"ca init")
	: "${STEPPATH:?STEPPATH is not exported}"
	mkdir -p "$STEPPATH/config" "$STEPPATH/certs"
	cp `+rootFile+` "$STEPPATH/certs/root_ca.crt"
	echo '{}' > "$STEPPATH/config/ca.json"
	echo "Your PKI is ready to go." >&2 ;;
"certificate fingerprint")
	echo 4fe5f5ef09e95c803fdcb80b8cf511e2a885eb86f3ce74e3e90e62fa3faf1531 ;;
*)
	echo "stand-in step: unexpected $*" >&2
	exit 2 ;;
esac`)
	h.stub(t, "step-ca", "")

	// step-ca's first start, then a restart.
	if len(stepCA.Command) == 0 {
		t.Fatal("step-ca has no command: the image's is cleared by the new entrypoint")
	}
	command := slices.Concat([]string{"step-ca"}, stepCA.Command[1:])
	if stepCA.Command[0] != "/usr/local/bin/step-ca" {
		t.Errorf("step-ca runs %s, want the image's /usr/local/bin/step-ca", stepCA.Command[0])
	}
	out := h.run(t, "step-ca", command)
	inits := h.calls(t, "step")
	if len(inits) != 1 || len(inits[0]) < 2 || inits[0][0] != "ca" || inits[0][1] != "init" {
		t.Fatalf("step-ca-start.sh ran step %q, want `step ca init` once", inits)
	}
	flags := flagValues(t, inits[0][2:])
	one := func(name string) string {
		t.Helper()
		if v := flags[name]; len(v) == 1 && v[0] != "" {
			return v[0]
		}
		t.Errorf("step ca init: --%s %q, want one value", name, flags[name])
		return ""
	}
	// Without any of these `step ca init` prompts, and there is no terminal.
	if got := one("deployment-type"); got != "standalone" {
		t.Errorf("step ca init --deployment-type %q, want standalone (the only type with a provisioner of its own)", got)
	}
	one("name")
	u, err := url.Parse(cfg.CA.Step.URL)
	if err != nil {
		t.Fatal(err)
	}
	var dns []string
	for _, v := range flags["dns"] {
		dns = append(dns, strings.Split(v, ",")...)
	}
	if _, ok := p.Services[u.Hostname()]; !ok || !slices.Contains(dns, u.Hostname()) {
		t.Errorf("ca.step.url %s: want a service of the stack whose certificate names it (step ca init --dns %q)", u, dns)
	}
	probe := strings.Fields(strings.Join(stepCA.HealthCheck.Test, " "))
	hc, err := url.Parse(argAfter(probe, "--ca-url"))
	if err != nil || !slices.Contains(dns, hc.Hostname()) || hc.Port() != u.Port() {
		t.Errorf("step-ca's health check %v asks %v: want a name in --dns %q and port %s", stepCA.HealthCheck.Test, hc, dns, u.Port())
	}
	if _, err := os.Stat(h.local(stepCA, argAfter(probe, "--root"))); err != nil {
		t.Errorf("step-ca's health check trusts --root %s: %v", argAfter(probe, "--root"), err)
	}
	if _, port := hostPort(t, "step ca init --address", one("address")); port != u.Port() {
		t.Errorf("ca.step.url %s: step-ca listens on port %s", u, port)
	}
	if got := one("provisioner"); got != cfg.CA.Step.Provisioner {
		t.Errorf("ca.step.provisioner %q, but step ca init creates %q", cfg.CA.Step.Provisioner, got)
	}
	keyFile, provFile := one("password-file"), one("provisioner-password-file")
	if keyFile == "" || provFile == "" {
		t.FailNow()
	}
	keyPass := readSecret(t, "the CA keys' password", keyFile)
	provPass := readSecret(t, "the provisioner's password", provFile)
	if keyFile == provFile || keyPass == provPass {
		t.Errorf("the CA's keys and the provisioner share a password (%s, %s): sumgate would hold the one that decrypts the CA's keys", keyFile, provFile)
	}
	for _, pw := range []string{keyPass, provPass} {
		if len(strings.TrimSpace(pw)) < 32 {
			t.Errorf("a password of %d characters: want at least 32 random ones", len(strings.TrimSpace(pw)))
		}
		if pw := strings.TrimSpace(pw); pw != "" && strings.Contains(out, pw) {
			t.Errorf("step-ca-start.sh prints a password to the container's log:\n%s", out)
		}
	}
	runs := h.calls(t, "step-ca")
	wantRun := slices.Concat([]string{"--password-file", keyFile}, []string{h.local(stepCA, stepCA.Command[len(stepCA.Command)-1])})
	if len(runs) != 1 || !slices.Equal(runs[0], wantRun) {
		t.Errorf("step-ca ran with %q, want once with %q (the keys' password file init was given)", runs, wantRun)
	}
	if _, err := os.Stat(wantRun[len(wantRun)-1]); err != nil {
		t.Errorf("step-ca's configuration: %v", err)
	}

	h.run(t, "step-ca", command) // a restart
	if n := len(h.calls(t, "step")); n != 1 {
		t.Errorf("a restart ran step again (%d calls): an initialised CA must be left alone", n)
	}
	if readSecret(t, "the CA keys' password", keyFile) != keyPass || readSecret(t, "the provisioner's password", provFile) != provPass {
		t.Error("a restart changed the passwords of an initialised CA")
	}
	if n := len(h.calls(t, "step-ca")); n != 2 {
		t.Errorf("step-ca ran %d times in two starts", n)
	}

	// ca-init, twice: it runs on every `up`.
	asRoot := os.Getuid() == 0
	if !asRoot {
		h.stub(t, "chown", "") // only root can give files away: record the calls
	}
	for range 2 {
		h.run(t, "ca-init", nil)
	}
	sgVol, ok := mountOf(sg, cfg.CA.Step.Root)
	if !ok || sgVol.Type != types.VolumeTypeVolume {
		t.Fatalf("ca.step.root %s is on no volume of sumgate", cfg.CA.Step.Root)
	}
	dir := h.vols[sgVol.Source]
	onVol := func(f string) string { return filepath.Join(dir, strings.TrimPrefix(f, sgVol.Target+"/")) }
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("sumgate's volume %s after ca-init: %v, %v, want a folder 0700", sgVol.Source, info.Mode(), err)
	}
	gotRoot := readSecret(t, "sumgate's root", onVol(cfg.CA.Step.Root))
	gotPass := readSecret(t, "sumgate's provisioner password", onVol(cfg.CA.Step.PasswordFile))
	if gotPass != provPass {
		t.Errorf("ca-init gave sumgate %s, not the provisioner's password (the keys' one: %v)", cfg.CA.Step.PasswordFile, gotPass == keyPass)
	}
	if gotRoot != string(root) {
		t.Errorf("ca-init gave sumgate a root that is not step-ca's")
	}
	if asRoot {
		for _, f := range []string{dir, onVol(cfg.CA.Step.Root), onVol(cfg.CA.Step.PasswordFile)} {
			info, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			if st := info.Sys().(*syscall.Stat_t); st.Uid != 65532 || st.Gid != 65532 {
				t.Errorf("%s is owned by %d:%d, want sumgate's 65532:65532", f, st.Uid, st.Gid)
			}
		}
	} else {
		var chowns []string
		for _, c := range h.calls(t, "chown") {
			chowns = append(chowns, strings.Join(c, " "))
		}
		for _, f := range []string{dir, onVol(cfg.CA.Step.Root) + ".tmp", onVol(cfg.CA.Step.PasswordFile) + ".tmp"} {
			if !slices.Contains(chowns, "65532:65532 "+f) {
				t.Errorf("ca-init does not give %s to sumgate's uid (chown calls %q)", f, chowns)
			}
		}
	}
	for _, v := range caInit.Volumes {
		if v.Type != types.VolumeTypeVolume || v.ReadOnly || v.Source == sgVol.Source {
			continue
		}
		// The clients' volume: the root alone, readable by all.
		entries, err := os.ReadDir(h.vols[v.Source])
		if err != nil || len(entries) != 1 {
			t.Fatalf("ca-init's volume %s holds %v (%v), want the root alone", v.Source, entries, err)
		}
		f := filepath.Join(h.vols[v.Source], entries[0].Name())
		info, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(f)
		if block, _ := pem.Decode(data); info.Mode().Perm() != 0o644 || block == nil || block.Type != "CERTIFICATE" || string(data) != string(root) {
			t.Errorf("%s in %s: %v, want step-ca's root, PEM, 0644", entries[0].Name(), v.Source, info.Mode())
		}
	}

	// sumgate reads them: its configuration from the stack, with its mount
	// targets mapped to the stand-in folders.
	confMount, _ := mountOf(sg, argAfter(sg.Command, "-config"))
	raw, err := os.ReadFile(confMount.Source)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(h.root, "sumgate.yaml")
	if err := os.WriteFile(conf, []byte(h.local(sg, string(raw))), 0o644); err != nil {
		t.Fatal(err)
	}
	export := exec.Command(buildStepSumgate(t), "ca", "export", "-config", conf)
	export.Env = []string{"PATH=" + os.Getenv("PATH")} // no $SUMGATE_STEP_PASSWORD
	var stderr strings.Builder
	export.Stderr = &stderr
	pemOut, err := export.Output()
	if err != nil {
		t.Fatalf("sumgate ca export, with the stack's configuration and the files ca-init wrote: %v\n%s", err, stderr.String())
	}
	if block, _ := pem.Decode(pemOut); block == nil || string(pemOut) != string(root) {
		t.Errorf("sumgate ca export printed %q, want step-ca's root", pemOut)
	} else if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Errorf("the root sumgate reads: %v", err)
	}
}
