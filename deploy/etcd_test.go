package deploy_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"golang.org/x/mod/modfile"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sumgate/sumgate/internal/config"
)

// The files deploy/etcd/make-certs.sh makes, by the Secret that carries
// them (deploy/kubernetes/README.md, "Several replicas"): the members'
// (never the CAs' keys) and sumgate's client certificate.
var etcdSecretFiles = map[string][]string{
	etcdSecret:       {"ca.crt", "server.crt", "server.key", "peer-ca.crt", "peer.crt", "peer.key"},
	etcdClientSecret: {"ca.crt", "client.crt", "client.key"},
}

// needOpenSSL skips the test where openssl, which the certificate scripts
// run, is missing.
func needOpenSSL(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed: the etcd certificate scripts need it")
	}
}

// etcdCerts runs deploy/kubernetes/etcd/certs.sh, as the README has
// operators run it, into a temporary folder, and returns the folder.
func etcdCerts(t testing.TB) string {
	t.Helper()
	needOpenSSL(t)
	dir := filepath.Join(t.TempDir(), "etcd-pki")
	cmd := exec.Command("sh", filepath.Join(k8sEtcd, "certs.sh"), dir)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("certs.sh: %v\n%s", err, out)
	}
	return dir
}

// etcdSecretKeys reads the Secrets' keys from the folder certs.sh filled.
func etcdSecretKeys(t testing.TB, dir string) map[string][]secretKey {
	t.Helper()
	out := map[string][]secretKey{}
	for secret, files := range etcdSecretFiles {
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatalf("Secret %s: %v", secret, err)
			}
			out[secret] = append(out[secret], secretKey{f, data})
		}
	}
	return out
}

// etcdFlags parses etcd's --name=value arguments; a flag given twice, or
// an argument of another form, fails the test.
func etcdFlags(t testing.TB, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range args {
		name, ok := strings.CutPrefix(a, "--")
		k, v, ok2 := strings.Cut(name, "=")
		if !ok || !ok2 {
			t.Fatalf("etcd argument %q: want --name=value", a)
		}
		if _, dup := out[k]; dup {
			t.Fatalf("etcd flag --%s given twice", k)
		}
		out[k] = v
	}
	return out
}

// etcdServerTLS is the TLS of one of etcd's listeners as its flags set it
// up, through etcd's own transport package: file names mapped by local.
func etcdServerTLS(t testing.TB, flags map[string]string, prefix string, local func(string) string) *tls.Config {
	t.Helper()
	info := transport.TLSInfo{
		CertFile:       local(flags[prefix+"cert-file"]),
		KeyFile:        local(flags[prefix+"key-file"]),
		TrustedCAFile:  local(flags[prefix+"trusted-ca-file"]),
		ClientCertAuth: flags[prefix+"client-cert-auth"] == "true",
	}
	c, err := info.ServerConfig()
	if err != nil {
		t.Fatalf("etcd's %sTLS: %v", prefix, err)
	}
	switch v := flags["tls-min-version"]; v {
	case "TLS1.2":
		c.MinVersion = tls.VersionTLS12
	case "TLS1.3":
		c.MinVersion = tls.VersionTLS13
	default:
		t.Errorf("etcd --tls-min-version=%q, want TLS1.2 or TLS1.3", v)
	}
	return c
}

// clientTLS is the client side as internal/etcdstate sets it up from
// state.etcd.tls (no certificate when cert and key are empty), for a
// server named host.
func clientTLS(t testing.TB, ca, cert, key, host string) *tls.Config {
	t.Helper()
	c, err := transport.TLSInfo{TrustedCAFile: ca, CertFile: cert, KeyFile: key}.ClientConfig()
	if err != nil {
		t.Fatalf("client TLS: %v", err)
	}
	c.MinVersion = tls.VersionTLS12
	c.ServerName = host
	return c
}

