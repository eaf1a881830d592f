package testworld_test

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
	"golang.org/x/mod/sumdb/dirhash"
)

// h1 is the go.sum hash of files (path -> content) as the module
// mod@version's zip would hold them: computed here from the files alone,
// independently of git, the go command and sumgate.
func h1(t testing.TB, modVersion string, files map[string]string) string {
	t.Helper()
	var names []string
	for name := range files {
		names = append(names, modVersion+"/"+name)
	}
	h, err := dirhash.Hash1(names, func(name string) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(files[strings.TrimPrefix(name, modVersion+"/")])), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// modH1 is the go.sum "/go.mod" hash of a go.mod file.
func modH1(t testing.TB, gomod string) string {
	t.Helper()
	h, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(gomod)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// download runs GoDirect for one module and returns what the go command
// reported, failing t unless it succeeded.
func download(t testing.TB, w *testworld.World, env []string, mod string) testworld.Download {
	t.Helper()
	out, err := w.GoDirect(t, env, mod)
	ds, perr := testworld.ParseDownloads(out)
	if err != nil || perr != nil || len(ds) != 1 || ds[0].Error != "" || ds[0].Sum == "" {
		t.Fatalf("go mod download %s: %v %v\n%s", mod, err, perr, out)
	}
	return ds[0]
}

// TestLogGitLogsWhatTheGoCommandComputes: for every shape of module a git
// repository holds (a root module, a subdirectory module, a major-version
// suffix, an annotated tag, +incompatible, and export-subst and
// export-ignore attributes, which the go command neutralises), LogGit
// fetches it through the blind proxy with the real go command, logs the
// hashes the go command computed, and the world's checksum database
// serves them. The hashes equal dirhash over the committed files.
func TestLogGitLogsWhatTheGoCommandComputes(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)

	const (
		rootMod = "module github.com/o/r\n\ngo 1.21\n"
		subMod  = "module github.com/o/r/sub\n\ngo 1.21\n"
		v2Mod   = "module github.com/o/r/v2\n\ngo 1.21\n"
		attrMod = "module github.com/o/attrs\n\ngo 1.21\n"
	)
	r := w.NewGitRepo(t, testworld.GitHubHost, "o/r", testworld.GitRepoOptions{})
	c1 := r.Commit(t, map[string]string{"go.mod": rootMod, "r.go": "package r\n", "sub/go.mod": subMod, "sub/s.go": "package sub\n"})
	r.Tag(t, "v1.0.0", c1)
	r.Tag(t, "sub/v1.2.3", c1)
	c2 := r.Commit(t, map[string]string{"go.mod": v2Mod, "r.go": "package r // v2\n"})
	r.Tag(t, "v2.0.0", c2)
	r.TagAnnotated(t, "v2.1.0", c2)

	nomod := w.NewGitRepo(t, testworld.GitHubHost, "o/nomod", testworld.GitRepoOptions{})
	nomod.Tag(t, "v2.0.0", nomod.Commit(t, map[string]string{"a.go": "package nomod\n"}))

	attrs := map[string]string{
		".gitattributes": "subst.txt export-subst\nignored.txt export-ignore\n",
		"go.mod":         attrMod,
		"subst.txt":      "commit $Format:%H$\n",
		"ignored.txt":    "git archive would leave this out\n",
	}
	a := w.NewGitRepo(t, testworld.GitHubHost, "o/attrs", testworld.GitRepoOptions{})
	a.Tag(t, "v1.0.0", a.Commit(t, attrs))

	for _, tc := range []struct {
		path, version string
		files         map[string]string // the zip's files
		gomod         string            // the go.mod the go command hashes
	}{
		{"github.com/o/r", "v1.0.0", map[string]string{"go.mod": rootMod, "r.go": "package r\n"}, rootMod},
		{"github.com/o/r/sub", "v1.2.3", map[string]string{"go.mod": subMod, "s.go": "package sub\n"}, subMod},
		{"github.com/o/r/v2", "v2.0.0", map[string]string{"go.mod": v2Mod, "r.go": "package r // v2\n"}, v2Mod},
		{"github.com/o/r/v2", "v2.1.0", map[string]string{"go.mod": v2Mod, "r.go": "package r // v2\n"}, v2Mod},
		{"github.com/o/nomod", "v2.0.0+incompatible", map[string]string{"a.go": "package nomod\n"}, "module github.com/o/nomod\n"},
		{"github.com/o/attrs", "v1.0.0", attrs, attrMod},
	} {
		t.Run(tc.path+"@"+tc.version, func(t *testing.T) {
			t.Parallel()
			zipHash, modHash := w.LogGit(t, tc.path, tc.version)
			if want := h1(t, tc.path+"@"+tc.version, tc.files); zipHash != want {
				t.Errorf("zip hash %s; dirhash of the committed files is %s", zipHash, want)
			}
			if want := modH1(t, tc.gomod); modHash != want {
				t.Errorf("go.mod hash %s; want %s", modHash, want)
			}
			client, _ := newClient(t, w, "https://"+config.SumDBName)
			for _, tt := range []struct{ vers, hash string }{{tc.version, zipHash}, {tc.version + "/go.mod", modHash}} {
				lines, err := client.Lookup(tc.path, tt.vers)
				if want := []string{tc.path + " " + tt.vers + " " + tt.hash}; err != nil || !slices.Equal(lines, want) {
					t.Errorf("checksum database: %q, %v; want %q", lines, err, want)
				}
			}
		})
	}
}

// TestMovedTagYieldsAnotherSum: after LogGit, moving the tag to a commit
// with other content makes the next direct download hash differently:
// the attack a direct-git verifier must catch.
func TestMovedTagYieldsAnotherSum(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)
	r := w.NewGitRepo(t, testworld.GitHubHost, "o/moved", testworld.GitRepoOptions{})
	gomod := "module github.com/o/moved\n\ngo 1.21\n"
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": gomod, "m.go": "package moved\n"}))
	logged, _ := w.LogGit(t, "github.com/o/moved", "v1.0.0")

	moved := r.Commit(t, map[string]string{"go.mod": gomod, "m.go": "package moved // backdoor\n"})
	r.Tag(t, "v1.0.0", moved)
	d := download(t, w, nil, "github.com/o/moved@v1.0.0")
	if d.Sum == logged {
		t.Fatalf("the moved tag hashes as the logged one, %s", logged)
	}
	if want := h1(t, "github.com/o/moved@v1.0.0", map[string]string{"go.mod": gomod, "m.go": "package moved // backdoor\n"}); d.Sum != want {
		t.Errorf("moved tag's Sum %s; want %s", d.Sum, want)
	}
}

