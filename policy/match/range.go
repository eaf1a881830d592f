package match

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// Range is a set of module versions given by at most one lower and one
// upper bound, ordered as the go command orders versions
// ([semver.Compare]): a pre-release, pseudo-versions included, comes
// before its release, so "< v1.2.4" contains v1.2.4-rc.1 and
// v1.2.4-0.20240101120000-abcdefabcdef, and build metadata
// (+incompatible) is ignored. The zero Range contains every valid
// version.
type Range struct {
	lo, hi         string // bounds; "" is unbounded
	loIncl, hiIncl bool   // whether the bound itself is in the range
}

// ParseRange parses a range: one comparison, or two joined by a comma
// (both must hold). A comparison is an operator, <, <=, >, >= or =,
// then a canonical semantic version (v1.2.3, v1.2.3-rc.1; not v1.2 nor
// v1.2.3+meta), with optional spaces around each:
//
//	< v2.4.0
//	>= v1.2.0, < v1.3.0
//	= v1.0.0
//
// It refuses two lower or two upper bounds, = beside another
// comparison, and a range that plainly contains nothing (a lower bound
// above the upper one).
func ParseRange(s string) (Range, error) {
	if strings.TrimSpace(s) == "" {
		return Range{}, errors.New("empty version range")
	}
	var r Range
	var haveLo, haveHi, haveEq bool
	for c := range strings.SplitSeq(s, ",") {
		op, v, err := parseComparison(c)
		if err != nil {
			return Range{}, fmt.Errorf("version range %q: %w", s, err)
		}
		lower, upper := op[0] == '>' || op == "=", op[0] == '<' || op == "="
		switch {
		case haveEq || (op == "=" && (haveLo || haveHi)):
			return Range{}, fmt.Errorf("version range %q: = cannot be combined with another comparison", s)
		case lower && haveLo:
			return Range{}, fmt.Errorf("version range %q: two lower bounds", s)
		case upper && haveHi:
			return Range{}, fmt.Errorf("version range %q: two upper bounds", s)
		}
		incl := op == "=" || strings.HasSuffix(op, "=")
		if lower {
			r.lo, r.loIncl, haveLo = v, incl, true
		}
		if upper {
			r.hi, r.hiIncl, haveHi = v, incl, true
		}
		haveEq = haveEq || op == "="
	}
	if haveLo && haveHi {
		if c := semver.Compare(r.lo, r.hi); c > 0 || (c == 0 && !(r.loIncl && r.hiIncl)) {
			return Range{}, fmt.Errorf("version range %q contains no version", s)
		}
	}
	return r, nil
}

// parseComparison splits one comparison into its operator and version.
func parseComparison(c string) (op, v string, err error) {
	c = strings.TrimSpace(c)
	for _, o := range []string{">=", "<=", ">", "<", "="} { // longest first
		if rest, ok := strings.CutPrefix(c, o); ok {
			op, v = o, strings.TrimSpace(rest)
			break
		}
	}
	switch {
	case c == "":
		return "", "", errors.New("empty comparison")
	case op == "":
		return "", "", fmt.Errorf("comparison %q: want an operator (<, <=, >, >= or =) before the version", c)
	case !semver.IsValid(v):
		return "", "", fmt.Errorf("comparison %q: %q is not a semantic version such as v1.2.3", c, v)
	case semver.Build(v) != "":
		return "", "", fmt.Errorf("comparison %q: write the version without build metadata (%s): %s", c, semver.Build(v), semver.Canonical(v))
	case semver.Canonical(v) != v:
		return "", "", fmt.Errorf("comparison %q: write the version in full: %s", c, semver.Canonical(v))
	}
	return op, v, nil
}

// Contains reports whether module version v is in r. A version that is
// not a canonical module version (module.CanonicalVersion(v) != v: "v1",
// "v1.2.3+meta", "latest") is in no range, not even the zero Range;
// callers that must fail closed decide such versions themselves.
func (r Range) Contains(v string) bool {
	if !IsVersion(v) {
		return false
	}
	if r.lo != "" {
		if c := semver.Compare(v, r.lo); c < 0 || (c == 0 && !r.loIncl) {
			return false
		}
	}
	if r.hi != "" {
		if c := semver.Compare(v, r.hi); c > 0 || (c == 0 && !r.hiIncl) {
			return false
		}
	}
	return true
}

// IsVersion reports whether v is a canonical module version, as the go
// command writes them in go.mod and asks module proxies for: v1.2.3,
// v1.2.3-rc.1, a pseudo-version, v2.0.0+incompatible.
func IsVersion(v string) bool {
	return v != "" && module.CanonicalVersion(v) == v
}

// String returns r in the form ParseRange reads, "" for the zero Range.
func (r Range) String() string {
	if r.lo != "" && r.lo == r.hi && r.loIncl && r.hiIncl {
		return "= " + r.lo
	}
	var parts []string
	if r.lo != "" {
		op := "> "
		if r.loIncl {
			op = ">= "
		}
		parts = append(parts, op+r.lo)
	}
	if r.hi != "" {
		op := "< "
		if r.hiIncl {
			op = "<= "
		}
		parts = append(parts, op+r.hi)
	}
	return strings.Join(parts, ", ")
}
