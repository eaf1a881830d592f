package policy_test

import (
	"fmt"
	"time"

	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/policy"
)

// The 403 the go command prints for a version a rule denies and the
// cooldown holds back.
func ExampleEngine_Decide() {
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	e, err := policy.New(config.Policy{
		Mode: config.PolicyEnforce,
		Rules: []config.Rule{
			{ID: "no-old-yaml", Deny: "gopkg.in/yaml.v2", Versions: "< v2.4.0", Reason: "CVE-2022-28948; use v2.4.0 or later"},
		},
		Cooldown: 72 * time.Hour,
	}, policy.Options{Now: func() time.Time { return now }})
	if err != nil {
		panic(err)
	}
	age := func(m module.Version) policy.Age {
		return policy.Age{Known: true, Since: now.Add(-time.Hour), Evidence: "in the checksum database's tree head first seen at 2026-06-15T11:00:00Z"}
	}
	d := e.Decide(module.Version{Path: "gopkg.in/yaml.v2", Version: "v2.3.0"}, age)
	fmt.Println(d.Block, d.Rules)
	fmt.Print(d.Reason)
	// Output:
	// true [no-old-yaml]
	// sumgate: policy blocks gopkg.in/yaml.v2@v2.3.0
	// rule no-old-yaml: CVE-2022-28948; use v2.4.0 or later
	// cooldown 72h: available from 2026-06-18T11:00:00Z (in the checksum database's tree head first seen at 2026-06-15T11:00:00Z)
	// Use another version, or ask for a waiver of the rule or advisory ID for gopkg.in/yaml.v2@v2.3.0.
}
