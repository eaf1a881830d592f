package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/sumgate/sumgate/certs"
	"github.com/sumgate/sumgate/internal/config"
)

// The kustomizations under deploy/kubernetes, rendered by these tests
// with kustomize's own library (the one kubectl kustomize embeds), so no
// kubectl and no cluster is needed.
const (
	k8sDir      = "kubernetes"
	k8sBase     = "kubernetes/base"
	k8sOverlay  = "kubernetes/overlays/example"
	k8sReplicas = "kubernetes/overlays/replicas" // several replicas, the example etcd
	k8sEtcd     = "kubernetes/etcd"
	k8sUID      = 65532 // the image's user and group (Dockerfile)
	clientLabel = "sumgate.io/client"
	// The Secrets the operator creates (README): the CA's, etcd's client
	// certificate for sumgate, the etcd members' certificates.
	caSecret         = "sumgate-ca"
	etcdClientSecret = "sumgate-etcd-client"
	etcdSecret       = "etcd-tls"
	nsNameLabel      = "kubernetes.io/metadata.name" // set on every namespace by the API server
)

// manifests holds the objects one kustomization renders, each decoded
// strictly into its Kubernetes API type.
type manifests struct {
	namespaces  []corev1.Namespace
	configMaps  []corev1.ConfigMap
	claims      []corev1.PersistentVolumeClaim
	services    []corev1.Service
	deployments []appsv1.Deployment
	policies    []networkingv1.NetworkPolicy
	budgets     []policyv1.PodDisruptionBudget
	sets        []appsv1.StatefulSet
	autoscalers []autoscalingv2.HorizontalPodAutoscaler
}

// decodeStrict decodes one YAML object into the API type its kind names,
// refusing unknown fields, duplicate keys, a kind this deployment does
// not use and an apiVersion other than the one served for it.
func (m *manifests) decodeStrict(name string, data []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	var (
		obj  any
		want string
		add  func()
	)
	switch tm.Kind {
	case "Namespace":
		var o corev1.Namespace
		obj, want, add = &o, "v1", func() { m.namespaces = append(m.namespaces, o) }
	case "ConfigMap":
		var o corev1.ConfigMap
		obj, want, add = &o, "v1", func() { m.configMaps = append(m.configMaps, o) }
	case "PersistentVolumeClaim":
		var o corev1.PersistentVolumeClaim
		obj, want, add = &o, "v1", func() { m.claims = append(m.claims, o) }
	case "Service":
		var o corev1.Service
		obj, want, add = &o, "v1", func() { m.services = append(m.services, o) }
	case "Deployment":
		var o appsv1.Deployment
		obj, want, add = &o, "apps/v1", func() { m.deployments = append(m.deployments, o) }
	case "NetworkPolicy":
		var o networkingv1.NetworkPolicy
		obj, want, add = &o, "networking.k8s.io/v1", func() { m.policies = append(m.policies, o) }
	case "PodDisruptionBudget":
		var o policyv1.PodDisruptionBudget
		obj, want, add = &o, "policy/v1", func() { m.budgets = append(m.budgets, o) }
	case "StatefulSet":
		var o appsv1.StatefulSet
		obj, want, add = &o, "apps/v1", func() { m.sets = append(m.sets, o) }
	case "HorizontalPodAutoscaler":
		var o autoscalingv2.HorizontalPodAutoscaler
		obj, want, add = &o, "autoscaling/v2", func() { m.autoscalers = append(m.autoscalers, o) }
	default:
		return fmt.Errorf("%s: kind %q: not one this deployment uses (add it to decodeStrict)", name, tm.Kind)
	}
	if tm.APIVersion != want {
		return fmt.Errorf("%s: %s apiVersion %q, want %q", name, tm.Kind, tm.APIVersion, want)
	}
	if err := unmarshalStrict(data, obj); err != nil {
		return fmt.Errorf("%s: %s: %v", name, tm.Kind, err)
	}
	add()
	return nil
}

// unmarshalStrict decodes YAML as the API server's strict field
// validation does: no duplicate key, no unknown field, and field names
// matched exactly (encoding/json, under sigs.k8s.io/yaml's
// UnmarshalStrict, would take readOnlyRootFileSystem for
// readOnlyRootFilesystem).
func unmarshalStrict(data []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// render builds the kustomization in dir and decodes every object.
func render(t testing.TB, dir string) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := &manifests{}
	for _, r := range rm.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		if err := m.decodeStrict(dir+": "+r.CurId().String(), data); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// only returns the one element of list, failing unless there is exactly one.
func only[T any](t testing.TB, what string, list []T) *T {
	t.Helper()
	if len(list) != 1 {
		t.Fatalf("%d %s, want exactly one", len(list), what)
	}
	return &list[0]
}

// TestKubernetesSourcesDecodeStrictly reads every YAML file under
// deploy/kubernetes as written, before kustomize: a kustomization as
// kustomize's own type, sumgate.yaml with sumgate's loader, every other
// document as its Kubernetes type, all refusing unknown fields and
// duplicate keys (kustomize's YAML reading could let a repeated key
// through, the last one silently winning).
func TestKubernetesSourcesDecodeStrictly(t *testing.T) {
	var files []string
	err := filepath.WalkDir(k8sDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".yaml") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	kustomizations := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		switch filepath.Base(file) {
		case "kustomization.yaml":
			kustomizations++
			var k types.Kustomization
			if err := unmarshalStrict(data, &k); err != nil {
				t.Errorf("%s: %v", file, err)
			}
			continue
		case "sumgate.yaml":
			// config.Parse refuses unknown and duplicate keys; values that
			// name files are checked by the tests below, in a pod's layout.
			if _, err := config.Parse(file, data); err != nil && !strings.Contains(err.Error(), "no such file") {
				t.Errorf("%v", err)
			}
			continue
		}
		r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		var m manifests
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			if err := m.decodeStrict(fmt.Sprintf("%s (document %d)", file, i), doc); err != nil {
				t.Error(err)
			}
		}
	}
	if kustomizations < 3 {
		t.Errorf("found %d kustomization.yaml files under %s, want the base, the component and the example overlay", kustomizations, k8sDir)
	}
}

