// Package policy decides whether the gateway may serve a module version
// for reasons other than its hash: deny and allow rules, advisories, and
// a minimum release age (the cooldown), each with waivers, in enforce or
// dry-run mode.
//
// An [Engine] is built once from the configuration ([New]) and is then
// immutable and safe for concurrent use; a new configuration is a new
// Engine. It reads no clock, file or network of its own: the caller
// supplies the time ([Options.Now]), the advisories ([AdvisorySource]) and
// the evidence of a version's age ([AgeFunc]).
//
// How the parts combine, for one module@version:
//   - A rule matches when its pattern matches the module path and its
//     range (if any) contains the version. A version that is not a
//     canonical module version is taken to be in every deny rule's range
//     and in no allow rule's: the engine fails closed.
//   - An allow rule that matches exempts the version from every deny rule
//     and from the cooldown, whatever the order of the rules: a deny rule
//     added later never overrides an exception. "deny: '*'" with allow
//     rules is an allowlist. An allow rule does not exempt from
//     advisories: an advisory is a fact about the version that arrives
//     after the rule was written, and a broad pattern must not silently
//     swallow a new malicious-package entry. A waiver is the narrow,
//     owned, expiring way to accept one.
//   - Each matching deny rule, each advisory the source marks Blocked, and
//     the cooldown object to the version unless a waiver names that rule,
//     advisory ID (or one of its aliases), or "cooldown" for exactly this
//     module@version and has not expired (it applies through the end of
//     its Expires day, UTC).
//   - Under the cooldown, a version is served once its age evidence says
//     it existed at least the cooldown ago. With no evidence at all it is
//     not served (fail closed).
//   - In enforce mode an objection blocks (Block); in dry-run mode it is
//     recorded (WouldBlock) and the version passes.
package policy

import (
	"fmt"
	"time"

	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/policy/match"
)

// AdvisorySource answers which advisories cover a module version. The
// gateway adapts its OSV database to it.
type AdvisorySource interface {
	// Affecting returns the advisories whose affected ranges contain m,
	// each once, with Blocked set by the configured selectors
	// (advisories.block). It is called for every .zip and every version
	// of every list, so it must be fast and safe for concurrent use; it
	// has no error: a source that cannot refresh answers from its last
	// good copy.
	Affecting(m module.Version) []Finding
}

// Finding is one advisory that covers a version.
type Finding struct {
	ID        string   // the OSV ID: GO-2024-2687, MAL-2025-1, GHSA-…
	Aliases   []string // other IDs of the same advisory: CVE-…, GHSA-…
	Malicious bool     // a malicious-package entry (MAL-), not a vulnerability
	Blocked   bool     // the configured selectors block it
}

// Age is the evidence of how old a version is, for the cooldown.
type Age struct {
	// Known says whether there is any evidence; without it, a cooldown
	// blocks the version.
	Known bool
	// Since is the latest time at which the evidence proves the version
	// existed: the time sumgate saw the first checksum-database tree
	// head that contains its record, or, where that history is too short,
	// the publisher's .info time.
	Since time.Time
	// Evidence says, for the audit trail and the 403, what decided Since,
	// e.g. "checksum database: record 1234 in the tree head of size 1300
	// seen at 2026-01-01T10:00:00Z".
	Evidence string
}

// AgeFunc returns the age evidence of m. The engine calls it at most once
// per version, and only when a cooldown is what decides, so that a
// version no cooldown applies to costs no lookup. A nil AgeFunc means
// there is no evidence.
type AgeFunc func(m module.Version) Age

// Options are what the engine reads from the world.
type Options struct {
	// Now returns the current time; nil means time.Now. It decides
	// waiver expiry and the cooldown.
	Now func() time.Time
	// Advisories answers which advisories cover a version; nil means
	// none do.
	Advisories AdvisorySource
}

// Engine decides module versions against a policy. It is immutable and
// safe for concurrent use.
type Engine struct {
	dryRun     bool
	rules      []rule                      // in configuration order
	index      match.Index                 // rule patterns → index in rules
	waivers    map[module.Version][]waiver // by the exact module version waived
	cooldown   time.Duration               // 0: off
	advisories AdvisorySource              // nil: none
	now        func() time.Time            // never nil
}

// rule is one compiled configuration rule.
type rule struct {
	id       string
	allow    bool
	ranged   bool        // versions narrows the rule
	versions match.Range // when ranged
	reason   string
}

// waiver is one compiled configuration waiver.
type waiver struct {
	Waived
	end time.Time // the waiver applies before this instant
}

// Waived is a waiver as the audit trail records it.
type Waived struct {
	Rule    string // the rule id, advisory ID or "cooldown" waived
	Owner   string // who answers for the waiver
	Expires string // its last day, YYYY-MM-DD (UTC)
}

// String returns "rule (owner, until expires)".
func (w Waived) String() string {
	return fmt.Sprintf("%s (%s, until %s)", w.Rule, w.Owner, w.Expires)
}

