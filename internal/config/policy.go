package config

import (
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"

	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/policy/advisory"
	"github.com/sumgate/sumgate/policy/match"
)

// PolicyMode decides what the gateway does with a version policy blocks.
type PolicyMode string

// The policy modes.
const (
	// PolicyEnforce refuses a blocked version with a 403 and leaves it
	// out of version lists.
	PolicyEnforce PolicyMode = "enforce"
	// PolicyDryRun passes every version and records what enforce would
	// have blocked: for rolling out a rule.
	PolicyDryRun PolicyMode = "dry-run"
)

// CooldownRule is the name a waiver gives to exempt one version from the
// cooldown. No rule may take it as its id.
const CooldownRule = "cooldown"

// Policy configures what the gateway refuses for reasons other than a
// hash: rules, waivers, advisories and a cooldown. The zero value (and the
// default) blocks nothing.
type Policy struct {
	// Mode is enforce or dry-run.
	Mode PolicyMode `yaml:"mode"`
	// Rules deny or allow module versions by path pattern and version
	// range. An allow rule that matches a version exempts it from every
	// deny rule and from the cooldown, whatever the order; it does not
	// exempt it from advisories.
	Rules []Rule `yaml:"rules"`
	// Waivers exempt one module@version from one rule, advisory or the
	// cooldown, until a date.
	Waivers []Waiver `yaml:"waivers"`
	// Advisories configures the OSV databases and which entries block.
	Advisories Advisories `yaml:"advisories"`
	// Cooldown is the minimum age of a version before it is served; 0
	// turns the cooldown off.
	Cooldown time.Duration `yaml:"cooldown"`
}

// Rule denies or allows the module versions it matches.
type Rule struct {
	// ID names the rule in the 403, the X-Sumgate-Rule header, the audit
	// trail and waivers: lower-case letters, digits, '.', '_' and '-',
	// starting and ending with a letter or digit, unique, and not
	// "cooldown". Advisory IDs are upper case, so the two never clash.
	ID string `yaml:"id"`
	// Deny is a module path pattern (GOPRIVATE syntax) of the modules the
	// rule blocks. Exactly one of Deny and Allow is set.
	Deny string `yaml:"deny"`
	// Allow is a module path pattern of modules the rule exempts from
	// the deny rules and the cooldown.
	Allow string `yaml:"allow"`
	// Versions, if set, narrows the rule to a version range, such as
	// "< v2.4.0" or ">= v1.2.0, < v1.3.0" (see [match.ParseRange]).
	Versions string `yaml:"versions"`
	// Reason is shown in the 403 after the rule's id: one line.
	Reason string `yaml:"reason"`
}

// Waiver exempts one module version from one rule, advisory or the
// cooldown, until the end of a day (UTC).
type Waiver struct {
	// Rule is a deny rule's id, "cooldown", or an advisory ID or alias
	// (GO-2024-2687, CVE-2024-24786, GHSA-…, MAL-…).
	Rule string `yaml:"rule"`
	// Module is the exempted "path@version", the version canonical.
	Module string `yaml:"module"`
	// Owner is who answers for the waiver, recorded in the audit trail.
	Owner string `yaml:"owner"`
	// Expires is the last day (YYYY-MM-DD, UTC) the waiver applies.
	Expires string `yaml:"expires"`
}

// Advisories configures the vulnerability and malicious-package databases.
type Advisories struct {
	// Sources are OSV databases: a directory or a .zip file, or an https
	// URL fetched through sumgate's verified upstream.
	Sources []string `yaml:"sources"`
	// Refresh is how often the sources are read again.
	Refresh time.Duration `yaml:"refresh"`
	// Block selects the entries that block a version: malicious (MAL-
	// entries), all, an advisory ID or alias, or "cvss>=7.0".
	Block []string `yaml:"block"`
}

