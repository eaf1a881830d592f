package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/etcdtest"
	"github.com/sumgate/sumgate/internal/testworld"
)

// sharedCA makes, with `sumgate ca init` run by bin, the CA that every
// sumgate of BenchmarkLoad imports (ca.cert, ca.key): the root and the
// intermediate, name-constrained to w's hosts, that one `sumgate run`
// would embed, so that one replica or several present the same leaves as
// before. It returns the chain (intermediate, then root), the
// intermediate's key, and the root alone, which clients trust.
func sharedCA(b *testing.B, bin string, w *testworld.World) (certFile, keyFile, rootFile string) {
	b.Helper()
	dir := b.TempDir()
	cfg := writeSumgateConfig(b, w, dir, "")
	if out, err := exec.Command(bin, "ca", "init", "-config", cfg).CombinedOutput(); err != nil {
		b.Fatalf("sumgate ca init: %v\n%s", err, out)
	}
	ca := filepath.Join(dir, "data", "ca")
	var chain []byte
	for _, name := range []string{"intermediate.crt", "root.crt"} {
		data, err := os.ReadFile(filepath.Join(ca, name))
		if err != nil {
			b.Fatal(err)
		}
		chain = append(chain, data...)
	}
	certFile = filepath.Join(dir, "ca-chain.pem")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		b.Fatal(err)
	}
	return certFile, filepath.Join(ca, "intermediate.key"), filepath.Join(ca, "root.crt")
}

// envEtcdProcess, set, makes TestEtcdProcess run the etcd server of
// BenchmarkLoad.
const envEtcdProcess = "SUMGATE_BENCH_ETCD_PROCESS"

// etcdProcess is an etcd server in a process of its own (this test
// binary, running TestEtcdProcess), so that its CPU time is counted apart
// from the clients' and sumgate's.
type etcdProcess struct {
	endpoint string // http://127.0.0.1:PORT
	pid      int
}

// startEtcdProcess starts TestEtcdProcess in a child process and returns
// the endpoint it serves on; the child stops at b's cleanup.
func startEtcdProcess(b *testing.B) etcdProcess {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEtcdProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envEtcdProcess+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	b.Cleanup(func() {
		stdin.Close() // TestEtcdProcess returns, and etcd stops
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	sc := bufio.NewScanner(stdout)
	var endpoint string
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd: "); ok {
			endpoint = v
			break
		}
	}
	go func() {
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(exited)
	}()
	if endpoint == "" {
		b.Fatal("the etcd process printed no endpoint")
	}
	return etcdProcess{endpoint: endpoint, pid: cmd.Process.Pid}
}

// TestEtcdProcess is the etcd server of BenchmarkLoad with -sumgate.state
// etcd, run by startEtcdProcess in a process of its own: a real etcd
// (etcdtest.Start, its write-ahead log fsynced on every commit) on
// 127.0.0.1, plain text, serving until stdin is closed. Otherwise it is
// skipped.
func TestEtcdProcess(t *testing.T) {
	if os.Getenv(envEtcdProcess) == "" {
		t.Skip("the etcd server of BenchmarkLoad with -sumgate.state etcd")
	}
	srv := etcdtest.Start(t)
	fmt.Printf("etcd: %s\n", srv.Endpoints[0])
	io.Copy(io.Discard, os.Stdin)
}