// handshake runs a TLS handshake between server and client over loopback
// TCP, and a byte each way so that a TLS 1.3 client learns whether the
// server accepted its certificate. It returns the server's error, then
// the client's.
func handshake(t testing.TB, server, client *tls.Config) (error, error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		s := tls.Server(conn, server)
		defer s.Close()
		if err := s.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = s.Write([]byte{1})
		done <- err
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(conn, client)
	cerr := c.Handshake()
	if cerr == nil {
		_, cerr = c.Read(make([]byte, 1))
	}
	c.Close()
	return <-done, cerr
}

// readCert reads the one certificate of a PEM file.
func readCert(t testing.TB, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkEtcdTLS checks that sumgate, with its state.etcd configuration (the
// files as the replica sees them), and etcd, as its flags set it up, agree:
// every endpoint's name is on etcd's certificate and etcd accepts sumgate's
// client certificate; etcd refuses a client without one, and its peer port
// refuses sumgate's (another CA), while a member's peer certificate is
// accepted for every peer URL. sumgate's certificate names no host (etcd
// would check its names against the pod's address) and is good for client
// authentication only.
func checkEtcdTLS(t *testing.T, cfg *config.Etcd, flags map[string]string, local func(string) string) {
	t.Helper()
	for _, f := range []string{"client-cert-auth", "peer-client-cert-auth"} {
		if flags[f] != "true" {
			t.Errorf("etcd --%s=%q, want true: etcd must authenticate whoever connects", f, flags[f])
		}
	}
	for _, f := range []string{"listen-client-urls", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls"} {
		for u := range strings.SplitSeq(flags[f], ",") {
			if !strings.HasPrefix(u, "https://") {
				t.Errorf("etcd --%s has %q: want https only", f, u)
			}
		}
	}
	server := etcdServerTLS(t, flags, "", local)
	peer := etcdServerTLS(t, flags, "peer-", local)
	if len(cfg.Endpoints) == 0 {
		t.Fatal("state.etcd.endpoints is empty")
	}
	for _, ep := range cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil {
			t.Fatal(err)
		}
		serr, cerr := handshake(t, server, clientTLS(t, cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key, u.Hostname()))
		if serr != nil || cerr != nil {
			t.Errorf("sumgate to etcd at %s: etcd says %v, sumgate says %v", ep, serr, cerr)
		}
		if serr, _ := handshake(t, server, clientTLS(t, cfg.TLS.CA, "", "", u.Hostname())); serr == nil {
			t.Errorf("etcd at %s accepts a client without a certificate", ep)
		}
		if serr, _ := handshake(t, peer, clientTLS(t, local(flags["peer-trusted-ca-file"]), cfg.TLS.Cert, cfg.TLS.Key, u.Hostname())); serr == nil {
			t.Errorf("etcd's peer port accepts sumgate's client certificate: sumgate could pose as a member")
		}
	}
	var peerURLs []string
	for m := range strings.SplitSeq(flags["initial-cluster"], ",") {
		_, u, ok := strings.Cut(m, "=")
		if !ok {
			t.Fatalf("etcd --initial-cluster=%q: want name=url,…", flags["initial-cluster"])
		}
		peerURLs = append(peerURLs, u)
	}
	for _, pu := range peerURLs {
		u, err := url.Parse(pu)
		if err != nil || u.Scheme != "https" {
			t.Errorf("peer URL %q: want https", pu)
			continue
		}
		c := clientTLS(t, local(flags["peer-trusted-ca-file"]), local(flags["peer-cert-file"]), local(flags["peer-key-file"]), u.Hostname())
		if serr, cerr := handshake(t, peer, c); serr != nil || cerr != nil {
			t.Errorf("member to member at %s: %v, %v", pu, serr, cerr)
		}
	}
	leaf := readCert(t, cfg.TLS.Cert)
	if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 {
		t.Errorf("sumgate's client certificate names %v %v: etcd would check them against the connection's address", leaf.DNSNames, leaf.IPAddresses)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || leaf.IsCA {
		t.Errorf("sumgate's client certificate: extended key usage %v, CA %v: want client authentication only", leaf.ExtKeyUsage, leaf.IsCA)
	}
}

// TestEtcdCertsScript: make-certs.sh makes the files the Secrets and the
// compose volumes carry, keys 0600, and a second run changes nothing.
func TestEtcdCertsScript(t *testing.T) {
	dir := etcdCerts(t)
	before := map[string][]byte{}
	for _, files := range etcdSecretFiles {
		for _, f := range files {
			info, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: %v, want no access for group or others", f, info.Mode())
			}
			before[f], _ = os.ReadFile(filepath.Join(dir, f))
		}
	}
	cmd := exec.Command("sh", filepath.Join(k8sEtcd, "certs.sh"), dir)
	if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "made") {
		t.Errorf("a second run: %v\n%s\nwant nothing made", err, out)
	}
	for f, data := range before {
		if now, _ := os.ReadFile(filepath.Join(dir, f)); string(now) != string(data) {
			t.Errorf("a second run changed %s", f)
		}
	}
}

