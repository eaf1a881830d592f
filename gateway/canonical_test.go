package gateway_test

import (
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/gateway"
)

// normalising is an upstream that normalises paths before routing them,
// as nginx does by default (percent-decoding, dot segments, merged
// slashes), with a Java server's ";" parameters dropped and case folded
// as a case-insensitive server would.
type normalising struct{ base http.RoundTripper }

func (n normalising) RoundTrip(r *http.Request) (*http.Response, error) {
	p, err := url.PathUnescape(r.URL.EscapedPath())
	if err != nil {
		p = r.URL.Path
	}
	segs := strings.Split(strings.ReplaceAll(p, `\`, "/"), "/")
	for i, s := range segs {
		s, _, _ = strings.Cut(s, ";")
		segs[i] = strings.TrimRight(s, ".")
		if s == "." || s == ".." {
			segs[i] = s
		}
	}
	r = r.Clone(r.Context())
	r.URL.Path, r.URL.RawPath = strings.ToLower(path.Clean("/"+strings.Join(segs, "/"))), ""
	return n.base.RoundTrip(r)
}

// TestNonCanonicalPathsAreNeverForwarded holds threat 24: a path that an
// upstream would normalise into a module file, while sumgate reads it as
// something else, is refused with 400 and never reaches the upstream.
func TestNonCanonicalPathsAreNeverForwarded(t *testing.T) {
	e := start(t, func(c *gateway.Config) {
		c.Upstream = &http.Client{Transport: normalising{c.Upstream.Transport}}
	})
	client := e.proxyClient(pool(e.root))
	aliyun := "https://mirrors.aliyun.com" // config.Aliyun without its /goproxy prefix
	const zip = "/example.com/tampered/zip/@v/v1.0.0.zip"
	for _, tt := range []struct{ base, path string }{
		{aliyun, "//goproxy" + zip},
		{aliyun, "/goproxy/" + zip},
		{aliyun, "/x/../goproxy" + zip},
		{aliyun, "/goproxy/./example.com/tampered/zip/@v/v1.0.0.zip"},
		{aliyun, "/GOPROXY" + zip},
		{aliyun, "/GoProxy" + zip},
		{aliyun, "/goproxy%2Fexample.com/tampered/zip/@v/v1.0.0.zip"},
		{aliyun, "/goproxy%2fexample.com/tampered/zip/@v/v1.0.0.zip"},
		{aliyun, "/%67oproxy" + zip},
		{aliyun, "/goproxy/example.com/tampered/zip/@v/v1.0.0%2ezip"},
		{aliyun, "/goproxy;jsessionid=1" + zip},
		{aliyun, "/goproxy." + zip},
		{aliyun, `/goproxy\example.com/tampered/zip/@v/v1.0.0.zip`},
		{aliyun, "/goproxy/example.com/tampered/zip/@v/v1.0.0.zip%252e"},
		{e.w.ProxyURL, "/" + zip},
		{e.w.ProxyURL, "/Example.com/tampered/zip/@v/v1.0.0.zip"},
		{e.w.ProxyURL, "/example.com/tampered/zip/@v/../@v/v1.0.0.zip"},
		{e.w.ProxyURL, "/example.com/tampered/zip%C0%AF@v/v1.0.0.zip"},    // overlong "/"
		{e.w.ProxyURL, "/example.com/tampered/zip/%EF%BC%A0v/v1.0.0.zip"}, // fullwidth "@"
		{e.w.ProxyURL, "/example.com/tampered/zip%EF%BC%8F@v/v1.0.0.zip"}, // fullwidth "/"
	} {
		host := tt.base[len("https://"):]
		before := e.w.Requests(host, "")
		resp, err := client.Get(tt.base + tt.path)
		if err != nil {
			t.Fatalf("%s%s: %v", tt.base, tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "not canonical") {
			t.Errorf("%s%s: %d %.200q, want 400 saying the path is not canonical", tt.base, tt.path, resp.StatusCode, body)
		}
		if after := e.w.Requests(host, ""); after != before {
			t.Errorf("%s%s reached the upstream", tt.base, tt.path)
		}
	}
	// An escape that decodes to what the upstream reads anyway is decided
	// on decoded: the file the upstream serves is verified (and blocked).
	resp, err := client.Get(aliyun + "/goproxy/example.com/tampered/zip/%40v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "checksum mismatch") {
		t.Errorf("%%40v: %d %.200q, want the tampered zip blocked", resp.StatusCode, body)
	}
	// Canonical paths on the same normalising upstream verify as before.
	for _, u := range []string{aliyun + "/goproxy/example.com/good/@v/v1.0.0.zip", e.w.ProxyURL + "/github.com/!upper/!case/@v/v1.0.0.zip"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Sumgate-Verdict") != "verified" {
			t.Errorf("%s: %d %q, want a verified 200", u, resp.StatusCode, resp.Header.Get("X-Sumgate-Verdict"))
		}
	}
}
