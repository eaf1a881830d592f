package gateway_test

import (
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/testworld"
)

// TestTagMovedOntoAVerifiedCommitIsRefused: a tag moved onto a commit
// sumgate already verified under another tag is refused: the tags are
// listed afresh for every fetch, and a verified revision is remembered
// with the tags it was verified as.
func TestTagMovedOntoAVerifiedCommitIsRefused(t *testing.T) {
	e := start(t, nil)
	const modPath = testworld.GitHubHost + "/owner/cachemove"
	r := e.w.NewGitRepo(t, testworld.GitHubHost, "owner/cachemove", testworld.GitRepoOptions{})
	a := r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"})
	r.Tag(t, "v1.0.0", a)
	b := r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n\nfunc init() { steal() }\n"})
	r.Tag(t, "v1.0.1", b)
	sum100, _ := e.w.LogGit(t, modPath, "v1.0.0")
	e.w.LogGit(t, modPath, "v1.0.1")

	if d, out := e.goDirect(t, nil, modPath+"@v1.0.1"); d.Sum == "" {
		t.Fatalf("v1.0.1: %s", out)
	}
	r.Tag(t, "v1.0.0", b) // moved onto the verified commit
	d, out := e.goDirect(t, nil, modPath+"@v1.0.0")
	if d.Sum != "" && d.Sum != sum100 {
		t.Errorf("BYPASS: moved tag v1.0.0 delivered with Sum %s, database has %s\n%s", d.Sum, sum100, out)
	}
	_ = strings.Contains
}
