package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/internal/config"
)

// now is the tests' clock: the middle of 2026-06-15, UTC.
var now = time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)

// advisories is a test AdvisorySource: the findings of each version.
type advisories map[module.Version][]Finding

func (a advisories) Affecting(m module.Version) []Finding { return a[m] }

func mv(s string) module.Version {
	p, v, _ := strings.Cut(s, "@")
	return module.Version{Path: p, Version: v}
}

func testPolicy(mode config.PolicyMode) config.Policy {
	return config.Policy{
		Mode: mode,
		Rules: []config.Rule{
			{ID: "no-old-yaml", Deny: "gopkg.in/yaml.v2", Versions: "< v2.4.0", Reason: "CVE-2022-28948; use v2.4.0 or later"},
			{ID: "no-evil", Deny: "github.com/evil/*,*.evil.example"},
			{ID: "allow-internal-fork", Allow: "github.com/corp-forks/*"},
			{ID: "no-old-forks", Deny: "github.com/corp-forks/*", Versions: "< v1.0.0"},
			{ID: "only-new-crypto", Deny: "golang.org/x/crypto"},
			{ID: "allow-new-crypto", Allow: "golang.org/x/crypto", Versions: ">= v0.35.0"},
		},
		Waivers: []config.Waiver{
			{Rule: "no-old-yaml", Module: "gopkg.in/yaml.v2@v2.3.0", Owner: "a@corp.example", Expires: "2026-06-15"},
			{Rule: "no-old-yaml", Module: "gopkg.in/yaml.v2@v2.2.8", Owner: "b@corp.example", Expires: "2026-06-14"},
			{Rule: "cooldown", Module: "golang.org/x/net@v0.99.0", Owner: "security@corp.example", Expires: "2027-01-31"},
			{Rule: "CVE-2024-24786", Module: "google.golang.org/protobuf@v1.32.0", Owner: "c@corp.example", Expires: "2027-01-31"},
			{Rule: "no-evil", Module: "github.com/evil/x@v1.0.0", Owner: "d@corp.example", Expires: "2027-01-31"}, // for another version
		},
		Cooldown: 72 * time.Hour,
	}
}

var testAdvisories = advisories{
	mv("google.golang.org/protobuf@v1.31.0"): {{ID: "GO-2024-2611", Aliases: []string{"CVE-2024-24786"}, Blocked: true}},
	mv("google.golang.org/protobuf@v1.32.0"): {{ID: "GO-2024-2611", Aliases: []string{"CVE-2024-24786"}, Blocked: true}},
	mv("github.com/corp-forks/bad@v1.0.0"):   {{ID: "MAL-2025-1", Malicious: true, Blocked: true}},
	mv("example.com/low@v1.0.0"):             {{ID: "GO-2024-9999", Blocked: false}},
}

// ages: every version is a year old, but those listed.
func ages(young map[string]Age) AgeFunc {
	return func(m module.Version) Age {
		if a, ok := young[m.String()]; ok {
			return a
		}
		return Age{Known: true, Since: now.AddDate(-1, 0, 0), Evidence: "checksum database tree head of 2025"}
	}
}

