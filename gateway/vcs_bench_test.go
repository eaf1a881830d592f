package gateway_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/testworld"
)

// BenchmarkDirectGit measures what vcs: verify costs a direct-mode client:
// `go mod download` of one tagged version over git (GOPROXY=direct, a
// fresh module cache each time), straight to the code host through a
// blind CONNECT proxy ("direct"), through a gateway that has not seen the
// version ("first": sumgate lists the tags, fetches the commit, builds
// and checks the module zip, then passes the fetch), and through one that
// has ("again": the verified revision is remembered). For a small
// repository and one of -sumgate.large-mib MiB of generated Go text.
//
//	go test -run '^$' -bench BenchmarkDirectGit -benchtime 1x -count 7 ./gateway/ -sumgate.large-mib=32 | tee /tmp/git.txt
//	benchstat -col /route /tmp/git.txt
func BenchmarkDirectGit(b *testing.B) {
	for _, size := range []struct {
		name  string
		files int
		bytes int64 // per file
	}{{"small", 3, 2 << 10}, {"large", 64, int64(*largeMiB) << 20 / 64}} {
		w := testworld.New(b)
		repo := "owner/" + size.name
		r := w.NewGitRepo(b, testworld.GitHubHost, repo, testworld.GitRepoOptions{})
		files := map[string]string{"go.mod": "module github.com/" + repo + "\n"}
		for i := range size.files {
			files[fmt.Sprintf("f%03d.go", i)] = string(testworld.GoText(size.bytes, uint64(i)))
		}
		r.Tag(b, "v1.0.0", r.Commit(b, files))
		mod := testworld.GitHubHost + "/" + repo + "@v1.0.0"
		sum, _ := w.LogGit(b, testworld.GitHubHost+"/"+repo, "v1.0.0")
		check := func(b *testing.B, out []byte, err error) {
			if err != nil || !strings.Contains(string(out), sum) {
				b.Fatalf("go mod download %s: %v\n%s", mod, err, out)
			}
		}
		warm := startWith(b, w, nil)
		out, err := testworld.GoModDownload(b, warm.directEnv(), mod)
		check(b, out, err)
		for _, route := range []string{"direct", "first", "again"} {
			b.Run(fmt.Sprintf("repo=%s/route=%s", size.name, route), func(b *testing.B) {
				for b.Loop() {
					switch route {
					case "direct":
						out, err := w.GoDirect(b, nil, mod)
						check(b, out, err)
					case "first":
						b.StopTimer()
						e := startWith(b, w, nil)
						b.StartTimer()
						out, err := testworld.GoModDownload(b, e.directEnv(), mod)
						check(b, out, err)
					case "again":
						out, err := testworld.GoModDownload(b, warm.directEnv(), mod)
						check(b, out, err)
					}
				}
			})
		}
	}
}

// directEnv is the go command's environment for direct mode through the
// gateway.
func (e *env) directEnv() []string {
	return []string{"GOPROXY=direct", "HTTPS_PROXY=http://" + e.addr, "SSL_CERT_FILE=" + e.rootFile,
		"GIT_SSL_CAINFO=" + e.rootFile, "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1"}
}
