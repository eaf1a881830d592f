package match

import (
	"strings"
	"testing"

	"golang.org/x/mod/module"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		pattern string
		wantErr string // "" if valid
		match   []string
		noMatch []string
	}{
		{pattern: "gopkg.in/yaml.v2", match: []string{"gopkg.in/yaml.v2", "gopkg.in/yaml.v2/sub"}, noMatch: []string{"gopkg.in/yaml.v3", "gopkg.in/yaml.v2x", "gopkg.in"}},
		{pattern: "github.com/corp-forks/*", match: []string{"github.com/corp-forks/x", "github.com/corp-forks/x/v2"}, noMatch: []string{"github.com/corp-forks", "github.com/other/x"}},
		{pattern: "*.corp.example,golang.org/x/", match: []string{"git.corp.example/a", "golang.org/x/net"}, noMatch: []string{"corp.example/a", "golang.org/y"}},
		{pattern: "*", match: []string{"a", "github.com/a/b"}},
		{pattern: "github.com/*/secret", match: []string{"github.com/a/secret/v2"}, noMatch: []string{"github.com/a/public"}},
		{pattern: "", wantErr: "empty pattern"},
		{pattern: "a,,b", wantErr: "empty element"},
		{pattern: "a b", wantErr: "white space"},
		{pattern: "github.com/[a", wantErr: "malformed"},
		{pattern: "https://github.com/x", wantErr: "empty path element"},
		{pattern: "/github.com", wantErr: "empty path element"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var x Index
			x.Add(p, 7)
			for _, m := range tt.match {
				if !p.Match(m) || len(x.Lookup(nil, m)) != 1 {
					t.Errorf("%q does not match %q", tt.pattern, m)
				}
			}
			for _, m := range tt.noMatch {
				if p.Match(m) || len(x.Lookup(nil, m)) != 0 {
					t.Errorf("%q matches %q", tt.pattern, m)
				}
			}
		})
	}
}

// TestRangeOrdersAsTheGoCommand: pre-releases and pseudo-versions sit
// below their release, so a bound at a release catches its -rc and its
// pseudo-versions; build metadata is ignored.
func TestRangeOrdersAsTheGoCommand(t *testing.T) {
	tests := []struct {
		rng     string
		in, out []string
	}{
		{"< v2.4.0", []string{"v2.3.9", "v2.4.0-rc.1", "v2.4.0-0.20240101120000-abcdefabcdef", "v0.0.0-20200101000000-abcdefabcdef", "v1.0.0+incompatible"},
			[]string{"v2.4.0", "v2.4.1-0.20240101120000-abcdefabcdef", "v3.0.0+incompatible"}},
		{"<= v1.2.3", []string{"v1.2.3", "v1.2.3-rc.1"}, []string{"v1.2.4-0.20240101120000-abcdefabcdef"}},
		{">= v1.2.0, < v1.3.0", []string{"v1.2.0", "v1.2.9", "v1.3.0-rc.1", "v1.2.1-0.20240101120000-abcdefabcdef"},
			[]string{"v1.2.0-rc.1", "v1.1.9", "v1.3.0", "v1.2.0-0.20240101120000-abcdefabcdef"}},
		{"> v1.2.0", []string{"v1.2.1-0.20240101120000-abcdefabcdef", "v1.2.1-rc.1", "v2.0.0+incompatible"}, []string{"v1.2.0", "v1.2.0+incompatible", "v1.2.0-rc.1"}},
		{"= v1.0.0", []string{"v1.0.0"}, []string{"v1.0.0-rc.1", "v1.0.1"}},
		{"=v2.0.0", []string{"v2.0.0+incompatible"}, nil},
		{" < v1.0.0-rc.2 ,>= v1.0.0-rc.1", []string{"v1.0.0-rc.1", "v1.0.0-rc.1.1"}, []string{"v1.0.0-rc.2", "v1.0.0-beta"}},
	}
	for _, tt := range tests {
		t.Run(tt.rng, func(t *testing.T) {
			r, err := ParseRange(tt.rng)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range tt.in {
				if !r.Contains(v) {
					t.Errorf("%q does not contain %s", tt.rng, v)
				}
			}
			for _, v := range append(tt.out, "", "latest", "v1", "1.0.0") {
				if r.Contains(v) {
					t.Errorf("%q contains %q", tt.rng, v)
				}
			}
		})
	}
}

