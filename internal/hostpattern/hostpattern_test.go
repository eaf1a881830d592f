package hostpattern_test

import (
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/hostpattern"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		entries []string
		host    string
		want    bool
	}{
		{[]string{"goproxy.cn"}, "goproxy.cn", true},
		{[]string{"goproxy.cn"}, "GOPROXY.CN.", true}, // canonical form
		{[]string{"goproxy.cn"}, "x.goproxy.cn", false},
		{[]string{"*.example.com"}, "a.example.com", true},
		{[]string{"*.example.com"}, "a.b.example.com", true}, // any depth
		{[]string{"*.example.com"}, "example.com", false},    // not the apex
		{[]string{"*.example.com"}, "badexample.com", false},
		{[]string{"*.example.com"}, "example.com.evil.net", false},
		{[]string{"*.example.com"}, "a.example.com.", true},
		{[]string{"*.example.com"}, "a..example.com", false},            // not a DNS name
		{[]string{"*.example.com"}, "a b.example.com", false},           // not a DNS name
		{[]string{"*.example.com"}, "a%2e.example.com", false},          // not a DNS name
		{[]string{"*.example.com", "example.com"}, "example.com", true}, // the apex, listed exactly
		{[]string{"*"}, "anything.example", true},
		{[]string{"*"}, "localhost", true},
		{[]string{"*"}, "under_score.example", true},
		{[]string{"*"}, "127.0.0.1", false}, // IP literals: exact entries only
		{[]string{"*"}, "::1", false},
		{[]string{"*"}, "1.2.3", false},     // read as IPv4 by URL parsers
		{[]string{"*"}, "0x7f.1", false},    // likewise
		{[]string{"*"}, "host.0x10", false}, // likewise
		{[]string{"*"}, "", false},
		{[]string{"*"}, strings.Repeat("a", 64) + ".example", false},
		{[]string{"192.0.2.1"}, "192.0.2.1", true}, // an exact entry matches an IP literal
		{nil, "goproxy.cn", false},
	}
	for _, tt := range tests {
		l, err := hostpattern.New(tt.entries)
		if err != nil {
			t.Fatalf("New(%q): %v", tt.entries, err)
		}
		if got := l.Match(tt.host); got != tt.want {
			t.Errorf("%q matching %q: %v, want %v", tt.entries, tt.host, got, tt.want)
		}
	}
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		intercept, splice []string
		host              string
		intercepts        bool
		spliced, pattern  bool
	}{
		{[]string{"*"}, nil, "mirror.example", true, false, true},
		{[]string{"*"}, []string{"pinned.example"}, "pinned.example", false, true, false}, // splice beats *
		{[]string{"*"}, []string{"*.bank.example"}, "app.bank.example", false, true, false},
		{[]string{"*"}, []string{"*.bank.example"}, "bank.example", true, false, true},
		{[]string{"github.com"}, []string{"github.com"}, "github.com", false, true, false}, // splice beats an exact entry
		{[]string{"*", "github.com"}, nil, "github.com", true, false, false},
		{[]string{"*.example.com"}, nil, "a.example.com", true, false, true},
		{[]string{"goproxy.cn"}, []string{"other.example"}, "other.example", false, false, false},
	}
	for _, tt := range tests {
		p, err := hostpattern.NewPolicy(tt.intercept, tt.splice)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Intercepts(tt.host); got != tt.intercepts {
			t.Errorf("intercept %q, splice %q: Intercepts(%q) = %v, want %v", tt.intercept, tt.splice, tt.host, got, tt.intercepts)
		}
		if got := p.Spliced(tt.host); got != tt.spliced {
			t.Errorf("intercept %q, splice %q: Spliced(%q) = %v, want %v", tt.intercept, tt.splice, tt.host, got, tt.spliced)
		}
		if got := p.ByPatternOnly(tt.host); got != tt.pattern {
			t.Errorf("intercept %q, splice %q: ByPatternOnly(%q) = %v, want %v", tt.intercept, tt.splice, tt.host, got, tt.pattern)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, ok := range []string{"goproxy.cn", "*", "*.example.com", "*.internal", "a-b_c.example"} {
		if err := hostpattern.Check(ok); err != nil {
			t.Errorf("Check(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "**", "*example.com", "a.*.example.com", "*.*.example.com", "example.*", "*.",
		"*.Example.com", "Goproxy.cn", "localhost", "127.0.0.1", "::1", "*.1.2.3", "goproxy.cn:443", "goproxy.cn/x",
		"goproxy.cn.", "*.example.com.", "a..b", "-"} {
		if err := hostpattern.Check(bad); err == nil {
			t.Errorf("Check(%q) accepted it", bad)
		}
	}
}

func TestNewRefusesMisplacedWildcards(t *testing.T) {
	for _, bad := range []string{"a.*.example.com", "*example.com", "**", "*.1.2", "*.a b"} {
		if _, err := hostpattern.New([]string{bad}); err == nil {
			t.Errorf("New(%q) accepted it", bad)
		}
	}
}
