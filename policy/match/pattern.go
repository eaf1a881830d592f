// Package match holds the two matchers of sumgate's policy rules, parsed
// once and checked strictly: module path patterns in GOPRIVATE syntax
// ([Pattern], [Index]) and semantic version ranges ([Range]).
//
// Both are used by the configuration's validation at start-up and by the
// policy engine, so a rule that loads is a rule the engine understands.
package match

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"unicode"

	"golang.org/x/mod/module"
)

// Pattern is a module path pattern in GOPRIVATE syntax: a comma-separated
// list of globs, each matching a module path by its leading path elements,
// exactly as [module.MatchPrefixPatterns] (and so the go command's
// GOPRIVATE) matches: "gopkg.in/yaml.v2" matches that module and every
// path under it, "github.com/corp-forks/*" every module under that
// organisation, "*.corp.example" every path whose first element ends so.
// The zero Pattern matches nothing.
type Pattern struct {
	src   string // as written
	globs []glob // each non-empty glob of src, in order
}

// glob is one element of a pattern's list.
type glob struct {
	text    string // the glob, without a trailing slash
	head    string // its leading path elements free of metacharacters, "" if none
	literal bool   // text has no metacharacter: head == text
	// When head is "": the literal text before the first metacharacter
	// of the first path element, and after its last one, which a
	// matching path's first element must begin and end with.
	lead, tail string
}

// ParsePattern checks and compiles s. It refuses what would silently
// match nothing, or something other than meant: an empty pattern or list
// element, white space or control characters, an empty path element (a
// leading slash, "//", a URL such as "https://…"), and a glob that
// [path.Match] finds malformed.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, errors.New("empty pattern")
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }); i >= 0 {
		return Pattern{}, fmt.Errorf("pattern %q contains white space or a control character", s)
	}
	p := Pattern{src: s}
	for g := range strings.SplitSeq(s, ",") {
		text := strings.TrimSuffix(g, "/") // as module.MatchPrefixPatterns does
		if text == "" {
			return Pattern{}, fmt.Errorf("pattern %q has an empty element in its comma-separated list", s)
		}
		if _, err := path.Match(text, ""); err != nil {
			return Pattern{}, fmt.Errorf("pattern %q: glob %q is malformed: %w", s, text, err)
		}
		elems := strings.Split(text, "/")
		if slices.Contains(elems, "") {
			return Pattern{}, fmt.Errorf("pattern %q: glob %q has an empty path element (write module paths without a scheme or leading slash)", s, text)
		}
		n := 0
		for n < len(elems) && !strings.ContainsAny(elems[n], `*?[\`) {
			n++
		}
		g := glob{text: text, head: strings.Join(elems[:n], "/"), literal: n == len(elems)}
		if first := elems[0]; n == 0 && !strings.ContainsAny(text, `[\`) {
			// Only * and ?, which never match a slash: the first
			// element's literal ends are the path's first element's.
			// (A class may match a slash, and an escape may hide one.)
			g.lead = first[:strings.IndexAny(first, "*?")]
			g.tail = first[strings.LastIndexAny(first, "*?")+1:]
		}
		p.globs = append(p.globs, g)
	}
	return p, nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.src }

// Match reports whether modulePath matches p: exactly
// module.MatchPrefixPatterns(p.String(), modulePath).
func (p Pattern) Match(modulePath string) bool {
	return p.src != "" && module.MatchPrefixPatterns(p.src, modulePath)
}

// Index finds, among many patterns, those a module path matches, without
// trying each: a glob whose leading path elements are literal is found by
// a map lookup of each leading part of the path, and only globs that begin
// with a metacharacter are tried in turn. The zero Index is empty and
// ready to use; it is not safe for concurrent use while Add runs, and safe
// for concurrent Lookups once it is built.
type Index struct {
	byHead map[string][]entry // globs by their literal head
	rest   []entry            // globs whose first element has a metacharacter
}

// entry is one glob of one added pattern.
type entry struct {
	id         int    // the caller's id of the pattern
	text       string // the glob
	literal    bool   // a literal glob matches every path its head is found for
	lead, tail string // of a glob with no literal head: see glob
}

// Add indexes pattern p under id. Ids need not be distinct or ordered,
// but Lookup sorts them, so small dense ids (an index into the caller's
// slice) are cheapest.
func (x *Index) Add(p Pattern, id int) {
	for _, g := range p.globs {
		e := entry{id: id, text: g.text, literal: g.literal, lead: g.lead, tail: g.tail}
		if g.head == "" {
			x.rest = append(x.rest, e)
			continue
		}
		if x.byHead == nil {
			x.byHead = make(map[string][]entry)
		}
		x.byHead[g.head] = append(x.byHead[g.head], e)
	}
}

// Lookup appends to dst the ids of the patterns that modulePath matches,
// in increasing order and each once, and returns the extended slice. A
// pattern p added under id is among them exactly when p.Match(modulePath).
func (x *Index) Lookup(dst []int, modulePath string) []int {
	start := len(dst)
	first, _, _ := strings.Cut(modulePath, "/")
	try := func(es []entry) {
		for _, e := range es {
			// path.Match is costly; the literal ends of the first element
			// rule most globs out first.
			if e.literal || strings.HasPrefix(first, e.lead) && strings.HasSuffix(first, e.tail) && module.MatchPrefixPatterns(e.text, modulePath) {
				dst = append(dst, e.id)
			}
		}
	}
	if len(x.byHead) > 0 {
		// A glob's literal head must equal the path's first elements.
		for i := 0; i <= len(modulePath); i++ {
			if i == len(modulePath) || modulePath[i] == '/' {
				try(x.byHead[modulePath[:i]])
			}
		}
	}
	try(x.rest)
	found := dst[start:]
	if len(found) > 1 {
		slices.Sort(found)
		dst = dst[:start+len(slices.Compact(found))]
	}
	return dst
}
