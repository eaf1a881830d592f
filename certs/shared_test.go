package certs

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sumgate/sumgate/internal/etcdtest"
)

// replica starts a CA as one replica would: the shared CA (certFile,
// keyFile), a data directory of its own, leaves in etcd under prefix.
func replica(t testing.TB, client *clientv3.Client, prefix, certFile, keyFile string, names []string) *CA {
	t.Helper()
	return newCA(t, Config{Cert: certFile, Key: keyFile, Intercept: names, Etcd: client, EtcdPrefix: prefix})
}

// serial returns the serial of the leaf addr presents for host, which
// must verify against root.
func serial(t testing.TB, addr, host string, root *x509.Certificate) string {
	t.Helper()
	chain, err := handshake(addr, host, pool(root))
	if err != nil {
		t.Fatalf("handshake for %s: %v", host, err)
	}
	return chain[0].SerialNumber.Text(16)
}

// TestSharedLeaves: after replica A minted a name, replica B (the same
// CA, another process's cache, one etcd) presents the same leaf, and
// nothing is minted twice, even once A is gone.
func TestSharedLeaves(t *testing.T) {
	client := etcdtest.Start(t).Client(t)
	certFile, keyFile, root := writeTestCA(t, true, "", false)
	a := replica(t, client, "/sumgate/", certFile, keyFile, testHosts)
	want := serial(t, serve(t, a), "github.com", root)
	a.Stop()
	b := replica(t, client, "/sumgate/", certFile, keyFile, testHosts)
	addrB := serve(t, b)
	for range 2 { // from etcd, then from B's cache
		if got := serial(t, addrB, "github.com", root); got != want {
			t.Errorf("replica B presented serial %s, replica A minted %s", got, want)
		}
	}
	if a.Issued() != 1 || b.Issued() != 0 {
		t.Errorf("replicas minted %d and %d leaves, want 1 and 0", a.Issued(), b.Issued())
	}
	// Pre-minting on a third replica loads what is held.
	c := newCA(t, Config{Cert: certFile, Key: keyFile, Intercept: testHosts, Etcd: client, EtcdPrefix: "/sumgate/", Premint: true})
	premintDone(t, c)
	if c.Issued() != int64(len(testHosts)-1) {
		t.Errorf("pre-minting minted %d leaves, want %d (all but the one held)", c.Issued(), len(testHosts)-1)
	}
	if got := serial(t, serve(t, c), "github.com", root); got != want {
		t.Errorf("replica C presented serial %s, replica A minted %s", got, want)
	}
}

// TestPlantedLeafIsNotServed: etcd is no root of trust. Whatever a
// writer to etcd leaves in place of a name's leaf (garbage, a leaf of
// another CA with its key, this CA's leaf for another name, this CA's
// leaf with another key) is not served: the replica that finds it mints
// the name anew, and the next replica serves that.
func TestPlantedLeafIsNotServed(t *testing.T) {
	ctx := context.Background()
	client := etcdtest.Start(t).Client(t)
	certFile, keyFile, root := writeTestCA(t, true, "", false)
	const host, other = "github.com", "goproxy.io"
	forged := forgedLeaf(t, host)
	tests := []struct {
		name  string
		plant func(files, otherFiles map[string][]byte) // edits host's files
	}{
		{"garbage certificate", func(f, _ map[string][]byte) { f[".crt"] = []byte("garbage") }},
		{"garbage metadata", func(f, _ map[string][]byte) { f[".json"] = []byte("{") }},
		{"no certificate", func(f, _ map[string][]byte) { delete(f, ".crt") }},
		{"another CA's leaf and key", func(f, _ map[string][]byte) { f[".crt"], f[".key"] = forged[0], forged[1] }},
		{"this CA's leaf for another name", func(f, o map[string][]byte) { f[".crt"], f[".key"] = o[".crt"], o[".key"] }},
		{"this CA's leaf with another key", func(f, o map[string][]byte) { f[".key"] = o[".key"] }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := fmt.Sprintf("/planted%d/", i)
			a := replica(t, client, prefix, certFile, keyFile, testHosts)
			addrA := serve(t, a)
			genuine := serial(t, addrA, host, root)
			serial(t, addrA, other, root)
			a.Stop()

			files, otherFiles := leafFiles(t, client, prefix, a, host), leafFiles(t, client, prefix, a, other)
			tt.plant(files, otherFiles)
			site := prefix + "certs/data/" + certmagic.StorageKeys.CertsSitePrefix(issuer{a}.IssuerKey(), host) + "/" + host
			if _, err := client.Delete(ctx, site, clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			for ext, value := range files {
				if _, err := client.Put(ctx, site+ext, encodeValue(value, time.Now())); err != nil {
					t.Fatal(err)
				}
			}

			b := replica(t, client, prefix, certFile, keyFile, testHosts)
			got := serial(t, serve(t, b), host, root) // verifies against root, for host
			if got == genuine || b.Issued() != 1 {
				t.Fatalf("replica B presented serial %s (A's was %s) and minted %d leaves; want a new leaf", got, genuine, b.Issued())
			}
			c := replica(t, client, prefix, certFile, keyFile, testHosts)
			if again := serial(t, serve(t, c), host, root); again != got || c.Issued() != 0 {
				t.Errorf("replica C presented serial %s, minting %d; want B's %s, minting none", again, c.Issued(), got)
			}
		})
	}
}