// TestKubernetesRendersOnlyWhatItShould: the base and the overlay render
// exactly one of each object, all in the namespace sumgate, and the
// local-config parameters are not among them.
func TestKubernetesRendersOnlyWhatItShould(t *testing.T) {
	for _, dir := range []string{k8sBase, k8sOverlay} {
		t.Run(dir, func(t *testing.T) {
			m := render(t, dir)
			namespace := only(t, "Namespaces", m.namespaces)
			if namespace.Name != "sumgate" {
				t.Errorf("Namespace %q, want sumgate", namespace.Name)
			}
			if namespace.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
				t.Errorf("Namespace labels %v: want the restricted Pod Security Standard enforced", namespace.Labels)
			}
			cm := only(t, "ConfigMaps (the network parameters are local-config, never applied)", m.configMaps)
			if !strings.HasPrefix(cm.Name, "sumgate-config-") {
				t.Errorf("ConfigMap %q: want sumgate-config with its content hash, so that a change rolls the pod", cm.Name)
			}
			only(t, "PersistentVolumeClaims", m.claims)
			only(t, "Services", m.services)
			only(t, "Deployments", m.deployments)
			only(t, "PodDisruptionBudgets", m.budgets)
			if len(m.policies) == 0 {
				t.Fatal("no NetworkPolicy")
			}
			metas := []metav1.ObjectMeta{cm.ObjectMeta, m.claims[0].ObjectMeta, m.services[0].ObjectMeta, m.deployments[0].ObjectMeta, m.budgets[0].ObjectMeta}
			for _, p := range m.policies {
				metas = append(metas, p.ObjectMeta)
			}
			for _, om := range metas {
				if om.Namespace != namespace.Name {
					t.Errorf("%s is in namespace %q, want %q", om.Name, om.Namespace, namespace.Name)
				}
			}
		})
	}
}

// pod is the simulated file system of the rendered pod: each volume is a
// directory under a temporary root, laid out as the kubelet lays it out,
// and each container's mount paths map onto them.
type pod struct {
	m    *manifests
	dep  *appsv1.Deployment
	spec *corev1.PodSpec
	main *corev1.Container // the gateway
	root string
	vols map[string]string // volume name -> its directory
	cfg  *config.Config    // sumgate.yaml as the gateway loads it, paths mapped
}

// secretKey is one key of the simulated Secret sumgate-ca.
type secretKey struct {
	name string
	data []byte
}

// volumeOf returns the volume a container mounts at the mount path
// holding path (in the container's terms), and the mount.
func volumeOf(c *corev1.Container, path string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	for _, vm := range c.VolumeMounts {
		if (path == vm.MountPath || strings.HasPrefix(path, vm.MountPath+"/")) && len(vm.MountPath) > len(best.MountPath) {
			best = vm
		}
	}
	return best, best.Name != ""
}

