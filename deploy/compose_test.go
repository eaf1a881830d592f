package deploy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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
	stackServices = []string{"ca-init", "client", "jaeger", "otel-collector", "prometheus", "step-ca", "sumgate"}
	oneShot       = []string{"ca-init", "client"}
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
// up` leaves the client out (its profile), `run client` starts it.
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
			if (tt.service == "client") != (len(s.Profiles) > 0) {
				t.Errorf("profiles %v: only the client is left out of `docker compose up`", s.Profiles)
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
// in the stack loads with sumgate's own loader; it signs leaves with the
// stack's step-ca through the JWK provisioner that step-ca's first start
// creates; the root and the password it reads are on the volume ca-init
// writes (and only those files, which ca-init names), mounted read-only;
// it listens on every interface of its container, on the ports the stack
// publishes, keeps data_dir on a volume, and sends its spans to the
// collector's OTLP receiver.
func TestComposeSumgateRunsOnTheStack(t *testing.T) {
	p := loadStack(t)
	cfg, caMount := loadStackSumgateConfig(t, p)
	s, stepCA, initStep := service(t, p, "sumgate"), service(t, p, "step-ca"), service(t, p, "ca-init")

	if cfg.CA.Backend != "step" || cfg.CA.Step.Type != "jwk" {
		t.Errorf("ca.backend %q, ca.step.type %q: want step, jwk", cfg.CA.Backend, cfg.CA.Step.Type)
	}
	u, err := url.Parse(cfg.CA.Step.URL)
	if err != nil {
		t.Fatal(err)
	}
	env := func(s types.ServiceConfig, k string) string {
		if v := s.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	if u.Hostname() != "step-ca" || !slices.Contains(strings.Split(env(stepCA, "DOCKER_STEPCA_INIT_DNS_NAMES"), ","), u.Hostname()) {
		t.Errorf("ca.step.url %s: want the step-ca service, whose certificate names it (DOCKER_STEPCA_INIT_DNS_NAMES %q)", u, env(stepCA, "DOCKER_STEPCA_INIT_DNS_NAMES"))
	}
	// The image's entrypoint listens on DOCKER_STEPCA_INIT_ADDRESS, :9000 by default.
	if want := strings.TrimPrefix(cmpOr(env(stepCA, "DOCKER_STEPCA_INIT_ADDRESS"), ":9000"), ":"); u.Port() != want {
		t.Errorf("ca.step.url %s: step-ca listens on port %s", u, want)
	}
	if got := env(stepCA, "DOCKER_STEPCA_INIT_PROVISIONER_NAME"); got != cfg.CA.Step.Provisioner {
		t.Errorf("ca.step.provisioner %q, but step-ca's init creates %q", cfg.CA.Step.Provisioner, got)
	}
	if env(stepCA, "DOCKER_STEPCA_INIT_NAME") == "" || env(stepCA, "DOCKER_STEPCA_INIT_PASSWORD_FILE") == "" {
		t.Error("step-ca is not initialised on first start with a password it keeps (DOCKER_STEPCA_INIT_NAME, DOCKER_STEPCA_INIT_PASSWORD_FILE)")
	}

	if !caMount.ReadOnly {
		t.Errorf("sumgate mounts %s writable", caMount.Source)
	}
	var written *types.ServiceVolumeConfig
	for _, v := range initStep.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == caMount.Source && !v.ReadOnly {
			written = &v
		}
	}
	if written == nil {
		t.Fatalf("ca-init does not write the volume %s that sumgate reads", caMount.Source)
	}
	var script string
	for _, v := range initStep.Volumes {
		if v.Type == types.VolumeTypeBind && slices.Contains(initStep.Entrypoint, v.Target) {
			data, err := os.ReadFile(v.Source)
			if err != nil {
				t.Fatal(err)
			}
			script = string(data)
		}
	}
	if script == "" {
		t.Fatalf("ca-init's entrypoint %v runs no script from the repository", initStep.Entrypoint)
	}
	onVolume := func(f string) string { return written.Target + strings.TrimPrefix(f, caMount.Target) }
	for _, want := range []string{
		"chown 65532:65532 " + written.Target + "\n", "chmod 0700 " + written.Target + "\n",
		onVolume(cfg.CA.Step.Root) + " 0600 65532:65532\n", onVolume(cfg.CA.Step.PasswordFile) + " 0600 65532:65532\n",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("ca-init's script has no line ending in %q: sumgate's files, owned by uid 65532, 0600 in a 0700 folder", want)
		}
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

// collector is the otel-collector service's configuration file.
type collector struct {
	file       string
	Extensions map[string]map[string]any `yaml:"extensions"`
	Receivers  map[string]map[string]any `yaml:"receivers"`
	Exporters  map[string]map[string]any `yaml:"exporters"`
	Service    struct {
		Extensions []string `yaml:"extensions"`
		Pipelines  map[string]struct {
			Receivers []string `yaml:"receivers"`
			Exporters []string `yaml:"exporters"`
		} `yaml:"pipelines"`
	} `yaml:"service"`
}

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
	if err := yaml.Unmarshal(data, c); err != nil {
		t.Fatalf("%s: %v", m.Source, err)
	}
	return c
}

// receiverPort returns the port of the otlp receiver's protocol.
func (c *collector) receiverPort(t *testing.T, protocol string) string {
	t.Helper()
	protos, _ := c.Receivers["otlp"]["protocols"].(map[string]any)
	proto, _ := protos[protocol].(map[string]any)
	ep, _ := proto["endpoint"].(string)
	if ep == "" {
		t.Fatalf("%s: the otlp receiver has no %s endpoint", c.file, protocol)
	}
	_, port := hostPort(t, "otlp "+protocol+" endpoint", ep)
	return port
}

// componentType is the type of a component ID ("otlp_grpc/jaeger": otlp_grpc).
func componentType(id string) string {
	typ, _, _ := strings.Cut(id, "/")
	return typ
}

// TestComposeCollectorFeedsJaegerAndAFile: the collector's traces
// pipeline receives OTLP and exports to Jaeger's OTLP/gRPC port and to a
// file on a volume; every endpoint it exports to is a service of the
// stack; its health check asks the health_check extension where it
// listens.
func TestComposeCollectorFeedsJaegerAndAFile(t *testing.T) {
	p := loadStack(t)
	c := readCollector(t, p)
	svc := service(t, p, "otel-collector")
	traces, ok := c.Service.Pipelines["traces"]
	if !ok {
		t.Fatalf("%s: no traces pipeline", c.file)
	}
	if !slices.Contains(traces.Receivers, "otlp") {
		t.Errorf("the traces pipeline receives from %v, want otlp", traces.Receivers)
	}
	for _, r := range traces.Receivers {
		if _, ok := c.Receivers[r]; !ok {
			t.Errorf("the traces pipeline names the undefined receiver %s", r)
		}
	}
	var toJaeger, toFile bool
	for _, id := range traces.Exporters {
		e, ok := c.Exporters[id]
		if !ok {
			t.Errorf("the traces pipeline names the undefined exporter %s", id)
			continue
		}
		switch componentType(id) {
		case "otlp_grpc", "otlp":
			ep, _ := e["endpoint"].(string)
			host, port := hostPort(t, id+" endpoint", ep)
			if host == "jaeger" && port == "4317" { // Jaeger's OTLP/gRPC receiver
				toJaeger = true
			}
		case "file":
			path, _ := e["path"].(string)
			if m, ok := mountOf(svc, path); ok && m.Type == types.VolumeTypeVolume && !m.ReadOnly {
				toFile = true
			} else {
				t.Errorf("%s writes %q, which is on no writable volume of the collector", id, path)
			}
		}
	}
	if !toJaeger || !toFile {
		t.Errorf("the traces pipeline exports to %v: want Jaeger's OTLP port (jaeger:4317) and a file", traces.Exporters)
	}
	for id, e := range c.Exporters {
		if ep, ok := e["endpoint"].(string); ok {
			host := ep
			if u, err := url.Parse(ep); err == nil && u.Host != "" {
				host = u.Host
			}
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if _, ok := p.Services[host]; !ok {
				t.Errorf("exporter %s sends to %s, which is not a service of the stack", id, ep)
			}
		}
	}

	hc, ok := c.Extensions["health_check"]
	if !ok || !slices.Contains(c.Service.Extensions, "health_check") {
		t.Fatalf("%s: the health_check extension is not enabled", c.file)
	}
	ep, _ := hc["endpoint"].(string)
	_, port := hostPort(t, "health_check endpoint", ep)
	test := svc.HealthCheck.Test
	if _, probePort := hostPort(t, "the health check's -admin", argAfter(test, "-admin")); probePort != port || hc["path"] != "/readyz" || !slices.Contains(test, "healthcheck") {
		t.Errorf("health check %v: want `sumgate healthcheck -admin 127.0.0.1:%s` and the extension's path /readyz (%v)", test, port, hc["path"])
	}
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
	fmt.Fprintf(&conf, "module_proxies: [%s]\nsumdb:\n  key: %s\nupstream:\n  roots: %s\n  resolve:\n", w.ProxyURL, w.SumDBKey, w.RootsFile)
	var hosts []string
	for host, addr := range w.Resolve {
		fmt.Fprintf(&conf, "    %s: %q\n", host, addr)
		hosts = append(hosts, host)
	}
	fmt.Fprintf(&conf, "intercept: [%s]\n", strings.Join(hosts, ", "))
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
