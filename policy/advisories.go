package policy

import (
	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/policy/advisory"
)

// Advisories adapts OSV databases to an [AdvisorySource]: current returns
// the snapshot in use (such as [advisory.Watcher.Current]; a nil snapshot
// holds nothing), and block decides which entries block
// (policy.advisories.block). A malicious entry is reported whatever block
// says; whether it blocks is block's to say ("malicious" selects it).
func Advisories(current func() *advisory.DB, block advisory.SelectorSet) AdvisorySource {
	return advisorySource{current: current, block: block}
}

type advisorySource struct {
	current func() *advisory.DB
	block   advisory.SelectorSet
}

func (a advisorySource) Affecting(m module.Version) []Finding {
	entries := a.current().Affecting(m)
	if len(entries) == 0 {
		return nil
	}
	fs := make([]Finding, 0, len(entries))
	for _, e := range entries {
		_, blocked := a.block.Match(e)
		fs = append(fs, Finding{ID: e.ID, Aliases: e.Aliases, Malicious: e.Malicious, Blocked: blocked})
	}
	return fs
}
