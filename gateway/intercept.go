package gateway

import (
	"fmt"

	"github.com/sumgate/sumgate/internal/hostpattern"
)

// interceptList decides which hosts sumgate intercepts: those Intercept
// matches (exact names, "*.example.com", "*") and Splice does not. It
// is built once, in New, and never changes. Hosts are compared in
// canonicalHost form.
//
// Why a pattern never matches an IP literal: a leaf is minted for a DNS
// name only (the local intermediate's name constraints exclude every IP
// address), the go command reaches a module proxy by name, and a client
// that dials an address is usually one that pins what it finds there. An
// IP literal is intercepted only if listed exactly (which the
// configuration file does not allow), and otherwise follows the tunnel
// policy: tunnel: deny refuses it.
type interceptList struct {
	p hostpattern.Policy
}

func newInterceptList(intercept, splice []string) (interceptList, error) {
	var canon [2][]string
	for i, list := range [][]string{intercept, splice} {
		for _, h := range list {
			canon[i] = append(canon[i], canonicalHost(h))
		}
	}
	p, err := hostpattern.NewPolicy(canon[0], canon[1])
	if err != nil {
		return interceptList{}, fmt.Errorf("gateway: %w", err)
	}
	return interceptList{p: p}, nil
}

// intercepts reports whether TLS to host is terminated (on port 443).
func (l interceptList) intercepts(host string) bool { return l.p.Intercepts(canonicalHost(host)) }

// spliced reports whether host is left alone only because Splice lists
// it: the audit records such a tunnel under the rule "splice".
func (l interceptList) spliced(host string) bool { return l.p.Spliced(canonicalHost(host)) }

// byPatternOnly reports whether host is intercepted by a pattern alone,
// not listed exactly. On a port other than 443 such a host follows the
// tunnel policy rather than being refused as an intercepted host on the
// wrong port: under "*" every host:8443 would otherwise be "intercepted".
func (l interceptList) byPatternOnly(host string) bool {
	return l.p.ByPatternOnly(canonicalHost(host))
}
