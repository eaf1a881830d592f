package advisory

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// selectorKind is what a Selector compares.
type selectorKind uint8

const (
	selectAll selectorKind = iota + 1
	selectMalicious
	selectID
	selectCVSS
)

// A Selector is one item of the configuration's advisories block list:
// which advisories block a version. Its zero value matches nothing.
type Selector struct {
	kind  selectorKind
	id    string  // selectID: the ID, as written
	op    string  // selectCVSS: ">=", ">", "<=" or "<"
	score float64 // selectCVSS: the threshold
	text  string  // as written
}

// ParseSelector parses one block-list item:
//
//   - "all": every advisory;
//   - "malicious": malicious-package reports (see [Entry].Malicious);
//   - an advisory ID or alias, such as "GO-2024-2687", "CVE-2024-24786",
//     "GHSA-xxxx-xxxx-xxxx" or "MAL-2025-1234", compared without regard
//     to case: a prefix of letters, a "-", then letters, digits, "-",
//     "_", ".", ":";
//   - "cvss" followed by ">=", ">", "<=" or "<" and a score from 0 to 10,
//     such as "cvss>=7.0" (spaces around the operator are allowed): the
//     advisories whose highest CVSS base score compares so. An advisory
//     without a CVSS vector that can be scored (every Go advisory) matches
//     no cvss selector.
//
// The error names what is wrong with s.
func ParseSelector(s string) (Selector, error) {
	switch s {
	case "all":
		return Selector{kind: selectAll, text: s}, nil
	case "malicious":
		return Selector{kind: selectMalicious, text: s}, nil
	}
	if rest, ok := strings.CutPrefix(strings.ToLower(s), "cvss"); ok && !strings.HasPrefix(rest, "-") {
		return parseCVSS(s, strings.TrimSpace(rest))
	}
	if err := checkID(s); err != nil {
		return Selector{}, fmt.Errorf("advisory selector %q: %w; want all, malicious, an advisory ID (GO-2024-2687, CVE-…, GHSA-…, MAL-…) or cvss>=N", s, err)
	}
	return Selector{kind: selectID, id: s, text: s}, nil
}

// parseCVSS parses the rest of a cvss selector after "cvss".
func parseCVSS(s, rest string) (Selector, error) {
	var op string
	for _, o := range []string{">=", "<=", ">", "<"} {
		if strings.HasPrefix(rest, o) {
			op = o
			break
		}
	}
	if op == "" {
		return Selector{}, fmt.Errorf("advisory selector %q: want an operator >=, >, <= or < after cvss", s)
	}
	num := strings.TrimSpace(rest[len(op):])
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 10 {
		return Selector{}, fmt.Errorf("advisory selector %q: %q is not a CVSS score from 0 to 10", s, num)
	}
	return Selector{kind: selectCVSS, op: op, score: f, text: s}, nil
}

// checkID reports what keeps s from being an advisory ID.
func checkID(s string) error {
	prefix, rest, ok := strings.Cut(s, "-")
	if !ok || prefix == "" || rest == "" {
		return fmt.Errorf("not an advisory ID (PREFIX-…)")
	}
	for _, r := range prefix {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return fmt.Errorf("the ID prefix %q is not letters only", prefix)
		}
	}
	for _, r := range rest {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-_.:", r)) {
			return fmt.Errorf("%q is not allowed in an advisory ID", r)
		}
	}
	return nil
}

// Match reports whether the selector selects e.
func (s Selector) Match(e Entry) bool {
	switch s.kind {
	case selectAll:
		return true
	case selectMalicious:
		return e.Malicious
	case selectID:
		if strings.EqualFold(e.ID, s.id) {
			return true
		}
		for _, a := range e.Aliases {
			if strings.EqualFold(a, s.id) {
				return true
			}
		}
		return false
	case selectCVSS:
		if !e.HasCVSS {
			return false
		}
		// Scores are given to one decimal; compare them so, not as
		// binary fractions.
		have, want := math.Round(e.CVSS*10), math.Round(s.score*10)
		switch s.op {
		case ">=":
			return have >= want
		case ">":
			return have > want
		case "<=":
			return have <= want
		case "<":
			return have < want
		}
	}
	return false
}

// String returns the selector as it was written.
func (s Selector) String() string { return s.text }

// ID returns the advisory ID a selector names, and whether it names one;
// a configuration can warn about an ID no loaded source holds (see
// [DB.Lookup]).
func (s Selector) ID() (string, bool) { return s.id, s.kind == selectID }

// A SelectorSet is a parsed block list. Matching costs one map lookup per
// ID and alias of an entry, however many ID selectors the list holds. Its
// zero value matches nothing; it is safe for concurrent use.
type SelectorSet struct {
	list  []Selector
	ids   map[string]int // upper-cased ID → index in list of its first selector
	other []int          // indexes in list of the selectors that are not IDs
}

// ParseSelectors parses a block list with [ParseSelector]. The error
// names the first item that does not parse, by its position.
func ParseSelectors(items []string) (SelectorSet, error) {
	set := SelectorSet{ids: map[string]int{}}
	for i, item := range items {
		s, err := ParseSelector(item)
		if err != nil {
			return SelectorSet{}, fmt.Errorf("block[%d]: %w", i, err)
		}
		set.list = append(set.list, s)
		if id, ok := s.ID(); ok {
			if _, dup := set.ids[strings.ToUpper(id)]; !dup {
				set.ids[strings.ToUpper(id)] = i
			}
		} else {
			set.other = append(set.other, i)
		}
	}
	return set, nil
}

// Selectors returns the parsed items, in order. The slice must not be
// modified.
func (set SelectorSet) Selectors() []Selector { return set.list }

// Match returns the first selector of the list, in list order, that
// selects e.
func (set SelectorSet) Match(e Entry) (Selector, bool) {
	best := len(set.list)
	for _, i := range set.other {
		if i < best && set.list[i].Match(e) {
			best = i
			break
		}
	}
	if len(set.ids) > 0 {
		lookup := func(id string) {
			if i, ok := set.ids[strings.ToUpper(id)]; ok && i < best {
				best = i
			}
		}
		lookup(e.ID)
		for _, a := range e.Aliases {
			lookup(a)
		}
	}
	if best == len(set.list) {
		return Selector{}, false
	}
	return set.list[best], true
}
