package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/telemetry"
)

// TestSmallBacklogIsWarned: `sumgate run` warns when the kernel caps
// accept queues below what a burst of clients needs, with the value and
// the remedy, and says nothing when the cap is enough or cannot be read.
func TestSmallBacklogIsWarned(t *testing.T) {
	for _, tc := range []struct {
		name, content string // "": no file
		want          []string
	}{
		{"old kernel default", "128\n", []string{`"somaxconn":128`, `"want_at_least":1024`, "sysctl -w net.core.somaxconn=4096", "1 s or more"}},
		{"just below", "1023\n", []string{`"somaxconn":1023`}},
		{"enough", "1024\n", nil},
		{"current default", "4096\n", nil},
		{"unreadable value", "many\n", nil},
		{"no file", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "somaxconn")
			if tc.content != "" {
				if err := os.WriteFile(file, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			warnSmallBacklog(telemetry.NewLogger(&logs, "json", nil), file)
			got := logs.String()
			if (got == "") != (tc.want == nil) {
				t.Fatalf("logged %q, want a warning: %v", got, tc.want != nil)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("logged %q, want it to contain %q", got, w)
				}
			}
		})
	}
}
