package certs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/testworld"
)

// openStore opens a leafStore on dir, logging to logs if it is not nil,
// and closes it in t.Cleanup.
func openStore(t *testing.T, dir string, logs *testworld.Buffer) *leafStore {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if logs != nil {
		log = slog.New(slog.NewTextHandler(logs, nil))
	}
	s, err := newLeafStore(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// site is a leaf's three files in certmagic's layout.
var site = []struct{ key, value string }{
	{"certificates/sumgate-x/a.example/a.example.key", "KEY"},
	{"certificates/sumgate-x/a.example/a.example.crt", "CERT"},
	{"certificates/sumgate-x/a.example/a.example.json", "{}"},
}

// TestLeafStoreWritesBehind: a store is read back at once, reaches the
// disk in certmagic's layout (keys 0600, folders 0700), and a store
// opened later, as after a restart, reads it.
func TestLeafStoreWritesBehind(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir, nil)
	for _, f := range site {
		if err := s.Store(ctx, f.key, []byte(f.value)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range site {
		if got, err := s.Load(ctx, f.key); err != nil || string(got) != f.value {
			t.Errorf("Load(%s) = %q, %v; want %q", f.key, got, err, f.value)
		}
		if info, err := s.Stat(ctx, f.key); err != nil || info.Size != int64(len(f.value)) || !info.IsTerminal {
			t.Errorf("Stat(%s) = %+v, %v", f.key, info, err)
		}
	}
	for _, key := range []string{site[0].key, "certificates/sumgate-x/a.example", "certificates"} {
		if !s.Exists(ctx, key) {
			t.Errorf("Exists(%s) = false", key)
		}
	}
	for _, key := range []string{"certificates/sumgate-x/a.exampl", "certificates/sumgate-x/b.example/b.example.crt"} {
		if s.Exists(ctx, key) {
			t.Errorf("Exists(%s) = true", key)
		}
	}
	if _, err := s.Load(ctx, "certificates/sumgate-x/b.example/b.example.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing key: err = %v, want fs.ErrNotExist", err)
	}
	keys, err := s.List(ctx, "certificates/sumgate-x/a.example", false) // waits for the writes
	if err != nil || len(keys) != len(site) {
		t.Errorf("List = %v, %v; want the %d files", keys, err, len(site))
	}
	s.Close()

	for _, f := range site {
		name := filepath.Join(dir, filepath.FromSlash(f.key))
		data, err := os.ReadFile(name)
		if err != nil || string(data) != f.value {
			t.Errorf("%s holds %q, %v; want %q", name, data, err, f.value)
		}
		if info, err := os.Stat(name); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", name, info.Mode().Perm(), err)
		}
		if info, err := os.Stat(filepath.Dir(name)); err != nil || info.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, %v; want 0700", filepath.Dir(name), info.Mode().Perm(), err)
		}
	}
	again := openStore(t, dir, nil)
	if got, err := again.Load(ctx, site[1].key); err != nil || string(got) != site[1].value {
		t.Errorf("after a restart, Load = %q, %v", got, err)
	}

	// After Close nothing is written, nor locked.
	if err := s.Store(ctx, "certificates/sumgate-x/late.example/late.example.crt", []byte("LATE")); !errors.Is(err, errClosed) {
		t.Errorf("Store after Close: err = %v, want errClosed", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "certificates/sumgate-x/late.example")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a store after Close reached the disk: %v", err)
	}
	if err := s.Lock(ctx, "issue_cert_late.example"); !errors.Is(err, errClosed) {
		t.Errorf("Lock after Close: err = %v, want errClosed", err)
	}
}

// TestLeafStoreLocks: a name's lock excludes other holders in this
// process and in another (a second store on the folder stands for one),
// and is released only once what was stored under it is on disk.
func TestLeafStoreLocks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := openStore(t, dir, nil), openStore(t, dir, nil)
	const name = "issue_cert_a.example"
	if err := a.Lock(ctx, name); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		holder string
		s      *leafStore
	}{{"this process", a}, {"another process", b}} {
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := tt.s.Lock(short, name)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock in %s while held: err = %v, want it to wait until the deadline", tt.holder, err)
		}
	}
	if err := a.Lock(ctx, "issue_cert_b.example"); err != nil {
		t.Errorf("another name's lock: %v", err)
	}
	for _, f := range site {
		a.Store(ctx, f.key, []byte(f.value))
	}
	if err := a.Unlock(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx, name); err == nil {
		t.Error("a second Unlock succeeded")
	}
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.Lock(wait, name); err != nil {
		t.Fatalf("Lock in another process after Unlock: %v", err)
	}
	for _, f := range site {
		if got, err := b.disk.Load(ctx, f.key); err != nil || string(got) != f.value {
			t.Errorf("the next holder finds %s = %q, %v on disk; want %q", f.key, got, err, f.value)
		}
	}
	if err := b.Unlock(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := a.Lock(wait, name); err != nil {
		t.Errorf("Lock in this process after another released it: %v", err)
	}
}