// local rewrites the container's mount paths in s to the volumes'
// directories, in one pass (a directory is never rewritten again), the
// longest mount path first where several match.
func (p *pod) local(c *corev1.Container, s string) string {
	mounts := slices.Clone(c.VolumeMounts)
	slices.SortFunc(mounts, func(a, b corev1.VolumeMount) int { return len(b.MountPath) - len(a.MountPath) })
	var pairs []string
	for _, vm := range mounts {
		pairs = append(pairs, vm.MountPath, p.vols[vm.Name])
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// volume returns the pod's volume named name.
func (p *pod) volume(t testing.TB, name string) *corev1.Volume {
	t.Helper()
	for i := range p.spec.Volumes {
		if p.spec.Volumes[i].Name == name {
			return &p.spec.Volumes[i]
		}
	}
	t.Fatalf("no volume %q in the pod", name)
	return nil
}

// absPath finds absolute paths in a shell script.
var absPath = regexp.MustCompile(`(?:^|[\s"'=])(/[^\s"';|&)]*)`)

// startPod lays out the pod's volumes under a temporary directory: each
// Secret volume as the kubelet writes one, with that Secret's keys from
// secrets (a timestamped folder of files with the given mode, a ..data
// link to it and one link per key), the
// emptyDirs world-writable as the kubelet creates them, the ConfigMap's
// files; runs each init container's command with its mount paths mapped,
// then loads sumgate.yaml with the gateway's mount paths mapped.
func startPod(t testing.TB, m *manifests, secrets map[string][]secretKey, mode os.FileMode) *pod {
	t.Helper()
	p := &pod{m: m, dep: only(t, "Deployments", m.deployments), root: t.TempDir(), vols: map[string]string{}}
	p.spec = &p.dep.Spec.Template.Spec
	p.main = only(t, "containers in the pod", p.spec.Containers)
	cm := only(t, "ConfigMaps", m.configMaps)
	for _, v := range p.spec.Volumes {
		dir := filepath.Join(p.root, "vol-"+v.Name)
		p.vols[v.Name] = dir
		switch {
		case v.Secret != nil:
			keys, ok := secrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("volume %s mounts the Secret %q, which the test does not know", v.Name, v.Secret.SecretName)
			}
			writeSecretVolume(t, dir, keys, mode)
		case v.EmptyDir != nil:
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil { // past the umask, as the kubelet's
				t.Fatal(err)
			}
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != cm.Name {
				t.Fatalf("volume %s mounts ConfigMap %q; the kustomization makes %q", v.Name, v.ConfigMap.Name, cm.Name)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for k, data := range cm.Data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		case v.PersistentVolumeClaim != nil:
			if err := os.Mkdir(dir, 0o770); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("volume %s: a source the test does not lay out", v.Name)
		}
	}
	for _, c := range p.spec.InitContainers {
		argv := slices.Concat(c.Command, c.Args)
		if len(argv) == 0 {
			t.Fatalf("init container %s has no command", c.Name)
		}
		for i := range argv {
			argv[i] = p.local(&c, argv[i])
			// Never let a mapping miss write to this machine's /run or /etc.
			for _, m := range absPath.FindAllStringSubmatch(argv[i], -1) {
				if !strings.HasPrefix(m[1], p.root+"/") && m[1] != p.root {
					t.Fatalf("init container %s: path %s is on no volume it mounts (the root file system is read-only)", c.Name, m[1])
				}
			}
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("init container %s: %v\n%s", c.Name, err, out)
		}
	}
	// The gateway's configuration: the file its -config flag names.
	args := slices.Concat(p.main.Command, p.main.Args)
	i := slices.Index(args, "-config")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("%s runs %q: no -config", p.main.Name, args)
	}
	vm, ok := volumeOf(p.main, args[i+1])
	if !ok || p.volume(t, vm.Name).ConfigMap == nil {
		t.Fatalf("-config %s is not on the ConfigMap's volume", args[i+1])
	}
	raw, err := os.ReadFile(p.local(p.main, args[i+1]))
	if err != nil {
		t.Fatalf("-config %s: %v (the ConfigMap has %v)", args[i+1], err, slices.Sorted(maps.Keys(cm.Data)))
	}
	file := filepath.Join(p.root, "sumgate.yaml")
	if err := os.WriteFile(file, []byte(p.local(p.main, string(raw))), 0o644); err != nil {
		t.Fatal(err)
	}
	if p.cfg, err = config.Load(file); err != nil {
		t.Fatalf("sumgate.yaml from the ConfigMap, in the pod's layout: %v", err)
	}
	return p
}

// writeSecretVolume writes keys as the kubelet's atomic writer lays out a
// Secret volume: files in a timestamped folder, ..data linking to it and
// each key a link through ..data, the volume's folder 1777.
func writeSecretVolume(t testing.TB, dir string, keys []secretKey, mode os.FileMode) {
	t.Helper()
	ts := "..2026_01_02_03_04_05.123456789"
	if err := os.MkdirAll(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		f := filepath.Join(dir, ts, k.name)
		if err := os.WriteFile(f, k.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", k.name), filepath.Join(dir, k.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
}

// caMaterial makes a CA as the README has operators make one for the
// Secret, with sumgate's own 'ca init' code path: the embedded CA in a
// scratch data_dir, then the intermediate, its chain and its key (the
// root key never leaves the scratch folder).
func caMaterial(t testing.TB) (keys []secretKey, root *x509.Certificate) {
	t.Helper()
	work := t.TempDir()
	root, err := certs.Init(context.Background(), certs.Config{DataDir: work, Intercept: config.Default().Intercept})
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(work, "ca", name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	chain := slices.Concat(read("intermediate.crt"), read("root.crt"))
	return []secretKey{{"ca.crt", chain}, {"ca.key", read("intermediate.key")}}, root
}

// secretMode returns the defaultMode of the pod's volume of the CA's Secret.
func secretMode(t testing.TB, spec *corev1.PodSpec) os.FileMode {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == caSecret {
			if v.Secret.DefaultMode == nil {
				t.Fatalf("Secret volume %s: no defaultMode (the kubelet's 0644 would let others read the key)", v.Name)
			}
			return os.FileMode(*v.Secret.DefaultMode)
		}
	}
	t.Fatal("the pod mounts no Secret")
	return 0
}

// TestKubernetesCASecretIsCopiedWithKeyPermissions runs the init
// container's own command against a Secret volume laid out as the kubelet
// lays one out: sumgate then loads the CA from the copy, and still refuses
// it straight from the Secret (threat 17: a key group or others can read).
func TestKubernetesCASecretIsCopiedWithKeyPermissions(t *testing.T) {
	m := render(t, k8sOverlay)
	keys, root := caMaterial(t)
	manifestMode := secretMode(t, &only(t, "Deployments", m.deployments).Spec.Template.Spec)
	if manifestMode&0o007 != 0 {
		t.Errorf("Secret defaultMode %#o: others can read the key", manifestMode)
	}
	for _, tc := range []struct {
		name     string
		mode     os.FileMode
		password bool
	}{
		{"manifest defaultMode", manifestMode, false},
		{"group-writable 0640", 0o640, false},
		{"with a password", manifestMode, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := keys
			if tc.password {
				keys = append(slices.Clone(keys), secretKey{"password", []byte("not used by an unencrypted key\n")})
			}
			p := startPod(t, m, map[string][]secretKey{caSecret: keys}, tc.mode)
			cfg := p.cfg
			if cfg.CA.Cert == "" || cfg.CA.Key == "" {
				t.Fatalf("ca.cert %q, ca.key %q: the pod must import the CA, never create the embedded one under data_dir", cfg.CA.Cert, cfg.CA.Key)
			}
			copied := []string{cfg.CA.Cert, cfg.CA.Key}
			if tc.password {
				copied = append(copied, filepath.Join(filepath.Dir(cfg.CA.Key), "password"))
			}
			for _, f := range copied {
				info, err := os.Lstat(f)
				if err != nil {
					t.Fatal(err)
				}
				if !info.Mode().IsRegular() || info.Mode().Perm() != 0o600 {
					t.Errorf("%s: %v, want a regular file 0600", f, info.Mode())
				}
				dir, err := os.Stat(filepath.Dir(f))
				if err != nil {
					t.Fatal(err)
				}
				if dir.Mode().Perm() != 0o700 {
					t.Errorf("%s: %v, want a folder 0700", filepath.Dir(f), dir.Mode())
				}
			}

			ca, err := certs.New(context.Background(), caConfig(cfg, cfg.CA.Cert, cfg.CA.Key))
			if err != nil {
				t.Fatalf("sumgate refuses the CA the init container copied: %v", err)
			}
			defer ca.Stop()
			if !ca.Root().Equal(root) {
				t.Errorf("loaded root %s, want the Secret's %s", ca.Root().Subject, root.Subject)
			}
			leaf, err := ca.GetCertificate(&tls.ClientHelloInfo{ServerName: config.PublicProxyHost})
			if err != nil {
				t.Fatalf("minting a leaf for %s: %v", config.PublicProxyHost, err)
			}
			verifyLeaf(t, leaf, root, config.PublicProxyHost)

			secret := p.vols[secretVolume(t, p.spec)]
			_, err = certs.New(context.Background(), caConfig(cfg, filepath.Join(secret, "ca.crt"), filepath.Join(secret, "ca.key")))
			if err == nil || !strings.Contains(err.Error(), "refusing a key file that group or others can access") {
				t.Errorf("loading the key straight from the Secret volume (mode %#o): %v, want the permission refusal", tc.mode, err)
			}
		})
	}
}

// caConfig is the certs configuration 'sumgate run' builds from cfg,
// with the given certificate and key files.
func caConfig(cfg *config.Config, cert, key string) certs.Config {
	return certs.Config{Backend: cfg.CA.Backend, DataDir: cfg.DataDir, Intercept: cfg.Intercept, Splice: cfg.Splice,
		Cert: cert, Key: key, LeafLifetime: cfg.CA.LeafLifetime}
}

func secretVolume(t testing.TB, spec *corev1.PodSpec) string {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == caSecret {
			return v.Name
		}
	}
	t.Fatal("the pod mounts no Secret")
	return ""
}

func verifyLeaf(t testing.TB, cert *tls.Certificate, root *x509.Certificate, name string) {
	t.Helper()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("the leaf for %s does not verify to the Secret's root: %v", name, err)
	}
}

