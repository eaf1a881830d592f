package gateway_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/otlptest"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/vcs"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// goDirect runs the real go command, `go mod download -json mod`, in direct
// mode through the gateway (GOPROXY=direct unless env says otherwise,
// GOSUMDB=off: only sumgate checks), and returns the module it reports (or
// its error) and the whole output.
func (e *env) goDirect(t testing.TB, env []string, mod string) (testworld.Download, string) {
	t.Helper()
	out, _ := testworld.GoModDownload(t, append(e.directEnv(), env...), mod)
	ds, err := testworld.ParseDownloads(out)
	if err != nil || len(ds) != 1 {
		t.Fatalf("go mod download %s: %v\n%s", mod, err, out)
	}
	return ds[0], string(out)
}

// TestDirectGitIsVerified holds threat 20 with the real go command and
// real git: in direct mode, under the default vcs: verify, a tagged
// version passes only if the module sumgate builds from the tag's commit
// is the checksum database's record, whatever the module's shape; a moved
// tag is refused, and the go command prints why. The hashes logged come
// from the go command fetching straight from the code host
// (testworld.LogGit), never from sumgate's code.
func TestDirectGitIsVerified(t *testing.T) {
	const owner = testworld.GitHubHost + "/owner/"
	for _, tt := range []struct {
		name    string
		repo    string                                       // owner/name on github.com
		files   map[string]string                            // the tagged commit
		tag     string                                       // its tag
		mod     string                                       // module@version the client asks for
		tamper  func(*testing.T, *testworld.GitRepo, string) // after logging: change what the tag names
		wantErr []string                                     // none: verified, with the logged Sum
	}{
		{name: "a tag that matches the database", repo: "owner/plain", tag: "v1.0.0", mod: owner + "plain@v1.0.0",
			files: map[string]string{"go.mod": "module github.com/owner/plain\n", "a.go": "package a\n"}},
		{name: "an annotated tag", repo: "owner/annotated", tag: "annotated:v1.1.0", mod: owner + "annotated@v1.1.0",
			files: map[string]string{"go.mod": "module github.com/owner/annotated\n", "a.go": "package a\n"}},
		{name: "a module in a subdirectory, with the root's LICENSE", repo: "owner/mono", tag: "sub/v1.2.3", mod: owner + "mono/sub@v1.2.3",
			files: map[string]string{"go.mod": "module github.com/owner/mono\n", "LICENSE": "MIT\n",
				"sub/go.mod": "module github.com/owner/mono/sub\n", "sub/s.go": "package sub\n"}},
		{name: "a major version in go.mod", repo: "owner/major", tag: "v2.0.0", mod: owner + "major/v2@v2.0.0",
			files: map[string]string{"go.mod": "module github.com/owner/major/v2\n", "a.go": "package a\n"}},
		{name: "a major version subdirectory", repo: "owner/majordir", tag: "v3.1.0", mod: owner + "majordir/v3@v3.1.0",
			files: map[string]string{"go.mod": "module github.com/owner/majordir\n", "v3/go.mod": "module github.com/owner/majordir/v3\n", "v3/a.go": "package a\n"}},
		{name: "+incompatible", repo: "owner/legacy", tag: "v2.0.0", mod: owner + "legacy@v2.0.0+incompatible",
			files: map[string]string{"a.go": "package a\n"}},
		{name: "export-subst and export-ignore, which the go command neutralises", repo: "owner/attrs", tag: "v1.0.0", mod: owner + "attrs@v1.0.0",
			files: map[string]string{"go.mod": "module github.com/owner/attrs\n", ".gitattributes": "version.go export-subst\nignored.txt export-ignore\n",
				"version.go": "package attrs\n\nconst Commit = \"$Format:%H$\"\n", "ignored.txt": "still in the module\n"}},
		{name: "a moved tag", repo: "owner/moved", tag: "v1.0.0", mod: owner + "moved@v1.0.0",
			files: map[string]string{"go.mod": "module github.com/owner/moved\n", "a.go": "package a\n"},
			tamper: func(t *testing.T, r *testworld.GitRepo, tag string) {
				r.Tag(t, tag, r.Commit(t, map[string]string{"go.mod": "module github.com/owner/moved\n", "a.go": "package a\n\nfunc init() { steal() }\n"}))
			},
			wantErr: []string{"remote error: sumgate: blocked github.com/owner/moved@v1.0.0 (tag v1.0.0, commit ", vcs.MovedTag, "the repository has h1:", "sum.golang.org has h1:"}},
		{name: "a moved annotated tag", repo: "owner/movedann", tag: "annotated:v1.0.0", mod: owner + "movedann@v1.0.0",
			files: map[string]string{"go.mod": "module github.com/owner/movedann\n", "a.go": "package a\n"},
			tamper: func(t *testing.T, r *testworld.GitRepo, tag string) {
				r.TagAnnotated(t, tag, r.Commit(t, map[string]string{"go.mod": "module github.com/owner/movedann\n", "b.go": "package a\n"}))
			},
			wantErr: []string{"remote error: sumgate: blocked github.com/owner/movedann@v1.0.0", vcs.MovedTag}},
		{name: "a subdirectory module whose tag moved", repo: "owner/monomoved", tag: "sub/v1.0.0", mod: owner + "monomoved/sub@v1.0.0",
			files: map[string]string{"go.mod": "module github.com/owner/monomoved\n", "sub/go.mod": "module github.com/owner/monomoved/sub\n"},
			tamper: func(t *testing.T, r *testworld.GitRepo, tag string) {
				r.Tag(t, tag, r.Commit(t, map[string]string{"go.mod": "module github.com/owner/monomoved\n", "sub/go.mod": "module github.com/owner/monomoved/sub\n", "sub/x.go": "package sub\n"}))
			},
			wantErr: []string{"blocked github.com/owner/monomoved/sub@v1.0.0 (tag sub/v1.0.0", vcs.MovedTag}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, nil)
			r := e.w.NewGitRepo(t, testworld.GitHubHost, tt.repo, testworld.GitRepoOptions{})
			commit := r.Commit(t, tt.files)
			tag, annotated := strings.CutPrefix(tt.tag, "annotated:")
			if annotated {
				r.TagAnnotated(t, tag, commit)
			} else {
				r.Tag(t, tag, commit)
			}
			path, version, _ := strings.Cut(tt.mod, "@")
			sum, _ := e.w.LogGit(t, path, version)
			if tt.tamper != nil {
				tt.tamper(t, r, tag)
			}
			d, out := e.goDirect(t, nil, tt.mod)
			if len(tt.wantErr) == 0 {
				if d.Error != "" || d.Sum != sum {
					t.Fatalf("a verified tag did not pass: Sum %q, want %q\n%s", d.Sum, sum, out)
				}
				return
			}
			if d.Sum != "" {
				t.Fatalf("a tag whose revision differs from the database's record was delivered:\n%s", out)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(out, want) {
					t.Errorf("the go command's output does not say %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestDirectGitUnverifiableFollowsOnUnverified: fetches sumgate cannot map
// to one verified version, a pseudo-version and a tag the database does
// not know, are refused by default and pass under on_unverified: allow;
// a moved tag is refused under both, even on the go command's fallback to
// fetching every branch and tag.
func TestDirectGitUnverifiableFollowsOnUnverified(t *testing.T) {
	for _, policy := range []gateway.UnverifiedPolicy{gateway.UnverifiedBlock, gateway.UnverifiedAllow} {
		t.Run(string(policy), func(t *testing.T) {
			t.Parallel()
			e := start(t, func(c *gateway.Config) { c.OnUnverified = policy })
			r := e.w.NewGitRepo(t, testworld.GitHubHost, "owner/repo", testworld.GitRepoOptions{})
			first := r.Commit(t, map[string]string{"go.mod": "module github.com/owner/repo\n"})
			r.Tag(t, "v1.0.0", first)
			e.w.LogGit(t, "github.com/owner/repo", "v1.0.0")
			r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module github.com/owner/repo\n", "evil.go": "package repo\n"}))
			r.Tag(t, "v1.1.0", r.Commit(t, map[string]string{"go.mod": "module github.com/owner/repo\n", "new.go": "package repo\n"}))

			for _, tc := range []struct {
				mod, blocked string
				moved        bool
			}{
				{mod: "github.com/owner/repo@" + first[:12], blocked: "the fetch asks for history"},
				{mod: "github.com/owner/repo@v1.1.0", blocked: "not in the checksum database"},
				{mod: "github.com/owner/repo@v1.0.0", blocked: vcs.MovedTag, moved: true},
			} {
				d, out := e.goDirect(t, nil, tc.mod)
				passed := d.Sum != ""
				if wantPass := policy == gateway.UnverifiedAllow && !tc.moved; passed != wantPass {
					t.Errorf("%s under on_unverified: %s: delivered %v, want %v\n%s", tc.mod, policy, passed, wantPass, out)
				}
				if !passed && !strings.Contains(out, tc.blocked) {
					t.Errorf("%s: the go command's output does not say %q:\n%s", tc.mod, tc.blocked, out)
				}
			}
			// After the refused depth-1 fetch, the go command fetched every
			// branch and tag: that was refused too, with the first reason.
			d, out := e.goDirect(t, nil, "github.com/owner/repo@v1.0.0")
			if d.Sum != "" || !strings.Contains(out, vcs.MovedTag) {
				t.Errorf("a second download of the moved tag: %s", out)
			}
		})
	}
}

// TestPrivateRepositoryIsNeverLookedUp: a repository sumgate cannot read
// anonymously is private-unknown: refused by default, with the advice to
// set private, and its path never goes to the checksum database; once it
// is private, the client's own credentials fetch it unchecked.
func TestPrivateRepositoryIsNeverLookedUp(t *testing.T) {
	e := start(t, nil) // private: testworld's pattern and github.com/corp
	secret := e.w.NewGitRepo(t, testworld.GitHubHost, "acme/secret", testworld.GitRepoOptions{Private: true})
	secret.Tag(t, "v1.0.0", secret.Commit(t, map[string]string{"go.mod": "module github.com/acme/secret\n"}))
	corp := e.w.NewGitRepo(t, testworld.GitHubHost, "corp/internal", testworld.GitRepoOptions{Private: true})
	corp.Tag(t, "v1.0.0", corp.Commit(t, map[string]string{"go.mod": "module github.com/corp/internal\n"}))
	// git and the go command read the client's credentials from HOME.
	netrc := func(r *testworld.GitRepo) []string {
		home := t.TempDir()
		if err := os.WriteFile(filepath.Join(home, ".netrc"), []byte(r.Netrc()), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"HOME=" + home}
	}

	d, out := e.goDirect(t, netrc(secret), "github.com/acme/secret@v1.0.0")
	if d.Sum != "" || !strings.Contains(out, "cannot read https://github.com/acme/secret") || !strings.Contains(out, "private key") {
		t.Errorf("a repository sumgate cannot read anonymously:\n%s", out)
	}
	lookups := e.w.Requests(config.SumDBName, "/lookup/github.com/acme")
	for _, m := range append([]string{e.w.ProxyURL}, e.w.MirrorURLs...) {
		host, prefix, _ := strings.Cut(strings.TrimPrefix(m, "https://"), "/")
		if prefix != "" {
			prefix = "/" + prefix
		}
		lookups += e.w.Requests(host, prefix+"/sumdb/"+config.SumDBName+"/lookup/github.com/acme")
	}
	if lookups != 0 {
		t.Errorf("a private repository's path was sent to the checksum database %d times", lookups)
	}
	if d, out := e.goDirect(t, netrc(corp), "github.com/corp/internal@v1.0.0"); d.Sum == "" {
		t.Errorf("a private module (private: github.com/corp) was refused:\n%s", out)
	}
}

// TestProxyThenDirectAfterABlock: GOPROXY="<proxy>|direct" falls back to
// git on any error, a 403 included. A tampered zip blocked at the proxy
// is then fetched over git: verified and delivered if the repository is
// the database's record, refused if the tag moved too. Nothing
// unverified is delivered either way.
func TestProxyThenDirectAfterABlock(t *testing.T) {
	e := start(t, nil)
	for _, moved := range []bool{false, true} {
		name := "owner/genuine"
		if moved {
			name = "owner/alsomoved"
		}
		r := e.w.NewGitRepo(t, testworld.GitHubHost, name, testworld.GitRepoOptions{})
		modPath := testworld.GitHubHost + "/" + name
		r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}))
		sum, _ := e.w.LogGit(t, modPath, "v1.0.0")
		if moved {
			r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a // moved\n"}))
		}
		// The proxy has the version, but serves a tampered zip.
		e.w.Override(t, config.PublicProxyHost, "/"+modPath+"/@v/", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			switch {
			case strings.HasSuffix(req.URL.Path, ".info"):
				w.Write([]byte(`{"Version":"v1.0.0"}`))
			case strings.HasSuffix(req.URL.Path, ".mod"):
				w.Write([]byte("module " + modPath + "\n"))
			default:
				w.Write(zipOf(t, module.Version{Path: modPath, Version: "v1.0.0"}, "go.mod", "module "+modPath+"\n", "a.go", "package a; func init() { steal() }\n"))
			}
		}))
		d, out := e.goDirect(t, []string{"GOPROXY=" + e.w.ProxyURL + "|direct"}, modPath+"@v1.0.0")
		if e.w.Requests(config.PublicProxyHost, "/"+modPath+"/@v/v1.0.0.zip") == 0 || e.w.Requests(testworld.GitHubHost, "/"+name+"/git-upload-pack") == 0 {
			t.Errorf("%s: the go command did not try the proxy's zip, then git", name)
		}
		switch {
		case !moved && (d.Sum != sum):
			t.Errorf("%s: the fallback to git did not deliver the verified module (Sum %q, want %q):\n%s", name, d.Sum, sum, out)
		case moved && (d.Sum != "" || !strings.Contains(out, vcs.MovedTag)):
			t.Errorf("%s: after the proxy's tampered zip, a moved tag:\n%s", name, out)
		}
	}
}

