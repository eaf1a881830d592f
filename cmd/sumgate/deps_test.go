package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/internal/testworld"
)

// TestBinaryLinksNoEtcdServer: tests start a real etcd server
// (internal/etcdtest), but only etcd's client may be linked into sumgate,
// with or without the step backend.
func TestBinaryLinksNoEtcdServer(t *testing.T) {
	for _, tags := range []string{"", "step"} {
		out, err := exec.Command(testworld.GoBinary(t), "list", "-tags", tags, "-deps", "-f", "{{.ImportPath}}", ".").Output()
		if err != nil {
			t.Fatalf("go list -tags %q: %v", tags, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 100 {
			t.Fatalf("go list -tags %q listed %d packages: not the binary's dependencies", tags, len(deps))
		}
		for _, p := range deps {
			for _, banned := range []string{"go.etcd.io/etcd/server/", "go.etcd.io/raft/", "github.com/sumgate/sumgate/internal/etcdtest"} {
				if strings.HasPrefix(p, banned) {
					t.Errorf("sumgate (tags %q) links %s", tags, p)
				}
			}
		}
	}
}
