package gateway_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/testworld"
	"golang.org/x/mod/module"
)

// hostileGit is a code host that answers each smart-HTTP request from one
// of several bare repositories, chosen by route, and may rewrite the
// request body after sumgate has let it through.
type hostileGit struct {
	fixOrder bool // answer sections in gitprotocol-v2 order (git 2.39's upload-pack sends wanted-refs before shallow-info)
	t        testing.TB
	root     string
	mu       sync.Mutex
	route    func(req *http.Request, body []byte) (repo string, newBody []byte)
}

func gitCmd(t testing.TB, dir string, env []string, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=x", "GIT_AUTHOR_EMAIL=x@x", "GIT_COMMITTER_NAME=x", "GIT_COMMITTER_EMAIL=x@x",
		"GIT_AUTHOR_DATE=2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2024-01-01T00:00:00Z"}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func newHostile(t testing.TB, names ...string) *hostileGit {
	h := &hostileGit{t: t, root: t.TempDir()}
	for _, n := range names {
		gitCmd(t, h.root, nil, "", "init", "-q", "--bare", n+".git")
		for _, kv := range [][2]string{{"uploadpack.allowAnySHA1InWant", "true"}} {
			gitCmd(t, filepath.Join(h.root, n+".git"), nil, "", "config", kv[0], kv[1])
		}
	}
	return h
}

// rootCommit makes a parentless commit of files in repo.
func (h *hostileGit) rootCommit(repo string, files map[string]string, msg string) string {
	t := h.t
	bare := filepath.Join(h.root, repo+".git")
	wt := t.TempDir()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(wt, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(files[n]), 0o644)
	}
	env := []string{"GIT_DIR=" + bare, "GIT_WORK_TREE=" + wt, "GIT_INDEX_FILE=" + filepath.Join(wt, ".idx")}
	gitCmd(t, wt, env, "", "add", "-A", ".")
	tree := gitCmd(t, wt, env, "", "write-tree")
	return gitCmd(t, wt, env, "", "commit-tree", tree, "-m", msg)
}

func (h *hostileGit) tag(repo, name, oid string) {
	gitCmd(h.t, filepath.Join(h.root, repo+".git"), nil, "", "tag", "-f", name, oid)
}

// copyObjects makes every object of from available in to (alternates).
func (h *hostileGit) share(to, from string) {
	p := filepath.Join(h.root, to+".git", "objects", "info", "alternates")
	os.WriteFile(p, []byte(filepath.Join(h.root, from+".git", "objects")+"\n"), 0o644)
}

// setRoute sets how requests are routed, from now on.
func (h *hostileGit) setRoute(f func(req *http.Request, body []byte) (string, []byte)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.route = f
}

