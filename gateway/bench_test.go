package gateway_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/testworld"
)

var (
	largeMiB  = flag.Int("sumgate.large-mib", 100, "content of each large module in the gateway benchmarks, MiB")
	smallMods = flag.Int("sumgate.small", 20, "number of small modules in BenchmarkGoModDownload")
)

// publishModule publishes path@v1.0.0 with about size bytes of generated
// Go-like text (testworld.PublishGenerated) and returns "path@v1.0.0".
func publishModule(b *testing.B, w *testworld.World, path string, size int64) string {
	b.Helper()
	return w.PublishGenerated(b, path, size).String()
}

// publishWorkload publishes the gateway benchmarks' modules in w:
// -sumgate.small modules of 48 KiB, then two of -sumgate.large-mib MiB.
// It returns them as path@version, in that order.
func publishWorkload(b *testing.B, w *testworld.World) []string {
	b.Helper()
	var mods []string
	for i := range *smallMods {
		mods = append(mods, publishModule(b, w, fmt.Sprintf("example.com/bench/small%d", i), 48<<10))
	}
	for i := range 2 {
		mods = append(mods, publishModule(b, w, fmt.Sprintf("example.com/bench/large%d", i), int64(*largeMiB)<<20))
	}
	return mods
}

// memFile is an in-memory module file, a modzip.File.
type memFile struct {
	name string
	data []byte
}

func (f memFile) Path() string                 { return f.name }
func (f memFile) Lstat() (fs.FileInfo, error)  { return memInfo(f), nil }
func (f memFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.data)), nil }

type memInfo memFile

func (i memInfo) Name() string       { return filepath.Base(i.name) }
func (i memInfo) Size() int64        { return int64(len(i.data)) }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// BenchmarkGoModDownload is `go mod download` of N small modules and two
// large ones: straight to the test world's proxy (no proxy hop), then
// through sumgate cold (new data directory: no leaves, no proven hashes)
// and warm. Compare the three in one run.
func BenchmarkGoModDownload(b *testing.B) {
	w := testworld.New(b)
	mods := publishWorkload(b, w)
	run := func(b *testing.B, env []string) {
		b.Helper()
		if out, err := testworld.GoModDownload(b, env, mods...); err != nil || bytes.Contains(out, []byte(`"Error"`)) {
			b.Fatalf("go mod download: %v\n%s", err, out)
		}
	}
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			run(b, []string{"GOPROXY=" + w.DirectProxyURL(), "SSL_CERT_FILE=" + w.RootsFile})
		}
	})
	viaSumgate := func(e *env) []string {
		return []string{"GOPROXY=" + w.ProxyURL, "HTTPS_PROXY=http://" + e.addr, "SSL_CERT_FILE=" + e.rootFile}
	}
	b.Run("sumgate-cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			e := startWith(b, w, nil)
			b.StartTimer()
			run(b, viaSumgate(e))
		}
	})
	for _, h2 := range []bool{false, true} {
		name := "sumgate-warm"
		if h2 {
			name += "-h2"
		}
		b.Run(name, func(b *testing.B) {
			e := startWith(b, w, func(c *gateway.Config) { c.ClientHTTP2 = h2 })
			run(b, viaSumgate(e))
			for b.Loop() {
				run(b, viaSumgate(e))
			}
		})
	}
	b.Run("sumgate-cold-h2", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			e := startWith(b, w, func(c *gateway.Config) { c.ClientHTTP2 = true })
			b.StartTimer()
			run(b, viaSumgate(e))
		}
	})
}