// TestPrivateRepoNeedsTheNetrc: a private repository answers 401 to
// anonymous git, so the go command fails without credentials and
// succeeds with the repository's .netrc line in HOME.
func TestPrivateRepoNeedsTheNetrc(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)
	r := w.NewGitRepo(t, testworld.GitHubHost, "corp/secret", testworld.GitRepoOptions{Private: true})
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module github.com/corp/secret\n"}))

	out, err := w.GoDirect(t, nil, "github.com/corp/secret@v1.0.0")
	if err == nil || strings.Contains(string(out), `"Sum"`) {
		t.Fatalf("downloaded a private module without credentials:\n%s", out)
	}
	t.Logf("without credentials: %s", out)
	reqs := w.GitRequests()
	if len(reqs) == 0 || slices.ContainsFunc(reqs, func(g testworld.GitRequest) bool { return g.Status != http.StatusUnauthorized }) {
		t.Errorf("anonymous requests not all refused with 401: %v", reqs)
	}

	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".netrc"), []byte(r.Netrc()), 0o600); err != nil {
		t.Fatal(err)
	}
	d := download(t, w, []string{"HOME=" + home}, "github.com/corp/secret@v1.0.0")
	if d.Version != "v1.0.0" {
		t.Errorf("downloaded %s@%s", d.Path, d.Version)
	}
}

// TestVanityAndOtherCodeHosts: a module path on VanityHost resolves by
// ?go-get=1 to a repository on github.com, and one on GitHostAlt to the
// host's own repository; the go command fetches both directly.
func TestVanityAndOtherCodeHosts(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)
	foo := w.NewGitRepo(t, testworld.GitHubHost, "o/foo", testworld.GitRepoOptions{})
	foo.Tag(t, "v1.0.0", foo.Commit(t, map[string]string{"go.mod": "module go.testworld.example/foo\n", "foo.go": "package foo\n"}))
	w.ServeGoImport(t, testworld.VanityHost, testworld.VanityHost+"/foo", foo.RemoteURL())

	lib := w.NewGitRepo(t, testworld.GitHostAlt, "team/lib", testworld.GitRepoOptions{})
	lib.Tag(t, "v0.1.0", lib.Commit(t, map[string]string{"go.mod": "module git.testworld.example/team/lib\n"}))

	c := w.HTTPClient()
	for _, tc := range []struct{ url, want string }{
		{"https://go.testworld.example/foo/pkg?go-get=1", `content="go.testworld.example/foo git https://github.com/o/foo"`},
		{"https://git.testworld.example/team/lib?go-get=1", `content="git.testworld.example/team/lib git https://git.testworld.example/team/lib"`},
		{"https://git.testworld.example/team/lib.git/info/refs?service=git-upload-pack", "refs/tags/v0.1.0"},
	} {
		if code, body := get(t, c, tc.url); code != http.StatusOK || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s = %d %q; want 200 with %q", tc.url, code, body, tc.want)
		}
	}
	for _, u := range []string{"https://go.testworld.example/bar?go-get=1", "https://git.testworld.example/team/other?go-get=1"} {
		if code, _ := get(t, c, u); code != http.StatusNotFound {
			t.Errorf("GET %s = %d; want 404", u, code)
		}
	}
	w.ResetGitRequests()

	download(t, w, nil, "go.testworld.example/foo@v1.0.0")
	download(t, w, nil, "git.testworld.example/team/lib@v0.1.0")
	var seen []string
	for _, g := range w.GitRequests() {
		seen = append(seen, g.Method+" "+g.Host+g.Path+"?"+g.Query)
	}
	for _, want := range []string{
		"GET go.testworld.example/foo?go-get=1",
		"POST github.com/o/foo/git-upload-pack?",
		"GET git.testworld.example/team/lib?go-get=1",
		"POST git.testworld.example/team/lib/git-upload-pack?",
	} {
		if !slices.Contains(seen, want) {
			t.Errorf("no request %q among %q", want, seen)
		}
	}
}

