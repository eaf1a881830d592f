package advisory

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/ossf/osv-schema/bindings/go/osvschema"
	gocvss30 "github.com/pandatix/go-cvss/30"
	gocvss31 "github.com/pandatix/go-cvss/31"
	gocvss40 "github.com/pandatix/go-cvss/40"
	"golang.org/x/mod/semver"
	"google.golang.org/protobuf/encoding/protojson"
)

// ecosystemGo is the OSV ecosystem of Go modules.
const ecosystemGo = "Go"

// maliciousOrigins is the database_specific key the OpenSSF
// malicious-packages repository gives the reports an entry came from.
const maliciousOrigins = "malicious-packages-origins"

// maxSummary bounds the summary an Entry keeps, in bytes.
const maxSummary = 200

// unmarshal is how entries are parsed: fields this package does not know
// (a newer schema) are ignored, not errors.
var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// parsed is one OSV entry reduced to what matching needs.
type parsed struct {
	entry   *Entry
	paths   []string // module paths, parallel to affects
	affects []affect
}

// parseEntry parses one OSV JSON document. It returns nil, nil for an
// entry that names no Go module or is withdrawn at now: such an entry
// affects nothing.
func parseEntry(data []byte, source string, now time.Time) (*parsed, error) {
	var v osvschema.Vulnerability
	if err := unmarshal.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("parsing OSV entry: %w", err)
	}
	if v.GetId() == "" {
		return nil, fmt.Errorf("parsing OSV entry: no id")
	}
	if w := v.GetWithdrawn(); w != nil && !w.AsTime().After(now) {
		return nil, nil
	}
	e := &Entry{
		ID:        v.GetId(),
		Aliases:   v.GetAliases(),
		Summary:   oneLine(v.GetSummary(), v.GetDetails()),
		Malicious: isMalicious(&v),
		Source:    source,
	}
	p := &parsed{entry: e}
	score := func(ss []*osvschema.Severity) {
		for _, s := range ss {
			if f, ok := cvssScore(s); ok && (!e.HasCVSS || f > e.CVSS) {
				e.HasCVSS, e.CVSS = true, f
			}
		}
	}
	score(v.GetSeverity())
	for _, a := range v.GetAffected() {
		if a.GetPackage().GetEcosystem() != ecosystemGo || a.GetPackage().GetName() == "" {
			continue
		}
		score(a.GetSeverity())
		p.paths = append(p.paths, a.GetPackage().GetName())
		p.affects = append(p.affects, toAffect(e, a))
	}
	if len(p.paths) == 0 {
		return nil, nil
	}
	return p, nil
}

// toAffect converts one affected[] item. Ranges of type SEMVER and
// ECOSYSTEM count; GIT ranges name commits, not module versions, and are
// ignored. An item with no range or version that counts, or with an event
// version that is not semver, affects every version (fail closed).
func toAffect(e *Entry, a *osvschema.Affected) affect {
	out := affect{entry: e}
	for _, lv := range a.GetVersions() {
		if v, ok := canonical(lv); ok {
			out.versions = append(out.versions, v)
		}
	}
	for _, r := range a.GetRanges() {
		if r.GetType() != osvschema.Range_SEMVER && r.GetType() != osvschema.Range_ECOSYSTEM {
			continue
		}
		var events []event
		for _, ev := range r.GetEvents() {
			k, raw := eventOf(ev)
			if k == introduced && raw == "0" {
				events = append(events, event{kind: introduced})
				continue
			}
			v, ok := canonical(raw)
			if !ok {
				out.all = true
				break
			}
			events = append(events, event{kind: k, version: v})
		}
		sortEvents(events)
		out.ranges = append(out.ranges, events)
	}
	if len(out.ranges) == 0 && len(out.versions) == 0 {
		out.all = true
	}
	if out.all {
		out.ranges, out.versions = nil, nil
	}
	return out
}

// eventOf returns the kind and version of an OSV event.
func eventOf(ev *osvschema.Event) (eventKind, string) {
	switch {
	case ev.GetIntroduced() != "":
		return introduced, ev.GetIntroduced()
	case ev.GetFixed() != "":
		return fixed, ev.GetFixed()
	case ev.GetLastAffected() != "":
		return lastAffected, ev.GetLastAffected()
	case ev.GetLimit() != "":
		return limit, ev.GetLimit()
	}
	return introduced, "" // an empty event: not semver, so the range covers all
}

// canonical returns an OSV version as x/mod/semver compares it: with the
// "v" the Go vulnerability database leaves out.
func canonical(v string) (string, bool) {
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	return v, semver.IsValid(v)
}

// isMalicious reports whether v is a malicious-package report.
func isMalicious(v *osvschema.Vulnerability) bool {
	if strings.HasPrefix(v.GetId(), "MAL-") {
		return true
	}
	for _, a := range v.GetAliases() {
		if strings.HasPrefix(a, "MAL-") {
			return true
		}
	}
	_, ok := v.GetDatabaseSpecific().GetFields()[maliciousOrigins]
	return ok
}

// cvssScore returns the base score of a CVSS v3.0, v3.1 or v4.0 vector.
func cvssScore(s *osvschema.Severity) (float64, bool) {
	vec := s.GetScore()
	switch {
	case s.GetType() == osvschema.Severity_CVSS_V3 && strings.HasPrefix(vec, "CVSS:3.0/"):
		c, err := gocvss30.ParseVector(vec)
		if err != nil {
			return 0, false
		}
		return c.BaseScore(), true
	case s.GetType() == osvschema.Severity_CVSS_V3 && strings.HasPrefix(vec, "CVSS:3.1/"):
		c, err := gocvss31.ParseVector(vec)
		if err != nil {
			return 0, false
		}
		return c.BaseScore(), true
	case s.GetType() == osvschema.Severity_CVSS_V4:
		c, err := gocvss40.ParseVector(vec)
		if err != nil {
			return 0, false
		}
		return c.Score(), true
	}
	return 0, false
}

// oneLine returns summary, or the first line of details when there is no
// summary, as one printable line of at most maxSummary bytes: it may end
// up in a 403 and a span.
func oneLine(summary, details string) string {
	s := summary
	if s == "" {
		s, _, _ = strings.Cut(strings.TrimSpace(details), "\n")
	}
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > maxSummary {
		s = strings.ToValidUTF8(s[:maxSummary], "") + "…"
	}
	return s
}