// TestKubernetesPodIsWiredToItsConfiguration checks the Deployment against
// the configuration it runs with and against the objects that point at
// it, for the base, the example overlay and the replicas overlay: one
// replica, Recreate and data_dir on a claim with the file backend;
// several, rolling, data_dir on an emptyDir and etcd's client
// certificate copied like the CA with the etcd backend.
func TestKubernetesPodIsWiredToItsConfiguration(t *testing.T) {
	for _, dir := range []string{k8sBase, k8sOverlay, k8sReplicas} {
		t.Run(dir, func(t *testing.T) {
			m := render(t, dir)
			keys, _ := caMaterial(t)
			p := startPod(t, m, map[string][]secretKey{caSecret: keys, etcdClientSecret: etcdSecretKeys(t, etcdCerts(t))[etcdClientSecret]},
				secretMode(t, &m.deployments[0].Spec.Template.Spec))
			checkWorkload(t, p)
			checkPorts(t, p)
			checkVolumes(t, p)
		})
	}
}

// named returns the object of list whose name is name.
func named[T any](t testing.TB, what, name string, list []T, meta func(*T) metav1.ObjectMeta) *T {
	t.Helper()
	for i := range list {
		if meta(&list[i]).Name == name {
			return &list[i]
		}
	}
	t.Fatalf("no %s %q", what, name)
	return nil
}

func checkWorkload(t *testing.T, p *pod) {
	dep, spec := p.dep, p.spec
	switch p.cfg.State.Backend {
	case "file":
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
			t.Errorf("replicas %v with state.backend file, want 1: the state is in data_dir, which one pod owns", dep.Spec.Replicas)
		}
		if dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("strategy %q, want Recreate: two pods must never run on one data_dir", dep.Spec.Strategy.Type)
		}
		if len(p.m.autoscalers) != 0 {
			t.Error("a HorizontalPodAutoscaler with state.backend file: replicas cannot share data_dir")
		}
	case "etcd":
		hpa := only(t, "HorizontalPodAutoscalers", p.m.autoscalers)
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 || hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != *dep.Spec.Replicas {
			t.Errorf("replicas %v, the autoscaler's minReplicas %v: want several, and the same (applying again must not scale below the floor)", dep.Spec.Replicas, hpa.Spec.MinReplicas)
		}
		if hpa.Spec.MinReplicas != nil && hpa.Spec.MaxReplicas <= *hpa.Spec.MinReplicas {
			t.Errorf("the autoscaler's maxReplicas %d leaves nothing to scale", hpa.Spec.MaxReplicas)
		}
		if ref := hpa.Spec.ScaleTargetRef; ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != dep.Name {
			t.Errorf("the autoscaler scales %+v, want the Deployment %s", ref, dep.Name)
		}
		cpu := false
		for _, mt := range hpa.Spec.Metrics {
			if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU &&
				mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType && mt.Resource.Target.AverageUtilization != nil {
				cpu = true
			}
		}
		if req := p.main.Resources.Requests[corev1.ResourceCPU]; !cpu || req.IsZero() {
			t.Errorf("the autoscaler's metrics %+v, the CPU request %s: want CPU utilization, of a request", hpa.Spec.Metrics, req.String())
		}
		ru := dep.Spec.Strategy.RollingUpdate
		if dep.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
			t.Errorf("strategy %+v, want RollingUpdate with maxUnavailable 0: replicas share no volume, so a rollout need not stop any before its successor is ready", dep.Spec.Strategy)
		}
		if len(p.m.claims) != 0 {
			t.Errorf("%d PersistentVolumeClaims with state.backend etcd: data_dir is each pod's own emptyDir", len(p.m.claims))
		}
	default:
		t.Fatalf("state.backend %q", p.cfg.State.Backend)
	}
	podLabels := labels.Set(dep.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("Deployment selector %v (%v) does not select its pods %v", dep.Spec.Selector, err, podLabels)
	}
	svc := named(t, "Service", "sumgate", p.m.services, func(o *corev1.Service) metav1.ObjectMeta { return o.ObjectMeta })
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service selector %v does not select the pods %v", svc.Spec.Selector, podLabels)
	}
	pdb := named(t, "PodDisruptionBudget", "sumgate", p.m.budgets, func(o *policyv1.PodDisruptionBudget) metav1.ObjectMeta { return o.ObjectMeta })
	if sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("PodDisruptionBudget selector %v (%v) does not select the pods %v", pdb.Spec.Selector, err, podLabels)
	}
	// With one replica, the budget must let a drain evict the pod.
	replicas := 1
	if dep.Spec.Replicas != nil {
		replicas = int(*dep.Spec.Replicas)
	}
	switch b := pdb.Spec; {
	case b.MinAvailable != nil:
		if n, err := intstr.GetScaledValueFromIntOrPercent(b.MinAvailable, replicas, true); err != nil || n >= replicas {
			t.Errorf("PodDisruptionBudget minAvailable %v with %d replica(s): no drain could ever evict the pod", b.MinAvailable, replicas)
		}
	case b.MaxUnavailable != nil:
		if n, err := intstr.GetScaledValueFromIntOrPercent(b.MaxUnavailable, replicas, true); err != nil || n < 1 {
			t.Errorf("PodDisruptionBudget maxUnavailable %v: no drain could ever evict the pod", b.MaxUnavailable)
		} else if replicas > 1 && n >= replicas {
			t.Errorf("PodDisruptionBudget maxUnavailable %v with %d replicas: a drain may evict them all", b.MaxUnavailable, replicas)
		}
	default:
		t.Error("PodDisruptionBudget sets neither minAvailable nor maxUnavailable")
	}
	for _, np := range p.m.policies {
		if np.Labels["app.kubernetes.io/name"] != "sumgate" {
			continue // etcd's own
		}
		if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil || sel.Empty() || !sel.Matches(podLabels) {
			t.Errorf("NetworkPolicy %s selector %v does not select the pods %v", np.Name, np.Spec.PodSelector, podLabels)
		}
	}

	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token; sumgate never calls the Kubernetes API")
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || float64(*g) <= p.cfg.Timeouts.Drain.Seconds() {
		t.Errorf("terminationGracePeriodSeconds %v: want more than timeouts.drain (%v), so that requests in flight finish and spans flush", g, p.cfg.Timeouts.Drain)
	}
	psc := spec.SecurityContext
	if psc == nil {
		t.Fatal("no pod securityContext")
	}
	for _, id := range []struct {
		name string
		v    *int64
	}{{"runAsUser", psc.RunAsUser}, {"runAsGroup", psc.RunAsGroup}, {"fsGroup", psc.FSGroup}} {
		if id.v == nil || *id.v != k8sUID {
			t.Errorf("pod securityContext %s %v, want %d (the image's user, which the copied key must belong to)", id.name, id.v, k8sUID)
		}
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext: runAsNonRoot is not true")
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile %v, want RuntimeDefault", psc.SeccompProfile)
	}

	var containers []corev1.Container
	containers = append(containers, spec.InitContainers...)
	containers = append(containers, spec.Containers...)
	if len(spec.InitContainers) == 0 {
		t.Error("no init container copies the CA")
	}
	for _, c := range containers {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s: no securityContext", c.Name)
			continue
		}
		for _, check := range []struct {
			what string
			ok   bool
		}{
			{"runAsNonRoot true", (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)},
			{"readOnlyRootFilesystem true", sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem},
			{"allowPrivilegeEscalation false", sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation},
			{"not privileged", sc.Privileged == nil || !*sc.Privileged},
			{"capabilities drop ALL", sc.Capabilities != nil && slices.Contains(sc.Capabilities.Drop, "ALL")},
			{"no capability added", sc.Capabilities == nil || len(sc.Capabilities.Add) == 0},
			{"no root user", sc.RunAsUser == nil || *sc.RunAsUser != 0},
		} {
			if !check.ok {
				t.Errorf("container %s: securityContext must have %s", c.Name, check.what)
			}
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
			if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
				t.Errorf("container %s: %s request %v, limit %v: want both, the request no larger", c.Name, r, req.String(), lim.String())
			}
		}
		if c.Image != p.main.Image {
			t.Errorf("container %s runs %s, the gateway %s: the init container uses the gateway's image (sh and install)", c.Name, c.Image, p.main.Image)
		}
	}
}