// IsRuleID reports whether s is a valid rule id: 1 to 64 lower-case
// letters, digits, '.', '_' and '-', starting and ending with a letter or
// digit.
func IsRuleID(s string) bool {
	if len(s) == 0 || len(s) > 64 || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// IsAdvisoryID reports whether s has the shape of an OSV ID or alias: an
// upper-case prefix, a dash, then letters, digits and ".:_-", at most 128
// bytes (GO-2024-2687, CVE-2024-24786, GHSA-8r3f-844c-mc37, MAL-2025-1).
func IsAdvisoryID(s string) bool {
	prefix, rest, ok := strings.Cut(s, "-")
	if !ok || prefix == "" || rest == "" || len(s) > 128 || prefix[0] < 'A' || prefix[0] > 'Z' {
		return false
	}
	for i := range len(prefix) {
		if c := prefix[i]; (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	for i := range len(rest) {
		if c := rest[i]; !isLowerAlnum(c) && (c < 'A' || c > 'Z') && !strings.ContainsRune(".:_-", rune(c)) {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// ExpiresAt returns the instant after which w no longer applies: the end
// of its Expires day, UTC.
func (w Waiver) ExpiresAt() (time.Time, error) {
	d, err := time.Parse(time.DateOnly, w.Expires)
	if err != nil {
		return time.Time{}, fmt.Errorf("expires %q: want a date, YYYY-MM-DD", w.Expires)
	}
	return d.AddDate(0, 0, 1), nil
}

// ParseModule splits a waiver's "path@version" and checks both.
func (w Waiver) ParseModule() (module.Version, error) {
	path, version, ok := strings.Cut(w.Module, "@")
	if !ok {
		return module.Version{}, fmt.Errorf("module %q: want path@version", w.Module)
	}
	if err := module.CheckPath(path); err != nil {
		return module.Version{}, fmt.Errorf("module %q: %w", w.Module, err)
	}
	if !match.IsVersion(version) {
		return module.Version{}, fmt.Errorf("module %q: %q is not a canonical version (such as v1.2.3)", w.Module, version)
	}
	return module.Version{Path: path, Version: version}, nil
}

// validate checks the policy and returns its warnings: an expired waiver,
// advisory selectors without a source. at and fail are [Config.validate]'s.
func (p *Policy) validate(fail func(key, format string, args ...any) error, at func(string) string, now time.Time) ([]string, error) {
	var warnings []string
	if p.Mode != PolicyEnforce && p.Mode != PolicyDryRun {
		return nil, fail("policy.mode", "%q: want enforce or dry-run", p.Mode)
	}
	rules := map[string]int{} // id → index
	for i, r := range p.Rules {
		key := fmt.Sprintf("policy.rules[%d]", i)
		switch {
		case !IsRuleID(r.ID):
			return nil, fail(key+".id", "%q: want lower-case letters, digits, '.', '_' and '-', at most 64", r.ID)
		case r.ID == CooldownRule:
			return nil, fail(key+".id", "%q is the name waivers give the cooldown: choose another", r.ID)
		case (r.Deny == "") == (r.Allow == ""):
			return nil, fail(key, "rule %s: set exactly one of deny and allow", r.ID)
		}
		if j, dup := rules[r.ID]; dup {
			return nil, fail(key+".id", "%q is already the id of policy.rules[%d]", r.ID, j)
		}
		rules[r.ID] = i
		field, pattern := "deny", r.Deny
		if r.Allow != "" {
			field, pattern = "allow", r.Allow
		}
		if _, err := match.ParsePattern(pattern); err != nil {
			return nil, fail(key+"."+field, "%v", err)
		}
		if r.Versions != "" {
			if _, err := match.ParseRange(r.Versions); err != nil {
				return nil, fail(key+".versions", "%v", err)
			}
		}
		if err := checkLine(r.Reason, 300); err != nil {
			return nil, fail(key+".reason", "%v", err)
		}
	}
	for i, w := range p.Waivers {
		key := fmt.Sprintf("policy.waivers[%d]", i)
		if j, ok := rules[w.Rule]; ok && p.Rules[j].Allow != "" {
			return nil, fail(key+".rule", "%q is an allow rule: a waiver exempts from a deny rule, an advisory or the cooldown", w.Rule)
		} else if !ok && w.Rule != CooldownRule && !IsAdvisoryID(w.Rule) {
			return nil, fail(key+".rule", "%q: want a rule's id, cooldown, or an advisory ID such as GO-2024-2687", w.Rule)
		}
		if _, err := w.ParseModule(); err != nil {
			return nil, fail(key+".module", "%v", err)
		}
		if w.Owner == "" {
			return nil, fail(key+".owner", "required: who answers for the waiver")
		}
		if err := checkLine(w.Owner, 200); err != nil {
			return nil, fail(key+".owner", "%v", err)
		}
		end, err := w.ExpiresAt()
		if err != nil {
			return nil, fail(key+".expires", "%v", err)
		}
		if !now.Before(end) {
			warnings = append(warnings, fmt.Sprintf("%s%s: the waiver of %s for %s (owner %s) expired at the end of %s; it no longer applies",
				at(key+".expires"), key, w.Rule, w.Module, w.Owner, w.Expires))
		}
	}
	a := p.Advisories
	for _, s := range a.Sources {
		if err := checkSource(s); err != nil {
			return nil, fail("policy.advisories.sources", "%v", err)
		}
	}
	if a.Refresh < time.Minute || a.Refresh > 7*24*time.Hour {
		return nil, fail("policy.advisories.refresh", "%v: want between 1m and 168h", a.Refresh)
	}
	for _, b := range a.Block {
		if b == "" || strings.ContainsFunc(b, unicode.IsSpace) {
			return nil, fail("policy.advisories.block", "%q: want malicious, all, an advisory ID or alias, or cvss>=N, without spaces", b)
		}
		if _, err := advisory.ParseSelector(b); err != nil {
			return nil, fail("policy.advisories.block", "%v", err)
		}
	}
	if len(a.Block) > 0 && len(a.Sources) == 0 {
		warnings = append(warnings, at("policy.advisories.block")+"policy.advisories.block: set, but policy.advisories.sources is empty: no advisory blocks anything")
	}
	if p.Cooldown < 0 || p.Cooldown > 365*24*time.Hour {
		return nil, fail("policy.cooldown", "%v: want between 0s (off) and 8760h", p.Cooldown)
	}
	return warnings, nil
}

// checkLine accepts text that fits on one line of a 403: printable, at
// most max bytes.
func checkLine(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return fmt.Errorf("%q: must be one line of printable text", s)
	}
	return nil
}

// checkSource accepts an https URL or an existing local path.
func checkSource(s string) error {
	if strings.Contains(s, "://") {
		return checkHTTPSURL(s)
	}
	if s == "" {
		return fmt.Errorf("empty source: want a directory, a .zip file or an https URL")
	}
	if _, err := os.Stat(s); err != nil {
		return fmt.Errorf("source %q: %w", s, err)
	}
	return nil
}
