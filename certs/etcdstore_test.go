package certs

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sumgate/sumgate/internal/etcdtest"
)

// openEtcdStore returns a store under prefix on client, checking leaves
// with check, and closes it in t.Cleanup.
func openEtcdStore(t *testing.T, client *clientv3.Client, prefix string, check leafCheck) *etcdStore {
	t.Helper()
	s := newEtcdStore(client, prefix, 0, check, slog.New(slog.DiscardHandler))
	t.Cleanup(s.Close)
	return s
}

// TestEtcdStoreContract: the store keeps certmagic.Storage's contract as
// certmagic's FileStorage reads it: keys are files, their prefixes up to
// a "/" folders.
func TestEtcdStoreContract(t *testing.T) {
	ctx := context.Background()
	s := openEtcdStore(t, etcdtest.Start(t).Client(t), "/sumgate/certs/", nil)
	before := time.Now()
	for _, key := range []string{"a/b/c", "a/b/d", "a/e", "ab/f", "top"} {
		if err := s.Store(ctx, key, []byte("value of "+key)); err != nil {
			t.Fatal(err)
		}
	}

	loads := []struct {
		key     string
		want    string // "" for fs.ErrNotExist
		exists  bool
		stat    bool // Stat answers
		isFile  bool
		modTime bool // Stat's Modified is the Store's time
	}{
		{key: "a/b/c", want: "value of a/b/c", exists: true, stat: true, isFile: true, modTime: true},
		{key: "top", want: "value of top", exists: true, stat: true, isFile: true, modTime: true},
		{key: "a/b", exists: true, stat: true},
		{key: "a", exists: true, stat: true},
		{key: "a/b/cc"},
		{key: "a/b/c/x"},
		{key: "a/", exists: false},
		{key: "missing"},
	}
	for _, tt := range loads {
		got, err := s.Load(ctx, tt.key)
		if tt.want == "" && !errors.Is(err, fs.ErrNotExist) || tt.want != "" && (err != nil || string(got) != tt.want) {
			t.Errorf("Load(%q) = %q, %v; want %q", tt.key, got, err, tt.want)
		}
		if got := s.Exists(ctx, tt.key); got != tt.exists {
			t.Errorf("Exists(%q) = %v, want %v", tt.key, got, tt.exists)
		}
		info, err := s.Stat(ctx, tt.key)
		switch {
		case !tt.stat:
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat(%q) = %+v, %v; want fs.ErrNotExist", tt.key, info, err)
			}
		case err != nil || info.Key != tt.key || info.IsTerminal != tt.isFile || info.Size != int64(len(tt.want)):
			t.Errorf("Stat(%q) = %+v, %v", tt.key, info, err)
		case tt.modTime && (info.Modified.Before(before) || info.Modified.After(time.Now())):
			t.Errorf("Stat(%q).Modified = %v, not the time of the Store", tt.key, info.Modified)
		}
	}

	lists := []struct {
		prefix    string
		recursive bool
		want      []string // nil for fs.ErrNotExist
	}{
		{"a", false, []string{"a/b", "a/e"}},
		{"a", true, []string{"a/b", "a/b/c", "a/b/d", "a/e"}},
		{"a/b", false, []string{"a/b/c", "a/b/d"}},
		{"", false, []string{"a", "ab", "top"}},
		{"", true, []string{"a", "a/b", "a/b/c", "a/b/d", "a/e", "ab", "ab/f", "top"}},
		{"top", false, []string{}},
		{"missing", true, nil},
	}
	for _, tt := range lists {
		got, err := s.List(ctx, tt.prefix, tt.recursive)
		slices.Sort(got)
		if tt.want == nil && !errors.Is(err, fs.ErrNotExist) || tt.want != nil && (err != nil || !slices.Equal(got, tt.want)) {
			t.Errorf("List(%q, %v) = %q, %v; want %q", tt.prefix, tt.recursive, got, err, tt.want)
		}
	}

	deletes := []struct {
		key  string
		gone []string // keys that no longer exist
		kept []string // keys that still do
	}{
		{key: "missing", kept: []string{"a/b/c", "top"}},
		{key: "a/b/c", gone: []string{"a/b/c"}, kept: []string{"a/b/d", "a/b"}},
		{key: "a", gone: []string{"a", "a/b", "a/b/d", "a/e"}, kept: []string{"ab/f", "top"}},
		{key: "a", kept: []string{"ab", "top"}}, // again: no error
	}
	for _, tt := range deletes {
		if err := s.Delete(ctx, tt.key); err != nil {
			t.Errorf("Delete(%q): %v", tt.key, err)
		}
		for _, key := range tt.gone {
			if s.Exists(ctx, key) {
				t.Errorf("after Delete(%q), %q exists", tt.key, key)
			}
		}
		for _, key := range tt.kept {
			if !s.Exists(ctx, key) {
				t.Errorf("after Delete(%q), %q is gone", tt.key, key)
			}
		}
	}
}

