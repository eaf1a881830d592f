package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/sumdb"
)

// TestDecide is the request policy as a table: one request line in, one
// decision out, no network.
func TestDecide(t *testing.T) {
	const proxy, aliyun = "proxy.golang.org", "mirrors.aliyun.com"
	type want struct {
		action action
		rule   string
		status int    // refusals
		url    string // verify and pass-through: the exact upstream URL
		mod    string // module@version, for module files
		vcs    string
		any    string // verify on a host of unknown prefix: every reading, space-separated
		repo   string // actGit: the repository
		learn  bool   // go-get discovery read under vcs: verify
	}
	for _, tt := range []struct {
		name   string
		tunnel string // "" for plain http
		method string
		url    string // as sent
		host   string // the Host header, when it differs from the URL's
		policy func(*requestPolicy)
		want   want
	}{
		{name: "zip", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/v1.0.0.zip",
			want: want{action: actVerify, rule: "verify", url: "https://proxy.golang.org/example.com/m/@v/v1.0.0.zip", mod: "example.com/m@v1.0.0"}},
		{name: "zip, query not forwarded", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/v1.0.0.zip?x=1",
			want: want{action: actVerify, rule: "verify", url: "https://proxy.golang.org/example.com/m/@v/v1.0.0.zip", mod: "example.com/m@v1.0.0"}},
		{name: "mod under a prefix", tunnel: aliyun, url: "https://mirrors.aliyun.com/goproxy/example.com/m/@v/v1.0.0.mod",
			want: want{action: actVerify, rule: "verify", url: "https://mirrors.aliyun.com/goproxy/example.com/m/@v/v1.0.0.mod", mod: "example.com/m@v1.0.0"}},
		{name: "case-encoded, as the go command sends it", tunnel: proxy, url: "https://proxy.golang.org/github.com/%21azure/x/@v/v1.0.0.zip",
			want: want{action: actVerify, rule: "verify", url: "https://proxy.golang.org/github.com/%21azure/x/@v/v1.0.0.zip", mod: "github.com/Azure/x@v1.0.0"}},
		{name: "HEAD of a zip", tunnel: proxy, method: http.MethodHead, url: "https://proxy.golang.org/example.com/m/@v/v1.0.0.zip",
			want: want{action: actVerify, rule: "verify", url: "https://proxy.golang.org/example.com/m/@v/v1.0.0.zip", mod: "example.com/m@v1.0.0"}},
		{name: "POST of a zip", tunnel: proxy, method: http.MethodPost, url: "https://proxy.golang.org/example.com/m/@v/v1.0.0.zip",
			want: want{action: actRefuse, rule: "module-method", status: http.StatusMethodNotAllowed}},
		{name: ".info of a branch", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/master.info",
			want: want{action: actPass, rule: "pass-through", url: "https://proxy.golang.org/example.com/m/@v/master.info"}},
		{name: ".info of a commit", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/abcdef123456.info",
			want: want{action: actPass, rule: "pass-through", url: "https://proxy.golang.org/example.com/m/@v/abcdef123456.info"}},
		{name: ".info of a version prefix", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/v1.info",
			want: want{action: actPass, rule: "pass-through", url: "https://proxy.golang.org/example.com/m/@v/v1.info"}},
		{name: ".zip of a branch", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/master.zip",
			want: want{action: actRefuse, rule: "module-path", status: http.StatusBadRequest}},
		{name: "zip on an intercepted host that is no known module proxy", tunnel: "goproxy.cn", url: "https://goproxy.cn/example.com/m/@v/v1.0.0.zip",
			want: want{action: actVerify, rule: "verify: any host", url: "https://goproxy.cn/example.com/m/@v/v1.0.0.zip", any: "example.com/m@v1.0.0"}},
		{name: "mod outside a known prefix", tunnel: aliyun, url: "https://mirrors.aliyun.com/go/mirror.example/m/@v/v1.0.0.mod",
			want: want{action: actVerify, rule: "verify: any host", url: "https://mirrors.aliyun.com/go/mirror.example/m/@v/v1.0.0.mod", any: "mirror.example/m@v1.0.0"}},
		{name: "every reading of an unknown prefix", tunnel: "goproxy.cn", url: "https://goproxy.cn/mirror.example/example.com/m/@v/v1.0.0.zip",
			want: want{action: actVerify, rule: "verify: any host", url: "https://goproxy.cn/mirror.example/example.com/m/@v/v1.0.0.zip", any: "mirror.example/example.com/m@v1.0.0 example.com/m@v1.0.0"}},
		{name: "a module file naming no module", tunnel: "sum.golang.org", url: "https://sum.golang.org/x/@v/v1.0.0.zip",
			want: want{action: actRefuse, rule: "module-path", status: http.StatusBadRequest}},
		{name: ".info on an unknown host passes", tunnel: "goproxy.cn", url: "https://goproxy.cn/example.com/m/@v/master.info",
			want: want{action: actPass, rule: "pass-through", url: "https://goproxy.cn/example.com/m/@v/master.info"}},
		{name: "list", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/list",
			want: want{action: actPass, rule: "pass-through", url: "https://proxy.golang.org/example.com/m/@v/list"}},
		{name: "sumdb through a proxy", tunnel: proxy, url: "https://proxy.golang.org/sumdb/sum.golang.org/latest",
			want: want{action: actPass, rule: "pass-through", url: "https://proxy.golang.org/sumdb/sum.golang.org/latest"}},
		{name: "outside the prefix", tunnel: aliyun, url: "https://mirrors.aliyun.com/debian/dists/Release",
			want: want{action: actPass, rule: "pass-through", url: "https://mirrors.aliyun.com/debian/dists/Release"}},
		{name: "malformed version", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/v1.0.zip",
			want: want{action: actRefuse, rule: "module-path", status: http.StatusBadRequest}},
		{name: "unknown file", tunnel: proxy, url: "https://proxy.golang.org/example.com/m/@v/v1.0.0.exe",
			want: want{action: actRefuse, rule: "module-path", status: http.StatusBadRequest}},
		{name: "another Host inside the tunnel", tunnel: proxy, url: "https://proxy.golang.org/x", host: "sum.golang.org",
			want: want{action: actRefuse, rule: "host-pin", status: http.StatusForbidden}},
		{name: "trailing-dot Host", tunnel: proxy, url: "https://proxy.golang.org./example.com/m/@v/list", host: "proxy.golang.org.:443",
			want: want{action: actPass, rule: "pass-through", url: "https://proxy.golang.org/example.com/m/@v/list"}},
		{name: "repeated slash", tunnel: aliyun, url: "https://mirrors.aliyun.com//goproxy/example.com/m/@v/v1.0.0.zip",
			want: want{action: actRefuse, rule: "path-canonical", status: http.StatusBadRequest}},
		{name: "prefix case variant", tunnel: aliyun, url: "https://mirrors.aliyun.com/GOPROXY/example.com/m/@v/v1.0.0.zip",
			want: want{action: actRefuse, rule: "path-canonical", status: http.StatusBadRequest}},
		{name: "git, allowed", tunnel: "github.com", url: "https://github.com/owner/repo/info/refs?service=git-upload-pack",
			want: want{action: actPass, rule: "vcs: allow", url: "https://github.com/owner/repo/info/refs?service=git-upload-pack", vcs: "github.com/owner/repo"}},
		{name: "vcs: verify polices a fetch", tunnel: "github.com", method: http.MethodPost, url: "https://github.com/owner/repo.git/git-upload-pack",
			policy: func(p *requestPolicy) { p.vcs = VCSVerify },
			want: want{action: actGit, rule: "vcs: verify", url: "https://github.com/owner/repo.git/git-upload-pack", vcs: "github.com/owner/repo",
				repo: "https://github.com/owner/repo.git"}},
		{name: "vcs: verify passes the ref advertisement", tunnel: "github.com", url: "https://github.com/owner/repo/info/refs?service=git-upload-pack",
			policy: func(p *requestPolicy) { p.vcs = VCSVerify },
			want:   want{action: actPass, rule: "vcs: verify", url: "https://github.com/owner/repo/info/refs?service=git-upload-pack", vcs: "github.com/owner/repo"}},
		{name: "vcs: verify passes a push", tunnel: "github.com", method: http.MethodPost, url: "https://github.com/owner/repo/git-receive-pack",
			policy: func(p *requestPolicy) { p.vcs = VCSVerify },
			want:   want{action: actPass, rule: "vcs: verify", url: "https://github.com/owner/repo/git-receive-pack", vcs: "github.com/owner/repo"}},
		{name: "vcs: verify reads go-get discovery", tunnel: "github.com", url: "https://github.com/owner/repo/sub?go-get=1",
			policy: func(p *requestPolicy) { p.vcs = VCSVerify },
			want:   want{action: actPass, rule: "vcs: verify", url: "https://github.com/owner/repo/sub?go-get=1", vcs: "github.com/owner/repo", learn: true}},
		{name: "vcs: verify passes a private module's fetch unread", tunnel: "github.com", method: http.MethodPost, url: "https://github.com/corp.example/x/git-upload-pack",
			policy: func(p *requestPolicy) { p.vcs, p.private = VCSVerify, "github.com/corp.example" },
			want:   want{action: actPass, rule: "vcs: verify", url: "https://github.com/corp.example/x/git-upload-pack", vcs: "github.com/corp.example/x"}},
		{name: "vcs: verify refuses a GET of upload-pack", tunnel: "github.com", url: "https://github.com/owner/repo/git-upload-pack",
			policy: func(p *requestPolicy) { p.vcs = VCSVerify },
			want:   want{action: actRefuse, rule: "vcs: verify", status: http.StatusForbidden, vcs: "github.com/owner/repo"}},
		{name: "vcs: verify refuses the dumb protocol", tunnel: "github.com", url: "https://github.com/owner/repo.git/objects/info/packs",
			policy: func(p *requestPolicy) { p.vcs = VCSVerify },
			want:   want{action: actRefuse, rule: "vcs: verify", status: http.StatusForbidden, vcs: "github.com/owner/repo"}},
		{name: "vcs: verify refuses Mercurial", tunnel: "git.example", url: "https://git.example/repo?cmd=capabilities",
			policy: func(p *requestPolicy) { p.vcs = VCSVerify },
			want:   want{action: actRefuse, rule: "vcs: verify", status: http.StatusForbidden, vcs: "git.example/repo"}},
		{name: "vcs: verify, on_unverified: allow passes the dumb protocol", tunnel: "github.com", url: "https://github.com/owner/repo.git/objects/info/packs",
			policy: func(p *requestPolicy) { p.vcs, p.unverified = VCSVerify, UnverifiedAllow },
			want: want{action: actPass, rule: "vcs: verify, on_unverified: allow", url: "https://github.com/owner/repo.git/objects/info/packs",
				vcs: "github.com/owner/repo"}},
		{name: "git upload-pack", tunnel: "github.com", method: http.MethodPost, url: "https://github.com/owner/repo.git/git-upload-pack",
			policy: func(p *requestPolicy) { p.vcs = VCSPrivateOnly },
			want:   want{action: actRefuse, rule: "vcs: private-only", status: http.StatusForbidden, vcs: "github.com/owner/repo"}},
		{name: "go-get of a private module", tunnel: "github.com", url: "https://github.com/corp.example/x?go-get=1",
			policy: func(p *requestPolicy) { p.vcs, p.private = VCSPrivateOnly, "github.com/corp.example" },
			want:   want{action: actPass, rule: "vcs: private-only", url: "https://github.com/corp.example/x?go-get=1", vcs: "github.com/corp.example/x"}},
		{name: "go-get denied", tunnel: "github.com", url: "https://github.com/owner/repo/sub/pkg?go-get=1",
			policy: func(p *requestPolicy) { p.vcs = VCSDeny },
			want:   want{action: actRefuse, rule: "vcs: deny", status: http.StatusForbidden, vcs: "github.com/owner/repo"}},
		{name: "git's dumb protocol: info/refs without a service", tunnel: "github.com", url: "https://github.com/owner/repo.git/info/refs",
			policy: func(p *requestPolicy) { p.vcs = VCSDeny },
			want:   want{action: actRefuse, rule: "vcs: deny", status: http.StatusForbidden, vcs: "github.com/owner/repo"}},
		{name: "service in another case", tunnel: "github.com", url: "https://github.com/owner/repo/info/refs?Service=git-upload-pack",
			policy: func(p *requestPolicy) { p.vcs = VCSDeny },
			want:   want{action: actRefuse, rule: "vcs: deny", status: http.StatusForbidden, vcs: "github.com/owner/repo"}},
		{name: "git's dumb protocol: HEAD", tunnel: "github.com", url: "https://github.com/owner/repo/HEAD",
			policy: func(p *requestPolicy) { p.vcs = VCSDeny },
			want:   want{action: actRefuse, rule: "vcs: deny", status: http.StatusForbidden, vcs: "github.com/owner/repo"}},
		{name: "git's dumb protocol: objects", tunnel: "git.example", url: "https://git.example/a/b.git/objects/info/packs",
			policy: func(p *requestPolicy) { p.vcs = VCSDeny },
			want:   want{action: actRefuse, rule: "vcs: deny", status: http.StatusForbidden, vcs: "git.example/a/b"}},
		{name: "a web page ending in HEAD", tunnel: "github.com", url: "https://github.com/owner/repo/tree/HEAD",
			policy: func(p *requestPolicy) { p.vcs = VCSDeny },
			want:   want{action: actPass, rule: "pass-through", url: "https://github.com/owner/repo/tree/HEAD"}},
		{name: "a web page under objects", tunnel: "github.com", url: "https://github.com/owner/repo/blob/main/internal/objects/store.go",
			policy: func(p *requestPolicy) { p.vcs = VCSDeny },
			want:   want{action: actPass, rule: "pass-through", url: "https://github.com/owner/repo/blob/main/internal/objects/store.go"}},
		{name: "an archive", tunnel: "codeload.github.com", url: "https://codeload.github.com/owner/repo/tar.gz/HEAD",
			policy: func(p *requestPolicy) { p.vcs = VCSDeny },
			want:   want{action: actPass, rule: "pass-through", url: "https://codeload.github.com/owner/repo/tar.gz/HEAD"}},
		{name: "not git", tunnel: "github.com", url: "https://github.com/owner/repo/blob/main/README.md",
			want: want{action: actPass, rule: "pass-through", url: "https://github.com/owner/repo/blob/main/README.md"}},
		{name: "plain http", url: "http://example.net/x?y=1",
			want: want{action: actForward, rule: "tunnel: allow", url: "http://example.net/x?y=1"}},
		{name: "plain http to an intercepted host", url: "http://proxy.golang.org/x",
			want: want{action: actRefuse, rule: "https-only", status: http.StatusForbidden}},
		{name: "plain http under tunnel: deny", url: "http://example.net/x", policy: func(p *requestPolicy) { p.tunnel = TunnelDeny },
			want: want{action: actRefuse, rule: "tunnel: deny", status: http.StatusForbidden}},
		{name: "not a proxy request", url: "/x",
			want: want{action: actRefuse, rule: "not-a-proxy-request", status: http.StatusBadRequest}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy(t)
			if tt.policy != nil {
				tt.policy(p)
			}
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequest(method, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.host != "" {
				req.Host = tt.host
			}
			d := p.decide(lineOf(req, tt.tunnel))
			got := want{action: d.action, rule: d.rule, status: d.status, url: d.url, vcs: d.vcs, repo: d.repo, learn: d.learn}
			if d.mod != nil && (d.mod.kind == sumdb.KindZip || d.mod.kind == sumdb.KindMod) && d.action == actVerify && d.any == nil {
				got.mod = d.mod.mod.String()
			}
			for i, m := range d.any {
				if i > 0 {
					got.any += " "
				}
				got.any += m.String()
			}
			if got != tt.want {
				t.Errorf("decision %+v, want %+v (reason %q)", got, tt.want, d.reason)
			}
			if d.action == actRefuse && !strings.HasPrefix(d.reason, "sumgate: ") {
				t.Errorf("refusal without a reason: %q", d.reason)
			}
		})
	}
}