func TestDecide(t *testing.T) {
	young := map[string]Age{
		"golang.org/x/text@v0.30.0":          {Known: true, Since: now.Add(-time.Hour), Evidence: "checksum database: record 1234 in tree head 1300 seen at 11:00"},
		"golang.org/x/net@v0.99.0":           {Known: true, Since: now.Add(-time.Hour), Evidence: ".info time"},
		"github.com/corp-forks/new@v1.1.0":   {Known: true, Since: now.Add(-time.Minute)},
		"example.com/dateless@v1.0.0":        {},
		"example.com/just-old-enough@v1.0.0": {Known: true, Since: now.Add(-72 * time.Hour)},
	}
	tests := []struct {
		name       string
		module     string
		block      bool
		rules      []string
		advisories []string
		cooldown   time.Time // zero: none, or unknown age (unknownAge)
		unknownAge bool
		allowed    []string
		waivers    []string
		expired    []string
		reason     []string // substrings of the reason
	}{
		{name: "denied by range", module: "gopkg.in/yaml.v2@v2.2.0", block: true, rules: []string{"no-old-yaml"},
			reason: []string{"sumgate: policy blocks gopkg.in/yaml.v2@v2.2.0\n", "rule no-old-yaml: CVE-2022-28948; use v2.4.0 or later\n", "ask for a waiver"}},
		{name: "range boundary passes", module: "gopkg.in/yaml.v2@v2.4.0"},
		{name: "-rc below the boundary", module: "gopkg.in/yaml.v2@v2.4.0-rc.1", block: true, rules: []string{"no-old-yaml"}},
		{name: "pseudo-version below the boundary", module: "gopkg.in/yaml.v2@v2.4.0-0.20240101120000-abcdefabcdef", block: true, rules: []string{"no-old-yaml"}},
		{name: "pseudo-version above the boundary", module: "gopkg.in/yaml.v2@v2.4.1-0.20240101120000-abcdefabcdef"},
		{name: "not a canonical version: every deny range", module: "gopkg.in/yaml.v2@v3", block: true, rules: []string{"no-old-yaml"}},
		{name: "denied by glob", module: "github.com/evil/y@v1.2.3", block: true, rules: []string{"no-evil"}, reason: []string{"rule no-evil: denied by policy"}},
		{name: "denied by second glob", module: "git.evil.example/y@v1.2.3", block: true, rules: []string{"no-evil"}},
		{name: "waiver for another version", module: "github.com/evil/x@v1.0.1", block: true, rules: []string{"no-evil"}},
		{name: "waiver through the end of its day", module: "gopkg.in/yaml.v2@v2.3.0", waivers: []string{"no-old-yaml (a@corp.example, until 2026-06-15)"}},
		{name: "expired waiver", module: "gopkg.in/yaml.v2@v2.2.8", block: true, rules: []string{"no-old-yaml"}, expired: []string{"no-old-yaml (b@corp.example, until 2026-06-14)"},
			reason: []string{"waiver of no-old-yaml by b@corp.example expired at the end of 2026-06-14"}},
		{name: "allow beats deny", module: "github.com/corp-forks/x@v0.5.0", allowed: []string{"allow-internal-fork"}},
		{name: "allowlist: outside the allowed range", module: "golang.org/x/crypto@v0.30.0", block: true, rules: []string{"only-new-crypto"}},
		{name: "allowlist: inside the allowed range", module: "golang.org/x/crypto@v0.35.0", allowed: []string{"allow-new-crypto"}},
		{name: "allowlist: not a canonical version is not allowed", module: "golang.org/x/crypto@latest", block: true, rules: []string{"only-new-crypto"}},
		{name: "advisory", module: "google.golang.org/protobuf@v1.31.0", block: true, advisories: []string{"GO-2024-2611"},
			reason: []string{"advisory GO-2024-2611 (CVE-2024-24786)\n"}},
		{name: "advisory waived by its alias", module: "google.golang.org/protobuf@v1.32.0", waivers: []string{"CVE-2024-24786 (c@corp.example, until 2027-01-31)"}},
		{name: "malicious despite an allow rule", module: "github.com/corp-forks/bad@v1.0.0", block: true, advisories: []string{"MAL-2025-1"}, allowed: []string{"allow-internal-fork"},
			reason: []string{"advisory MAL-2025-1: a known malicious version"}},
		{name: "advisory not selected", module: "example.com/low@v1.0.0"},
		{name: "cooldown", module: "golang.org/x/text@v0.30.0", block: true, cooldown: now.Add(71 * time.Hour),
			reason: []string{"cooldown 72h: available from 2026-06-18T11:00:00Z (checksum database: record 1234 in tree head 1300 seen at 11:00)", "Use an older version, or wait"}},
		{name: "cooldown over", module: "example.com/just-old-enough@v1.0.0"},
		{name: "cooldown waived", module: "golang.org/x/net@v0.99.0", waivers: []string{"cooldown (security@corp.example, until 2027-01-31)"}},
		{name: "cooldown without evidence", module: "example.com/dateless@v1.0.0", block: true, unknownAge: true, reason: []string{"its age is unknown (no evidence of when it was published)"}},
		{name: "cooldown exempted by an allow rule", module: "github.com/corp-forks/new@v1.1.0", allowed: []string{"allow-internal-fork"}},
		{name: "nothing applies", module: "example.com/m@v1.0.0"},
	}
	for _, mode := range []config.PolicyMode{config.PolicyEnforce, config.PolicyDryRun} {
		e, err := New(testPolicy(mode), Options{Now: func() time.Time { return now }, Advisories: testAdvisories})
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			t.Run(string(mode)+"/"+tt.name, func(t *testing.T) {
				d := e.Decide(mv(tt.module), ages(young))
				dry := mode == config.PolicyDryRun
				if d.Block != (tt.block && !dry) || d.WouldBlock != (tt.block && dry) {
					t.Errorf("Block, WouldBlock = %v, %v; want an objection: %v", d.Block, d.WouldBlock, tt.block)
				}
				var advs, waivers, expired []string
				for _, f := range d.Advisories {
					advs = append(advs, f.ID)
				}
				for _, w := range d.Waivers {
					waivers = append(waivers, w.String())
				}
				for _, w := range d.Expired {
					expired = append(expired, w.String())
				}
				for _, c := range []struct {
					what      string
					got, want []string
				}{{"Rules", d.Rules, tt.rules}, {"Advisories", advs, tt.advisories}, {"Allowed", d.Allowed, tt.allowed}, {"Waivers", waivers, tt.waivers}, {"Expired", expired, tt.expired}} {
					if !slices.Equal(c.got, c.want) {
						t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
					}
				}
				switch {
				case tt.unknownAge && (d.Cooldown == nil || !d.Cooldown.Until.IsZero()):
					t.Errorf("Cooldown = %+v, want one of unknown age", d.Cooldown)
				case !tt.cooldown.IsZero() && (d.Cooldown == nil || !d.Cooldown.Until.Equal(tt.cooldown)):
					t.Errorf("Cooldown = %+v, want until %v", d.Cooldown, tt.cooldown)
				case tt.cooldown.IsZero() && !tt.unknownAge && d.Cooldown != nil:
					t.Errorf("Cooldown = %+v, want none", d.Cooldown)
				}
				if !tt.block {
					if d.Reason != "" {
						t.Errorf("Reason = %q for a version that passes", d.Reason)
					}
					return
				}
				checkFits(t, d.Reason)
				if dry && !strings.Contains(d.Reason, "would block "+tt.module+" (dry-run: served)") {
					t.Errorf("dry-run Reason = %q", d.Reason)
				}
				for _, s := range tt.reason {
					if dry {
						s = strings.Replace(s, "policy blocks "+tt.module+"\n", "policy would block "+tt.module+" (dry-run: served)\n", 1)
					}
					if !strings.Contains(d.Reason, s) {
						t.Errorf("Reason =\n%s\nwant it to contain %q", d.Reason, s)
					}
				}
			})
		}
	}
}

