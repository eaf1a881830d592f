package gateway

import (
	"fmt"
	"slices"
	"testing"
)

// TestNewestPrefersReleases: the versions of a list the cooldown dates
// are the newest releases, so that pre-release tags published above a
// young release cannot leave it undated (and so listed) in the list.
func TestNewestPrefersReleases(t *testing.T) {
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("v1.1.0-rc.%d", i))
	}
	tests := []struct {
		name     string
		versions []string
		want     []string // must be among the dated
		size     int
	}{
		{"pre-releases above a release", append(slices.Clone(many), "v1.0.0"), []string{"v1.0.0", "v1.1.0-rc.39"}, maxListAges},
		{"few versions", []string{"v1.0.0", "v0.9.0", "bad", "v1.1.0-0.20240101120000-abcdefabcdef"}, []string{"v0.9.0", "v1.0.0", "v1.1.0-0.20240101120000-abcdefabcdef"}, 3},
	}
	for _, tt := range tests {
		got := newest(tt.versions)
		if len(got) != tt.size {
			t.Errorf("%s: %d versions dated, want %d: %v", tt.name, len(got), tt.size, got)
		}
		for _, v := range tt.want {
			if !slices.Contains(got, v) {
				t.Errorf("%s: %s is not dated: %v", tt.name, v, got)
			}
		}
	}
}