// checkPorts: the configuration's listeners are the container's ports, on
// every interface; the Service and the probes name ports that exist.
func checkPorts(t *testing.T, p *pod) {
	ports := map[string]int32{}
	var numbers []int32
	for _, cp := range p.main.Ports {
		if cp.Name == "" {
			t.Errorf("container port %d has no name", cp.ContainerPort)
		}
		ports[cp.Name] = cp.ContainerPort
		numbers = append(numbers, cp.ContainerPort)
	}
	var want []int32
	for _, l := range []struct{ key, addr string }{{"listen", p.cfg.Listen}, {"admin_listen", p.cfg.AdminListen}} {
		host, port, err := net.SplitHostPort(l.addr)
		n, _ := strconv.Atoi(port)
		if err != nil || host != "0.0.0.0" {
			t.Errorf("%s %q: want every interface (0.0.0.0), for the Service and the probes", l.key, l.addr)
		}
		want = append(want, int32(n))
	}
	slices.Sort(numbers)
	slices.Sort(want)
	if !slices.Equal(numbers, want) {
		t.Errorf("container ports %v, want the listeners' %v", numbers, want)
	}
	_, adminPort, _ := net.SplitHostPort(p.cfg.AdminListen)
	_, proxyPort, _ := net.SplitHostPort(p.cfg.Listen)
	resolve := func(v intstr.IntOrString) (int32, bool) {
		if v.Type == intstr.String {
			n, ok := ports[v.StrVal]
			return n, ok
		}
		return v.IntVal, slices.Contains(numbers, v.IntVal)
	}
	svcPorts := map[string]bool{}
	for _, sp := range named(t, "Service", "sumgate", p.m.services, func(o *corev1.Service) metav1.ObjectMeta { return o.ObjectMeta }).Spec.Ports {
		n, ok := resolve(sp.TargetPort)
		if !ok {
			t.Errorf("Service port %s: targetPort %s is no container port", sp.Name, sp.TargetPort.String())
		}
		svcPorts[strconv.Itoa(int(n))] = true
	}
	if !svcPorts[proxyPort] {
		t.Errorf("the Service does not reach the proxy port %s", proxyPort)
	}
	for _, pr := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"liveness", "/healthz", p.main.LivenessProbe}, {"readiness", "/readyz", p.main.ReadinessProbe}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("no %s HTTP probe", pr.name)
			continue
		}
		n, ok := resolve(pr.probe.HTTPGet.Port)
		if !ok || strconv.Itoa(int(n)) != adminPort || pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("%s probe %s on port %s, want %s on the admin port %s", pr.name, pr.probe.HTTPGet.Path, pr.probe.HTTPGet.Port.String(), pr.path, adminPort)
		}
	}
	if sp := p.main.StartupProbe; sp != nil && sp.HTTPGet != nil {
		if n, ok := resolve(sp.HTTPGet.Port); !ok || strconv.Itoa(int(n)) != adminPort {
			t.Errorf("startup probe on port %s, want the admin port %s", sp.HTTPGet.Port.String(), adminPort)
		}
	}
}

