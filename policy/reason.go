package policy

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/policy/match"
)

// The go command prints at most 8 lines and 648 bytes of an error body,
// and only up to the first blank line (cmd/go/internal/web).
const (
	maxLines    = 8
	maxBytes    = maxLines * 81
	maxItemLine = 160 // one rule, advisory or cooldown line
)

// reason writes the 403 text of an objection: what is blocked, each
// objection on its own line, and what to do, within what the go command
// prints.
func (e *Engine) reason(d *Decision) string {
	head := "sumgate: policy blocks " + clean(d.Module.String(), 200)
	if e.dryRun {
		head = "sumgate: policy would block " + clean(d.Module.String(), 200) + " (dry-run: served)"
	}
	var items []string
	for _, id := range d.Rules {
		r := e.ruleByID(id)
		text := r.reason
		if text == "" {
			text = "denied by policy"
		}
		items = append(items, "rule "+id+": "+text)
	}
	for _, f := range d.Advisories {
		s := "advisory " + f.ID
		if len(f.Aliases) > 0 {
			s += " (" + strings.Join(f.Aliases, ", ") + ")"
		}
		if f.Malicious {
			s += ": a known malicious version"
		}
		items = append(items, s)
	}
	if c := d.Cooldown; c != nil {
		s := "cooldown " + shortDuration(e.cooldown) + ": "
		if c.Until.IsZero() {
			s += "its age is unknown (" + c.Evidence + ")"
		} else {
			s += "available from " + c.Until.UTC().Format(time.RFC3339) + " (" + c.Evidence + ")"
		}
		items = append(items, s)
	}
	for _, w := range d.Expired {
		items = append(items, "waiver of "+w.Rule+" by "+w.Owner+" expired at the end of "+w.Expires)
	}
	todo := "Use another version, or ask for a waiver of the rule or advisory ID for " + clean(d.Module.String(), 200) + "."
	if len(d.Rules) == 0 && len(d.Advisories) == 0 && d.Cooldown != nil {
		todo = "Use an older version, or wait, or ask for a waiver of cooldown for " + clean(d.Module.String(), 200) + "."
		if d.Cooldown.Until.IsZero() {
			todo = "Use another version, or ask for a waiver of cooldown for " + clean(d.Module.String(), 200) + "."
		}
	}
	return fit(head, items, todo)
}

// shortDuration writes d as time.Duration does, without zero minutes and
// seconds: 72h, 1h30m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ruleByID returns the rule with id; it exists, since Decide found it.
func (e *Engine) ruleByID(id string) *rule {
	for i := range e.rules {
		if e.rules[i].id == id {
			return &e.rules[i]
		}
	}
	return &rule{id: id}
}

// fit joins head, the items (each cut to one line) and todo into lines the
// go command prints whole: the items that do not fit are counted instead.
func fit(head string, items []string, todo string) string {
	for i, s := range items {
		items[i] = clean(s, maxItemLine)
	}
	for n := len(items); n >= 0; n-- {
		lines := append([]string{head}, items[:n]...)
		if n < len(items) {
			lines = append(lines, fmt.Sprintf("... and %d more", len(items)-n))
		}
		lines = append(lines, todo)
		if s := strings.Join(lines, "\n") + "\n"; len(lines) <= maxLines && len(s) <= maxBytes {
			return s
		}
	}
	return head + "\n" + todo + "\n" // a head and todo longer than the room: cut by the go command
}

// clean makes s one printable line of at most max bytes, cut with "...".
func clean(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		cut := max - len("...")
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// FilterVersions decides each version of the module at path, as listed by
// @v/list, and returns the versions to serve, in their order, and the
// decisions for every version policy objects to: left out (Block) or, in
// dry-run, kept and recorded (WouldBlock). age is as for [Engine.Decide].
func (e *Engine) FilterVersions(path string, versions []string, age AgeFunc) (kept []string, objected []Decision) {
	kept = make([]string, 0, len(versions))
	for _, v := range versions {
		d := e.Decide(module.Version{Path: path, Version: v}, age)
		if d.Objects() {
			objected = append(objected, d)
		}
		if !d.Block {
			kept = append(kept, v)
		}
	}
	return kept, objected
}

// Latest returns what @latest should answer for the module at path given
// the versions it has (its @v/list, and the upstream's @latest answer):
// the highest version policy lets through, a release before any
// pre-release, as the go command picks from a list; "" if none passes.
// objected is as for FilterVersions.
func (e *Engine) Latest(path string, versions []string, age AgeFunc) (latest string, objected []Decision) {
	kept, objected := e.FilterVersions(path, versions, age)
	for _, v := range kept {
		if !match.IsVersion(v) {
			continue
		}
		if latest == "" || better(v, latest) {
			latest = v
		}
	}
	return latest, objected
}

// better reports whether v is preferred to w as the latest: a release
// over a pre-release, then the higher version.
func better(v, w string) bool {
	if vp, wp := semver.Prerelease(v) != "", semver.Prerelease(w) != ""; vp != wp {
		return wp
	}
	return semver.Compare(v, w) > 0
}

// ListReason is the 403 text for a version list policy left empty: which
// versions were blocked and by what, and what to do.
func ListReason(path string, objected []Decision) string {
	head := "sumgate: policy blocks every version of " + clean(path, 200)
	var items []string
	for _, d := range objected {
		var why []string
		why = append(why, d.Rules...)
		for _, f := range d.Advisories {
			why = append(why, f.ID)
		}
		if c := d.Cooldown; c != nil {
			if c.Until.IsZero() {
				why = append(why, config.CooldownRule+" (age unknown)")
			} else {
				why = append(why, config.CooldownRule+" until "+c.Until.UTC().Format(time.RFC3339))
			}
		}
		items = append(items, d.Module.Version+": "+strings.Join(why, ", "))
	}
	return fit(head, items, "Ask for a waiver, or for the rule to be changed.")
}
