package testworld

import "testing"

// ServeGit makes https://github.com/<repo> (repo is "owner/name") a git
// repository served over git's smart HTTP protocol, holding one commit
// with a go.mod for github.com/<repo>, tagged v1.0.0. It skips t when git
// is not installed. It is NewGitRepo, Commit and Tag in one.
func (w *World) ServeGit(t testing.TB, repo string) {
	t.Helper()
	r := w.NewGitRepo(t, GitHubHost, repo, GitRepoOptions{})
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": string(goMod(GitHubHost + "/" + repo))}))
}
