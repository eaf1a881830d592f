// Package hostpattern matches host names against the lists sumgate's
// configuration gives them in: intercept and splice. An entry is one of
//
//   - an exact host name, "goproxy.cn": that name only;
//   - "*.example.com": every name under example.com, at any depth
//     (a.example.com, a.b.example.com), but not example.com itself, as
//     Squid's ".example.com" without the apex;
//   - "*": every DNS name.
//
// A pattern matches DNS names only: never an IP literal, and never a
// string that is not a well-formed host name (see [IsDNSName]), so that a
// random or malformed name can never be matched into a leaf certificate.
// An IP literal is matched by an exact entry alone.
package hostpattern

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// All is the entry that matches every DNS name.
const All = "*"

// A List is a parsed list of entries. Its zero value matches nothing. A
// List is never modified after [New], so it is safe for concurrent use.
type List struct {
	exact   map[string]bool // exact names, canonical
	domains []string        // "*.d" entries as d, canonical, sorted
	all     bool            // "*" is listed
}

// New parses entries, each an exact name, "*.<name>" or "*". Entries are
// compared in canonical form: lower case, without a trailing dot. An
// entry that is neither is an error naming it; [Check] is the strict
// form configuration files are held to.
func New(entries []string) (List, error) {
	l := List{exact: map[string]bool{}}
	for _, e := range entries {
		c := canonical(e)
		switch {
		case c == All:
			l.all = true
		case strings.HasPrefix(c, "*."):
			d := c[2:]
			if !IsDNSName(d) {
				return List{}, fmt.Errorf("host pattern %q: %q is not a host name", e, d)
			}
			if !slices.Contains(l.domains, d) {
				l.domains = append(l.domains, d)
			}
		case c == "" || strings.Contains(c, "*"):
			return List{}, fmt.Errorf("host pattern %q: a wildcard is allowed only as the whole entry (*) or as its first label (*.example.com)", e)
		default:
			l.exact[c] = true
		}
	}
	slices.Sort(l.domains)
	return l, nil
}

// Check reports whether entry may be written in a configuration file: a
// lower-case DNS host name with at least one dot (not an IP literal, a
// port or a path), "*.<name>" for a lower-case DNS name, or "*".
func Check(entry string) error {
	switch {
	case entry == All:
		return nil
	case entry != strings.ToLower(entry):
		return fmt.Errorf("%q is not lower case", entry)
	case strings.HasPrefix(entry, "*."):
		if !IsDNSName(entry[2:]) || strings.HasSuffix(entry, ".") {
			return fmt.Errorf("%q: %q is not a host name", entry, entry[2:])
		}
		return nil
	case strings.Contains(entry, "*"):
		return fmt.Errorf("%q: a wildcard is allowed only as the whole entry (*) or as its first label (*.example.com)", entry)
	}
	if _, err := netip.ParseAddr(entry); err == nil {
		return fmt.Errorf("%q is an IP address, not a host name", entry)
	}
	if !IsDNSName(entry) || !strings.Contains(entry, ".") || strings.HasSuffix(entry, ".") {
		return fmt.Errorf("%q is not a lower-case host name", entry)
	}
	return nil
}

// IsDNSName reports whether name is a host name a pattern may match: at
// most 253 bytes of labels of 1 to 63 letters, digits, hyphens and
// underscores, separated by dots, the last label not all digits (the
// WHATWG URL standard reads such a name, 127.1 or 0x7f.1 aside, as an IPv4
// address, and so do some resolvers), and not an IP literal.
func IsDNSName(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return false
	}
	labels := strings.Split(name, ".")
	for _, label := range labels {
		if !isLabel(label) {
			return false
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != "" && !strings.HasPrefix(last, "0x")
}

// isLabel reports whether label is 1 to 63 letters, digits, hyphens and
// underscores (crypto/x509 accepts underscores in names outside the Web
// PKI, and some hosts have them).
func isLabel(label string) bool {
	if len(label) == 0 || len(label) > 63 {
		return false
	}
	for i := 0; i < len(label); i++ {
		switch c := label[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// canonical is the form entries and hosts are compared in.
func canonical(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }

// Match reports whether host is matched: by an exact entry, or, if it is
// a DNS name (IsDNSName), by "*" or by "*.d" when it ends in ".d". host is
// compared in canonical form; it carries no port or brackets.
func (l List) Match(host string) bool {
	host = canonical(host)
	if l.exact[host] {
		return true
	}
	return l.MatchPattern(host)
}

// MatchPattern reports whether host is matched by a pattern ("*" or
// "*.d"), whatever the exact entries say.
func (l List) MatchPattern(host string) bool {
	host = canonical(host)
	if !l.all && len(l.domains) == 0 || !IsDNSName(host) {
		return false
	}
	if l.all {
		return true
	}
	for _, d := range l.domains {
		if strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

// MatchExact reports whether host is listed exactly.
func (l List) MatchExact(host string) bool { return l.exact[canonical(host)] }

// Exact returns the exact entries, canonical and sorted.
func (l List) Exact() []string {
	out := make([]string, 0, len(l.exact))
	for h := range l.exact {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// Domains returns d for every "*.d" entry, canonical and sorted.
func (l List) Domains() []string { return slices.Clone(l.domains) }

// MatchesAll reports whether "*" is listed.
func (l List) MatchesAll() bool { return l.all }

// HasPatterns reports whether any entry is a pattern.
func (l List) HasPatterns() bool { return l.all || len(l.domains) > 0 }

// A Policy is an intercept list and a splice list: a host is intercepted
// when Intercept matches it and Splice does not. Splice always wins, over
// "*" and over an exact entry alike.
type Policy struct {
	Intercept List // hosts whose TLS is terminated
	Splice    List // hosts never intercepted, whatever Intercept says
}

// NewPolicy parses the intercept and splice lists.
func NewPolicy(intercept, splice []string) (Policy, error) {
	i, err := New(intercept)
	if err != nil {
		return Policy{}, fmt.Errorf("intercept: %w", err)
	}
	s, err := New(splice)
	if err != nil {
		return Policy{}, fmt.Errorf("splice: %w", err)
	}
	return Policy{Intercept: i, Splice: s}, nil
}

// Intercepts reports whether host is intercepted.
func (p Policy) Intercepts(host string) bool {
	return p.Intercept.Match(host) && !p.Splice.Match(host)
}

// Spliced reports whether host would be intercepted but for Splice.
func (p Policy) Spliced(host string) bool {
	return p.Intercept.Match(host) && p.Splice.Match(host)
}

// ByPatternOnly reports whether host is intercepted by a pattern and not
// listed exactly.
func (p Policy) ByPatternOnly(host string) bool {
	return p.Intercepts(host) && !p.Intercept.MatchExact(host)
}