// BenchmarkPeakRSS runs `sumgate run` as its own process and has 32
// clients download 8 distinct large modules through it at once (4 per
// module), then reports the process's peak resident set. Run it with two
// -sumgate.large-mib values to see whether memory grows with module size.
func BenchmarkPeakRSS(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc")
	}
	w := testworld.New(b)
	var zips []string
	var sizes []int64
	for i := range 8 {
		mod := publishModule(b, w, fmt.Sprintf("example.com/rss/m%d", i), int64(*largeMiB)<<20)
		path, vers, _ := strings.Cut(mod, "@")
		zips = append(zips, w.ProxyURL+"/"+path+"/@v/"+vers+".zip")
		sizes = append(sizes, int64(len(w.Module(path, vers).Zip)))
	}
	bin := filepath.Join(b.TempDir(), "sumgate")
	if out, err := exec.Command(testworld.GoBinary(b), "build", "-o", bin, "github.com/sumgate/sumgate/cmd/sumgate").CombinedOutput(); err != nil {
		b.Fatalf("building sumgate: %v\n%s", err, out)
	}
	for b.Loop() {
		b.StopTimer()
		proxyURL, bundle, pid, stop := runSumgate(b, bin, w)
		client := proxiedClient(b, proxyURL, bundle)
		b.StartTimer()
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := range 32 {
			wg.Go(func() {
				resp, err := client.Get(zips[i%len(zips)])
				if err != nil {
					errs <- err
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || n != sizes[i%len(sizes)] {
					errs <- fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Error(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(peakRSS(b, pid))/(1<<20), "peakRSS-MiB")
		stop()
		b.StartTimer()
	}
}

// runSumgate starts bin as `sumgate run` in front of w and returns the
// proxy URL and CA bundle from its banner, its pid, and a stop function.
func runSumgate(b *testing.B, bin string, w *testworld.World) (proxyURL, bundle string, pid int, stop func()) {
	b.Helper()
	p := startSumgate(b, bin, w, "", logFile)
	return p.proxyURL, p.bundle, p.pid, p.stop
}

// sumgateProc is a `sumgate run` process started by startSumgate.
type sumgateProc struct {
	proxyURL string // HTTPS_PROXY, from the banner
	bundle   string // SSL_CERT_FILE, from the banner
	admin    string // the admin listener's base URL, from the banner
	pid      int
	stop     func() // SIGINT, then wait for the exit
}

// A logSink is where startSumgate sends the log of `sumgate run`.
type logSink func(b *testing.B, cmd *exec.Cmd, dir string)

// logFile is a log collector that always keeps up: a file.
func logFile(b *testing.B, cmd *exec.Cmd, dir string) {
	f, err := os.Create(filepath.Join(dir, "sumgate.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() }) // the child has its own descriptor
	cmd.Stderr = f
}

// logPipe is a pipe this process reads and discards: a collector that
// falls behind when its clients keep this process busy, as journald or a
// container runtime's log driver may under load. With stall > 0 it also
// stops reading for stall every second, as a collector that flushes or
// rotates.
func logPipe(stall time.Duration) logSink {
	return func(b *testing.B, cmd *exec.Cmd, _ string) {
		r, err := cmd.StderrPipe()
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			buf := make([]byte, 64<<10)
			next := time.Now().Add(time.Second)
			for {
				if stall > 0 && time.Now().After(next) {
					time.Sleep(stall)
					next = time.Now().Add(time.Second)
				}
				if _, err := r.Read(buf); err != nil {
					return
				}
			}
		}()
	}
}

// startSumgate starts bin as `sumgate run` in front of w, on loopback
// ports of its own (the proxy and the admin listener), with extra
// appended to its configuration file, its log going to logTo.
func startSumgate(b *testing.B, bin string, w *testworld.World, extra string, logTo logSink) sumgateProc {
	b.Helper()
	dir := b.TempDir()
	file := writeSumgateConfig(b, w, dir, extra)
	cmd := exec.Command(bin, "run", "-config", file)
	stdout, _ := cmd.StdoutPipe()
	logTo(b, cmd, dir)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := sumgateProc{pid: cmd.Process.Pid}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "export HTTPS_PROXY="); ok {
			p.proxyURL = v
		}
		if v, ok := strings.CutPrefix(line, "export SSL_CERT_FILE="); ok {
			p.bundle = v
		}
		if v, ok := strings.CutPrefix(line, "Admin (metrics, health, /ca.pem): "); ok {
			p.admin = v
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if p.bundle == "" || p.admin == "" {
		cmd.Process.Kill()
		cmd.Wait()
		b.Fatal("sumgate run printed no banner")
	}
	p.stop = func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	return p
}

// writeSumgateConfig writes dir/sumgate.yaml, the configuration of a
// sumgate in front of w with its data in dir/data, on loopback ports of
// its own, every host of w intercepted, and extra appended, and returns
// its name.
func writeSumgateConfig(b *testing.B, w *testworld.World, dir, extra string) string {
	b.Helper()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "data_dir: %s\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nmodule_proxies: [%s]\nsumdb:\n  key: %s\nupstream:\n  roots: %s\n  resolve:\n",
		filepath.Join(dir, "data"), strings.Join(append([]string{w.ProxyURL}, w.MirrorURLs...), ", "), w.SumDBKey, w.RootsFile)
	var hosts []string
	for h, a := range w.Resolve {
		fmt.Fprintf(&cfg, "    %s: %s\n", h, a)
		hosts = append(hosts, h)
	}
	fmt.Fprintf(&cfg, "intercept: [%s]\n%s", strings.Join(hosts, ", "), extra)
	file := filepath.Join(dir, "sumgate.yaml")
	if err := os.WriteFile(file, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return file
}

func proxiedClient(b *testing.B, proxyURL, bundle string) *http.Client {
	b.Helper()
	pemData, err := os.ReadFile(bundle)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemData)
	pu, _ := url.Parse(proxyURL)
	return &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{
		Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}, MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64,
	}}
}

// peakRSS reads a process's peak resident set size (VmHWM), in bytes.
func peakRSS(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmHWM")
	return 0
}
