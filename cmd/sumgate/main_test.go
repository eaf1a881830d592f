package main

import (
	"strings"
	"testing"
)

// TestHelpPrintsUsageAndExitsZero: asking for help is not an error: the
// usage goes to standard output and the status is 0. A bad flag still is
// one.
func TestHelpPrintsUsageAndExitsZero(t *testing.T) {
	for _, tt := range []struct {
		args       []string
		wantStatus int
		wantOut    []string // substrings of stdout
		wantErr    []string // substrings of stderr; "" means stderr must be empty
	}{
		{args: []string{"help"}, wantOut: []string{"usage: sumgate <command>"}},
		{args: []string{"-h"}, wantOut: []string{"usage: sumgate <command>"}},
		{args: []string{"run", "-h"}, wantOut: []string{"usage: sumgate run [", "Starts the gateway", "-data-dir directory"}},
		{args: []string{"run", "-help"}, wantOut: []string{"usage: sumgate run [", "-admin-listen address"}},
		{args: []string{"verify", "-h"}, wantOut: []string{"usage: sumgate verify [", "-json"}},
		{args: []string{"verify", "-json", "--help"}, wantOut: []string{"usage: sumgate verify ["}},
		{args: []string{"ca", "-h"}, wantOut: []string{"usage: sumgate ca <init|export|bundle>", "-data-dir directory"}},
		{args: []string{"ca", "help"}, wantOut: []string{"usage: sumgate ca <init|export|bundle>"}},
		{args: []string{"ca", "init", "-h"}, wantOut: []string{"usage: sumgate ca <init|export|bundle>", "-config file"}},
		{args: []string{"ca", "export", "-h"}, wantOut: []string{"usage: sumgate ca <init|export|bundle>", "-data-dir directory"}},
		{args: []string{"ca", "bundle", "-help"}, wantOut: []string{"usage: sumgate ca <init|export|bundle>", "-system-roots file"}},
		{args: []string{"run", "-frob"}, wantStatus: 2, wantErr: []string{"flag provided but not defined: -frob", "usage: sumgate run ["}},
		{args: []string{"verify", "-frob"}, wantStatus: 2, wantErr: []string{"flag provided but not defined: -frob", "usage: sumgate verify ["}},
		{args: []string{"ca", "export", "-frob"}, wantStatus: 2, wantErr: []string{"flag provided but not defined: -frob", "usage: sumgate ca <"}},
		{args: []string{"ca"}, wantStatus: 2, wantErr: []string{"usage: sumgate ca <"}},
		{args: []string{"healthcheck", "-h"}, wantOut: []string{"usage: sumgate healthcheck [", "-admin address"}},
		{args: []string{"version", "-h"}, wantOut: []string{"usage: sumgate version"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			status, stdout, stderr := runCLI(tt.args...)
			if status != tt.wantStatus {
				t.Errorf("exit status %d, want %d", status, tt.wantStatus)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if tt.wantOut != nil && stderr != "" || tt.wantErr != nil && stdout != "" {
				t.Errorf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
			}
		})
	}
}
