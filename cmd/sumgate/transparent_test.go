package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/testworld"
)

// TestTransparentModeWithRealRedirect: a client host (a network
// namespace) whose port 443 the network redirects to sumgate runs the real
// go command with no proxy settings at all. The genuine module is
// verified and passes, the tampered one is blocked, and both are in the
// audit trail as transparent connections.
func TestTransparentModeWithRealRedirect(t *testing.T) {
	ns := testworld.NewNamespace(t)
	clearOTELEnv(t)
	for _, family := range []struct{ name, hostIP, clientIP string }{
		{"IPv4", ns.HostIP, ns.ClientIP},
		{"IPv6", ns.HostIP6, ns.ClientIP6},
	} {
		t.Run(family.name, func(t *testing.T) { transparentRedirect(t, ns, family.hostIP, family.clientIP) })
	}
}

// transparentRedirect runs sumgate with its transparent listener on
// hostIP and the client's names pointing there.
func transparentRedirect(t *testing.T, ns *testworld.Namespace, hostIP, clientIP string) {
	w := testworld.New(t)
	// The client resolves every test-world name to the gateway side of its
	// link, as if those were the hosts' public addresses; sumgate, which
	// knows them by the same address (upstream.resolve), reaches the test
	// world there.
	resolve := ns.Serve(t, w, hostIP, hostIP)
	r := startRunResolve(t, w, resolve, "transparent_listen: \""+net.JoinHostPort(hostIP, "0")+"\"\ntransparent:\n  mark: 21319\n")
	_, port, err := net.SplitHostPort(r.transparent)
	if err != nil {
		t.Fatalf("transparent listener %q: %v", r.transparent, err)
	}
	env := []string{"GOPROXY=" + w.ProxyURL, "SSL_CERT_FILE=" + r.bundle} // and no HTTPS_PROXY
	// The redirect is set up by each of the deployment scripts in turn.
	for _, script := range []string{"iptables.sh", "nftables.sh"} {
		t.Run(script, func(t *testing.T) {
			redirect := func(action string) {
				cmd := exec.Command("../../deploy/transparent/"+script, "gateway", action)
				cmd.Env = append(os.Environ(), "SUMGATE_PORT="+port, "SUMGATE_IFACE="+ns.HostIf, "SUMGATE_MARK=21319",
					"SUMGATE_CHAIN=SG"+ns.Name, "SUMGATE_TABLE=sg"+ns.Name)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s gateway %s: %v\n%s", script, action, err, out)
				}
			}
			redirect("up")
			defer redirect("down")
			out, err := testworld.GoModDownloadVia(t, ns.Wrap, env, testworld.GoodPath+"@v1.0.0")
			var d struct{ Error, Sum string }
			if json.Unmarshal(out, &d); err != nil || d.Sum != w.Module(testworld.GoodPath, testworld.Version).ZipHash {
				t.Fatalf("genuine module through the redirect: %v, sum %q\n%s", err, d.Sum, out)
			}
			out, _ = testworld.GoModDownloadVia(t, ns.Wrap, env, testworld.TamperedZipPath+"@v1.0.0")
			if json.Unmarshal(out, &d); !strings.Contains(d.Error, "403 Forbidden") || !strings.Contains(d.Error, "sumgate: blocked "+testworld.TamperedZipPath) {
				t.Fatalf("tampered module through the redirect: %s", out)
			}
		})
	}
	// With the redirect down, the client reaches nothing: it was sumgate.
	if out, err := testworld.GoModDownloadVia(t, ns.Wrap, env, testworld.UpperPath+"@v1.0.0"); err == nil {
		t.Errorf("download succeeded with no redirect in place:\n%s", out)
	}
	r.stop(t)

	var connects, verified, blocked int
	for _, s := range readAudit(t, r.audit) {
		if s.Kind != "server" {
			continue
		}
		a := s.Attributes
		switch {
		case s.Name == "CONNECT":
			connects++
			if a["sumgate.transparent"] != true || a["sumgate.transparent.destination"] != net.JoinHostPort(hostIP, "443") ||
				a["sumgate.decision"] != "intercept" || a["client.address"] != clientIP {
				t.Errorf("transparent connection's span: %v", a)
			}
		case a["sumgate.verdict"] == "verified" && a["sumgate.module.kind"] == "zip":
			verified++
		case a["sumgate.verdict"] == "mismatch":
			blocked++
		}
	}
	if connects == 0 || verified != 2 || blocked == 0 { // the go command asks for a blocked zip twice
		t.Errorf("audit trail: %d transparent connections, %d verified zips, %d mismatches", connects, verified, blocked)
	}
}

// TestTransparentModeWithTPROXY: with a TPROXY rule instead of REDIRECT,
// nothing is rewritten: sumgate's IP_TRANSPARENT listener accepts a
// connection for an address that is not its own, and reads the original
// destination from the socket's local address.
func TestTransparentModeWithTPROXY(t *testing.T) {
	ns := testworld.NewNamespace(t)
	clearOTELEnv(t)
	w := testworld.New(t)
	// The names point at an address no host here has; TPROXY delivers
	// the connection to sumgate anyway. sumgate knows the names by another
	// address (upstream.resolve), hence sni_mismatch: intercept.
	const public = "198.51.100.10"
	resolve := ns.Serve(t, w, public, ns.HostIP)
	r := startRunResolve(t, w, resolve, "transparent_listen: \""+net.JoinHostPort(ns.HostIP, "0")+
		"\"\ntransparent:\n  tproxy: true\n  sni_mismatch: intercept\n")
	_, port, err := net.SplitHostPort(r.transparent)
	if err != nil {
		t.Fatalf("transparent listener %q: %v", r.transparent, err)
	}
	id, _ := strconv.Atoi(strings.TrimLeft(ns.Name, "sgc")) // unique on the machine, like the namespace
	mark, table := fmt.Sprintf("0x%x", 0x530000+id), fmt.Sprint(1000+id%30000)
	rule := []string{"PREROUTING", "-i", ns.HostIf, "-p", "tcp", "--dport", "443", "-j", "TPROXY",
		"--on-ip", ns.HostIP, "--on-port", port, "--tproxy-mark", mark}
	for _, step := range [][]string{
		append([]string{"iptables", "-t", "mangle", "-A"}, rule...),
		{"ip", "rule", "add", "fwmark", mark, "lookup", table},
		{"ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", table},
	} {
		if out, err := exec.Command(step[0], step[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", step, err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("iptables", append([]string{"-t", "mangle", "-D"}, rule...)...).Run()
		exec.Command("ip", "rule", "del", "fwmark", mark, "lookup", table).Run()
		exec.Command("ip", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", table).Run()
	})
	env := []string{"GOPROXY=" + w.ProxyURL, "SSL_CERT_FILE=" + r.bundle}
	out, err := testworld.GoModDownloadVia(t, ns.Wrap, env, testworld.GoodPath+"@v1.0.0")
	var d struct{ Error, Sum string }
	if json.Unmarshal(out, &d); err != nil || d.Sum != w.Module(testworld.GoodPath, testworld.Version).ZipHash {
		t.Fatalf("genuine module through TPROXY: %v, sum %q\n%s", err, d.Sum, out)
	}
	r.stop(t)
	var dsts []any
	for _, s := range readAudit(t, r.audit) {
		if s.Name == "CONNECT" && s.Kind == "server" {
			dsts = append(dsts, s.Attributes["sumgate.transparent.destination"])
		}
	}
	if len(dsts) == 0 || dsts[0] != public+":443" {
		t.Errorf("transparent destinations %v, want %s:443", dsts, public)
	}
}
