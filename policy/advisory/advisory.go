// Package advisory reads OSV advisory databases and answers, for a module
// version, which advisories affect it.
//
// A [DB] is an immutable snapshot built by [Load] from one source:
//
//   - a directory in the Go vulnerability database's v1 layout
//     (index/db.json, index/modules.json, ID/<id>.json), as served at
//     https://vuln.go.dev;
//   - the same tree in a .zip file, for offline use;
//   - a directory (or .zip) of OSV .json files in any layout, such as the
//     OpenSSF malicious-packages repository's osv/malicious/go tree;
//   - an https URL of a v1-layout database, or of its .zip.
//
// Only entries for the ecosystem "Go" count. Every size is bounded (see
// [Limits]); a source that exceeds a bound or does not parse is an error,
// never a partial snapshot.
//
// Versions are ordered with golang.org/x/mod/semver, as the go command
// orders them: a pre-release (v1.2.4-rc.1) and a pseudo-version
// (v1.2.4-0.20240101000000-abcdef123456) come before v1.2.4, so a fix in
// v1.2.4 does not cover them.
//
// A [Watcher] keeps a merged snapshot of several sources fresh in the
// background; a [Selector] is one item of the configuration's block list.
package advisory

import (
	"slices"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// An Entry is what the policy needs of one advisory. Its slices are shared
// with the [DB] that returned it and must not be modified.
type Entry struct {
	ID        string   // the advisory ID: GO-2024-2687, MAL-2025-1234, GHSA-…
	Aliases   []string // other IDs of the same advisory: CVE-…, GHSA-…
	Summary   string   // one line; the details when the entry has no summary, cut to a line
	Malicious bool     // a malicious-package report: a MAL- ID or alias, or a malicious-packages origin
	HasCVSS   bool     // a CVSS v3 or v4 vector in the entry could be scored
	CVSS      float64  // the highest base score of those vectors; 0 unless HasCVSS
	Source    string   // the source the entry was loaded from, as given to Load
}

// IDs returns the entry's ID followed by its aliases.
func (e Entry) IDs() []string {
	return append([]string{e.ID}, e.Aliases...)
}

// eventKind is the kind of an OSV range event.
type eventKind uint8

const (
	introduced eventKind = iota
	lastAffected
	fixed
	limit
)

// event is one boundary of a range. version is canonical semver with its
// "v"; an introduced "0" is the empty string, below every version.
type event struct {
	kind    eventKind
	version string
}

// affect is one affected[] item of an entry, for one module path.
type affect struct {
	entry    *Entry
	all      bool      // every version is affected
	ranges   [][]event // each sorted by version; kinds break ties in order
	versions []string  // explicitly listed versions, canonical
}

// matches reports whether version v is in a.
func (a *affect) matches(v string) bool {
	if a.all || !semver.IsValid(v) {
		// A version that is not semver cannot be placed in a range: it is
		// affected (fail closed). Module versions the gateway serves are
		// always valid.
		return true
	}
	for _, lv := range a.versions {
		if semver.Compare(v, lv) == 0 {
			return true
		}
	}
	for _, r := range a.ranges {
		if inRange(v, r) {
			return true
		}
	}
	return false
}

// inRange evaluates one OSV range, its events sorted by version, for a
// valid version v: v is affected when the last event at or below it is an
// introduced, or a last_affected equal to v.
func inRange(v string, events []event) bool {
	affected := false
	for _, e := range events {
		c := 1
		if e.version != "" {
			c = semver.Compare(v, e.version)
		}
		if c < 0 {
			break
		}
		switch e.kind {
		case introduced:
			affected = true
		case lastAffected:
			if c > 0 {
				affected = false
			}
		case fixed, limit:
			affected = false
		}
	}
	return affected
}

// sortEvents orders a range's events by version, and events at the same
// version by kind, so that inRange can stop at the first event above v.
func sortEvents(events []event) {
	slices.SortStableFunc(events, func(a, b event) int {
		switch {
		case a.version == b.version:
			return int(a.kind) - int(b.kind)
		case a.version == "":
			return -1
		case b.version == "":
			return 1
		}
		if c := semver.Compare(a.version, b.version); c != 0 {
			return c
		}
		return int(a.kind) - int(b.kind)
	})
}

// A DB is an immutable snapshot of advisories, indexed by module path. Its
// zero value and a nil *DB hold nothing. It is safe for concurrent use.
type DB struct {
	byPath  map[string][]affect // module path → the affected items naming it
	byID    map[string]*Entry   // upper-cased ID and aliases → entry
	entries int                 // number of entries
}

// Len returns the number of advisories in db.
func (db *DB) Len() int {
	if db == nil {
		return 0
	}
	return db.entries
}

// Modules returns the number of module paths that some advisory in db
// names.
func (db *DB) Modules() int {
	if db == nil {
		return 0
	}
	return len(db.byPath)
}

// Lookup returns the entry whose ID or alias is id, compared without
// regard to case. When several sources hold the same ID, it returns one of
// them.
func (db *DB) Lookup(id string) (Entry, bool) {
	if db == nil {
		return Entry{}, false
	}
	e, ok := db.byID[strings.ToUpper(id)]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Affecting returns the advisories that affect module version m, each ID
// once, in the order the sources and entries were loaded; nil when none
// does. m.Version must be a semantic version with its "v" (as the go
// command writes it); a version that is not is affected by every advisory
// naming m.Path, so that nothing unplaceable passes.
func (db *DB) Affecting(m module.Version) []Entry {
	if db == nil {
		return nil
	}
	var out []Entry
	for i := range db.byPath[m.Path] {
		a := &db.byPath[m.Path][i]
		if !a.matches(m.Version) {
			continue
		}
		if slices.ContainsFunc(out, func(e Entry) bool { return e.ID == a.entry.ID }) {
			continue
		}
		out = append(out, *a.entry)
	}
	return out
}

// Merge returns a snapshot holding every entry of dbs, in order. Entries
// are shared, not copied. An ID present in several of them is kept from
// each; [DB.Affecting] reports it once.
func Merge(dbs ...*DB) *DB {
	out := &DB{byPath: map[string][]affect{}, byID: map[string]*Entry{}}
	for _, db := range dbs {
		if db == nil {
			continue
		}
		for p, as := range db.byPath {
			out.byPath[p] = append(out.byPath[p], as...)
		}
		for id, e := range db.byID {
			if _, ok := out.byID[id]; !ok {
				out.byID[id] = e
			}
		}
		out.entries += db.entries
	}
	return out
}