// checkVolumes: data_dir on the claim, the CA files in the memory-backed
// emptyDir the init container fills (and the gateway only reads), the
// Secret seen by the init container alone, a writable /tmp.
func checkVolumes(t *testing.T, p *pod) {
	onVolume := func(path string) (string, bool) {
		for name, dir := range p.vols {
			if path == dir || strings.HasPrefix(path, dir+"/") {
				return name, true
			}
		}
		return "", false
	}
	// data_dir
	name, ok := onVolume(p.cfg.DataDir)
	cache := resource.NewQuantity(p.cfg.CacheMaxMB<<20*3/2, resource.BinarySI)
	switch {
	case p.cfg.State.Backend == "etcd":
		// The shared state is in etcd: data_dir holds this pod's caches.
		var v *corev1.Volume
		if ok {
			v = p.volume(t, name)
		}
		if v == nil || v.EmptyDir == nil || v.EmptyDir.Medium == corev1.StorageMediumMemory || v.EmptyDir.SizeLimit == nil {
			t.Errorf("data_dir %s with state.backend etcd: want an emptyDir on the node's disk, with a sizeLimit", p.cfg.DataDir)
		} else if v.EmptyDir.SizeLimit.Cmp(*cache) < 0 {
			t.Errorf("data_dir's emptyDir of %s: want at least one and a half times cache_max_mb (%d MiB)", v.EmptyDir.SizeLimit.String(), p.cfg.CacheMaxMB)
		}
	case !ok || p.volume(t, name).PersistentVolumeClaim == nil:
		t.Errorf("data_dir %s is not on a PersistentVolumeClaim: the tree head must outlive the pod", p.cfg.DataDir)
	default:
		pvc := &p.m.claims[0]
		if claim := p.volume(t, name).PersistentVolumeClaim.ClaimName; claim != pvc.Name {
			t.Errorf("data volume claims %q; the kustomization makes %q", claim, pvc.Name)
		}
		if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
			t.Errorf("claim access modes %v, want ReadWriteOnce: one pod owns data_dir", pvc.Spec.AccessModes)
		}
		size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		if size.Cmp(*cache) < 0 {
			t.Errorf("claim of %s: want at least one and a half times cache_max_mb (%d MiB), for the spool, git store and tiles beside it", size.String(), p.cfg.CacheMaxMB)
		}
	}
	// The CA.
	initWrites := map[string]bool{}
	for _, c := range p.spec.InitContainers {
		for _, vm := range c.VolumeMounts {
			if !vm.ReadOnly {
				initWrites[vm.Name] = true
			}
		}
	}
	files := []struct{ key, path string }{{"ca.cert", p.cfg.CA.Cert}, {"ca.key", p.cfg.CA.Key}, {"ca.password_file", p.cfg.CA.PasswordFile}}
	if tls := p.cfg.State.Etcd.TLS; p.cfg.State.Backend == "etcd" {
		// etcd's client certificate: copied like the CA's, 0600 in a 0700
		// folder, from the Secret (TestKubernetesEtcdTLSConnects checks
		// that these files are what etcd accepts).
		files = append(files, []struct{ key, path string }{{"state.etcd.tls.ca", tls.CA}, {"state.etcd.tls.cert", tls.Cert}, {"state.etcd.tls.key", tls.Key}}...)
		for _, f := range []string{tls.CA, tls.Cert, tls.Key} {
			info, err := os.Lstat(f)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			dir, err := os.Stat(filepath.Dir(f))
			if !info.Mode().IsRegular() || info.Mode().Perm() != 0o600 || err != nil || dir.Mode().Perm() != 0o700 {
				t.Errorf("%s: %v in a folder %v, want a regular file 0600 in a folder 0700", f, info.Mode(), dir.Mode())
			}
		}
	}
	for _, f := range files {
		if f.path == "" {
			if f.key != "ca.password_file" {
				t.Errorf("%s is not set: the pod would create the embedded CA, a new root whenever the volume is lost", f.key)
			}
			continue
		}
		name, ok := onVolume(f.path)
		if !ok {
			t.Errorf("%s %s is on no volume", f.key, f.path)
			continue
		}
		v := p.volume(t, name)
		if v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory || !initWrites[name] {
			t.Errorf("%s %s: want the memory-backed emptyDir the init container fills, not volume %s", f.key, f.path, name)
		}
	}
	for _, vm := range p.main.VolumeMounts {
		v := p.volume(t, vm.Name)
		if v.Secret != nil {
			t.Errorf("the gateway mounts the Secret %s: only the init container should see it", v.Secret.SecretName)
		}
		if v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory && !vm.ReadOnly {
			t.Errorf("the gateway mounts the CA copy %s read-write; it only reads it", vm.MountPath)
		}
	}
	if vm, ok := volumeOf(p.main, "/tmp"); !ok || vm.ReadOnly || vm.MountPath != "/tmp" || p.volume(t, vm.Name).EmptyDir == nil {
		t.Error("no writable emptyDir at /tmp: the root file system is read-only, and git may need scratch space")
	}
}

// peer is one end of a connection, as a NetworkPolicy sees it: a pod
// (its namespace's labels and its own) at an address, or an address
// outside the cluster (no labels).
type peer struct {
	namespace map[string]string // the namespace's labels; nil outside the cluster
	pod       map[string]string // the pod's labels; nil outside the cluster
	ip        netip.Addr
}

// ns is a pod in the namespace name (extra: more namespace labels); the
// test gives it an address in the pod range.
func ns(name string, extra ...string) peer {
	l := map[string]string{nsNameLabel: name}
	for i := 0; i+1 < len(extra); i += 2 {
		l[extra[i]] = extra[i+1]
	}
	return peer{namespace: l, pod: map[string]string{"app": "anything"}}
}

// at places p at the address ip.
func (p peer) at(ip string) peer {
	p.ip = netip.MustParseAddr(ip)
	return p
}

// addr is an address no selector matches: outside the cluster, or a
// Service's, a node's or the metadata service's.
func addr(ip string) peer { return peer{ip: netip.MustParseAddr(ip)} }

// allowed reports whether the policies that select the pod let a
// connection through: to or from p, on port/protocol (named ports
// resolved with the pod's), the way a NetworkPolicy implementation reads
// them. If no policy isolates the pod in that direction, everything is
// allowed.
func allowed(policies []networkingv1.NetworkPolicy, ports map[string]int32, dir networkingv1.PolicyType, p peer, port int32, proto corev1.Protocol) bool {
	isolated := false
	for _, np := range policies {
		if !slices.Contains(np.Spec.PolicyTypes, dir) {
			continue
		}
		isolated = true
		type rule struct {
			peers []networkingv1.NetworkPolicyPeer
			ports []networkingv1.NetworkPolicyPort
		}
		var rules []rule
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				rules = append(rules, rule{r.From, r.Ports})
			}
		} else {
			for _, r := range np.Spec.Egress {
				rules = append(rules, rule{r.To, r.Ports})
			}
		}
		for _, r := range rules {
			if portMatches(r.ports, ports, port, proto) && peerMatches(np.Namespace, r.peers, p) {
				return true
			}
		}
	}
	return !isolated
}

func portMatches(rule []networkingv1.NetworkPolicyPort, named map[string]int32, port int32, proto corev1.Protocol) bool {
	if len(rule) == 0 {
		return true
	}
	for _, rp := range rule {
		rproto := corev1.ProtocolTCP
		if rp.Protocol != nil {
			rproto = *rp.Protocol
		}
		if rproto != proto {
			continue
		}
		if rp.Port == nil {
			return true
		}
		n := rp.Port.IntVal
		if rp.Port.Type == intstr.String {
			n = named[rp.Port.StrVal]
		}
		hi := n
		if rp.EndPort != nil {
			hi = *rp.EndPort
		}
		if port >= n && port <= hi {
			return true
		}
	}
	return false
}

