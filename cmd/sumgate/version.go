package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sumgate/sumgate/internal/config"
)

const versionUsage = `usage: sumgate version

Prints the module version sumgate was built from, the VCS revision it was
built at (and whether the tree had changes), the build tags, and the Go
version and platform, from the binary's build information. 'sumgate
-version' is the same.
`

// versionCmd implements 'sumgate version'.
func versionCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sumgate version", flag.ContinueOnError)
	if err := parseFlags(fs, versionUsage, args, stdout, stderr); err != nil {
		return flagStatus(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sumgate version: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	fmt.Fprint(stdout, versionText())
	return exitOK
}

// linkedVersion and linkedRevision are set by the linker for a build that
// records no module version or VCS information of its own, such as the
// container image, built from a context without .git:
//
//	-ldflags "-X main.linkedVersion=v1.2.3 -X main.linkedRevision=<commit>"
//
// What the build information records comes first. Never assigned at run
// time.
var linkedVersion, linkedRevision string

// versionText is what 'sumgate version' prints:
//
//	sumgate v1.2.3
//	revision 3f1c2a9e… 2026-11-30T20:00:00Z (modified)
//	tags step
//	go1.26.8 linux/amd64
//
// A line whose information the build did not record is left out.
func versionText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sumgate %s\n", version())
	if bi, ok := debug.ReadBuildInfo(); ok {
		s := map[string]string{}
		for _, kv := range bi.Settings {
			s[kv.Key] = kv.Value
		}
		if s["vcs.revision"] == "" && linkedRevision != "" {
			s["vcs.revision"] = linkedRevision
		}
		if rev := s["vcs.revision"]; rev != "" {
			line := "revision " + rev
			if t := s["vcs.time"]; t != "" {
				line += " " + t
			}
			if s["vcs.modified"] == "true" {
				line += " (modified)"
			}
			fmt.Fprintln(&b, line)
		}
		if tags := s["-tags"]; tags != "" {
			fmt.Fprintf(&b, "tags %s\n", tags)
		}
	}
	fmt.Fprintf(&b, "%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}

const healthcheckUsage = `usage: sumgate healthcheck [-config FILE] [-admin ADDR]

Asks the admin listener's /readyz, for a container's HEALTHCHECK where
there is no curl. Exits 0 when it answers 200 within -timeout, and 1
otherwise, with the reason on standard error. The address is -admin, else
the configuration's admin_listen; an unspecified host (0.0.0.0, [::]) is
asked on loopback.

Exit status: 0 ready, 1 otherwise (not ready, a bad flag or configuration).
Docker reserves 2 in a HEALTHCHECK, so it is never returned; -h exits 0.

Flags:
`

// exitUnhealthy is healthcheck's status for anything but ready: Docker
// reads 1 as unhealthy and reserves 2.
const exitUnhealthy = 1

// healthcheckCmd implements 'sumgate healthcheck'.
func healthcheckCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sumgate healthcheck", flag.ContinueOnError)
	configFile := fs.String("config", "", "configuration `file` whose admin_listen to ask (default: built-in defaults)")
	admin := fs.String("admin", "", "admin `address` to ask, overriding the file's admin_listen")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := parseFlags(fs, healthcheckUsage, args, stdout, stderr); err != nil {
		return min(flagStatus(err), exitBlocked)
	}
	addr := *admin
	if addr == "" {
		cfg, err := config.Load(*configFile)
		if err != nil {
			fmt.Fprintf(stderr, "sumgate healthcheck: %v\n", err)
			return exitUnhealthy
		}
		addr = cfg.AdminListen
	}
	host, port, err := net.SplitHostPort(addr)
	if addr == "off" || err != nil {
		fmt.Fprintf(stderr, "sumgate healthcheck: admin address %q is not host:port (is admin_listen off?)\n", addr)
		return exitUnhealthy
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	u := "http://" + net.JoinHostPort(host, port) + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		fmt.Fprintf(stderr, "sumgate healthcheck: %v\n", err)
		return exitUnhealthy
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "sumgate healthcheck: not ready: %v\n", err)
		return exitUnhealthy
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "sumgate healthcheck: not ready: %s: %s\n", resp.Status, strings.TrimSpace(string(body)))
		return exitUnhealthy
	}
	fmt.Fprint(stdout, string(body))
	return exitOK
}
