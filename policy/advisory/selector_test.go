package advisory_test

import (
	"strings"
	"testing"

	"github.com/sumgate/sumgate/policy/advisory"
)

func TestParseSelectorErrors(t *testing.T) {
	for _, tc := range []struct {
		in, wantErr string // wantErr "" means valid
	}{
		{"all", ""},
		{"malicious", ""},
		{"GO-2024-2687", ""},
		{"CVE-2024-24786", ""},
		{"GHSA-qx32-f6g6-fcfr", ""},
		{"MAL-2025-1234", ""},
		{"cvss>=7.0", ""},
		{"cvss >= 7", ""},
		{"CVSS>9.5", ""},
		{"cvss<=4", ""},
		{"cvss<0.1", ""},
		{"", "not an advisory ID"},
		{"Malicious", "not an advisory ID"},
		{"GO2024", "not an advisory ID"},
		{"-2024", "not an advisory ID"},
		{"G0-2024-1", "prefix \"G0\" is not letters only"},
		{"GO-2024/../x", "'/' is not allowed"},
		{"GO-2024 1", "' ' is not allowed"},
		{"cvss", "want an operator"},
		{"cvss=7", "want an operator"},
		{"cvss>=", "is not a CVSS score"},
		{"cvss>=eleven", "is not a CVSS score"},
		{"cvss>=10.1", "is not a CVSS score"},
		{"cvss>=-1", "is not a CVSS score"},
		{"cvss>=NaN", "is not a CVSS score"},
	} {
		_, err := advisory.ParseSelector(tc.in)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ParseSelector(%q): %v", tc.in, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("ParseSelector(%q) succeeded, want an error containing %q", tc.in, tc.wantErr)
		case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
			t.Errorf("ParseSelector(%q) = %v, want an error containing %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestSelectorMatch(t *testing.T) {
	goEntry := advisory.Entry{ID: "GO-2024-2687", Aliases: []string{"CVE-2023-45288", "GHSA-4v7x-pqxf-cx7m"}}
	mal := advisory.Entry{ID: "MAL-2025-1", Malicious: true}
	high := advisory.Entry{ID: "GHSA-hhhh-hhhh-hhhh", HasCVSS: true, CVSS: 7.0}
	low := advisory.Entry{ID: "GHSA-llll-llll-llll", HasCVSS: true, CVSS: 6.9}
	zero := advisory.Entry{ID: "GHSA-zzzz-zzzz-zzzz", HasCVSS: true, CVSS: 0}
	for _, tc := range []struct {
		sel   string
		entry advisory.Entry
		want  bool
	}{
		{"all", goEntry, true},
		{"all", mal, true},
		{"malicious", mal, true},
		{"malicious", goEntry, false},
		{"GO-2024-2687", goEntry, true},
		{"go-2024-2687", goEntry, true},
		{"CVE-2023-45288", goEntry, true},
		{"GHSA-4V7X-PQXF-CX7M", goEntry, true},
		{"GO-2024-2688", goEntry, false},
		{"cvss>=7.0", high, true},
		{"cvss>=7.0", low, false},
		{"cvss>7", high, false},
		{"cvss<7", low, true},
		{"cvss<=6.9", low, true},
		{"cvss<7", zero, true},
		{"cvss<10", goEntry, false}, // no vector: no cvss selector matches
		{"cvss>=0", goEntry, false},
		{"cvss>=7.0", mal, false},
	} {
		s, err := advisory.ParseSelector(tc.sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Match(tc.entry); got != tc.want {
			t.Errorf("%q.Match(%s) = %v, want %v", tc.sel, tc.entry.ID, got, tc.want)
		}
	}
	if (advisory.Selector{}).Match(goEntry) {
		t.Error("the zero Selector matches")
	}
}

func TestSelectorSet(t *testing.T) {
	set, err := advisory.ParseSelectors([]string{"GO-2024-0002", "cvss>=9", "malicious", "CVE-2024-0001", "GO-2024-0001"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		entry advisory.Entry
		want  string // "" for no match
	}{
		{advisory.Entry{ID: "GO-2024-0001", Aliases: []string{"CVE-2024-0001"}}, "CVE-2024-0001"}, // the first in list order
		{advisory.Entry{ID: "go-2024-0002"}, "GO-2024-0002"},
		{advisory.Entry{ID: "MAL-1", Malicious: true, HasCVSS: true, CVSS: 9.8}, "cvss>=9"},
		{advisory.Entry{ID: "MAL-1", Malicious: true}, "malicious"},
		{advisory.Entry{ID: "GO-2024-0003"}, ""},
	} {
		s, ok := set.Match(tc.entry)
		if got := s.String(); ok != (tc.want != "") || got != tc.want {
			t.Errorf("Match(%+v) = %q, %v; want %q", tc.entry, got, ok, tc.want)
		}
	}
	if _, err := advisory.ParseSelectors([]string{"all", "bogus"}); err == nil || !strings.Contains(err.Error(), "block[1]") {
		t.Errorf("ParseSelectors with a bad item: %v, want an error naming block[1]", err)
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"all", "malicious", "GO-2024-2687", "GHSA-qx32-f6g6-fcfr", "cvss>=7.0", "cvss < 4", "cvss>=1e1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := advisory.ParseSelector(s)
		if err != nil {
			if !strings.Contains(err.Error(), "advisory selector") {
				t.Errorf("error %q does not say what it was parsing", err)
			}
			return
		}
		if sel.String() != s {
			t.Errorf("String() = %q, want %q", sel.String(), s)
		}
		if id, ok := sel.ID(); ok && !sel.Match(advisory.Entry{ID: id}) {
			t.Errorf("%q does not match its own ID", s)
		}
		sel.Match(advisory.Entry{ID: s, Aliases: []string{s}, HasCVSS: true, CVSS: 5})
	})
}