// TestEtcdStoreKeepsToItsPrefix: stores under two prefixes of one etcd
// see nothing of each other, and every key lies under the prefix.
func TestEtcdStoreKeepsToItsPrefix(t *testing.T) {
	ctx := context.Background()
	client := etcdtest.Start(t).Client(t)
	a := openEtcdStore(t, client, "/a/certs/", nil)
	b := openEtcdStore(t, client, "/b/certs/", nil)
	if err := a.Store(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := a.Lock(ctx, "name"); err != nil {
		t.Fatal(err)
	}
	if b.Exists(ctx, "k") {
		t.Error("a key stored under /a/ exists under /b/")
	}
	resp, err := client.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if key := string(kv.Key); !strings.HasPrefix(key, "/a/certs/data/") && !strings.HasPrefix(key, "/a/certs/locks/") && key != "etcdtest-health" {
			t.Errorf("key %q is outside the store's prefix", key)
		}
	}
	if err := a.Unlock(ctx, "name"); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdStoreLocks: a lock excludes holders in other replicas (another
// client, so another lease) and in this process, is released by Unlock
// or Close, and a wait ends with its context.
func TestEtcdStoreLocks(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	tests := []struct {
		name    string
		second  func(t *testing.T, first *etcdStore) *etcdStore
		release func(first *etcdStore) error
	}{
		{"another replica, Unlock", func(t *testing.T, _ *etcdStore) *etcdStore {
			return openEtcdStore(t, srv.Client(t), "/locks/", nil)
		}, func(first *etcdStore) error { return first.Unlock(ctx, "issue_cert_x") }},
		{"another replica, Close", func(t *testing.T, _ *etcdStore) *etcdStore {
			return openEtcdStore(t, srv.Client(t), "/locks/", nil)
		}, func(first *etcdStore) error { first.Close(); return nil }},
		{"this process, Unlock", func(_ *testing.T, first *etcdStore) *etcdStore { return first },
			func(first *etcdStore) error { return first.Unlock(ctx, "issue_cert_x") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := openEtcdStore(t, srv.Client(t), "/locks/", nil)
			second := tt.second(t, first)
			if err := first.Lock(ctx, "issue_cert_x"); err != nil {
				t.Fatal(err)
			}
			// Another name is free.
			if err := second.Lock(ctx, "issue_cert_x.evil"); err != nil {
				t.Fatal(err)
			}
			if err := second.Unlock(ctx, "issue_cert_x.evil"); err != nil {
				t.Fatal(err)
			}
			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			if err := second.Lock(short, "issue_cert_x"); err == nil {
				t.Fatal("a second holder took a held lock")
			}
			got := make(chan error, 1)
			go func() { got <- second.Lock(ctx, "issue_cert_x") }()
			select {
			case err := <-got:
				t.Fatalf("a second holder took a held lock: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
			if err := tt.release(first); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-got:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second): // far below the lease
				t.Fatal("the lock was not handed over once released")
			}
			if err := second.Unlock(ctx, "issue_cert_x"); err != nil {
				t.Fatal(err)
			}
			if err := second.Unlock(ctx, "issue_cert_x"); err == nil {
				t.Error("unlocking a lock not held succeeded")
			}
		})
	}
}

// TestEtcdStoreChecksLeaves: a leaf's file is there only if the whole
// leaf, read at once, passes the check; other keys are not checked.
func TestEtcdStoreChecksLeaves(t *testing.T) {
	ctx := context.Background()
	client := etcdtest.Start(t).Client(t)
	const dir = "certificates/sumgate-x/a.example/"
	files := []string{dir + "a.example.crt", dir + "a.example.key", dir + "a.example.json"}
	tests := []struct {
		name   string
		values map[string]string // raw values in etcd under data/, without the header unless given
		raw    bool              // store values as they are, not encoded
		wantOK bool
	}{
		{name: "whole and accepted", values: map[string]string{files[0]: "CERT", files[1]: "KEY", files[2]: "{}"}, wantOK: true},
		{name: "check refuses", values: map[string]string{files[0]: "FORGED", files[1]: "KEY", files[2]: "{}"}},
		{name: "a file missing", values: map[string]string{files[0]: "CERT", files[1]: "KEY"}},
		{name: "malformed value", raw: true, values: map[string]string{files[0]: "CERT", files[1]: "KEY", files[2]: "{}"}},
	}
	check := func(name string, crt, key, meta []byte) error {
		if name != "a.example" || string(crt) != "CERT" || string(key) != "KEY" || string(meta) != "{}" {
			return errors.New("refused")
		}
		return nil
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := "/check" + string(rune('a'+i)) + "/"
			s := openEtcdStore(t, client, prefix, check)
			for key, value := range tt.values {
				if !tt.raw {
					value = encodeValue([]byte(value), time.Now())
				}
				if _, err := client.Put(ctx, prefix+"data/"+key, value); err != nil {
					t.Fatal(err)
				}
			}
			for _, key := range files {
				if got := s.Exists(ctx, key); got != tt.wantOK {
					t.Errorf("Exists(%s) = %v, want %v", key, got, tt.wantOK)
				}
				_, err := s.Load(ctx, key)
				if tt.wantOK && err != nil || !tt.wantOK && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Load(%s): %v", key, err)
				}
			}
			// Outside a leaf's three files, nothing is checked.
			other := dir + "other"
			if err := s.Store(ctx, other, []byte("x")); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Load(ctx, other); err != nil || string(got) != "x" {
				t.Errorf("Load(%s) = %q, %v", other, got, err)
			}
		})
	}
}