// zipOf is the module zip of m holding files (name, content, ...).
func zipOf(t testing.TB, m module.Version, files ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i+1 < len(files); i += 2 {
		if err := os.WriteFile(filepath.Join(dir, files[i]), []byte(files[i+1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if err := modzip.CreateFromDir(&b, m, dir); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestVanityImportIsVerifiedUnderItsOwnPath: go-get discovery through an
// intercepted host teaches sumgate the vanity path a repository serves, so
// a tag the checksum database knows only under that path is verified (and
// a moved one refused) although the git traffic names only the code host.
func TestVanityImportIsVerifiedUnderItsOwnPath(t *testing.T) {
	e := start(t, nil)
	r := e.w.NewGitRepo(t, testworld.GitHubHost, "owner/foo", testworld.GitRepoOptions{})
	const modPath = testworld.VanityHost + "/foo"
	e.w.ServeGoImport(t, testworld.VanityHost, modPath, r.RemoteURL())
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n"}))
	r.Tag(t, "v1.1.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package foo\n"}))
	sum, _ := e.w.LogGit(t, modPath, "v1.0.0")
	e.w.LogGit(t, modPath, "v1.1.0")
	r.Tag(t, "v1.1.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package foo // moved\n"}))

	if d, out := e.goDirect(t, nil, modPath+"@v1.0.0"); d.Sum != sum {
		t.Errorf("a vanity module's tag that matches the database: Sum %q, want %q\n%s", d.Sum, sum, out)
	}
	if d, out := e.goDirect(t, nil, modPath+"@v1.1.0"); d.Sum != "" || !strings.Contains(out, "blocked "+modPath+"@v1.1.0") {
		t.Errorf("a vanity module's moved tag:\n%s", out)
	}
}

// TestGitRefusalIsAnAuditSpan: a refused git fetch is an error server
// span, like a blocked zip, naming the module, version, tag, commit and
// both hashes; a verified one records its verdict.
func TestGitRefusalIsAnAuditSpan(t *testing.T) {
	tr := startOTLP(t, "http", 0, nil)
	r := tr.w.NewGitRepo(t, testworld.GitHubHost, "owner/audited", testworld.GitRepoOptions{})
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module github.com/owner/audited\n"}))
	r.Tag(t, "v1.1.0", r.Commit(t, map[string]string{"go.mod": "module github.com/owner/audited\n", "a.go": "package audited\n"}))
	tr.w.LogGit(t, "github.com/owner/audited", "v1.0.0")
	wantZip, _ := tr.w.LogGit(t, "github.com/owner/audited", "v1.1.0")
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module github.com/owner/audited\n", "evil.go": "package audited\n"}))
	if d, out := tr.goDirect(t, nil, "github.com/owner/audited@v1.1.0"); d.Sum != wantZip {
		t.Fatalf("a verified tag: %s", out)
	}
	if d, out := tr.goDirect(t, nil, "github.com/owner/audited@v1.0.0"); d.Sum != "" {
		t.Fatalf("a moved tag was delivered: %s", out)
	}
	spans := otlptest.Servers(tr.flush(t))
	refused := otlptest.Find(spans, func(s otlptest.Span) bool {
		return s.Str("sumgate.rule") == "vcs: verify" && s.Str("sumgate.decision") == "deny" && s.Str("sumgate.vcs.tag") == "v1.0.0"
	})
	if refused == nil {
		t.Fatal("no deny span for the moved tag")
	}
	for k, v := range map[string]string{"sumgate.module.path": "github.com/owner/audited", "sumgate.module.version": "v1.0.0",
		"sumgate.verdict": "mismatch", "sumgate.vcs.module": "github.com/owner/audited"} {
		if got := refused.Str(k); got != v {
			t.Errorf("refusal span: %s = %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(refused.Str("sumgate.hash.got"), "h1:") || !strings.HasPrefix(refused.Str("sumgate.hash.want"), "h1:") ||
		refused.Str("sumgate.hash.got") == refused.Str("sumgate.hash.want") || len(refused.Str("sumgate.vcs.commit")) != 40 ||
		!strings.Contains(refused.Str("sumgate.reason"), vcs.MovedTag) || refused.StatusCode != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("refusal span lacks the hashes, commit, reason or error status: %+v", refused.Attrs)
	}
	verified := otlptest.Find(spans, func(s otlptest.Span) bool {
		return s.Str("sumgate.rule") == "vcs: verify" && s.Str("sumgate.vcs.tag") == "v1.1.0"
	})
	if verified == nil || verified.Str("sumgate.verdict") != "verified" || verified.Str("sumgate.hash.got") != wantZip {
		t.Errorf("no verified span for the good tag: %+v", verified)
	}
}

// TestCompanyGitHostIsVerified: on a code host the go command knows
// nothing about, it finds the repository by ?go-get=1 discovery on the
// host itself, then fetches over git; the tag is verified as on GitHub,
// and a moved one refused.
func TestCompanyGitHostIsVerified(t *testing.T) {
	e := start(t, nil)
	r := e.w.NewGitRepo(t, testworld.GitHostAlt, "team/lib", testworld.GitRepoOptions{})
	const modPath = testworld.GitHostAlt + "/team/lib"
	r.Tag(t, "v1.0.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n"}))
	r.Tag(t, "v1.1.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package lib\n"}))
	sum, _ := e.w.LogGit(t, modPath, "v1.0.0")
	e.w.LogGit(t, modPath, "v1.1.0")
	r.Tag(t, "v1.1.0", r.Commit(t, map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package lib // moved\n"}))
	if d, out := e.goDirect(t, nil, modPath+"@v1.0.0"); d.Sum != sum {
		t.Errorf("a tag that matches the database: Sum %q, want %q\n%s", d.Sum, sum, out)
	}
	if d, out := e.goDirect(t, nil, modPath+"@v1.1.0"); d.Sum != "" || !strings.Contains(out, vcs.MovedTag) {
		t.Errorf("a moved tag:\n%s", out)
	}
}
