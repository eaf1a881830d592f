package gateway_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"

	"github.com/sumgate/sumgate/internal/testworld"
)

// tailored sets up TestTagsShownToClientsAreRead's world: the database
// knows modPath@v1.0.0 (good) and modPath/sub@v1.0.0 (x, whose root is
// evil); then the host shows clients v1.0.0 -> x from repo "a" and shows
// sumgate only sub/v1.0.0 -> x (repo "s"). client wraps how the host
// answers clients.
func tailored(t *testing.T, name string, client func(h *hostileGit) http.Handler) (e *env, modPath, sum string) {
	e = start(t, nil)
	modPath = testworld.GitHubHost + "/owner/" + name
	h := newHostile(t, "a", "s")
	h.share("s", "a")
	good := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}, "good")
	x := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n\nfunc init() { steal() }\n",
		"sub/go.mod": "module " + modPath + "/sub\n", "sub/s.go": "package sub\n"}, "x")
	h.tag("a", "v1.0.0", good)
	h.tag("a", "sub/v1.0.0", x)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) { return "a", body })
	e.w.Override(t, testworld.GitHubHost, "/owner/"+name, h)
	sum, _ = e.w.LogGit(t, modPath, "v1.0.0")
	e.w.LogGit(t, modPath+"/sub", "v1.0.0")

	h.tag("a", "v1.0.0", x)
	h.tag("s", "sub/v1.0.0", x)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) {
		if isSumgate(req) {
			return "s", body
		}
		return "a", body
	})
	ch := client(h)
	e.w.Override(t, testworld.GitHubHost, "/owner/"+name+"/", http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if isSumgate(req) {
			h.ServeHTTP(rw, req)
			return
		}
		ch.ServeHTTP(rw, req)
	}))
	return e, modPath, sum
}

// TestProtocolV0FetchIsNotVerified: a host that answers the client in
// protocol v0 (whose advertisement sumgate does not read) cannot show it
// tags sumgate never saw: a v0 fetch is not verified, and follows
// on_unverified.
func TestProtocolV0FetchIsNotVerified(t *testing.T) {
	e, modPath, sum := tailored(t, "v0adv", func(h *hostileGit) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			req.Header.Del("Git-Protocol") // answer as a v0-only server
			h.ServeHTTP(rw, req)
		})
	})
	e.noOtherThan(t, modPath+"@v1.0.0", sum)
}

// TestGzipLsRefsIsStillRead: a host that gzips its ls-refs answer to a
// client is still read: sumgate asks for it plain, refuses an encoding it
// did not ask for, and cuts off an answer it cannot parse.
func TestGzipLsRefsIsStillRead(t *testing.T) {
	e, modPath, sum := tailored(t, "gzipls", func(h *hostileGit) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			body, _ := io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(body))
			if !bytes.Contains(body, []byte("command=ls-refs")) {
				h.ServeHTTP(rw, req)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(rec.Body.Bytes())
			zw.Close()
			rw.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
			rw.Header().Set("Content-Encoding", "gzip")
			rw.WriteHeader(rec.Code)
			rw.Write(z.Bytes())
		})
	})
	e.noOtherThan(t, modPath+"@v1.0.0", sum)
}

// TestShownTagsCannotBeFlushed: a host cannot make sumgate forget what it
// showed a client by showing many more tags: a repository's shown tags are
// kept whole, and one that shows more than sumgate keeps fails its fetches.
func TestShownTagsCannotBeFlushed(t *testing.T) {
	var gen atomic.Int64
	e, modPath, sum := tailored(t, "flood", func(h *hostileGit) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			body, _ := io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(body))
			if !bytes.Contains(body, []byte("command=ls-refs")) {
				h.ServeHTTP(rw, req)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			out := rec.Body.Bytes()
			out = out[:len(out)-4] // drop the flush
			g := gen.Add(1)
			var junk bytes.Buffer
			for i := range 17000 {
				junk.WriteString(pkt(fmt.Sprintf("%040x refs/tags/junk-%d-%d\n", 1, g, i)))
			}
			rw.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
			rw.WriteHeader(rec.Code)
			rw.Write(out)
			rw.Write(junk.Bytes())
			io.WriteString(rw, "0000")
		})
	})
	e.noOtherThan(t, modPath+"@v1.0.0", sum)
}

// TestHostHidingFromSumgateIsRefusedUnderAllow: under on_unverified: allow,
// a host that refuses sumgate's anonymous read while serving the same
// anonymous client is refused: it is hiding, not private.
func TestHostHidingFromSumgateIsRefusedUnderAllow(t *testing.T) {
	e := start(t, func(c *gateway.Config) { c.OnUnverified = gateway.UnverifiedAllow })
	h, modPath, sum := movedTag(t, e, "liar404")
	e.w.Override(t, testworld.GitHubHost, "/owner/liar404/", http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if isSumgate(req) {
			http.NotFound(rw, req)
			return
		}
		h.ServeHTTP(rw, req)
	}))
	d, out := e.goDirect(t, nil, modPath+"@v1.0.0")
	if d.Sum != "" && d.Sum != sum {
		t.Errorf("bypass (on_unverified: allow): moved v1.0.0 delivered with Sum %s, database has %s\n%s", d.Sum, sum, out)
	}
}