// etcdSet returns the example etcd's StatefulSet and its container.
func etcdSet(t testing.TB, m *manifests) (*appsv1.StatefulSet, *corev1.Container) {
	t.Helper()
	sts := only(t, "StatefulSets", m.sets)
	return sts, only(t, "containers of etcd", sts.Spec.Template.Spec.Containers)
}

// TestKubernetesEtcdStatefulSet: the example etcd is three members that
// keep a quorum through a drain (a budget of one), start together, find
// each other through a headless Service that publishes members before
// they are ready, run the release the tests embed, compact and cap their
// database, keep it on per-member claims larger than the cap, are probed
// on the metrics port, and run as restricted as sumgate.
func TestKubernetesEtcdStatefulSet(t *testing.T) {
	for _, dir := range []string{k8sEtcd, k8sReplicas} {
		t.Run(dir, func(t *testing.T) {
			m := render(t, dir)
			sts, c := etcdSet(t, m)
			if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
				t.Fatalf("etcd replicas %v, want 3", sts.Spec.Replicas)
			}
			n := int(*sts.Spec.Replicas)
			if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
				t.Errorf("podManagementPolicy %q, want Parallel: one at a time, the first member waits forever for a quorum", sts.Spec.PodManagementPolicy)
			}
			podLabels := labels.Set(sts.Spec.Template.Labels)
			svc := named(t, "Service", sts.Spec.ServiceName, m.services, func(o *corev1.Service) metav1.ObjectMeta { return o.ObjectMeta })
			if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
				t.Errorf("Service %s: clusterIP %q, publishNotReadyAddresses %v, selector %v: want headless, publishing members before they are ready, selecting %v",
					svc.Name, svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses, svc.Spec.Selector, podLabels)
			}
			pdb := named(t, "PodDisruptionBudget", "etcd", m.budgets, func(o *policyv1.PodDisruptionBudget) metav1.ObjectMeta { return o.ObjectMeta })
			if sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !sel.Matches(podLabels) {
				t.Errorf("etcd's budget selector %v does not select its members", pdb.Spec.Selector)
			}
			if pdb.Spec.MaxUnavailable == nil {
				t.Error("etcd's budget sets no maxUnavailable")
			} else if k, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, n, false); err != nil || k < 1 || n-k < n/2+1 {
				t.Errorf("etcd's budget maxUnavailable %v with %d members: want drains possible and a quorum (%d) kept", pdb.Spec.MaxUnavailable, n, n/2+1)
			}

			gomod, err := os.ReadFile("../go.mod")
			if err != nil {
				t.Fatal(err)
			}
			mf, err := modfile.ParseLax("go.mod", gomod, nil)
			if err != nil {
				t.Fatal(err)
			}
			var embedded string
			for _, r := range mf.Require {
				if r.Mod.Path == "go.etcd.io/etcd/server/v3" {
					embedded = r.Mod.Version
				}
			}
			if want := "gcr.io/etcd-development/etcd:" + embedded; embedded == "" || c.Image != want {
				t.Errorf("etcd image %q, want %q: the release the tests embed", c.Image, want)
			}

			flags := etcdFlags(t, c.Args)
			var members []string
			for i := range n {
				name := fmt.Sprintf("%s-%d", sts.Name, i)
				members = append(members, fmt.Sprintf("%s=https://%s.%s.$(POD_NAMESPACE).svc:2380", name, name, svc.Name))
			}
			if got := flags["initial-cluster"]; got != strings.Join(members, ",") {
				t.Errorf("etcd --initial-cluster=%s, want the %d members %s", got, n, strings.Join(members, ","))
			}
			if flags["name"] != "$(POD_NAME)" || flags["initial-cluster-state"] != "new" || flags["initial-cluster-token"] == "" {
				t.Errorf("etcd --name=%q --initial-cluster-state=%q --initial-cluster-token=%q: want each pod's name, a new cluster, a token",
					flags["name"], flags["initial-cluster-state"], flags["initial-cluster-token"])
			}
			if flags["auto-compaction-retention"] == "" || flags["auto-compaction-mode"] != "periodic" {
				t.Errorf("etcd compacts with mode %q, retention %q: want periodic compaction", flags["auto-compaction-mode"], flags["auto-compaction-retention"])
			}
			quota, err := strconv.ParseInt(flags["quota-backend-bytes"], 10, 64)
			if err != nil || quota <= 0 || quota > 8<<30 {
				t.Errorf("etcd --quota-backend-bytes=%q: want a quota, 8 GiB at most (etcd's advice)", flags["quota-backend-bytes"])
			}
			if len(sts.Spec.VolumeClaimTemplates) != 1 {
				t.Fatalf("%d volumeClaimTemplates, want one: each member's data", len(sts.Spec.VolumeClaimTemplates))
			}
			claim := sts.Spec.VolumeClaimTemplates[0]
			if size := claim.Spec.Resources.Requests[corev1.ResourceStorage]; size.Cmp(*resource.NewQuantity(2*quota, resource.BinarySI)) < 0 {
				t.Errorf("member volumes of %s: want twice the quota (%d) at least, for the WAL and snapshots", size.String(), quota)
			}
			if vm, ok := volumeOf(c, flags["data-dir"]); !ok || vm.Name != claim.Name {
				t.Errorf("etcd --data-dir=%s is not on the member's claim %s", flags["data-dir"], claim.Name)
			}
			for _, f := range []string{"trusted-ca-file", "cert-file", "key-file", "peer-trusted-ca-file", "peer-cert-file", "peer-key-file"} {
				vm, ok := volumeOf(c, flags[f])
				var v *corev1.Volume
				for i := range sts.Spec.Template.Spec.Volumes {
					if ok && sts.Spec.Template.Spec.Volumes[i].Name == vm.Name {
						v = &sts.Spec.Template.Spec.Volumes[i]
					}
				}
				if v == nil || v.Secret == nil || v.Secret.SecretName != etcdSecret || !vm.ReadOnly ||
					!slices.Contains(etcdSecretFiles[etcdSecret], filepath.Base(flags[f])) {
					t.Errorf("etcd --%s=%s: want a key of the Secret %s %v, mounted read-only", f, flags[f], etcdSecret, etcdSecretFiles[etcdSecret])
				} else if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
					t.Errorf("the Secret %s's defaultMode lets others read the keys", etcdSecret)
				}
			}

			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for name, flag := range map[string]string{"client": "listen-client-urls", "peer": "listen-peer-urls", "metrics": "listen-metrics-urls"} {
				u, err := url.Parse(flags[flag])
				if err != nil || u.Port() != strconv.Itoa(int(ports[name])) {
					t.Errorf("etcd --%s=%s: want the container port %s (%d)", flag, flags[flag], name, ports[name])
				}
			}
			for _, pr := range []struct {
				name  string
				probe *corev1.Probe
			}{{"startup", c.StartupProbe}, {"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}} {
				if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Port.StrVal != "metrics" || pr.probe.HTTPGet.Scheme == corev1.URISchemeHTTPS {
					t.Errorf("etcd's %s probe: want HTTP on the metrics port (the client port demands a certificate)", pr.name)
				}
			}
			psc, sc := sts.Spec.Template.Spec.SecurityContext, c.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || sc == nil ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Error("etcd's securityContext: want non-root, seccomp, a read-only root, no privilege escalation, no capability (the namespace enforces restricted)")
			}
			if a := sts.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
				t.Error("etcd mounts a service account token; it never calls the Kubernetes API")
			}
		})
	}
}

