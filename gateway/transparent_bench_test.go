package gateway_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/testworld"
)

// BenchmarkTransparentVsConnect is the go command in a client network
// namespace downloading -sumgate.small modules through one warm gateway,
// with HTTPS_PROXY (explicit CONNECT) and with no proxy settings through
// a REDIRECT (transparent mode), over the same veth link. Compare the two
// in one run with benchstat. It needs root.
func BenchmarkTransparentVsConnect(b *testing.B) {
	ns := testworld.NewNamespace(b)
	w := testworld.New(b)
	var mods []string
	for i := range *smallMods {
		mods = append(mods, publishModule(b, w, fmt.Sprintf("example.com/transparent/small%d", i), 48<<10))
	}
	resolve := ns.Serve(b, w, ns.HostIP, ns.HostIP)
	e := startTraced(b, w, nil, func(c *gateway.Config) { c.Resolve = resolve })
	explicit, err := net.Listen("tcp", net.JoinHostPort(ns.HostIP, "0"))
	if err != nil {
		b.Fatal(err)
	}
	go e.gw.Serve(explicit)
	transparent, err := net.Listen("tcp", net.JoinHostPort(ns.HostIP, "0"))
	if err != nil {
		b.Fatal(err)
	}
	go e.gw.ServeTransparent(transparent)
	_, port, _ := net.SplitHostPort(transparent.Addr().String())
	script := func(action string) {
		cmd := exec.Command("../deploy/transparent/iptables.sh", "gateway", action)
		cmd.Env = append(os.Environ(), "SUMGATE_PORT="+port, "SUMGATE_IFACE="+ns.HostIf, "SUMGATE_CHAIN=SG"+ns.Name)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("iptables.sh %s: %v\n%s", action, err, out)
		}
	}
	script("up")
	b.Cleanup(func() { script("down") })
	base := []string{"GOPROXY=" + w.ProxyURL, "SSL_CERT_FILE=" + e.rootFile}
	for _, mode := range []struct{ name, proxy string }{
		{"connect", "HTTPS_PROXY=http://" + explicit.Addr().String()},
		{"transparent", ""},
	} {
		b.Run("mode="+mode.name, func(b *testing.B) {
			env := base
			if mode.proxy != "" {
				env = append(env[:len(env):len(env)], mode.proxy)
			}
			download := func() {
				if out, err := testworld.GoModDownloadVia(b, ns.Wrap, env, mods...); err != nil || strings.Contains(string(out), `"Error"`) {
					b.Fatalf("go mod download: %v\n%s", err, out)
				}
			}
			download() // warm: leaves minted, files verified and cached
			for b.Loop() {
				download()
			}
		})
	}
}