// leafFiles returns the files of c's leaf for host in etcd under prefix,
// by extension (".crt", ".key", ".json"), as stored.
func leafFiles(t *testing.T, client *clientv3.Client, prefix string, c *CA, host string) map[string][]byte {
	t.Helper()
	site := prefix + "certs/data/" + certmagic.StorageKeys.CertsSitePrefix(issuer{c}.IssuerKey(), host) + "/" + host
	resp, err := client.Get(context.Background(), site, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, kv := range resp.Kvs {
		value, _, err := decodeValue(string(kv.Key), kv.Value)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(string(kv.Key), site)] = value
	}
	if len(files) != 3 {
		t.Fatalf("etcd holds %d files of %s's leaf, want 3", len(files), host)
	}
	return files
}

// forgedLeaf returns a self-signed serverAuth leaf for host and its key,
// PEM-encoded: what a writer to etcd without the CA key can make.
func forgedLeaf(t *testing.T, host string) [2][]byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := certmagic.PEMEncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return [2][]byte{PEM(&x509.Certificate{Raw: der}), keyPEM}
}

// Environment of the replica process TestConcurrentReplicasMintOnce
// starts (see TestReplicaProcess).
const (
	envReplicaEtcd  = "SUMGATE_TEST_REPLICA_ETCD"  // etcd endpoint; unset outside that test
	envReplicaCA    = "SUMGATE_TEST_REPLICA_CA"    // CA certificate and key files, comma-separated
	envReplicaNames = "SUMGATE_TEST_REPLICA_NAMES" // names, comma-separated
)

// TestConcurrentReplicasMintOnce: two replicas in two processes (so that
// nothing but etcd's lock ties them; certmagic's own coordination is
// per process), whose first handshakes for the same names come at once,
// mint each name once, and present the same leaves.
func TestConcurrentReplicasMintOnce(t *testing.T) {
	srv := etcdtest.Start(t)
	client := srv.Client(t)
	certFile, keyFile, root := writeTestCA(t, true, "", false)
	var names []string
	for i := range 16 {
		names = append(names, fmt.Sprintf("h%d.example.com", i))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReplicaProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envReplicaEtcd+"="+srv.Endpoints[0], envReplicaCA+"="+certFile+","+keyFile,
		envReplicaNames+"="+strings.Join(names, ","))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	next := func() string {
		for lines.Scan() {
			if line, ok := strings.CutPrefix(lines.Text(), "replica: "); ok {
				return line
			}
		}
		t.Fatalf("the replica process ended: %v", lines.Err())
		return ""
	}
	if got := next(); got != "ready" {
		t.Fatalf("replica process said %q, want ready", got)
	}

	a := replica(t, client, "/sumgate/", certFile, keyFile, names)
	fmt.Fprintln(stdin, "go")
	mine := mintAll(a, names)
	var theirs map[string]string
	var theirIssued int64
	if err := json.Unmarshal([]byte(next()), &theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscan(next(), &theirIssued); err != nil {
		t.Fatal(err)
	}
	if a.Issued()+theirIssued != int64(len(names)) {
		t.Errorf("two replicas minted %d and %d leaves for %d names", a.Issued(), theirIssued, len(names))
	}
	for _, name := range names {
		if mine[name] == "" || mine[name] != theirs[name] {
			t.Errorf("%s: replicas presented serials %q and %q", name, mine[name], theirs[name])
		}
	}
	// The leaves also verify for a client.
	if got := serial(t, serve(t, a), names[0], root); got != mine[names[0]] {
		t.Errorf("%s: served serial %s, want %s", names[0], got, mine[names[0]])
	}
}

// mintAll asks c for the leaf of every name at once, and returns each
// leaf's serial ("" where it failed).
func mintAll(c *CA, names []string) map[string]string {
	var mu sync.Mutex
	serials := map[string]string{}
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() {
			cert, err := c.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
			if err != nil {
				return
			}
			mu.Lock()
			serials[name] = cert.Leaf.SerialNumber.Text(16)
			mu.Unlock()
		})
	}
	wg.Wait()
	return serials
}

