package gateway

import (
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/sumdb"
)

// normalisations are the ways an upstream may rewrite a path before
// routing it: each alone, and all of them in turn.
var normalisations = []func(string) string{
	func(p string) string { // percent-decoding, as often as it changes something
		for i := 0; i < 4; i++ {
			d, err := url.PathUnescape(p)
			if err != nil || d == p {
				break
			}
			p = d
		}
		return p
	},
	func(p string) string { return strings.ReplaceAll(p, `\`, "/") },
	func(p string) string { return path.Clean("/" + p) }, // dot segments, merged slashes, trailing slash
	func(p string) string { // slash merging alone
		for strings.Contains(p, "//") {
			p = strings.ReplaceAll(p, "//", "/")
		}
		return p
	},
	strings.ToLower, // case folding (of the prefix, and the rest)
	func(p string) string { // ";" path parameters dropped, trailing dots trimmed
		segs := strings.Split(p, "/")
		for i, s := range segs {
			s, _, _ = strings.Cut(s, ";")
			if s != "." && s != ".." {
				s = strings.TrimRight(s, ". ")
			}
			segs[i] = s
		}
		return strings.Join(segs, "/")
	},
}

// normalised returns every normalisation of p, and their composition.
func normalised(p string) []string {
	out := []string{}
	all := p
	for _, n := range normalisations {
		out = append(out, n(p))
		all = n(all)
	}
	out = append(out, all, path.Clean("/"+all))
	for _, n := range out[:len(out):len(out)] {
		out = append(out, normalisations[0](n)) // routed after decoding
	}
	return out
}

// testPolicy has two of the default module proxies, one with a path
// prefix, and intercepts them, the checksum database and github.com.
func testPolicy(t testing.TB) *requestPolicy {
	intercept, err := newInterceptList([]string{"proxy.golang.org", "mirrors.aliyun.com", "sum.golang.org", "github.com", "goproxy.cn"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &requestPolicy{intercept: intercept, tunnel: TunnelAllow, vcs: VCSAllow, private: "corp.example"}
	for _, base := range []string{"https://proxy.golang.org", "https://mirrors.aliyun.com/goproxy"} {
		o, err := parseOrigin(base)
		if err != nil {
			t.Fatal(err)
		}
		g.origins = append(g.origins, o)
	}
	return g
}

// FuzzCanonicalPath holds threat 24 on the decision itself: a request
// that sumgate passes through on a module proxy's host is never read as a
// module file by an upstream that normalises its path, and one it
// verifies is verified as the file any normalisation reads, at exactly
// the URL it was sent to.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{
		"/goproxy/example.com/m/@v/v1.0.0.zip", "//goproxy/example.com/m/@v/v1.0.0.zip",
		"/x/../goproxy/example.com/m/@v/v1.0.0.zip", "/GOPROXY/example.com/m/@v/v1.0.0.zip",
		"/goproxy%2Fexample.com/m/@v/v1.0.0.zip", "/goproxy/example.com/m/@v/v1.0.0%2ezip",
		"/goproxy;a/example.com/m/@v/v1.0.0.mod", "/example.com/m/@v/list", "/example.com/m/@latest",
		"/sumdb/sum.golang.org/lookup/example.com/m@v1.0.0", "/goproxy/github.com/!azure/x/@v/v1.0.0.zip",
		"/goproxy/example.com/m/%40v/v1.0.0.zip", `/goproxy\example.com/m/@v/v1.0.0.zip`, "/a%22b",
		"/github.com/%21azure/x/@v/v1.0.0%2Bincompatible.zip", "/%67oproxy/example.com/m/@v/v1.0.0.zip",
	} {
		for _, host := range []string{"proxy.golang.org", "mirrors.aliyun.com"} {
			f.Add(host, s)
		}
	}
	pol := testPolicy(f)
	f.Fuzz(func(t *testing.T, host, p string) {
		if host != "proxy.golang.org" && host != "mirrors.aliyun.com" {
			return
		}
		d := pol.decide(requestLine{method: "GET", scheme: "https", host: host, urlHost: host, path: p, tunnel: host})
		switch d.action {
		case actRefuse:
			return // never forwarded
		case actVerify:
			if d.url != "https://"+host+p {
				t.Fatalf("https://%s%s is verified, but %s is what goes upstream", host, p, d.url)
			}
		case actPass:
		default:
			t.Fatalf("https://%s%s: action %v inside a tunnel", host, p, d.action)
		}
		for _, n := range normalised(p) {
			nr, ok, err := pol.classify(host, n)
			if !ok || err != nil || (nr.kind != sumdb.KindZip && nr.kind != sumdb.KindMod) {
				continue
			}
			if d.action != actVerify {
				t.Fatalf("https://%s%s is passed through unverified, but normalises to %s, the module file %s (%s)", host, p, n, nr.mod, nr.kind)
			}
			if d.any != nil {
				if !slices.Contains(d.any, nr.mod) || nr.kind != d.mod.kind {
					t.Fatalf("https://%s%s is verified as any of %v (%s) but normalises to %s (%s)", host, p, d.any, d.mod.kind, nr.mod, nr.kind)
				}
				continue
			}
			if nr.mod != d.mod.mod || nr.kind != d.mod.kind || nr.origin != d.mod.origin {
				t.Fatalf("https://%s%s is verified as %s (%s) but normalises to %s (%s)", host, p, d.mod.mod, d.mod.kind, nr.mod, nr.kind)
			}
		}
	})
}