// TestLeafStoreFailedWriteLeavesNoPair: when one of a leaf's files cannot
// be written, its folder is removed, so that the disk never holds a key
// and a certificate from different issuances; the failure is logged.
func TestLeafStoreFailedWriteLeavesNoPair(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var logs testworld.Buffer
	s := openStore(t, dir, &logs)
	for _, f := range site {
		s.Store(ctx, f.key, []byte("OLD "+f.value))
	}
	s.flush(ctx)
	// A folder in the certificate's place makes its rename fail, even
	// for root.
	cert := filepath.Join(dir, filepath.FromSlash(site[1].key))
	os.Remove(cert)
	if err := os.MkdirAll(filepath.Join(cert, "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range site {
		s.Store(ctx, f.key, []byte("NEW "+f.value))
	}
	s.flush(ctx)
	if _, err := os.Stat(filepath.Dir(cert)); !errors.Is(err, fs.ErrNotExist) {
		entries, _ := os.ReadDir(filepath.Dir(cert))
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("after a failed write the leaf's folder holds %v (%v), want it removed", names, err)
	}
	if !strings.Contains(logs.String(), "writing a leaf to storage failed") {
		t.Errorf("the failure was not logged:\n%s", logs.String())
	}
	if s.Exists(ctx, site[0].key) {
		t.Error("the key of the failed leaf still exists")
	}
}

// TestLeafStoreHoldsLittleUnwritten: Store waits for the disk once
// maxUnwritten stores are pending.
func TestLeafStoreHoldsLittleUnwritten(t *testing.T) {
	s := openStore(t, t.TempDir(), nil)
	for range maxUnwritten {
		s.slots <- struct{}{} // as if that many stores were pending
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Store(short, site[0].key, []byte("KEY")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Store with %d stores pending: err = %v, want it to wait", maxUnwritten, err)
	}
	for range maxUnwritten {
		<-s.slots
	}
	if err := s.Store(context.Background(), site[0].key, []byte("KEY")); err != nil {
		t.Errorf("Store with room: %v", err)
	}
}

func TestSiteOf(t *testing.T) {
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"certificates/sumgate-x/a.example/a.example.crt", "certificates/sumgate-x/a.example", true},
		{"certificates/sumgate-x/a.example", "", false},
		{"last_clean.json", "", false},
		{"ocsp/a.example-1234", "", false},
	}
	for _, tt := range tests {
		if got, ok := siteOf(tt.key); got != tt.want || ok != tt.ok {
			t.Errorf("siteOf(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
}

// TestBatchesKeepACertificateWhole: the writer never fsyncs and renames
// part of one certificate's files in one batch and the rest in the next.
func TestBatchesKeepACertificateWhole(t *testing.T) {
	leaf := func(name string) []*writeOp {
		var ops []*writeOp
		for _, ext := range []string{".crt", ".key", ".json"} {
			ops = append(ops, &writeOp{key: "certificates/sumgate-x/" + name + "/" + name + ext})
		}
		return ops
	}
	fill := func(n int) []*writeOp {
		var ops []*writeOp
		for i := range n {
			ops = append(ops, leaf(fmt.Sprintf("h%d.example", i))[0])
		}
		return ops
	}
	release := &writeOp{release: &nameLock{name: "x"}}
	tests := []struct {
		name  string
		queue []*writeOp
		want  int
	}{
		{"empty", nil, 0},
		{"short", leaf("a.example"), 3},
		{"exactly full", fill(maxBatch), maxBatch},
		{"a leaf across the bound", append(fill(maxBatch-1), leaf("a.example")...), maxBatch + 2},
		{"then another leaf", append(append(fill(maxBatch-1), leaf("a.example")...), leaf("b.example")...), maxBatch + 2},
		{"a lock release at the bound", append(append(fill(maxBatch-1), release), leaf("a.example")...), maxBatch},
	}
	for _, tt := range tests {
		if got := batchLen(tt.queue); got != tt.want {
			t.Errorf("%s: batchLen = %d, want %d", tt.name, got, tt.want)
		}
	}
}
