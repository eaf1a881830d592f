package policy

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/policy/match"
)

// benchPolicy has n rules: 60% exact module paths with version ranges,
// 20% organisation globs, 10% host globs, 10% allow rules.
func benchPolicy(n int) config.Policy {
	p := config.Policy{Mode: config.PolicyEnforce, Cooldown: 72 * time.Hour}
	for i := range n {
		r := config.Rule{ID: fmt.Sprintf("r%d", i), Reason: "benchmark"}
		switch i % 10 {
		case 0, 1, 2, 3, 4, 5:
			r.Deny, r.Versions = fmt.Sprintf("github.com/org%d/repo%d", i%97, i), fmt.Sprintf(">= v1.%d.0, < v1.%d.0", i%5, i%5+3)
		case 6, 7:
			r.Deny = fmt.Sprintf("github.com/team%d/*", i)
		case 8:
			r.Deny = fmt.Sprintf("*.corp%d.example", i)
		case 9:
			r.Allow = fmt.Sprintf("github.com/org%d/*", i%97)
		}
		p.Rules = append(p.Rules, r)
	}
	return p
}

// BenchmarkDecide is the cost of one policy decision with 1,000 rules,
// for a module no rule names and for one several rules match, under a
// cooldown it passes. "linear" is the same match done by trying every
// rule's pattern in turn, for comparison with the index.
func BenchmarkDecide(b *testing.B) {
	p := benchPolicy(1000)
	old := func(module.Version) Age { return Age{Known: true, Since: time.Now().AddDate(-1, 0, 0)} }
	e, err := New(p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range []module.Version{
		{Path: "golang.org/x/net", Version: "v0.30.0"},
		{Path: "github.com/org6/repo6", Version: "v1.1.5"},
	} {
		b.Run("index/"+m.Path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(m, old)
			}
		})
		b.Run("linear/"+m.Path, func(b *testing.B) {
			var patterns []match.Pattern
			for _, r := range p.Rules {
				pt, _ := match.ParsePattern(r.Deny + r.Allow)
				patterns = append(patterns, pt)
			}
			b.ReportAllocs()
			for b.Loop() {
				n := 0
				for i, pt := range patterns {
					if pt.Match(m.Path) && (!e.rules[i].ranged || e.rules[i].versions.Contains(m.Version)) {
						n++
					}
				}
				_ = n
			}
		})
	}
}
