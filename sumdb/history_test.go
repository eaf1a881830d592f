package sumdb_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/etcdtest"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/sumdb"
)

// clock is a settable clock for the tree-head history.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// TestLoggedBy: the tree-head history dates a version by its record
// index, across restarts and, with shared state, across replicas; a
// record older than the history is not dated, rather than dated wrong.
func TestLoggedBy(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, backend := range []string{"file", "etcd"} {
		t.Run(backend, func(t *testing.T) {
			w := testworld.New(t)
			c := &clock{t: t0.Add(-time.Hour)}
			dir := t.TempDir()
			edit := func(cfg *sumdb.Config) { cfg.Now = c.now }
			if backend == "etcd" {
				etcd := etcdtest.Start(t).Client(t)
				edit = func(cfg *sumdb.Config) { cfg.Now, cfg.Etcd = c.now, etcd }
			}
			v := newVerifier(t, w, dir, edit)
			ctx := context.Background()
			first := w.Module(testworld.GoodPath, testworld.Version)
			old := w.PublishGenerated(t, "example.com/age/old", 1<<10)
			young := w.PublishGenerated(t, "example.com/age/young", 1<<10)
			for _, step := range []struct {
				at time.Time
				m  *testworld.Module
			}{{t0.Add(-time.Hour), first}, {t0, old}, {t0.Add(time.Hour), young}} {
				c.set(step.at)
				if vd, err := v.Check(ctx, step.m.Version, sumdb.KindZip, step.m.WriteZip(t)); err != nil || vd.Outcome != sumdb.Verified {
					t.Fatalf("%v, %v", vd, err)
				}
			}
			v.Close()

			// A restart, or another replica with a data directory of its own.
			again := dir
			if backend == "etcd" {
				again = ""
			}
			for _, v := range []*sumdb.Verifier{v, newVerifier(t, w, again, edit)} {
				if backend == "etcd" {
					// The other replica proves the versions from the shared cache.
					for _, m := range []*testworld.Module{first, old, young} {
						if vd, err := v.Check(ctx, m.Version, sumdb.KindZip, m.WriteZip(t)); err != nil || vd.Outcome != sumdb.Verified {
							t.Fatalf("%v, %v", vd, err)
						}
					}
				}
				tests := []struct {
					name string
					m    *testworld.Module
					ok   bool
					want time.Time
				}{
					{"logged before the history began", first, false, time.Time{}},
					{"old", old, true, t0},
					{"young", young, true, t0.Add(time.Hour)},
				}
				for _, tt := range tests {
					since, evidence, ok := v.LoggedBy(tt.m.Version)
					if ok != tt.ok || !since.Equal(tt.want) || evidence == "" {
						t.Errorf("%s: %v, %q, %v; want %v, %v", tt.name, since, evidence, ok, tt.want, tt.ok)
					}
				}
			}
		})
	}
}

// TestHistoryIgnoresFutureSightings: a sighting dated after now, planted
// in etcd or written by a replica whose clock ran ahead, neither stops a
// replica from recording its own sightings nor waits to become evidence.
func TestHistoryIgnoresFutureSightings(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	future := t0.Add(24 * time.Hour)
	if _, err := etcd.Put(context.Background(), sharedKey(w, prefix, "history/"+strconv.FormatInt(future.Unix(), 10)),
		fmt.Sprintf("%020d %d\n", int64(1)<<40, future.Unix())); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: t0}
	v := newVerifier(t, w, "", func(cfg *sumdb.Config) { cfg.Now, cfg.Etcd, cfg.EtcdPrefix = c.now, etcd, prefix })
	t.Cleanup(v.Close)
	m := w.PublishGenerated(t, "example.com/age/future", 1<<10)
	if vd, err := v.Check(context.Background(), m.Version, sumdb.KindZip, m.WriteZip(t)); err != nil || vd.Outcome != sumdb.Verified {
		t.Fatalf("%v, %v", vd, err)
	}
	h := v.History()
	if len(h) != 1 || !h[0].Seen.Equal(t0) || h[0].Size > 1<<20 {
		t.Errorf("history %+v, want only the sighting at %v", h, t0)
	}
	c.set(future.Add(time.Hour))
	if since, evidence, ok := v.LoggedBy(m.Version); ok && !since.Equal(t0) {
		t.Errorf("the planted sighting became evidence once its time came: %v, %s", since, evidence)
	}
}

// TestLoggedByInOneBucket: a version logged after the first tree of a
// history bucket was recorded is still dated (by the bucket's largest
// tree), rather than left to the publisher's .info time, which would let
// it past a cooldown.
func TestLoggedByInOneBucket(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w := testworld.New(t)
	c := &clock{t: t0.Add(-240 * time.Hour)}
	v := newVerifier(t, w, "", func(cfg *sumdb.Config) { cfg.Now = c.now })
	t.Cleanup(v.Close)
	ctx := context.Background()
	a := w.PublishGenerated(t, "example.com/bucket/a", 1<<10)
	b := w.PublishGenerated(t, "example.com/bucket/b", 1<<10)
	for _, step := range []struct {
		at time.Time
		m  *testworld.Module
	}{{c.now(), w.Module(testworld.GoodPath, testworld.Version)}, {t0, a}, {t0.Add(time.Minute), b}} {
		c.set(step.at)
		if vd, err := v.Check(ctx, step.m.Version, sumdb.KindZip, step.m.WriteZip(t)); err != nil || vd.Outcome != sumdb.Verified {
			t.Fatalf("%v, %v", vd, err)
		}
	}
	for _, tt := range []struct {
		m    *testworld.Module
		want time.Time
	}{{a, t0.Add(time.Minute)}, {b, t0.Add(time.Minute)}} {
		if since, evidence, ok := v.LoggedBy(tt.m.Version); !ok || !since.Equal(tt.want) {
			t.Errorf("%s: %v, %q, %v; want %v", tt.m.Version, since, evidence, ok, tt.want)
		}
	}
}