// checkFits: a reason is what the go command prints whole: at most 8
// lines and 648 bytes, no blank line, printable.
func checkFits(t testing.TB, reason string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(reason, "\n"), "\n")
	if len(lines) > maxLines || len(reason) > maxBytes || !strings.HasSuffix(reason, "\n") {
		t.Errorf("reason of %d lines, %d bytes:\n%s", len(lines), len(reason), reason)
	}
	for _, l := range lines {
		if strings.TrimSpace(l) == "" || strings.ContainsFunc(l, func(r rune) bool { return r < ' ' }) {
			t.Errorf("reason has a blank or unprintable line: %q", reason)
		}
	}
}

// TestAgeIsReadOnlyWhenTheCooldownDecides: no cooldown, an allow rule, or
// a deny is no reason to look up a version's age.
func TestAgeIsReadOnlyWhenTheCooldownDecides(t *testing.T) {
	calls := 0
	age := func(module.Version) Age { calls++; return Age{} }
	off := testPolicy(config.PolicyEnforce)
	off.Cooldown = 0
	for _, tt := range []struct {
		name  string
		p     config.Policy
		m     string
		calls int
	}{
		{"cooldown off", off, "example.com/m@v1.0.0", 0},
		{"allowed", testPolicy(config.PolicyEnforce), "github.com/corp-forks/x@v1.0.0", 0},
		{"cooldown on", testPolicy(config.PolicyEnforce), "example.com/m@v1.0.0", 1},
	} {
		e, err := New(tt.p, Options{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		calls = 0
		e.Decide(mv(tt.m), age)
		if calls != tt.calls {
			t.Errorf("%s: age called %d times, want %d", tt.name, calls, tt.calls)
		}
	}
}

func TestFilterVersions(t *testing.T) {
	young := ages(map[string]Age{
		"golang.org/x/text@v0.30.0":      {Known: true, Since: now.Add(-time.Hour)},
		"golang.org/x/text@v0.31.0-rc.1": {Known: true, Since: now.Add(-time.Hour)},
	})
	tests := []struct {
		name       string
		mode       config.PolicyMode
		path       string
		versions   []string
		kept       []string
		objected   []string
		latest     string
		listReason []string
	}{
		{"deny range", config.PolicyEnforce, "gopkg.in/yaml.v2", []string{"v2.2.0", "v2.3.0", "v2.4.0-rc.1", "v2.4.0", "v2.4.1"},
			[]string{"v2.3.0", "v2.4.0", "v2.4.1"}, []string{"v2.2.0", "v2.4.0-rc.1"}, "v2.4.1", nil},
		{"dry-run keeps all", config.PolicyDryRun, "gopkg.in/yaml.v2", []string{"v2.2.0", "v2.4.0"},
			[]string{"v2.2.0", "v2.4.0"}, []string{"v2.2.0"}, "v2.4.0", nil},
		{"cooldown: the newest old enough, a release before a pre-release", config.PolicyEnforce, "golang.org/x/text",
			[]string{"v0.28.0", "v0.29.0", "v0.30.0-rc.1", "v0.30.0", "v0.31.0-rc.1"},
			[]string{"v0.28.0", "v0.29.0", "v0.30.0-rc.1"}, []string{"v0.30.0", "v0.31.0-rc.1"}, "v0.29.0", nil},
		{"only pre-releases", config.PolicyEnforce, "example.com/pre", []string{"v1.0.0-rc.1", "v1.0.0-rc.2"},
			[]string{"v1.0.0-rc.1", "v1.0.0-rc.2"}, nil, "v1.0.0-rc.2", nil},
		{"nothing left", config.PolicyEnforce, "github.com/evil/x", []string{"v1.0.1", "v1.1.0"},
			[]string{}, []string{"v1.0.1", "v1.1.0"}, "", []string{"sumgate: policy blocks every version of github.com/evil/x\n", "v1.0.1: no-evil\nv1.1.0: no-evil\n"}},
		{"empty list", config.PolicyEnforce, "example.com/m", nil, []string{}, nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := New(testPolicy(tt.mode), Options{Now: func() time.Time { return now }, Advisories: testAdvisories})
			if err != nil {
				t.Fatal(err)
			}
			kept, objected := e.FilterVersions(tt.path, tt.versions, young)
			var ov []string
			for _, d := range objected {
				ov = append(ov, d.Module.Version)
				if d.Block == (tt.mode == config.PolicyDryRun) || d.Module.Path != tt.path {
					t.Errorf("objection %+v in mode %s", d, tt.mode)
				}
			}
			if !slices.Equal(kept, tt.kept) || !slices.Equal(ov, tt.objected) {
				t.Errorf("FilterVersions = %q, objected %q; want %q, %q", kept, ov, tt.kept, tt.objected)
			}
			if latest, _ := e.Latest(tt.path, tt.versions, young); latest != tt.latest {
				t.Errorf("Latest = %q, want %q", latest, tt.latest)
			}
			if tt.listReason != nil {
				r := ListReason(tt.path, objected)
				checkFits(t, r)
				for _, s := range tt.listReason {
					if !strings.Contains(r, s) {
						t.Errorf("ListReason =\n%s\nwant it to contain %q", r, s)
					}
				}
			}
		})
	}
}

// TestReasonFitsWhatTheGoCommandPrints: however many rules object, and
// however long their reasons, the 403 keeps its head and what to do, and
// counts what it leaves out.
func TestReasonFitsWhatTheGoCommandPrints(t *testing.T) {
	p := config.Policy{Mode: config.PolicyEnforce}
	for i := range 20 {
		p.Rules = append(p.Rules, config.Rule{ID: fmt.Sprintf("rule-%d", i), Deny: "example.com", Reason: strings.Repeat("long reason ", 30)})
	}
	e, err := New(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Decide(mv("example.com/m@v1.0.0"), nil)
	if len(d.Rules) != 20 {
		t.Fatalf("Rules = %q", d.Rules)
	}
	checkFits(t, d.Reason)
	if !strings.HasPrefix(d.Reason, "sumgate: policy blocks example.com/m@v1.0.0\nrule rule-0: long reason") ||
		!strings.Contains(d.Reason, " more\nUse another version") {
		t.Errorf("Reason =\n%s", d.Reason)
	}
}

// TestWaiverFromTheFileAppliesUntilItsDayEnds: a waiver of the cooldown,
// as a configuration file writes it, applies through the last second of
// its expiry day (UTC) and not after.
func TestWaiverFromTheFileAppliesUntilItsDayEnds(t *testing.T) {
	c, err := config.Parse("sumgate.yaml", []byte(`policy:
  waivers:
    - rule: cooldown
      module: "golang.org/x/net@v0.99.0"
      owner: "security@corp.example"
      expires: 2027-01-31
  cooldown: 72h
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		now   time.Time
		block bool
	}{
		{time.Date(2027, 1, 31, 23, 59, 59, 0, time.UTC), false},
		{time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC), true},
	} {
		e, err := New(c.Policy, Options{Now: func() time.Time { return tt.now }})
		if err != nil {
			t.Fatal(err)
		}
		d := e.Decide(mv("golang.org/x/net@v0.99.0"), func(module.Version) Age { return Age{Known: true, Since: tt.now.Add(-time.Hour)} })
		if d.Block != tt.block {
			t.Errorf("at %v: Block = %v, want %v (%+v)", tt.now, d.Block, tt.block, d)
		}
	}
}

func TestNewRefusesWhatValidationRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    config.Policy
		want string
	}{
		{"mode", config.Policy{Mode: "audit"}, `mode "audit"`},
		{"pattern", config.Policy{Mode: config.PolicyEnforce, Rules: []config.Rule{{ID: "a", Deny: "a/[b"}}}, "malformed"},
		{"range", config.Policy{Mode: config.PolicyEnforce, Rules: []config.Rule{{ID: "a", Deny: "a", Versions: "v1"}}}, "want an operator"},
		{"both", config.Policy{Mode: config.PolicyEnforce, Rules: []config.Rule{{ID: "a", Deny: "a", Allow: "b"}}}, "exactly one"},
		{"duplicate id", config.Policy{Mode: config.PolicyEnforce, Rules: []config.Rule{{ID: "a", Deny: "a"}, {ID: "a", Deny: "b"}}}, "duplicate id"},
		{"waiver module", config.Policy{Mode: config.PolicyEnforce, Waivers: []config.Waiver{{Rule: "cooldown", Module: "a", Owner: "o", Expires: "2027-01-01"}}}, "path@version"},
		{"waiver date", config.Policy{Mode: config.PolicyEnforce, Waivers: []config.Waiver{{Rule: "cooldown", Module: "a.example/m@v1.0.0", Owner: "o", Expires: "soon"}}}, "YYYY-MM-DD"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.p, Options{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