// TestDirectFetchWireSequence records what the go command sends for one
// GOPROXY=direct download of a tag, lightweight and annotated, and of a
// commit that no ref names, and holds its shape: protocol v2 throughout;
// for a tag, ls-refs, then one shallow fetch that wants the object the tag
// names (the commit, or the tag object); for a bare commit, full fetches
// without depth.
func TestDirectFetchWireSequence(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)
	r := w.NewGitRepo(t, testworld.GitHubHost, "o/wire", testworld.GitRepoOptions{})
	commit := r.Commit(t, map[string]string{"go.mod": "module github.com/o/wire\n"})
	r.Tag(t, "v1.0.0", commit)
	tagObject := r.TagAnnotated(t, "v1.1.0", commit)
	inner := r.Commit(t, map[string]string{"go.mod": "module github.com/o/wire\n", "w.go": "package wire\n"})
	r.Commit(t, map[string]string{"go.mod": "module github.com/o/wire\n", "w.go": "package wire // tip\n"})

	for _, tc := range []struct {
		query string
		want  string // the one object the shallow fetch wants; "" for a full fetch
	}{
		{"v1.0.0", commit},
		{"v1.1.0", tagObject},
		{inner, ""},
	} {
		w.ResetGitRequests()
		d := download(t, w, nil, "github.com/o/wire@"+tc.query)
		t.Logf("go mod download github.com/o/wire@%s (GOPROXY=direct) resolves %s; commit %s is tagged v1.0.0 and v1.1.0 (tag object %s):",
			tc.query, d.Version, commit, tagObject)
		var lsRefs, fetches [][]string
		for _, g := range w.GitRequests() {
			t.Log(g)
			if g.GitProtocol != "version=2" {
				t.Errorf("%s: not protocol v2", g)
			}
			lines := g.PktLines()
			switch {
			case g.Method == http.MethodGet && g.Path == "/o/wire/info/refs" && g.Query == "service=git-upload-pack":
			case g.Method == http.MethodPost && g.Path == "/o/wire/git-upload-pack" && slices.Contains(lines, "command=ls-refs"):
				lsRefs = append(lsRefs, lines)
			case g.Method == http.MethodPost && g.Path == "/o/wire/git-upload-pack" && slices.Contains(lines, "command=fetch"):
				fetches = append(fetches, lines)
			default:
				t.Errorf("unexpected request %s", g)
			}
		}
		if len(lsRefs) == 0 || len(fetches) == 0 {
			t.Fatalf("%d ls-refs and %d fetch commands; want some of each", len(lsRefs), len(fetches))
		}
		if tc.want == "" {
			if slices.ContainsFunc(fetches, func(l []string) bool { return slices.Contains(l, "deepen 1") }) {
				t.Errorf("a fetch of a commit no ref names is shallow: %q", fetches)
			}
			continue
		}
		if len(fetches) != 1 || !slices.Contains(fetches[0], "want "+tc.want) || !slices.Contains(fetches[0], "deepen 1") {
			t.Errorf("fetches %q; want one that wants %s with depth 1", fetches, tc.want)
		}
		if !slices.ContainsFunc(lsRefs, func(l []string) bool { return slices.Contains(l, "ref-prefix refs/tags/"+tc.query) }) {
			t.Errorf("no ls-refs for refs/tags/%s in %q", tc.query, lsRefs)
		}
	}
}

// TestConnectProxyIsBlindAndBounded: the proxy tunnels to the world's
// hosts on 443 only, and refuses other targets and methods.
func TestConnectProxyIsBlindAndBounded(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)
	proxyURL, err := url.Parse(w.ConnectProxyURL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	tr.TLSClientConfig = w.HTTPClient().Transport.(*http.Transport).TLSClientConfig
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	if code, body := get(t, c, "https://"+config.PublicProxyHost+"/"+testworld.GoodPath+"/@v/list"); code != http.StatusOK || !bytes.Contains(body, []byte(testworld.Version)) {
		t.Errorf("through the proxy: %d %q", code, body)
	}
	for _, u := range []string{"https://example.org/", "https://github.com:8443/"} {
		if _, err := c.Get(u); err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Errorf("GET %s through the proxy: %v; want Forbidden", u, err)
		}
	}
	resp, err := http.Get(w.ConnectProxyURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET on the proxy: %d; want 405", resp.StatusCode)
	}
}
