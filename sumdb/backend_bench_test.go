package sumdb_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/internal/etcdtest"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/sumdb"
)

// BenchmarkCheckBackend compares, in one run, a check of a go.mod with
// the file backend and with state shared in etcd (a real etcd server in
// this process, which fsyncs its write-ahead log on every commit, on the
// same disk as the data directories). Every iteration publishes a new
// version, so every check is cold on each backend: never seen, with a tree
// head larger than the one stored. Then, on every backend, the same check
// again, warm (proven hashes in the data directory). Three verifiers,
// each with a data directory of its own, check each version, and each
// check is timed alone:
//
//   - file: the file backend, the tree head in the data directory;
//   - etcd: the first replica to check the version with state in etcd: it
//     claims the lookup, reads the tree head from etcd, finds no record
//     there, fetches record and tiles from the database, and swaps the
//     tree head in etcd;
//   - shared: a second replica, once the first has shared the record and
//     tiles: its claim, the tree head, the record and the tiles all come
//     from etcd, and nothing from the database.
//
// file and etcd run in a random order, cold and warm, and shared
// runs after etcd, once etcd's background writes to the shared cache and
// the release of its claim are done (untimed): each check is timed on an
// otherwise idle verifier. The metrics are the mean time of a check,
// sec/cold-file, sec/cold-etcd, sec/cold-shared, sec/warm-file and
// sec/warm-etcd, and the ratios of the means, in the same iterations, of
// cold etcd, cold shared and warm etcd to the file backend's. For
// reference, sec/etcd-put and sec/etcd-get are the time of one put (a
// commit: the log fsynced) and one linearizable get of a small key, in
// the same iterations. sec/op is
// an iteration's time, publishing and waiting included, and says nothing.
//
//	go test -run XXX -bench CheckBackend -count 8 ./sumdb/ | tee backend.txt && benchstat backend.txt
func BenchmarkCheckBackend(b *testing.B) {
	const warmChecks = 8 // warm checks per backend and iteration
	w := testworld.New(b)
	etcd := etcdtest.Start(b).Client(b)
	client := w.HTTPClient() // shared, as in a long-running gateway
	const prefix = "/sumgate/"
	withEtcd := func(c *sumdb.Config) {
		c.HTTPClient = client
		c.Etcd, c.EtcdPrefix, c.EtcdTimeout = etcd, prefix, 5*time.Second
	}
	file := newVerifier(b, w, "", func(c *sumdb.Config) { c.HTTPClient = client })
	first := newVerifier(b, w, "", withEtcd)
	second := newVerifier(b, w, "", withEtcd)
	for _, v := range []*sumdb.Verifier{file, first, second} {
		b.Cleanup(v.Close)
	}
	ctx := context.Background()
	timed := func(v *sumdb.Verifier, m module.Version, modFile string, cached bool) time.Duration {
		t0 := time.Now()
		vd, err := v.Check(ctx, m, sumdb.KindMod, modFile)
		d := time.Since(t0)
		if err != nil || vd.Outcome != sumdb.Verified || vd.Cached != cached {
			b.Fatalf("checking %s (cached: %v): %v %v", m, cached, vd, err)
		}
		return d
	}

	var coldFile, coldEtcd, coldShared, warmFile, warmEtcd, commit, read time.Duration
	var n int
	for b.Loop() {
		mod := w.PublishGenerated(b, fmt.Sprintf("example.com/backend/m%d", n), 1<<10)
		modFile := mod.WriteMod(b)
		m := mod.Version
		n++
		shuffled(
			func() { coldFile += timed(file, m, modFile, false) },
			func() { coldEtcd += timed(first, m, modFile, false) })
		waitReleased(b, w, etcd, prefix, m)
		coldShared += timed(second, m, modFile, false)
		waitReleased(b, w, etcd, prefix, m)
		t0 := time.Now()
		if _, err := etcd.Put(ctx, "/bench/scratch", m.Path); err != nil {
			b.Fatal(err)
		}
		commit += time.Since(t0)
		t0 = time.Now()
		if _, err := etcd.Get(ctx, "/bench/scratch"); err != nil {
			b.Fatal(err)
		}
		read += time.Since(t0)
		for range warmChecks {
			shuffled(
				func() { warmFile += timed(file, m, modFile, true) },
				func() { warmEtcd += timed(first, m, modFile, true) })
		}
	}
	per := func(d time.Duration, k int) float64 { return d.Seconds() / float64(k) }
	b.ReportMetric(per(coldFile, n), "sec/cold-file")
	b.ReportMetric(per(coldEtcd, n), "sec/cold-etcd")
	b.ReportMetric(per(coldShared, n), "sec/cold-shared")
	b.ReportMetric(per(warmFile, n*warmChecks), "sec/warm-file")
	b.ReportMetric(per(warmEtcd, n*warmChecks), "sec/warm-etcd")
	b.ReportMetric(per(commit, n), "sec/etcd-put")
	b.ReportMetric(per(read, n), "sec/etcd-get")
	b.ReportMetric(coldEtcd.Seconds()/coldFile.Seconds(), "cold-etcd/file")
	b.ReportMetric(coldShared.Seconds()/coldFile.Seconds(), "cold-shared/file")
	b.ReportMetric(warmEtcd.Seconds()/warmFile.Seconds(), "warm-etcd/file")
}

// shuffled runs f and g, in a random order.
func shuffled(f, g func()) {
	if rand.IntN(2) == 0 {
		f, g = g, f
	}
	f()
	g()
}

// waitReleased waits until no replica's claim on looking m up is left in
// etcd: a replica releases its claim once it has written what it shared
// in the background, so that a check after it finds the record there.
func waitReleased(b *testing.B, w *testworld.World, etcd *clientv3.Client, prefix string, m module.Version) {
	b.Helper()
	p, _ := module.EscapePath(m.Path)
	vers, _ := module.EscapeVersion(m.Version)
	key := sharedKey(w, prefix, "claim/"+p+"@"+vers)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := etcd.Get(context.Background(), key, clientv3.WithCountOnly())
		if err != nil {
			b.Fatalf("reading the claim on %s: %v", m, err)
		}
		if resp.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the claim on %s is still held after 10 s", m)
		}
		time.Sleep(time.Millisecond)
	}
}