// TestKubernetesEtcdTLSConnects starts a replica's pod as the kubelet
// would (its init containers copy the Secrets), and checks sumgate's
// state.etcd against the example etcd's TLS flags, with the certificates
// certs.sh makes, mounted from the Secret etcd-tls where the StatefulSet
// mounts it.
func TestKubernetesEtcdTLSConnects(t *testing.T) {
	m := render(t, k8sReplicas)
	keys, _ := caMaterial(t)
	secrets := etcdSecretKeys(t, etcdCerts(t))
	secrets[caSecret] = keys
	p := startPod(t, m, secrets, secretMode(t, &m.deployments[0].Spec.Template.Spec))
	if p.cfg.State.Backend != "etcd" {
		t.Fatalf("state.backend %q, want etcd", p.cfg.State.Backend)
	}
	sts, c := etcdSet(t, m)
	ns := sts.Namespace
	for _, ep := range p.cfg.State.Etcd.Endpoints {
		u, err := url.Parse(ep)
		if err != nil {
			t.Fatal(err)
		}
		member, rest, _ := strings.Cut(u.Hostname(), ".")
		i, err := strconv.Atoi(strings.TrimPrefix(member, sts.Name+"-"))
		if rest != sts.Spec.ServiceName+"."+ns+".svc" || err != nil || i < 0 || i >= int(*sts.Spec.Replicas) || u.Port() != "2379" {
			t.Errorf("state.etcd.endpoints has %s: want %s-N.%s.%s.svc:2379 for a member N", ep, sts.Name, sts.Spec.ServiceName, ns)
		}
	}
	if len(p.cfg.State.Etcd.Endpoints) != int(*sts.Spec.Replicas) {
		t.Errorf("state.etcd.endpoints %v: want every member, so that the client fails over", p.cfg.State.Etcd.Endpoints)
	}
	// The member's Secret volume, where the StatefulSet mounts it.
	tlsDir := filepath.Join(t.TempDir(), "etcd-tls")
	writeSecretVolume(t, tlsDir, secrets[etcdSecret], 0o440)
	var mount string
	for _, vm := range c.VolumeMounts {
		for _, v := range sts.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.Secret != nil && v.Secret.SecretName == etcdSecret {
				mount = vm.MountPath
			}
		}
	}
	if mount == "" {
		t.Fatalf("etcd mounts no Secret %s", etcdSecret)
	}
	local := func(s string) string {
		return strings.ReplaceAll(strings.NewReplacer(mount, tlsDir).Replace(s), "$(POD_NAMESPACE)", ns)
	}
	flags := etcdFlags(t, c.Args)
	for k, v := range flags {
		flags[k] = local(v)
	}
	checkEtcdTLS(t, &p.cfg.State.Etcd, flags, func(s string) string { return s })
}

