package sumdb

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/mod/sumdb"
)

func TestSwapLatestIsCompareAndSwap(t *testing.T) {
	s, err := openStore(t.TempDir(), DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.readLatest(); err != nil || len(got) != 0 {
		t.Fatalf("empty store: latest = %q, %v", got, err)
	}
	if err := s.swapLatest(nil, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.swapLatest(nil, []byte("b")); !errors.Is(err, sumdb.ErrWriteConflict) {
		t.Fatalf("stale swap: err = %v, want ErrWriteConflict", err)
	}
	if err := s.swapLatest([]byte("a"), []byte("b")); err != nil {
		t.Fatal(err)
	}

	// Of many writers racing from the same old value, exactly one wins,
	// also when they come from separate stores (as separate processes would).
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		other, err := openStore(filepath.Dir(filepath.Dir(s.dir)), DefaultKey)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			switch err := other.swapLatest([]byte("b"), []byte("c")); {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, sumdb.ErrWriteConflict):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d writers won the same swap, want 1", wins.Load())
	}
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) != "" && e.Name() != "latest.lock" {
			t.Errorf("left behind %s", e.Name())
		}
	}
	info, err := os.Stat(s.dir)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode %v, want 0700", info.Mode().Perm())
	}
}

func TestStoreRefusesAnotherKeysState(t *testing.T) {
	dir := t.TempDir()
	if _, err := openStore(dir, DefaultKey); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "sumdb", "sum.golang.org+033de0ae", "key")
	if err := os.WriteFile(keyFile, []byte("sum.golang.org+033de0ae+other\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openStore(dir, DefaultKey); err == nil {
		t.Fatal("opened state recorded for another key")
	}
}

func TestTilePathsAreConfined(t *testing.T) {
	s, err := openStore(t.TempDir(), DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"../latest", "tile/../../x", "lookup/example.com/m@v1.0.0", "tile/8/0/../../../../etc", "/etc/passwd", ""} {
		if err := s.writeTile(bad, []byte("x")); err == nil {
			t.Errorf("writeTile(%q) succeeded", bad)
		}
	}
	if err := s.writeTile("tile/8/0/x001/234.p/5", []byte("x")); err != nil {
		t.Errorf("a well-formed tile path was refused: %v", err)
	}
}

// TestTileNotItsWidthIsMissing: tiles are written without fsync, so one a
// power loss cut short must read as missing (and go), never as a tile.
func TestTileNotItsWidthIsMissing(t *testing.T) {
	s, err := openStore(t.TempDir(), DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	const tile = "tile/8/0/001.p/5"
	full := make([]byte, 5*32)
	for _, tt := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"empty", nil, false},
		{"short", full[:5*32-1], false},
		{"long", append(full, 0), false},
		{"its width", full, true},
	} {
		if err := s.writeTile(tile, tt.data); err != nil {
			t.Fatal(err)
		}
		got, err := s.readTile(tile)
		if tt.ok {
			if err != nil || len(got) != len(full) {
				t.Errorf("%s: readTile = %d bytes, %v", tt.name, len(got), err)
			}
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: readTile err = %v, want one that says missing", tt.name, err)
		}
		if _, err := os.Stat(filepath.Join(s.dir, filepath.FromSlash(tile))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the bad tile is still stored", tt.name)
		}
	}
}