// TestReplicaProcess is the second replica of
// TestConcurrentReplicasMintOnce, in a process of its own: it says
// "ready", waits for "go" on stdin, mints every name at once, then says
// the serials (JSON) and how many leaves it minted.
func TestReplicaProcess(t *testing.T) {
	endpoint := os.Getenv(envReplicaEtcd)
	if endpoint == "" {
		t.Skip("the second replica of TestConcurrentReplicasMintOnce")
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() }) // after c.Stop
	ca := strings.Split(os.Getenv(envReplicaCA), ",")
	names := strings.Split(os.Getenv(envReplicaNames), ",")
	c := replica(t, client, "/sumgate/", ca[0], ca[1], names)
	fmt.Println("replica: ready")
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || line != "go\n" {
		t.Fatalf("read %q, %v; want go", line, err)
	}
	serials, err := json.Marshal(mintAll(c, names))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("replica: %s\nreplica: %d\n", serials, c.Issued())
}

// BenchmarkSharedLeaves compares, in one run, first-contact handshakes
// (over loopback, client verification included, no resumption) that mint
// a leaf with the data directory as storage (file) and with etcd (etcd),
// one on a second replica that loads the leaf the first minted (load),
// and one served from memory (cached). Give a fixed count, such as
// -benchtime 200x: each run of mint/etcd readies the names load reads.
func BenchmarkSharedLeaves(b *testing.B) {
	client := etcdtest.Start(b).Client(b)
	certFile, keyFile, root := writeTestCA(b, true, "", false)
	roots := pool(root)
	intercept := []string{"*.bench.example"}
	file := newCA(b, Config{Cert: certFile, Key: keyFile, Intercept: intercept})
	first := replica(b, client, "/bench/", certFile, keyFile, intercept)
	second := replica(b, client, "/bench/", certFile, keyFile, intercept)
	addrs := map[*CA]string{file: serve(b, file), first: serve(b, first), second: serve(b, second)}
	next := map[*CA]int{} // the next host each CA has not seen; -count reruns on the same CAs
	host := func(i int) string { return fmt.Sprintf("h%d.bench.example", i) }
	run := func(name string, c, counted *CA) {
		b.Run(name, func(b *testing.B) {
			before := counted.Issued()
			start := next[c]
			for b.Loop() {
				if _, err := handshake(addrs[c], host(next[c]), roots); err != nil {
					b.Fatal(err)
				}
				next[c]++
			}
			b.ReportMetric(float64(counted.Issued()-before)/float64(next[c]-start), "mints/op")
		})
	}
	run("mint/file", file, file)
	run("mint/etcd", first, first)
	run("load/etcd", second, second) // 0 mints/op while it reads only what mint/etcd minted
	b.Run("cached/etcd", func(b *testing.B) {
		for b.Loop() {
			if _, err := handshake(addrs[first], host(0), roots); err != nil {
				b.Fatal(err)
			}
		}
	})
}