// TestTagFloodIsCheapToRefuse: many version tags the database does not know
// on one commit cost one lookup: the first unknown reading decides under
// on_unverified: block (and at most 256 tags are read).
func TestTagFloodIsCheapToRefuse(t *testing.T) {
	e := start(t, nil)
	const modPath = testworld.GitHubHost + "/owner/tagflood"
	h := newHostile(t, "a")
	c := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}, "c")
	h.tag("a", "v1.0.0", c)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) { return "a", body })
	e.w.Override(t, testworld.GitHubHost, "/owner/tagflood", h)
	e.w.LogGit(t, modPath, "v1.0.0")
	const n = 200
	var refs bytes.Buffer
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&refs, "create refs/tags/v0.0.%d %s\n", i, c)
	}
	gitCmd(t, filepath.Join(h.root, "a.git"), nil, refs.String(), "update-ref", "--stdin")
	before := e.w.Requests(config.SumDBName, "/lookup/")
	start := time.Now()
	d, _ := e.goDirect(t, nil, modPath+"@v1.0.0")
	el := time.Since(start)
	lookups := e.w.Requests(config.SumDBName, "/lookup/") - before
	t.Logf("%d extra tags on the commit: %v, %d checksum database lookups, delivered %v", n, el, lookups, d.Sum != "")
	if lookups > 10 {
		t.Errorf("cost: %d tags on one commit cost %d checksum database lookups and %v (%v per tag) in one verification slot; "+
			"with real lookups (~100 ms) a few thousand tags exceed the 10-minute timeout", n, lookups, el, el/n)
	}
}

// TestStuffedPackIsNotStored: what a host adds to its answer to sumgate's
// own fetch is not kept: the store holds only what the verified objects
// reach at depth 1.
func TestStuffedPackIsNotStored(t *testing.T) {
	e := start(t, nil)
	const modPath = testworld.GitHubHost + "/owner/fat"
	h := newHostile(t, "a")
	good := h.rootCommit("a", map[string]string{"go.mod": "module " + modPath + "\n", "a.go": "package a\n"}, "good")
	rnd := make([]byte, 20<<20)
	for i := range rnd {
		rnd[i] = byte(i*7919 ^ i>>8*31 ^ i>>16*131)
	}
	junkFile := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junkFile, rnd, 0o644)
	junk := gitCmd(t, filepath.Join(h.root, "a.git"), nil, "", "hash-object", "-w", junkFile)
	h.tag("a", "v1.0.0", good)
	h.setRoute(func(req *http.Request, body []byte) (string, []byte) {
		if isSumgate(req) && bytes.Contains(body, []byte("want "+good)) {
			body = bytes.Replace(body, []byte(pkt("want "+good+"\n")), []byte(pkt("want "+good+"\n")+pkt("want "+junk+"\n")), 1)
		}
		return "a", body
	})
	e.w.Override(t, testworld.GitHubHost, "/owner/fat", h)
	sum, _ := e.w.LogGit(t, modPath, "v1.0.0")
	if d, out := e.goDirect(t, nil, modPath+"@v1.0.0"); d.Sum != sum {
		t.Fatalf("genuine v1.0.0 not delivered:\n%s", out)
	}
	var size int64
	filepath.Walk(filepath.Join(filepath.Dir(e.rootFile), "vcs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(p, "/store-") {
			size += fi.Size()
		}
		return nil
	})
	t.Logf("store size after one verified revision: %d bytes", size)
	if size > 1<<20 {
		t.Errorf("cost: the store keeps %d bytes for a revision of a few hundred bytes: the host's unrequested objects are kept", size)
	}
}

// TestForeignVanityClaimDoesNotBlockARepository: a vanity page that claims
// another's repository (without go.mod) for a path of its own does not
// block the repository's own genuine versions: a reading the database does
// not know passes when it is the same files and version as a verified one
// under another path.
func TestForeignVanityClaimDoesNotBlockARepository(t *testing.T) {
	e := start(t, nil)
	r := e.w.NewGitRepo(t, testworld.GitHubHost, "owner/spew", testworld.GitRepoOptions{})
	const modPath = testworld.GitHubHost + "/owner/spew"
	r.Tag(t, "v1.1.1", r.Commit(t, map[string]string{"spew.go": "package spew\n"}))
	sum, _ := e.w.LogGit(t, modPath, "v1.1.1")
	if d, out := e.goDirect(t, nil, modPath+"@v1.1.1"); d.Sum != sum {
		t.Fatalf("control: genuine legacy v1.1.1 not delivered:\n%s", out)
	}
	// A hostile vanity host claims the repository for a path of its own;
	// an honest client fetches that path once.
	const evil = testworld.VanityHost + "/evil"
	e.w.ServeGoImport(t, testworld.VanityHost, evil, r.RemoteURL())
	e.goDirect(t, nil, evil+"@v1.1.1")
	// A new commit and tag of the genuine repository.
	r.Tag(t, "v1.1.2", r.Commit(t, map[string]string{"spew.go": "package spew\n\nconst X = 1\n"}))
	sum2, _ := e.w.LogGit(t, modPath, "v1.1.2")
	if d, out := e.goDirect(t, []string{"GOFLAGS=-modcacherw"}, modPath+"@v1.1.2"); d.Sum != sum2 {
		t.Errorf("false block: genuine %s@v1.1.2 refused after %s claimed its repository:\n%s", modPath, evil, out)
	}
}
