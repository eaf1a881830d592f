package testworld

import (
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ServeGit makes https://github.com/<repo> (repo is "owner/name") a git
// repository served over git's smart HTTP protocol by `git http-backend`,
// holding one commit with a go.mod for github.com/<repo>. It skips t when
// git is not installed.
func (w *World) ServeGit(t testing.TB, repo string) {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed")
	}
	root := t.TempDir()
	work := filepath.Join(root, "work")
	bare := filepath.Join(root, "repos", repo+".git")
	git := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(gitBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+root,
			"GIT_AUTHOR_NAME=testworld", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=testworld", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("testworld: git %v: %v\n%s", args, err, out)
		}
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "go.mod"), goMod(GitHubHost+"/"+repo), 0o644)
	git(work, "init", "-q", "-b", "main")
	git(work, "add", "go.mod")
	git(work, "commit", "-q", "-m", "initial")
	git(work, "tag", "v1.0.0")
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		t.Fatal(err)
	}
	git(root, "clone", "-q", "--bare", work, bare)

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.git == nil {
		w.git = map[string]http.Handler{}
	}
	w.git[repo] = &cgi.Handler{
		Path: gitBin,
		Args: []string{"http-backend"},
		Env:  []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "repos"), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
	}
}

// gitHandler returns the smart-HTTP handler for a request path
// /<owner>/<name>[.git]/..., or nil.
func (w *World) gitHandler(path string) (http.Handler, bool) {
	parts := strings.SplitN(strings.TrimPrefix(path, "/"), "/", 3)
	if len(parts) < 3 {
		return nil, false
	}
	repo := parts[0] + "/" + strings.TrimSuffix(parts[1], ".git")
	w.mu.Lock()
	h := w.git[repo]
	w.mu.Unlock()
	return h, h != nil
}
