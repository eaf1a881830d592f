package gateway_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/testworld"
)

// TestUnseenVanityPathIsNotPassedAsTheRepositoryPath: a vanity host that
// is not intercepted (gorm.io, honnef.co, mvdan.cc, ...) with its
// repository on github.com, which is: sumgate never sees discovery, but
// the repository path is not a reading the go command builds when the
// go.mod declares the vanity path, which is read instead.
func TestUnseenVanityPathIsNotPassedAsTheRepositoryPath(t *testing.T) {
	w := testworld.New(t)
	e := startWith(t, w, func(c *gateway.Config) {
		c.Intercept = slices.DeleteFunc(slices.Clone(c.Intercept), func(h string) bool { return h == testworld.VanityHost })
		c.Resolve = map[string]string{testworld.VanityHost: w.Addr}
	})
	roots, _ := os.ReadFile(e.rootFile)
	world, _ := os.ReadFile(w.RootsFile)
	both := filepath.Join(t.TempDir(), "both.pem")
	os.WriteFile(both, append(roots, world...), 0o644)

	r := e.w.NewGitRepo(t, testworld.GitHubHost, "owner/vfoo", testworld.GitRepoOptions{})
	const modPath = testworld.VanityHost + "/vfoo"
	const ghPath = testworld.GitHubHost + "/owner/vfoo"
	e.w.ServeGoImport(t, testworld.VanityHost, modPath, r.RemoteURL())
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package foo\n"}))
	sum, _ := e.w.LogGit(t, modPath, "v1.0.0")
	// the tag moves; the attacker then has the github.com path logged
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package foo\n\nfunc init() { steal() }\n"}))
	e.w.LogGit(t, ghPath, "v1.0.0")

	d, out := e.goDirect(t, []string{"SSL_CERT_FILE=" + both}, modPath+"@v1.0.0")
	if d.Sum != "" && d.Sum != sum {
		t.Errorf("BYPASS: %s@v1.0.0 delivered with Sum %s, database has %s\n%s", modPath, d.Sum, sum, out)
	}
}