// peerMatches: an ipBlock matches by address, a pod's included (as
// Calico reads it: the most permissive reading, so that what these tests
// find refused is refused under every implementation); selectors match
// pods only.
func peerMatches(policyNS string, peers []networkingv1.NetworkPolicyPeer, p peer) bool {
	if len(peers) == 0 {
		return true
	}
	for _, pp := range peers {
		if pp.IPBlock != nil {
			if ipBlockMatches(pp.IPBlock, p.ip) {
				return true
			}
			continue
		}
		if p.namespace == nil {
			continue
		}
		nsOK := p.namespace[nsNameLabel] == policyNS
		if pp.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(pp.NamespaceSelector)
			nsOK = err == nil && sel.Matches(labels.Set(p.namespace))
		}
		podOK := true
		if pp.PodSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(pp.PodSelector)
			podOK = err == nil && sel.Matches(labels.Set(p.pod))
		}
		if nsOK && podOK {
			return true
		}
	}
	return false
}

// ipBlockMatches: ip is in the block's cidr and in none of its excepts.
// A CIDR that does not parse matches nothing (checkIPBlock reports it).
func ipBlockMatches(b *networkingv1.IPBlock, ip netip.Addr) bool {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !ip.IsValid() || !cidr.Contains(ip.Unmap()) {
		return false
	}
	for _, e := range b.Except {
		if except, err := netip.ParsePrefix(e); err != nil || except.Contains(ip.Unmap()) {
			return false
		}
	}
	return true
}

// checkIPBlock validates an ipBlock as the API server does: CIDRs in
// canonical form, each except strictly inside the cidr (so of the same
// address family: an IPv6 range set as an IPv4 parameter is refused).
func checkIPBlock(b *networkingv1.IPBlock) error {
	canonical := func(s string) (netip.Prefix, error) {
		p, err := netip.ParsePrefix(s)
		if err == nil && p != p.Masked() {
			err = fmt.Errorf("%s has host bits set; want %s", s, p.Masked())
		}
		return p, err
	}
	cidr, err := canonical(b.CIDR)
	if err != nil {
		return err
	}
	for _, e := range b.Except {
		except, err := canonical(e)
		if err != nil {
			return err
		}
		if except.Bits() <= cidr.Bits() || !cidr.Contains(except.Addr()) {
			return fmt.Errorf("except %s is not strictly inside %s", e, b.CIDR)
		}
	}
	return nil
}

