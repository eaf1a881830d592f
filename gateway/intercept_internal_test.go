package gateway

import (
	"net/http"
	"testing"
)

// TestPlainHTTPUnderPatterns: a host a pattern intercepts is reached over
// https only, as an exact entry is (a module file fetched over plain http
// would pass unverified); a spliced host and an IP literal follow the
// tunnel policy.
func TestPlainHTTPUnderPatterns(t *testing.T) {
	for _, tt := range []struct {
		intercept, splice []string
		url               string
		action            action
		rule              string
	}{
		{[]string{"*.example.com"}, nil, "http://a.b.example.com/m/@v/v1.0.0.zip", actRefuse, "https-only"},
		{[]string{"*.example.com"}, nil, "http://example.com/", actForward, "tunnel: allow"},
		{[]string{"*"}, nil, "http://mirror.unlisted.example/go/m/@v/v1.0.0.zip", actRefuse, "https-only"},
		{[]string{"*"}, []string{"pinned.example"}, "http://pinned.example/", actForward, "tunnel: allow"},
		{[]string{"*"}, nil, "http://192.0.2.7/", actForward, "tunnel: allow"},
		{[]string{"goproxy.cn"}, []string{"goproxy.cn"}, "http://goproxy.cn/", actForward, "tunnel: allow"},
	} {
		intercept, err := newInterceptList(tt.intercept, tt.splice)
		if err != nil {
			t.Fatal(err)
		}
		p := &requestPolicy{intercept: intercept, tunnel: TunnelAllow}
		req, err := http.NewRequest(http.MethodGet, tt.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := p.decide(lineOf(req, "")); d.action != tt.action || d.rule != tt.rule {
			t.Errorf("intercept %q, splice %q: %s: action %d, rule %q, want %d, %q", tt.intercept, tt.splice, tt.url, d.action, d.rule, tt.action, tt.rule)
		}
	}
}