// policiesSelecting returns the policies that select pods labelled l.
func policiesSelecting(policies []networkingv1.NetworkPolicy, l map[string]string) []networkingv1.NetworkPolicy {
	var out []networkingv1.NetworkPolicy
	for _, np := range policies {
		if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err == nil && sel.Matches(labels.Set(l)) {
			out = append(out, np)
		}
	}
	return out
}

// TestKubernetesEtcdIsReachableOnlyBySumgate evaluates the replicas
// overlay's NetworkPolicies: sumgate reaches etcd's client port and
// nothing else of etcd; etcd's client port admits sumgate's pods alone,
// its peer port the members alone.
func TestKubernetesEtcdIsReachableOnlyBySumgate(t *testing.T) {
	m := render(t, k8sReplicas)
	dep := only(t, "Deployments", m.deployments)
	sts, c := etcdSet(t, m)
	ns := sts.Namespace
	gwLabels, etcdLabels := dep.Spec.Template.Labels, sts.Spec.Template.Labels
	sumgatePod := peer{namespace: map[string]string{nsNameLabel: ns}, pod: gwLabels, ip: netip.MustParseAddr("10.244.1.7")}
	member := peer{namespace: map[string]string{nsNameLabel: ns}, pod: etcdLabels, ip: netip.MustParseAddr("10.244.2.8")}
	other := peer{namespace: map[string]string{nsNameLabel: ns}, pod: map[string]string{"app": "anything"}, ip: netip.MustParseAddr("10.244.3.9")}
	client := peer{namespace: map[string]string{nsNameLabel: "ci", clientLabel: "true"}, pod: map[string]string{"app": "anything"}, ip: netip.MustParseAddr("10.244.4.10")}
	etcdPorts := map[string]int32{}
	for _, p := range c.Ports {
		etcdPorts[p.Name] = p.ContainerPort
	}
	gw, et := policiesSelecting(m.policies, gwLabels), policiesSelecting(m.policies, etcdLabels)
	in, out, tcp := networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress, corev1.ProtocolTCP
	for _, tc := range []struct {
		what     string
		policies []networkingv1.NetworkPolicy
		dir      networkingv1.PolicyType
		peer     peer
		port     int32
		want     bool
	}{
		{"sumgate to etcd's client port", gw, out, member, 2379, true},
		{"etcd's client port from sumgate", et, in, sumgatePod, 2379, true},
		{"sumgate to etcd's peer port", gw, out, member, 2380, false},
		{"etcd's peer port from sumgate", et, in, sumgatePod, 2380, false},
		{"sumgate to another pod on 2379", gw, out, other, 2379, false},
		{"etcd's client port from another pod of the namespace", et, in, other, 2379, false},
		{"etcd's client port from a client namespace", et, in, client, 2379, false},
		{"etcd's metrics port from another pod", et, in, other, 2381, false},
		{"a member to another's peer port", et, out, member, 2380, true},
		{"a member's peer port from another", et, in, member, 2380, true},
		{"a member to a public address", et, out, addr("142.251.16.141"), 443, false},
	} {
		if got := allowed(tc.policies, etcdPorts, tc.dir, tc.peer, tc.port, tcp); got != tc.want {
			t.Errorf("%s: allowed %v, want %v", tc.what, got, tc.want)
		}
	}
}