// paramsOverlay writes an overlay of the base that merges the network
// parameters literals (key=value) and includes the component, as the
// README has operators do.
func paramsOverlay(t testing.TB, literals ...string) string {
	t.Helper()
	dir := t.TempDir()
	// kustomize refuses absolute paths to a base or a component.
	rel := func(path string) string {
		abs, err := filepath.Abs(path)
		if err == nil {
			path, err = filepath.Rel(dir, abs)
		}
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	k := types.Kustomization{
		TypeMeta:   types.TypeMeta{APIVersion: types.KustomizationVersion, Kind: types.KustomizationKind},
		Resources:  []string{rel(k8sBase)},
		Components: []string{rel(filepath.Join(k8sDir, "components", "network-params"))},
		ConfigMapGenerator: []types.ConfigMapArgs{{GeneratorArgs: types.GeneratorArgs{
			Name: "sumgate-network-params", Behavior: "merge",
			KvPairSources: types.KvPairSources{LiteralSources: literals},
			Options: &types.GeneratorOptions{
				DisableNameSuffixHash: true,
				Annotations:           map[string]string{"config.kubernetes.io/local-config": "true"},
			},
		}}},
	}
	data, err := yaml.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestKubernetesNetworkPolicyAllowsWhatSumgateNeeds evaluates the
// NetworkPolicies as an implementation would, for the connections
// sumgate needs and for some it must not get, on the base, the example
// overlay, and an overlay whose pod and Service ranges lie outside the
// private ranges the upstream egress always excludes (so that only the
// parameters keep the cluster out).
func TestKubernetesNetworkPolicyAllowsWhatSumgateNeeds(t *testing.T) {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	dns := peer{namespace: map[string]string{nsNameLabel: "kube-system"}, pod: map[string]string{"k8s-app": "kube-dns"}}
	// Addresses in each range the upstream egress excludes whatever the
	// parameters, outside the parameters' ranges.
	private := []struct{ what, ip string }{
		{"10.0.0.0/8", "10.1.2.3"},
		{"172.16.0.0/12: a kind node, where the API server listens", "172.18.0.2"},
		{"192.168.0.0/16", "192.168.1.10"},
		{"CGNAT 100.64.0.0/10", "100.64.0.1"},
		{"169.254.0.0/16: the cloud metadata service", "169.254.169.254"},
		{"fc00::/7: AWS's IPv6 metadata service", "fd00:ec2::254"},
		{"fc00::/7", "fc00::1"},
		{"fe80::/10", "fe80::1"},
	}
	public, public6 := "142.251.16.141", "2607:f8b0:4004:c1b::8d"
	for _, tc := range []struct {
		name, dir             string
		monitoring, collector string
		collectorPort         int32
		podIP, serviceIP      string // one in each of the cluster's ranges
		podIP6, serviceIP6    string
	}{
		{"base", k8sBase, "monitoring", "opentelemetry", 4317, "10.244.1.7", "10.96.0.1", "fd00:10:244::7", "fd00:10:96::1"},
		{"example overlay", k8sOverlay, "prometheus", "observability", 4318, "10.5.1.7", "10.8.0.1", "fd00:10:244::7", "fd00:10:96::1"},
		{"public cluster ranges", paramsOverlay(t,
			"pod-cidr=192.0.2.0/24", "service-cidr=198.51.100.0/24",
			"pod-cidr-ipv6=2001:db8:1::/64", "service-cidr-ipv6=2001:db8:2::/112"),
			"monitoring", "opentelemetry", 4317, "192.0.2.7", "198.51.100.1", "2001:db8:1::7", "2001:db8:2::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, tc.dir)
			for _, np := range m.policies {
				for _, r := range np.Spec.Egress {
					for _, pp := range r.To {
						if pp.IPBlock != nil {
							if err := checkIPBlock(pp.IPBlock); err != nil {
								t.Errorf("NetworkPolicy %s: ipBlock %s: %v", np.Name, pp.IPBlock.CIDR, err)
							}
						}
					}
				}
				for _, r := range np.Spec.Ingress {
					for _, pp := range r.From {
						if pp.IPBlock != nil {
							if err := checkIPBlock(pp.IPBlock); err != nil {
								t.Errorf("NetworkPolicy %s: ipBlock %s: %v", np.Name, pp.IPBlock.CIDR, err)
							}
						}
					}
				}
			}
			dep := only(t, "Deployments", m.deployments)
			main := only(t, "containers", dep.Spec.Template.Spec.Containers)
			ports := map[string]int32{}
			for _, cp := range main.Ports {
				ports[cp.Name] = cp.ContainerPort
			}
			proxy, admin := ports["proxy"], ports["admin"]
			if proxy == 0 || admin == 0 {
				t.Fatalf("container ports %v: want proxy and admin", ports)
			}
			in, out := networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress
			type connection struct {
				what  string
				dir   networkingv1.PolicyType
				peer  peer
				port  int32
				proto corev1.Protocol
				want  bool
			}
			cases := []connection{
				{"HTTPS to a public IPv4 address", out, addr(public), 443, tcp, true},
				{"HTTPS to a public IPv6 address", out, addr(public6), 443, tcp, true},
				{"DNS over UDP to kube-dns", out, dns, 53, udp, true},
				{"DNS over TCP to kube-dns", out, dns, 53, tcp, true},
				{"the OTLP collector", out, ns(tc.collector), tc.collectorPort, tcp, true},
				{"the proxy from a client namespace", in, ns("ci", clientLabel, "true"), proxy, tcp, true},
				{"the admin port from the monitoring namespace", in, ns(tc.monitoring), admin, tcp, true},

				{"SSH to a public address", out, addr(public), 22, tcp, false},
				{"plain HTTP to a public address", out, addr(public), 80, tcp, false},
				{"plain HTTP to a public IPv6 address", out, addr(public6), 80, tcp, false},
				{"DNS to a public resolver", out, addr("8.8.8.8"), 53, udp, false},
				{"DNS to a pod in another namespace", out, ns("anywhere"), 53, udp, false},
				{"the collector port in another namespace", out, ns("anywhere"), tc.collectorPort, tcp, false},
				{"the collector port at a public address", out, addr(public), tc.collectorPort, tcp, false},
				{"HTTPS to a pod in another namespace", out, ns("anywhere"), 443, tcp, false},
				{"HTTPS to a pod at the cluster's IPv6 pod range", out, ns("anywhere").at(tc.podIP6), 443, tcp, false},
				{"HTTPS to the API server's Service (kubernetes.default)", out, addr(tc.serviceIP), 443, tcp, false},
				{"HTTPS to a Service at the cluster's IPv6 Service range", out, addr(tc.serviceIP6), 443, tcp, false},
				{"the cloud metadata service over HTTP", out, addr("169.254.169.254"), 80, tcp, false},
				{"AWS's IPv6 metadata service over HTTP", out, addr("fd00:ec2::254"), 80, tcp, false},
				{"the proxy from an unlabelled namespace", in, ns("default"), proxy, tcp, false},
				{"the admin port from a client namespace", in, ns("ci", clientLabel, "true"), admin, tcp, false},
				{"the proxy from the monitoring namespace", in, ns(tc.monitoring), proxy, tcp, false},
				{"the proxy from a public address", in, addr(public), proxy, tcp, false},
				{"the proxy from a public IPv6 address", in, addr(public6), proxy, tcp, false},
				{"the proxy from a node", in, addr("172.18.0.2"), proxy, tcp, false},
				{"the admin port from a public address", in, addr(public), admin, tcp, false},
				{"the admin port from a public IPv6 address", in, addr(public6), admin, tcp, false},
			}
			for _, a := range private {
				cases = append(cases, connection{"HTTPS into " + a.what, out, addr(a.ip), 443, tcp, false})
			}
			for _, c := range cases {
				if c.peer.namespace != nil && !c.peer.ip.IsValid() {
					c.peer = c.peer.at(tc.podIP)
				}
				if got := allowed(m.policies, ports, c.dir, c.peer, c.port, c.proto); got != c.want {
					t.Errorf("%s (%s %v port %d/%s): allowed %v, want %v", c.what, c.dir, c.peer.ip, c.port, c.proto, got, c.want)
				}
			}
		})
	}
}

// TestKubernetesExampleOverlay: the overlay pins a tagged image for both
// containers, and sends the audit trail to a collector the NetworkPolicy
// lets sumgate reach.
func TestKubernetesExampleOverlay(t *testing.T) {
	m := render(t, k8sOverlay)
	dep := only(t, "Deployments", m.deployments)
	spec := &dep.Spec.Template.Spec
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		_, tag, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
		if !ok || tag == "" || tag == "latest" || !strings.Contains(c.Image, "/") {
			t.Errorf("container %s image %q: want a registry image with a fixed tag", c.Name, c.Image)
		}
	}
	main := only(t, "containers", spec.Containers)
	env := map[string]string{}
	for _, e := range main.Env {
		env[e.Name] = e.Value
	}
	endpoint := env["OTEL_EXPORTER_OTLP_ENDPOINT"]
	u, err := url.Parse(endpoint)
	if err != nil || u.Port() == "" {
		t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT %q: want a URL with a port", endpoint)
	}
	host := strings.Split(u.Hostname(), ".")
	if len(host) < 3 || host[2] != "svc" {
		t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT %q: want <service>.<namespace>.svc", endpoint)
	}
	port, _ := strconv.Atoi(u.Port())
	ports := map[string]int32{}
	if !allowed(m.policies, ports, networkingv1.PolicyTypeEgress, ns(host[1]), int32(port), corev1.ProtocolTCP) {
		t.Errorf("the NetworkPolicies do not let sumgate reach its collector %s (namespace %s, port %d)", endpoint, host[1], port)
	}
	if want := map[string]string{"4317": "grpc", "4318": "http/protobuf"}[u.Port()]; want != "" && env["OTEL_EXPORTER_OTLP_PROTOCOL"] != want {
		t.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q for port %s, want %s", env["OTEL_EXPORTER_OTLP_PROTOCOL"], u.Port(), want)
	}
}