func (h *hostileGit) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	i := strings.Index(req.URL.Path, ".git/")
	rest := ""
	if i < 0 {
		// /owner/name/<rest>
		parts := strings.SplitN(strings.TrimPrefix(req.URL.Path, "/"), "/", 3)
		if len(parts) == 3 {
			rest = parts[2]
		}
	} else {
		rest = req.URL.Path[i+5:]
	}
	h.mu.Lock()
	route := h.route
	h.mu.Unlock()
	repo, nb := route(req, body)
	h.t.Logf("HOST %s %s ua=%q body=%q", req.Method, req.URL, req.UserAgent(), nb)
	env := []string{"GIT_PROJECT_ROOT=" + h.root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME=" + h.root}
	if v := req.Header.Get("Git-Protocol"); v != "" {
		env = append(env, "GIT_PROTOCOL="+v)
	}
	r2 := req.Clone(req.Context())
	r2.URL.Path = "/" + repo + ".git/" + rest
	r2.URL.RawPath = ""
	r2.Body = io.NopCloser(bytes.NewReader(nb))
	r2.ContentLength = int64(len(nb))
	r2.Header.Del("Content-Encoding")
	r2.Header.Set("Content-Length", fmt.Sprint(len(nb)))
	if !h.fixOrder {
		(&cgi.Handler{Path: mustGit(), Args: []string{"http-backend"}, Env: env, Dir: h.root}).ServeHTTP(rw, r2)
		return
	}
	rec := httptest.NewRecorder()
	(&cgi.Handler{Path: mustGit(), Args: []string{"http-backend"}, Env: env, Dir: h.root}).ServeHTTP(rec, r2)
	out := rec.Body.Bytes()
	if bytes.HasPrefix(out[4:], []byte("wanted-refs\n")) {
		// split into sections at delimiters
		var secs [][]byte
		start, p := 0, 0
		for p+4 <= len(out) {
			var n int
			fmt.Sscanf(string(out[p:p+4]), "%04x", &n)
			if n == 1 {
				secs = append(secs, out[start:p+4])
				p += 4
				start = p
				if len(secs) == 2 {
					break
				}
				continue
			}
			if n < 4 {
				p += 4
				continue
			}
			p += n
		}
		if len(secs) == 2 && bytes.HasPrefix(secs[1][4:], []byte("shallow-info")) {
			out = append(append(append([]byte{}, secs[1]...), secs[0]...), out[start:]...)
		}
	}
	for k, v := range rec.Header() {
		rw.Header()[k] = v
	}
	rw.Header().Del("Content-Length")
	rw.WriteHeader(rec.Code)
	rw.Write(out)
}

func mustGit() string { p, _ := exec.LookPath("git"); return p }

func isSumgate(req *http.Request) bool { return strings.Contains(req.UserAgent(), "sumgate") }

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// TestStuffedPackIsNeverServed holds threat 20 against pack stuffing: a
// host that adds an unverified commit to its answer to a verified fetch
// would plant it in the client's repository cache, where the go command
// later takes a version from with no fetch at all. A verified fetch is
// answered from sumgate's copy of the verified objects, never the host's.
func TestStuffedPackIsNeverServed(t *testing.T) {
	e := start(t, nil)
	const modPath = testworld.GitHubHost + "/owner/stuffed"
	h := newHostile(t, "a")
	good := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}, "v1.0.0")
	evil := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n\nfunc init() { steal() }\n"}, "v1.0.1")
	h.tag("a", "v1.0.0", good)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) {
		if !isSumgate(req) && bytes.Contains(body, []byte("want "+good)) && !bytes.Contains(body, []byte(evil)) {
			// after sumgate: also want the unverified commit
			body = bytes.Replace(body, []byte(pkt("want "+good+"\n")), []byte(pkt("want "+good+"\n")+pkt("want "+evil+"\n")), 1)
		}
		return "a", body
	})
	e.w.Override(t, testworld.GitHubHost, "/owner/stuffed", h)
	sum, _ := e.w.LogGit(t, modPath, "v1.0.0")
	e.w.Log(module.Version{Path: modPath, Version: "v1.0.1"}, "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")

	shared := []string{"GOMODCACHE=" + filepath.Join(t.TempDir(), "modcache")}
	if d, out := e.goDirect(t, shared, modPath+"@v1.0.0"); d.Sum != sum {
		t.Fatalf("v1.0.0: %s", out)
	}
	h.tag("a", "v1.0.1", evil) // published after the stuffing
	d, out := e.goDirect(t, shared, modPath+"@v1.0.1")
	if d.Sum != "" {
		t.Errorf("BYPASS: v1.0.1 (never verified, database has another hash) delivered with Sum %s\n%s", d.Sum, out)
	}
}