// replicaServices are the compose stack's sumgate replicas.
var replicaServices = []string{"sumgate-a", "sumgate-b"}

// TestComposeReplicasShareEtcd: the replicas run with their own
// configuration, which loads with sumgate's loader with the etcd backend
// and the step-ca of the single gateway; they publish distinct ports;
// etcd-init.sh, run with openssl, gives etcd its certificates and the
// replicas their client certificate (0600 in a 0700 folder, owned by
// 65532), and the two agree on TLS as etcd's flags in the stack set it up.
func TestComposeReplicasShareEtcd(t *testing.T) {
	needOpenSSL(t)
	p := loadStack(t)
	single, _ := loadStackSumgateConfig(t, p)
	h := newStackHost(t, p)
	if os.Getuid() != 0 {
		h.stub(t, "chown", "")
	}
	h.run(t, "etcd-certs", nil)
	if out := h.run(t, "etcd-certs", nil); !strings.Contains(out, "published") || strings.Contains(out, "made") {
		t.Errorf("a second run of etcd-certs:\n%s\nwant the same certificates published again, nothing made", out)
	}
	etcd := service(t, p, "etcd")
	etcdFlagsMap := etcdFlags(t, etcd.Command[1:])
	if etcd.Command[0] != "/usr/local/bin/etcd" {
		t.Errorf("etcd runs %s", etcd.Command[0])
	}
	if hc := etcd.HealthCheck; hc == nil || !slices.Contains(hc.Test, "/usr/local/bin/etcdctl") || !slices.Contains(hc.Test, "--cert="+etcdFlagsMap["cert-file"]) {
		t.Errorf("etcd's health check %v: want etcdctl with the member's certificate", etcd.HealthCheck)
	}
	published := map[string]string{}
	for _, name := range replicaServices {
		s := service(t, p, name)
		file := argAfter(s.Command, "-config")
		conf, ok := mountOf(s, file)
		if !ok || conf.Type != types.VolumeTypeBind || conf.Target != file {
			t.Fatalf("%s's configuration %s is not bind-mounted from the repository", name, file)
		}
		if hc := argAfter(s.HealthCheck.Test, "-config"); hc != file {
			t.Errorf("%s's health check reads %q, the gateway %q", name, hc, file)
		}
		raw, err := os.ReadFile(conf.Source)
		if err != nil {
			t.Fatal(err)
		}
		// The files on the volumes, as the init steps leave them; the step
		// CA's two as loadStackSumgateConfig makes them.
		text := h.local(s, string(raw))
		for _, f := range []string{single.CA.Step.Root, single.CA.Step.PasswordFile} {
			local := h.local(s, f)
			if err := os.WriteFile(local, []byte("x\n"), 0o600); err != nil && !errors.Is(err, os.ErrExist) {
				t.Fatal(err)
			}
		}
		cfg, err := config.Parse(conf.Source, []byte(text))
		if err != nil {
			t.Fatalf("%s: sumgate's loader refuses its configuration, with the files the init steps wrote: %v", name, err)
		}
		if cfg.State.Backend != "etcd" {
			t.Errorf("%s: state.backend %q, want etcd", name, cfg.State.Backend)
		}
		if cfg.CA.Backend != single.CA.Backend || cfg.CA.Step.URL != single.CA.Step.URL || cfg.CA.Step.Provisioner != single.CA.Step.Provisioner {
			t.Errorf("%s: ca %+v, want the stack's step-ca and provisioner (every replica's leaves chain to the one root)", name, cfg.CA)
		}
		for _, ep := range cfg.State.Etcd.Endpoints {
			u, _ := url.Parse(ep)
			lc, _ := url.Parse(strings.Split(etcdFlagsMap["listen-client-urls"], ",")[0])
			if u.Hostname() != "etcd" || u.Port() != lc.Port() {
				t.Errorf("%s: endpoint %s, want the etcd service on its client port %s", name, ep, lc.Port())
			}
		}
		for _, f := range []string{cfg.State.Etcd.TLS.CA, cfg.State.Etcd.TLS.Cert, cfg.State.Etcd.TLS.Key} {
			info, err := os.Stat(f)
			if err != nil || info.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s: %v, want 0600", name, f, err)
			}
			if dir, err := os.Stat(filepath.Dir(f)); err != nil || dir.Mode().Perm() != 0o700 {
				t.Errorf("%s: the folder of %s: want 0700", name, f)
			}
		}
		if _, ok := s.DependsOn["etcd"]; !ok {
			t.Errorf("%s does not wait for etcd", name)
		}
		for _, pc := range s.Ports {
			if other, dup := published[pc.Published]; dup {
				t.Errorf("%s and %s both publish %s", name, other, pc.Published)
			}
			published[pc.Published] = name
		}
		checkEtcdTLS(t, &cfg.State.Etcd, etcdFlagsMap, func(f string) string { return h.local(etcd, f) })
	}
	if os.Getuid() != 0 {
		var chowns []string
		for _, c := range h.calls(t, "chown") {
			chowns = append(chowns, strings.Join(c, " "))
		}
		if !slices.ContainsFunc(chowns, func(c string) bool {
			return strings.HasPrefix(c, "65532:65532 ") && strings.HasSuffix(c, "client.key.tmp")
		}) {
			t.Errorf("etcd-certs does not give the client key to sumgate's uid (chown calls %q)", chowns)
		}
	}
}
