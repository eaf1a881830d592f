package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/sumdb"
)

// TestAlertShowAndClear: with the file backend, show prints the
// evidence and exits 1 while an alert stands; clear removes it and keeps
// the evidence with who cleared it.
func TestAlertShowAndClear(t *testing.T) {
	dir := t.TempDir()
	// A verifier makes the state directory; the alert is what a fork writes.
	v, err := sumdb.New(sumdb.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	states, _ := filepath.Glob(filepath.Join(dir, "sumdb", "*"))
	if len(states) != 1 {
		t.Fatalf("state directories: %v", states)
	}
	alert := filepath.Join(states[0], "SECURITY-ALERT")
	if err := os.WriteFile(alert, []byte("2026-12-01T04:00:00Z\nSECURITY ERROR: evidence\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sumgate := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		status := run(append(args, "-data-dir", dir), &stdout, &stderr)
		return status, stdout.String(), stderr.String()
	}
	tests := []struct {
		args       []string
		wantStatus int
		wantOut    string
	}{
		{[]string{"alert", "show"}, exitBlocked, "SECURITY ERROR: evidence"},
		{[]string{"alert", "clear", "-by", "bob@corp.example"}, exitOK, "cleared the security alert, by bob@corp.example"},
		{[]string{"alert", "show"}, exitOK, "no security alert on record"},
		{[]string{"alert", "clear"}, exitOK, "no security alert on record"},
	}
	for _, tt := range tests {
		status, out, errOut := sumgate(tt.args...)
		if status != tt.wantStatus || !strings.Contains(out, tt.wantOut) {
			t.Errorf("sumgate %s: status %d, stdout %q, stderr %q; want %d and %q", strings.Join(tt.args, " "), status, out, errOut, tt.wantStatus, tt.wantOut)
		}
	}
	if _, err := os.Stat(alert); !os.IsNotExist(err) {
		t.Errorf("the alert file is still there: %v", err)
	}
	kept, _ := filepath.Glob(alert + ".cleared-*")
	if len(kept) != 1 {
		t.Fatalf("clearance records: %v", kept)
	}
	record, _ := os.ReadFile(kept[0])
	if !strings.Contains(string(record), "SECURITY ERROR: evidence") || !strings.Contains(string(record), `"by": "bob@corp.example"`) {
		t.Errorf("the clearance record lacks the evidence or who cleared it:\n%s", record)
	}
	if status, _, _ := sumgate("alert", "frobnicate"); status != exitError {
		t.Errorf("an unknown action: status %d, want %d", status, exitError)
	}
}