// TestTagsShownToClientsAreRead: a host that lists v1.0.0 -> X to clients
// but only sub/v1.0.0 -> X to sumgate (X's sub/ is the database's
// .../sub@v1.0.0, its root is not .../@v1.0.0) is caught: the tags the
// host showed clients are read as versions of X too.
func TestTagsShownToClientsAreRead(t *testing.T) {
	e := start(t, nil)
	const modPath = testworld.GitHubHost + "/owner/tailored"
	h := newHostile(t, "a", "s")
	h.share("s", "a")
	good := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}, "good")
	x := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n\nfunc init() { steal() }\n",
		"sub/go.mod": "module " + modPath + "/sub\n", "sub/s.go": "package sub\n"}, "x")
	h.tag("a", "v1.0.0", good)
	h.tag("a", "sub/v1.0.0", x)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) { return "a", body })
	e.w.Override(t, testworld.GitHubHost, "/owner/tailored", h)
	sum, _ := e.w.LogGit(t, modPath, "v1.0.0")
	e.w.LogGit(t, modPath+"/sub", "v1.0.0")

	// Now: clients see v1.0.0 -> x; sumgate sees only sub/v1.0.0 -> x.
	h.tag("a", "v1.0.0", x)
	h.tag("s", "sub/v1.0.0", x)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) {
		if isSumgate(req) {
			return "s", body
		}
		return "a", body
	})
	e.noOtherThan(t, modPath+"@v1.0.0", sum)
}

// TestWantRefIsAnsweredFromTheVerifiedCopy: a host that advertises
// ref-in-want, so that git asks for a tag by name, cannot answer with
// another object in wanted-refs: sumgate answers from its verified copy.
func TestWantRefIsAnsweredFromTheVerifiedCopy(t *testing.T) {
	e := start(t, nil)
	const modPath = testworld.GitHubHost + "/owner/wantref"
	h := newHostile(t, "a", "b")
	h.fixOrder = true
	for _, r := range []string{"a", "b"} {
		gitCmd(t, filepath.Join(h.root, r+".git"), nil, "", "config", "uploadpack.allowRefInWant", "true")
	}
	h.share("b", "a")
	good := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}, "good")
	evil := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n\nfunc init() { steal() }\n"}, "evil")
	h.tag("a", "v1.0.0", good)
	h.tag("b", "v1.0.0", evil)
	var sawWantRef bool
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) { return "a", body })
	e.w.Override(t, testworld.GitHubHost, "/owner/wantref", h)
	sum, _ := e.w.LogGit(t, modPath, "v1.0.0")
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) {
		if !isSumgate(req) {
			sawWantRef = sawWantRef || bytes.Contains(body, []byte("want-ref "))
			return "b", body
		}
		return "a", body
	})
	{
		dir := t.TempDir()
		gitCmd(t, dir, nil, "", "init", "-q", "--bare", "c.git")
		cmd := exec.Command("git", "-C", dir+"/c.git", "-c", "protocol.version=2", "fetch", "-f", "--depth=1", "https://github.com/owner/wantref", "refs/tags/v1.0.0:refs/tags/v1.0.0")
		cmd.Env = append(e.directEnv(), "HOME="+dir, "PATH=/usr/bin:/bin", "GIT_TRACE_PACKET=1")
		out, err := cmd.CombinedOutput()
		t.Logf("git fetch: %v\n%s", err, out)
	}
	d, out := e.goDirect(t, nil, modPath+"@v1.0.0")
	t.Logf("client sent want-ref: %v\n%s", sawWantRef, out)
	if d.Sum != "" && d.Sum != sum {
		t.Errorf("BYPASS: v1.0.0 delivered with Sum %s, database has %s\n%s", d.Sum, sum, out)
	}
}

