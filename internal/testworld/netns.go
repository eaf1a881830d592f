package testworld

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A Namespace is a network namespace made for one test: a client host
// joined to this one by a veth pair, with its default route through this
// side, so that its traffic can be redirected here as a corporate
// network would. It is removed when the test ends.
type Namespace struct {
	Name      string   // the namespace, for ip netns exec
	HostIP    string   // this side of the veth pair
	ClientIP  string   // the client's side
	HostIP6   string   // this side's IPv6 address
	ClientIP6 string   // the client's IPv6 address
	Wrap      []string // runs a command inside: ip netns exec <Name>
	HostIf    string   // this side's interface, where the client's traffic arrives
}

// NewNamespace makes the namespace. It skips the test when not run as
// root, the only case where it cannot; missing tools are a failure, since
// .ci/run installs them.
func NewNamespace(t testing.TB) *Namespace {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: network namespaces and iptables need root (CI runs this as root)")
	}
	for _, tool := range []string{"ip", "iptables", "ip6tables", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install iproute2 iptables nftables): %v", tool, err)
		}
	}
	id := rand.IntN(60000) // names are unique on the machine while the test runs
	ns := &Namespace{
		Name:      fmt.Sprintf("sgc%d", id),
		HostIf:    fmt.Sprintf("sgh%d", id),
		HostIP:    fmt.Sprintf("10.%d.%d.1", 200+id%50, id%250),
		ClientIP:  fmt.Sprintf("10.%d.%d.2", 200+id%50, id%250),
		HostIP6:   fmt.Sprintf("fd5a:%x::1", id),
		ClientIP6: fmt.Sprintf("fd5a:%x::2", id),
	}
	ns.Wrap = []string{"ip", "netns", "exec", ns.Name}
	clientIf := fmt.Sprintf("sgv%d", id)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", ns.HostIf).Run()
		exec.Command("ip", "netns", "del", ns.Name).Run()
		os.RemoveAll(filepath.Join("/etc/netns", ns.Name))
	})
	for _, args := range [][]string{
		{"ip", "netns", "add", ns.Name},
		{"ip", "link", "add", ns.HostIf, "type", "veth", "peer", "name", clientIf},
		{"ip", "link", "set", clientIf, "netns", ns.Name},
		{"ip", "addr", "add", ns.HostIP + "/24", "dev", ns.HostIf},
		{"ip", "link", "set", ns.HostIf, "up"},
		{"ip", "netns", "exec", ns.Name, "ip", "addr", "add", ns.ClientIP + "/24", "dev", clientIf},
		{"ip", "netns", "exec", ns.Name, "ip", "link", "set", clientIf, "up"},
		{"ip", "netns", "exec", ns.Name, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", ns.Name, "ip", "route", "add", "default", "via", ns.HostIP},
		// nodad: usable at once, not after duplicate address detection.
		{"ip", "-6", "addr", "add", ns.HostIP6 + "/64", "dev", ns.HostIf, "nodad"},
		{"ip", "netns", "exec", ns.Name, "ip", "-6", "addr", "add", ns.ClientIP6 + "/64", "dev", clientIf, "nodad"},
		{"ip", "netns", "exec", ns.Name, "ip", "-6", "route", "add", "default", "via", ns.HostIP6},
	} {
		run(t, args...)
	}
	return ns
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Serve makes w's hosts reachable from inside the namespace, as a
// corporate network would see them: there, every name of w resolves to
// clientSees; on this side, w is forwarded from hostIP. It returns the
// upstream.resolve map (name -> forwarder) telling sumgate where those
// hosts are.
func (ns *Namespace) Serve(t testing.TB, w *World, clientSees, hostIP string) map[string]string {
	t.Helper()
	fwd := forward(t, hostIP, w.Addr)
	resolve := map[string]string{}
	var names []string
	for h := range w.Resolve {
		resolve[h] = fwd
		names = append(names, h)
	}
	ns.hosts(t, clientSees, names...)
	return resolve
}

// hosts makes every name resolve, inside the namespace, to ip (through
// /etc/netns/<name>/hosts, which ip netns exec mounts over /etc/hosts).
func (ns *Namespace) hosts(t testing.TB, ip string, names ...string) {
	t.Helper()
	dir := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s\n", ip, n)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// forward accepts TCP on ip (any port) and splices each connection to
// to; it returns the address it listens on.
func forward(t testing.TB, ip, to string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, u)
			}()
		}
	}()
	return l.Addr().String()
}