// New compiles a policy, which should have passed the configuration's
// validation; New checks it again and fails on anything it cannot compile.
func New(p config.Policy, opts Options) (*Engine, error) {
	e := &Engine{cooldown: p.Cooldown, advisories: opts.Advisories, now: opts.Now, waivers: map[module.Version][]waiver{}}
	if e.now == nil {
		e.now = time.Now
	}
	switch p.Mode {
	case config.PolicyEnforce:
	case config.PolicyDryRun:
		e.dryRun = true
	default:
		return nil, fmt.Errorf("compiling policy: mode %q: want enforce or dry-run", p.Mode)
	}
	if p.Cooldown < 0 {
		return nil, fmt.Errorf("compiling policy: negative cooldown %v", p.Cooldown)
	}
	ids := map[string]bool{}
	for i, r := range p.Rules {
		if !config.IsRuleID(r.ID) || r.ID == config.CooldownRule || ids[r.ID] {
			return nil, fmt.Errorf("compiling policy rule %d: bad or duplicate id %q", i, r.ID)
		}
		ids[r.ID] = true
		if (r.Deny == "") == (r.Allow == "") {
			return nil, fmt.Errorf("compiling policy rule %s: set exactly one of deny and allow", r.ID)
		}
		c := rule{id: r.ID, allow: r.Allow != "", reason: r.Reason}
		pattern, err := match.ParsePattern(r.Deny + r.Allow)
		if err != nil {
			return nil, fmt.Errorf("compiling policy rule %s: %w", r.ID, err)
		}
		if r.Versions != "" {
			if c.versions, err = match.ParseRange(r.Versions); err != nil {
				return nil, fmt.Errorf("compiling policy rule %s: %w", r.ID, err)
			}
			c.ranged = true
		}
		e.rules = append(e.rules, c)
		e.index.Add(pattern, i)
	}
	for _, w := range p.Waivers {
		m, err := w.ParseModule()
		if err != nil {
			return nil, fmt.Errorf("compiling policy waiver of %s: %w", w.Rule, err)
		}
		end, err := w.ExpiresAt()
		if err != nil {
			return nil, fmt.Errorf("compiling policy waiver of %s for %s: %w", w.Rule, w.Module, err)
		}
		e.waivers[m] = append(e.waivers[m], waiver{Waived: Waived{Rule: w.Rule, Owner: w.Owner, Expires: w.Expires}, end: end})
	}
	return e, nil
}

// DryRun reports whether the engine records objections instead of
// blocking.
func (e *Engine) DryRun() bool { return e.dryRun }

// Cooldown returns the configured minimum release age; 0 means none.
func (e *Engine) Cooldown() time.Duration { return e.cooldown }

// Decision is the policy's answer for one module version. When policy
// objects to the version, exactly one of Block (enforce) and WouldBlock
// (dry-run) is true, and Reason explains it; otherwise both are false and
// the lists say only which allow rules and waivers let it through.
type Decision struct {
	Module     module.Version
	Block      bool      // refuse the version: 403, left out of lists
	WouldBlock bool      // dry-run: serve it, and record that enforce would not
	Rules      []string  // the deny rules that object, in configuration order
	Advisories []Finding // the advisories that object
	Cooldown   *Cooldown // the cooldown, if it objects
	Allowed    []string  // the allow rules that exempted the version
	Waivers    []Waived  // the waivers that removed an objection
	Expired    []Waived  // expired waivers that would have removed one
	Reason     string    // for an objection: the 403 text/plain body the go command prints
}

// Cooldown says why the cooldown objects.
type Cooldown struct {
	Until    time.Time // when the version becomes available; zero if its age is unknown
	Evidence string    // what dated the version, or why nothing could
}

// Objects reports whether policy objects to the version: Block or
// WouldBlock.
func (d *Decision) Objects() bool { return d.Block || d.WouldBlock }

// Decide decides whether m may be served: on a .zip, a direct VCS fetch,
// or a cached file about to be served. age is called only if the cooldown
// decides.
func (e *Engine) Decide(m module.Version, age AgeFunc) Decision {
	now := e.now()
	d := Decision{Module: m}
	valid := match.IsVersion(m.Version)
	var buf [16]int
	var denies []int
	allowed := false
	for _, i := range e.index.Lookup(buf[:0], m.Path) {
		r := &e.rules[i]
		if r.ranged && !r.versions.Contains(m.Version) && (valid || r.allow) {
			continue
		}
		if r.allow {
			allowed = true
			d.Allowed = append(d.Allowed, r.id)
		} else {
			denies = append(denies, i)
		}
	}
	if !allowed {
		for _, i := range denies {
			if !e.waived(&d, now, e.rules[i].id) {
				d.Rules = append(d.Rules, e.rules[i].id)
			}
		}
	}
	if e.advisories != nil {
		for _, f := range e.advisories.Affecting(m) {
			if f.Blocked && !e.waived(&d, now, append([]string{f.ID}, f.Aliases...)...) {
				d.Advisories = append(d.Advisories, f)
			}
		}
	}
	if e.cooldown > 0 && !allowed {
		var a Age
		if age != nil {
			a = age(m)
		}
		c := Cooldown{Evidence: a.Evidence}
		if a.Known {
			c.Until = a.Since.Add(e.cooldown)
		} else if c.Evidence == "" {
			c.Evidence = "no evidence of when it was published"
		}
		if (!a.Known || now.Before(c.Until)) && !e.waived(&d, now, config.CooldownRule) {
			d.Cooldown = new(c) // allocated only when it objects
		}
	}
	if len(d.Rules) > 0 || len(d.Advisories) > 0 || d.Cooldown != nil {
		d.Block, d.WouldBlock = !e.dryRun, e.dryRun
		d.Reason = e.reason(&d)
	}
	return d
}

// waived reports whether an unexpired waiver for d.Module names one of
// names, and records in d the waiver used, or the expired ones found.
func (e *Engine) waived(d *Decision, now time.Time, names ...string) bool {
	ws := e.waivers[d.Module]
	if len(ws) == 0 {
		return false
	}
	var expired []Waived
	for _, w := range ws {
		for _, n := range names {
			if w.Rule != n {
				continue
			}
			if now.Before(w.end) {
				d.Waivers = append(d.Waivers, w.Waived)
				return true
			}
			expired = append(expired, w.Waived)
		}
	}
	d.Expired = append(d.Expired, expired...)
	return false
}