// TestLyingPeelIsCaught: a host whose ls-refs says an annotated tag peels
// to a good commit while the tag object names another is caught: sumgate
// peels the objects it fetched itself.
func TestLyingPeelIsCaught(t *testing.T) {
	e := start(t, nil)
	const modPath = testworld.GitHubHost + "/owner/peel"
	h := newHostile(t, "a")
	good := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}, "good")
	evil := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n\nfunc init() { steal() }\n"}, "evil")
	h.tag("a", "v1.0.0", good)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) { return "a", body })
	e.w.Override(t, testworld.GitHubHost, "/owner/peel", h)
	sum, _ := e.w.LogGit(t, modPath, "v1.0.0")

	// v1.0.0 is now an annotated tag of evil
	bare := filepath.Join(h.root, "a.git")
	gitCmd(t, bare, nil, "", "tag", "-f", "-a", "-m", "v1.0.0", "v1.0.0", evil)
	tagObj := gitCmd(t, bare, nil, "", "rev-parse", "refs/tags/v1.0.0")
	lsRefs := pkt(tagObj+" refs/tags/v1.0.0 peeled:"+good+"\n") + "0000"
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) {
		if isSumgate(req) && bytes.Contains(body, []byte("want "+tagObj)) {
			body = bytes.Replace(body, []byte(pkt("want "+tagObj+"\n")), []byte(pkt("want "+tagObj+"\n")+pkt("want "+good+"\n")), 1)
		}
		return "a", body
	})
	lie := http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		// The lie is told to clients too, so that only peeling the
		// fetched objects, not comparing views, can catch it.
		if bytes.Contains(body, []byte("command=ls-refs")) {
			rw.Header().Set("Content-Type", "application/x-git-upload-pack-result")
			io.WriteString(rw, lsRefs)
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(rw, req)
	})
	e.w.Override(t, testworld.GitHubHost, "/owner/peel/", lie)
	e.noOtherThan(t, modPath+"@v1.0.0", sum)
}

// TestFailedVerificationIsNotPassedOnFallback: under on_unverified:
// allow, a host that fails sumgate's own fetch of a moved tag does not get
// it through the go command's fallback fetch of every branch and tag: a
// failed verification is remembered and refused whatever the policy.
func TestFailedVerificationIsNotPassedOnFallback(t *testing.T) {
	e := start(t, func(c *gateway.Config) { c.OnUnverified = gateway.UnverifiedAllow })
	h, modPath, sum := movedTag(t, e, "fallback")
	e.w.Override(t, testworld.GitHubHost, "/owner/fallback/", http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if isSumgate(req) && bytes.Contains(body, []byte("command=fetch")) {
			http.Error(rw, "busy", http.StatusServiceUnavailable)
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(rw, req)
	}))
	d, out := e.goDirect(t, nil, modPath+"@v1.0.0")
	if d.Sum != "" && d.Sum != sum {
		t.Errorf("BYPASS (on_unverified: allow): moved v1.0.0 delivered with Sum %s, database has %s\n%s", d.Sum, sum, out)
	}
}

// movedTag serves a hostile repository owner/<name> on github.com whose
// v1.0.0 the database logged at one commit and which was then moved to
// another, with evil code. It returns the host, the module path and the
// logged hash.
func movedTag(t *testing.T, e *env, name string) (h *hostileGit, modPath, sum string) {
	t.Helper()
	modPath = testworld.GitHubHost + "/owner/" + name
	h = newHostile(t, "a")
	good := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}, "good")
	evil := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n\nfunc init() { steal() }\n"}, "evil")
	h.tag("a", "v1.0.0", good)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) { return "a", body })
	e.w.Override(t, testworld.GitHubHost, "/owner/"+name, h)
	sum, _ = e.w.LogGit(t, modPath, "v1.0.0")
	h.tag("a", "v1.0.0", evil)
	return h, modPath, sum
}

// noOtherThan fails t if the go command, fetching mod directly through
// the gateway, is delivered anything but the database's sum.
func (e *env) noOtherThan(t *testing.T, mod, sum string) {
	t.Helper()
	if d, out := e.goDirect(t, nil, mod); d.Sum != "" && d.Sum != sum {
		t.Errorf("bypass: %s delivered with Sum %s, the database has %s\n%s", mod, d.Sum, sum, out)
	}
}