// TestUnknownPoliciesAreRefused: a policy value that is not one of its
// constants ("Allow", a typo) is an error, never read as permissive.
func TestUnknownPoliciesAreRefused(t *testing.T) {
	valid := Config{Tunnel: TunnelAllow, OnUnverified: UnverifiedBlock, VCS: VCSPrivateOnly,
		Transparent: TransparentConfig{NoSNI: NoSNIDeny, SNIMismatch: SNIMismatchDeny}}
	if err := valid.checkPolicies(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Config){
		"Tunnel":                  func(c *Config) { c.Tunnel = "Allow" },
		"OnUnverified":            func(c *Config) { c.OnUnverified = "pass" },
		"VCS":                     func(c *Config) { c.VCS = "private" },
		"Transparent.NoSNI":       func(c *Config) { c.Transparent.NoSNI = "allow" },
		"Transparent.SNIMismatch": func(c *Config) { c.Transparent.SNIMismatch = "warn" },
	} {
		c := valid
		edit(&c)
		if err := c.checkPolicies(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestParseOrigin: a module proxy's prefix is read exactly as requests
// are compared with it; a base URL that could be read two ways (an
// escape, an empty query or fragment) is refused, never matched loosely,
// which would leave its files unverified.
func TestParseOrigin(t *testing.T) {
	for _, tt := range []struct {
		base         string
		host, prefix string // "" host: an error
	}{
		{"https://proxy.golang.org", "proxy.golang.org", ""},
		{"https://proxy.golang.org/", "proxy.golang.org", ""},
		{"https://Mirrors.Aliyun.com./goproxy/", "mirrors.aliyun.com", "/goproxy"},
		{"https://goproxy.io:443/x/y", "goproxy.io", "/x/y"},
		{"https://mirrors.aliyun.com/go%70roxy", "", ""},
		{"https://mirrors.aliyun.com/goproxy?", "", ""},
		{"https://goproxy.cn?", "", ""},
		{"https://goproxy.cn#", "", ""},
		{"https://goproxy.cn/GoProxy", "", ""},
		{"https://goproxy.cn/a//b", "", ""},
		{"https://goproxy.cn/a/../b", "", ""},
		{"https://goproxy.cn:8443", "", ""},
		{"http://goproxy.cn", "", ""},
		{"https://user@goproxy.cn", "", ""},
	} {
		o, err := parseOrigin(tt.base)
		if tt.host == "" {
			if err == nil {
				t.Errorf("%s: accepted as %+v", tt.base, o)
			}
			continue
		}
		if err != nil || o.host != tt.host || o.prefix != tt.prefix {
			t.Errorf("%s: %+v, %v; want host %q prefix %q", tt.base, o, err, tt.host, tt.prefix)
		}
	}
}