func TestParseRangeErrors(t *testing.T) {
	for _, tt := range []struct{ rng, want string }{
		{"", "empty version range"},
		{"v1.0.0", "want an operator"},
		{"< 1.0.0", "not a semantic version"},
		{"< v1.2", "write the version in full: v1.2.0"},
		{"< v2.0.0+incompatible", "without build metadata (+incompatible): v2.0.0"},
		{">= v1.0.0,", "empty comparison"},
		{">= v1.0.0, > v1.1.0", "two lower bounds"},
		{"< v1.0.0, <= v1.1.0", "two upper bounds"},
		{"= v1.0.0, < v2.0.0", "= cannot be combined"},
		{"< v2.0.0, = v1.0.0", "= cannot be combined"},
		{">= v2.0.0, < v1.0.0", "contains no version"},
		{"> v1.0.0, <= v1.0.0", "contains no version"},
		{"=> v1.0.0", "not a semantic version"},
		{"v1.0.0 - v1.2.0", "want an operator"},
	} {
		t.Run(tt.rng, func(t *testing.T) {
			if _, err := ParseRange(tt.rng); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// FuzzParseRange: no input panics; an accepted range prints as a range
// that parses to itself, and contains its bounds exactly when they are
// inclusive.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"< v2.4.0", ">= v1.2.0, < v1.3.0", "= v1.0.0", "<=v1.0.0-rc.1", "> v0.0.0-20200101000000-abcdefabcdef", ",", "<", "v1.0.0 - v1.2.0"} {
		f.Add(s, "v1.2.3")
	}
	f.Fuzz(func(t *testing.T, s, v string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		again, err := ParseRange(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRange(%q).String() = %q, which parses to %+v, %v", s, r.String(), again, err)
		}
		if r.lo != "" && r.Contains(r.lo) != r.loIncl {
			t.Fatalf("%q: Contains(lower bound %s) = %v", s, r.lo, !r.loIncl)
		}
		if r.hi != "" && r.Contains(r.hi) != r.hiIncl {
			t.Fatalf("%q: Contains(upper bound %s) = %v", s, r.hi, !r.hiIncl)
		}
		_ = r.Contains(v)
	})
}

// FuzzPattern: no input panics, and an accepted pattern matches, through
// Match and through an Index, exactly what module.MatchPrefixPatterns
// matches.
func FuzzPattern(f *testing.F) {
	for _, s := range [][2]string{
		{"gopkg.in/yaml.v2", "gopkg.in/yaml.v2/x"}, {"github.com/corp-forks/*", "github.com/corp-forks/a"},
		{"*.corp.example,golang.org/x", "golang.org/x/net"}, {"a/[^b]c", "a/b/c"}, {"a\\*b/c", "a*b/c/d"}, {"a/b?/c", "a/bb/c"}, {"x[a/]y", "x/y"}, {"*.corp.example", "git.corp.example/a"}, {"git*.example/*", "github.example/x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, modulePath string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		want := module.MatchPrefixPatterns(pattern, modulePath)
		var x Index
		x.Add(p, 1)
		x.Add(p, 0)
		got := x.Lookup(nil, modulePath)
		if p.Match(modulePath) != want || (len(got) == 2) != want || (want && (got[0] != 0 || got[1] != 1)) {
			t.Fatalf("pattern %q, path %q: Match = %v, Lookup = %v, MatchPrefixPatterns = %v", pattern, modulePath, p.Match(modulePath), got, want)
		}
	})
}

func TestIndexManyPatterns(t *testing.T) {
	patterns := []string{"github.com/a", "github.com/a/*", "github.com/*/b", "*.example", "github.com", "x.example/y", "github.com/a/b/c"}
	paths := []string{"github.com/a/b", "github.com/a/b/c/d", "github.com/z/b", "x.example/y/z", "github.com", "other"}
	var x Index
	for i, s := range patterns {
		p, err := ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		x.Add(p, i)
	}
	for _, path := range paths {
		var want []int
		for i, s := range patterns {
			if module.MatchPrefixPatterns(s, path) {
				want = append(want, i)
			}
		}
		got := x.Lookup(nil, path)
		if len(got) != len(want) {
			t.Fatalf("%s: Lookup = %v, want %v", path, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: Lookup = %v, want %v", path, got, want)
			}
		}
	}
}
