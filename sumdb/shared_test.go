package sumdb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/etcdtest"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/sumdb"
)

// replica returns a verifier for w's database that shares its state
// through etcd under prefix, with a data directory of its own: one
// sumgate replica. It is closed at t's cleanup.
func replica(t testing.TB, w *testworld.World, etcd *clientv3.Client, prefix string) *sumdb.Verifier {
	t.Helper()
	v := newVerifier(t, w, "", func(c *sumdb.Config) {
		c.Etcd, c.EtcdPrefix, c.EtcdTimeout = etcd, prefix, 5*time.Second
	})
	t.Cleanup(v.Close)
	return v
}

// prefix is the shared state's key prefix in these tests.
const prefix = "/sumgate/"

// provedReplica starts a test world, an etcd and one replica on it,
// which proves the world's genuine module, sharing its proof.
func provedReplica(t testing.TB) (*testworld.World, *clientv3.Client, *sumdb.Verifier) {
	t.Helper()
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	a := replica(t, w, etcd, prefix)
	if vd := check(t, w, a, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("A: %s", vd)
	}
	return w, etcd, a
}

// sharedKey returns the etcd key of name in w's database's shared state.
func sharedKey(w *testworld.World, prefix, name string) string {
	n, rest, _ := strings.Cut(w.SumDBKey, "+")
	h, _, _ := strings.Cut(rest, "+")
	return prefix + "sumdb/" + n + "+" + h + "/" + name
}

// recordKey returns the etcd key of path@testworld.Version's lookup
// record in the shared cache.
func recordKey(w *testworld.World, prefix, path string) string {
	esc, _ := module.EscapePath(path)
	return sharedKey(w, prefix, "cache/lookup/"+esc+"@"+testworld.Version)
}

// headSize returns the size of the tree head stored in etcd.
func headSize(t testing.TB, w *testworld.World, etcd *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := etcd.Get(context.Background(), sharedKey(w, prefix, "latest"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the shared tree head: %v (%d keys)", err, len(resp.Kvs))
	}
	return treeSize(t, w, resp.Kvs[0].Value)
}

func treeSize(t testing.TB, w *testworld.World, msg []byte) int64 {
	t.Helper()
	verifier, err := note.NewVerifier(w.SumDBKey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		t.Fatalf("shared tree head: %v", err)
	}
	tree, err := tlog.ParseTree([]byte(n.Text))
	if err != nil {
		t.Fatal(err)
	}
	return tree.N
}

// databaseRequests counts what w's checksum database served, directly
// and through the module proxies.
func databaseRequests(w *testworld.World, what string) int {
	n := w.Requests(config.SumDBName, "/"+what)
	for _, u := range append([]string{w.ProxyURL}, w.MirrorURLs...) {
		host, prefix, _ := strings.Cut(strings.TrimPrefix(u, "https://"), "/")
		if prefix != "" {
			prefix = "/" + prefix
		}
		n += w.Requests(host, prefix+"/sumdb/"+config.SumDBName+"/"+what)
	}
	return n
}

// eventually polls cond every 20ms until it holds or 10s have passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSharedForkBlocksEveryReplica holds threat 21: a fork one replica
// sees blocks every replica, within seconds, across restarts, until an
// operator clears it, and the clearance says who.
func TestSharedForkBlocksEveryReplica(t *testing.T) {
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	a, b, c := replica(t, w, etcd, prefix), replica(t, w, etcd, prefix), replica(t, w, etcd, prefix)
	if vd := check(t, w, a, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("A before the fork: %s", vd)
	}
	honest := headSize(t, w, etcd, prefix)

	w.SetSumDB(testworld.SumDBForked)
	if vd := check(t, w, b, testworld.UpperPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.SecurityError {
		t.Fatalf("B on the fork: verdict %s, want a security error", vd)
	}
	if got := headSize(t, w, etcd, prefix); got != honest {
		t.Errorf("the fork moved the shared tree head from size %d to %d", honest, got)
	}
	w.SetSumDB(testworld.SumDBHonest)
	for name, v := range map[string]*sumdb.Verifier{"A": a, "C": c} {
		eventually(t, name+" learns of the fork", func() bool { _, ok := v.Alerted(); return ok })
		// Even a version A proved before the fork is blocked now.
		if vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.SecurityError || !strings.Contains(vd.Reason, "sumgate alert clear") {
			t.Errorf("%s after the fork: verdict %s, want a security error saying how to clear it", name, vd)
		}
		if _, ok := v.Proven(module.Version{Path: testworld.GoodPath, Version: testworld.Version}, sumdb.KindZip); ok {
			t.Errorf("%s answers a proven version while a fork is on record", name)
		}
	}
	// A replica started now fails closed from its first check.
	d := replica(t, w, etcd, prefix)
	if vd := check(t, w, d, testworld.GoodPath, testworld.Version, sumdb.KindMod); vd.Outcome != sumdb.SecurityError {
		t.Errorf("a new replica: verdict %s, want a security error", vd)
	}

	cl, ok, err := sumdb.ClearAlert(context.Background(), sumdb.Config{Key: w.SumDBKey, DataDir: t.TempDir(), Etcd: etcd, EtcdPrefix: prefix}, "alice@corp.example")
	if err != nil || !ok {
		t.Fatalf("ClearAlert: %v, %v", ok, err)
	}
	if !strings.Contains(cl.Alert, "SECURITY ERROR") {
		t.Errorf("the clearance does not keep the evidence: %q", cl.Alert)
	}
	for name, v := range map[string]*sumdb.Verifier{"A": a, "B": b, "C": c, "D": d} {
		eventually(t, name+" learns the alert was cleared", func() bool { _, ok := v.Alerted(); return !ok })
	}
	if vd := check(t, w, c, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Errorf("C after the clearance: %s", vd)
	}
	resp, err := etcd.Get(context.Background(), sharedKey(w, prefix, "alert-cleared/"), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("clearance records: %v, %d", err, len(resp.Kvs))
	}
	var rec sumdb.Clearance
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil || rec.By != "alice@corp.example" {
		t.Errorf("clearance record %s: %v", resp.Kvs[0].Value, err)
	}
}

// TestSharedProofsCostNoLookup: a version one replica proved costs
// another replica no request to the database: it verifies the shared
// record and tiles again itself.
func TestSharedProofsCostNoLookup(t *testing.T) {
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	a := replica(t, w, etcd, "/p/")
	b := replica(t, w, etcd, "/p/")
	if vd := check(t, w, a, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("A: %s", vd)
	}
	a.Close() // waits for the proofs to be shared
	if databaseRequests(w, "lookup/") == 0 {
		t.Fatal("A looked nothing up: the count is wrong")
	}
	w.ResetRequests()
	for _, kind := range []sumdb.Kind{sumdb.KindZip, sumdb.KindMod} {
		if vd := check(t, w, b, testworld.GoodPath, testworld.Version, kind); vd.Outcome != sumdb.Verified || vd.TreeSize == 0 {
			t.Fatalf("B %s: %s", kind, vd)
		}
	}
	if n := databaseRequests(w, ""); n != 0 {
		t.Errorf("B made %d requests to the database for a version A proved", n)
	}
	// A version nobody proved is looked up as before.
	if vd := check(t, w, b, testworld.UpperPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("B, a new version: %s", vd)
	}
	if n := databaseRequests(w, "lookup/"); n != 1 {
		t.Errorf("B looked a new version up %d times, want 1", n)
	}
}

// TestConcurrentLookupsAcrossReplicas: replicas checking the same new
// version at once look it up once between them.
func TestConcurrentLookupsAcrossReplicas(t *testing.T) {
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	var vs []*sumdb.Verifier
	for range 4 {
		vs = append(vs, replica(t, w, etcd, "/sumgate/"))
	}
	m := w.Module(testworld.GoodPath, testworld.Version)
	file := m.WriteZip(t)
	var wg sync.WaitGroup
	verdicts := make([]sumdb.Verdict, len(vs))
	for i, v := range vs {
		wg.Go(func() {
			vd, err := v.Check(context.Background(), m.Version, sumdb.KindZip, file)
			if err != nil {
				t.Error(err)
			}
			verdicts[i] = vd
		})
	}
	wg.Wait()
	for i, vd := range verdicts {
		if vd.Outcome != sumdb.Verified {
			t.Errorf("replica %d: %s", i, vd)
		}
	}
	if n := databaseRequests(w, "lookup/"); n != 1 {
		t.Errorf("%d replicas made %d lookups of one version, want 1", len(vs), n)
	}
}

// TestSharedHeadRace: eight replicas moving the shared tree head at once
// never move it backwards and lose no update: it ends at the size of the
// largest tree any of them proved against.
func TestSharedHeadRace(t *testing.T) {
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	const replicas, each = 8, 3
	var mods [replicas][]*testworld.Module
	for r := range replicas {
		for i := range each {
			mods[r] = append(mods[r], w.PublishGenerated(t, fmt.Sprintf("example.com/race/r%d/m%d", r, i), 1<<10))
		}
	}
	key := sharedKey(w, "/sumgate/", "latest")
	wctx, stop := context.WithCancel(context.Background())
	defer stop()
	history := etcd.Watch(wctx, key)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var largest int64
	for r := range replicas {
		v := replica(t, w, etcd, "/sumgate/")
		wg.Go(func() {
			for _, m := range mods[r] {
				vd, err := v.Check(context.Background(), m.Version, sumdb.KindZip, m.WriteZip(t))
				if err != nil || vd.Outcome != sumdb.Verified {
					t.Errorf("%s: %v, %v", m.Version, vd, err)
					return
				}
				mu.Lock()
				largest = max(largest, vd.TreeSize)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	final := headSize(t, w, etcd, "/sumgate/")
	if final < largest {
		t.Errorf("shared head ends at size %d, below the %d a replica proved against: an update was lost", final, largest)
	}
	var last int64
	writes := 0
	for writes == 0 || last < final {
		select {
		case resp := <-history:
			for _, ev := range resp.Events {
				n := treeSize(t, w, ev.Kv.Value)
				if n < last {
					t.Fatalf("the shared tree head went back from size %d to %d", last, n)
				}
				last = n
				writes++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the watch saw the head reach size %d, not %d", last, final)
		}
	}
	t.Logf("%d head writes, final size %d", writes, final)
}

// TestPoisonedSharedCache: records and tiles written into etcd by hand,
// which the database never signed, are refused: a tampered zip the forged
// record vouches for is still a mismatch, and a forged tile costs only a
// lookup from the database, which repairs the shared copy.
func TestPoisonedSharedCache(t *testing.T) {
	w, etcd, a := provedReplica(t)
	a.Close()
	ctx := context.Background()

	// A record for the tampered module that vouches for the bytes the
	// proxies serve, in the form the database uses, with a genuine
	// signed tree head.
	tampered := w.Module(testworld.TamperedZipPath, testworld.Version)
	head, err := etcd.Get(ctx, sharedKey(w, prefix, "latest"))
	if err != nil {
		t.Fatal(err)
	}
	served, err := dirhash.HashZip(tampered.WriteZip(t), dirhash.Hash1)
	if err != nil || served == tampered.ZipHash {
		t.Fatalf("the proxies serve the logged zip of %s (%v): the test is wrong", tampered.Version, err)
	}
	forged := fmt.Sprintf("7\n%s %s %s\n%s %s/go.mod %s\n\n%s", tampered.Version.Path, tampered.Version.Version, served,
		tampered.Version.Path, tampered.Version.Version, tampered.ModHash, head.Kvs[0].Value)
	esc, _ := module.EscapePath(tampered.Version.Path)
	if _, err := etcd.Put(ctx, sharedKey(w, prefix, "cache/lookup/"+esc+"@"+testworld.Version), forged); err != nil {
		t.Fatal(err)
	}
	// Every tile in the shared cache, replaced by zeros of its length.
	tiles, err := etcd.Get(ctx, sharedKey(w, prefix, "cache/tile/"), clientv3.WithPrefix())
	if err != nil || len(tiles.Kvs) == 0 {
		t.Fatalf("no shared tiles: %v", err)
	}
	for _, kv := range tiles.Kvs {
		if _, err := etcd.Put(ctx, string(kv.Key), string(make([]byte, len(kv.Value)))); err != nil {
			t.Fatal(err)
		}
	}

	b := replica(t, w, etcd, prefix)
	if vd := check(t, w, b, testworld.TamperedZipPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Mismatch || vd.Want != tampered.ZipHash {
		t.Errorf("a tampered zip a forged shared record vouches for: verdict %s, want a mismatch", vd)
	}
	if vd := check(t, w, b, testworld.UpperPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Errorf("with forged shared tiles: verdict %s, want verified from the database", vd)
	}
	b.Close()
	repaired, err := etcd.Get(ctx, string(tiles.Kvs[0].Key))
	if err != nil || len(repaired.Kvs) != 1 || strings.Trim(string(repaired.Kvs[0].Value), "\x00") == "" {
		t.Errorf("the forged tile %s was not replaced by the database's", tiles.Kvs[0].Key)
	}
}

// TestPlantedHeadIsNotBelieved: a tree head written into etcd by hand,
// even a fork signed with the database's key, is checked against the
// head the replica saw before: the fork is caught, and the tampered zip
// it vouches for never verifies.
func TestPlantedHeadIsNotBelieved(t *testing.T) {
	w, etcd, a := provedReplica(t)
	w.SetSumDB(testworld.SumDBForked)
	resp, err := w.HTTPClient().Get("https://" + config.SumDBName + "/latest")
	if err != nil {
		t.Fatal(err)
	}
	forked, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("reading the fork's head: %v, %s", err, resp.Status)
	}
	if _, err := etcd.Put(context.Background(), sharedKey(w, prefix, "latest"), string(forked)); err != nil {
		t.Fatal(err)
	}
	vd := check(t, w, a, testworld.TamperedZipPath, testworld.Version, sumdb.KindZip)
	if vd.Outcome != sumdb.SecurityError {
		t.Fatalf("with a forked head planted in etcd, the fork's own record: verdict %s, want a security error", vd)
	}
}

// TestStaleReplicaCannotRollBack holds threat 21: a replica whose view of
// the shared tree head is stale can neither replace the newer head with
// what it computed from its stale one, nor write an older head over it.
func TestStaleReplicaCannotRollBack(t *testing.T) {
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	a, stale := replica(t, w, etcd, prefix), replica(t, w, etcd, prefix)
	ctx := context.Background()
	var heads [][]byte
	for i := range 3 {
		m := w.PublishGenerated(t, fmt.Sprintf("example.com/stale/m%d", i), 1<<10)
		if vd, err := a.Check(ctx, m.Version, sumdb.KindZip, m.WriteZip(t)); err != nil || vd.Outcome != sumdb.Verified {
			t.Fatalf("%s: %v, %v", m.Version, vd, err)
		}
		resp, err := etcd.Get(ctx, sharedKey(w, prefix, "latest"))
		if err != nil {
			t.Fatal(err)
		}
		heads = append(heads, resp.Kvs[0].Value)
	}
	if treeSize(t, w, heads[0]) >= treeSize(t, w, heads[1]) || treeSize(t, w, heads[1]) >= treeSize(t, w, heads[2]) {
		t.Fatal("the tree did not grow: the test is wrong")
	}
	for _, tt := range []struct {
		name     string
		old, new []byte
	}{
		{"forward from a stale head", heads[0], heads[1]},
		{"backward from the current head", heads[2], heads[0]},
		{"backward from no head", nil, heads[1]},
	} {
		if err := stale.SwapHead(tt.old, tt.new); err == nil {
			t.Errorf("%s: the write succeeded", tt.name)
		}
		if got, want := headSize(t, w, etcd, prefix), treeSize(t, w, heads[2]); got != want {
			t.Fatalf("%s: the shared head went from size %d to %d", tt.name, want, got)
		}
	}
}

// TestSharedStateUnavailable holds threat 21: with etcd gone, a version
// that needs a lookup is blocked as StateUnavailable, whatever the
// database says; a version this replica proved before still passes; and
// once etcd is back, service resumes.
func TestSharedStateUnavailable(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.Start(t)
	fwd := srv.Forward(t)
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{fwd.Endpoint()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Close() })
	v := newVerifier(t, w, "", func(c *sumdb.Config) {
		c.Etcd, c.EtcdPrefix, c.EtcdTimeout = etcd, "/sumgate/", time.Second
	})
	t.Cleanup(v.Close)
	if vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("before: %s", vd)
	}

	fwd.Cut() // no connection left for the server to drain on its way down
	srv.Stop()
	fwd.Resume()
	ctx := context.Background()
	if err := v.StateReady(ctx); err == nil {
		t.Error("StateReady reports etcd ready while it is stopped")
	}
	vd := check(t, w, v, testworld.UpperPath, testworld.Version, sumdb.KindZip)
	if vd.Outcome != sumdb.StateUnavailable || vd.Pass() || !strings.Contains(vd.String(), "shared state unavailable") {
		t.Errorf("a new version with etcd stopped: verdict %s, want state-unavailable", vd)
	}
	if vd := check(t, w, v, testworld.GoodPath, testworld.Version, sumdb.KindMod); vd.Outcome != sumdb.Verified {
		t.Errorf("a version proven before, with etcd stopped: %s", vd)
	}

	srv.Restart(t)
	eventually(t, "StateReady after the restart", func() bool { return v.StateReady(ctx) == nil })
	if vd := check(t, w, v, testworld.UpperPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Errorf("after the restart: %s", vd)
	}
}

// TestAlertRecordedWhileCutOffReachesEveryReplica holds threat 21: a fork
// one replica catches while it cannot write to etcd (its link dropped
// between its claim and the fork) is kept in its data directory, and
// reaches every replica as soon as that replica reaches etcd again, even
// though its watch of the alert never ended (the client reconnects the
// watch by itself).
func TestAlertRecordedWhileCutOffReachesEveryReplica(t *testing.T) {
	w := testworld.New(t)
	srv := etcdtest.Start(t)
	a := replica(t, w, srv.Client(t), prefix)
	fwd := srv.Forward(t)
	cutOff, err := clientv3.New(clientv3.Config{Endpoints: []string{fwd.Endpoint()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cutOff.Close() })
	b := newVerifier(t, w, "", func(c *sumdb.Config) {
		c.Etcd, c.EtcdPrefix, c.EtcdTimeout = cutOff, prefix, time.Second
	})
	t.Cleanup(b.Close)
	if vd := check(t, w, b, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("B before the fork: %s", vd)
	}

	// B's lookup of the next version is answered by the fork, and B's
	// link to etcd drops just as the database answers.
	var once sync.Once
	w.Override(t, config.SumDBName, "/lookup/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		once.Do(fwd.Cut)
		resp, err := w.HTTPClient().Get(w.ProxyURL + "/sumdb/" + config.SumDBName + r.URL.Path)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		rw.WriteHeader(resp.StatusCode)
		io.Copy(rw, resp.Body)
	}))
	w.SetSumDB(testworld.SumDBForked)
	vd := check(t, w, b, testworld.UpperPath, testworld.Version, sumdb.KindZip)
	w.SetSumDB(testworld.SumDBHonest)
	if vd.Outcome != sumdb.SecurityError {
		t.Fatalf("B on the fork, cut off from etcd: verdict %s, want a security error", vd)
	}
	fwd.Resume()
	eventually(t, "A learns of the fork B caught while cut off", func() bool { _, ok := a.Alerted(); return ok })
}

// TestAlertDeletedByHandIsNotAttributed: every replica logs who cleared
// an alert; an alert deleted from etcd by hand, not by sumgate alert
// clear, is logged as such, never attributed to an earlier clearance.
func TestAlertDeletedByHandIsNotAttributed(t *testing.T) {
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	var logs testworld.Buffer
	v := newVerifier(t, w, "", func(c *sumdb.Config) {
		c.Etcd, c.EtcdPrefix, c.EtcdTimeout = etcd, prefix, 5*time.Second
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	t.Cleanup(v.Close)
	ctx := context.Background()
	raise := func() {
		t.Helper()
		if _, err := etcd.Put(ctx, sharedKey(w, prefix, "alert"), "2026-01-02T03:04:05Z\nevidence\n"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the replica learns of the alert", func() bool { _, ok := v.Alerted(); return ok })
	}
	cleared := func() {
		t.Helper()
		eventually(t, "the replica learns the alert is gone", func() bool { _, ok := v.Alerted(); return !ok })
	}

	raise()
	if _, ok, err := sumdb.ClearAlert(ctx, sumdb.Config{Key: w.SumDBKey, DataDir: t.TempDir(), Etcd: etcd, EtcdPrefix: prefix}, "alice@corp.example"); err != nil || !ok {
		t.Fatalf("ClearAlert: %v, %v", ok, err)
	}
	cleared()
	eventually(t, "the clearance is logged with who cleared it", func() bool { return strings.Contains(logs.String(), "alice@corp.example") })

	raise()
	before := len(logs.String())
	if _, err := etcd.Delete(ctx, sharedKey(w, prefix, "alert")); err != nil {
		t.Fatal(err)
	}
	cleared()
	eventually(t, "the deletion is logged", func() bool { return strings.Contains(logs.String()[before:], "serving again") })
	if got := logs.String()[before:]; strings.Contains(got, "alice@corp.example") || !strings.Contains(got, "no record of who cleared it") {
		t.Errorf("an alert deleted by hand is logged as:\n%s\nwant it said that nobody is on record as clearing it", got)
	}
}

// TestSharedCacheOutlivesItsLease: the shared cache's lease gone (revoked
// by hand, or lost to an etcd restored from a backup) does not stop a
// replica from sharing what it proves next.
func TestSharedCacheOutlivesItsLease(t *testing.T) {
	w := testworld.New(t)
	etcd := etcdtest.Start(t).Client(t)
	a := replica(t, w, etcd, prefix)
	ctx := context.Background()
	shared := func(path string) bool {
		resp, err := etcd.Get(ctx, recordKey(w, prefix, path))
		return err == nil && len(resp.Kvs) == 1
	}
	if vd := check(t, w, a, testworld.GoodPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("A: %s", vd)
	}
	eventually(t, "A shares its record", func() bool { return shared(testworld.GoodPath) })
	resp, err := etcd.Get(ctx, recordKey(w, prefix, testworld.GoodPath))
	if err != nil || resp.Kvs[0].Lease == 0 {
		t.Fatalf("the shared record has no lease: %v", err)
	}
	if _, err := etcd.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	if vd := check(t, w, a, testworld.UpperPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Verified {
		t.Fatalf("A after the lease was revoked: %s", vd)
	}
	eventually(t, "A shares what it proves after its lease was revoked", func() bool { return shared(testworld.UpperPath) })
}

// TestSharedRecordOfAnotherVersion: a genuine record, signed into the
// tree, planted in the shared cache under another version's name proves
// nothing about that version. It must not make the version look unknown
// to the database (not found, which on_unverified: allow passes): the
// replica asks the database, and a tampered zip is a mismatch.
func TestSharedRecordOfAnotherVersion(t *testing.T) {
	w, etcd, a := provedReplica(t)
	a.Close()
	ctx := context.Background()
	good, err := etcd.Get(ctx, recordKey(w, prefix, testworld.GoodPath))
	if err != nil || len(good.Kvs) != 1 {
		t.Fatalf("A's shared record: %v", err)
	}
	if _, err := etcd.Put(ctx, recordKey(w, prefix, testworld.TamperedZipPath), string(good.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	b := replica(t, w, etcd, prefix)
	tampered := w.Module(testworld.TamperedZipPath, testworld.Version)
	if vd := check(t, w, b, testworld.TamperedZipPath, testworld.Version, sumdb.KindZip); vd.Outcome != sumdb.Mismatch || vd.Want != tampered.ZipHash {
		t.Errorf("a tampered zip with another version's record planted under its name: verdict %s, want a mismatch against the logged hash", vd)
	}
}

// TestGarbageHeadInEtcdFailsClosed: a tree head in etcd that does not
// verify (written by hand) makes lookups fail closed as state-unavailable,
// which no on_unverified policy passes, never unavailable, which
// on_unverified: allow would pass, tampered bytes included.
func TestGarbageHeadInEtcdFailsClosed(t *testing.T) {
	w, etcd, _ := provedReplica(t)
	for _, head := range []string{"garbage", "go.sum database tree\n99\nAAAA\n\n— sum.golang.org bm9wZQ==\n"} {
		if _, err := etcd.Put(context.Background(), sharedKey(w, prefix, "latest"), head); err != nil {
			t.Fatal(err)
		}
		b := replica(t, w, etcd, prefix) // no floor of its own: it reads the head in etcd
		vd := check(t, w, b, testworld.TamperedZipPath, testworld.Version, sumdb.KindZip)
		if vd.Outcome != sumdb.StateUnavailable || vd.Pass() {
			t.Errorf("a tampered zip with %q as the head in etcd: verdict %s, want state-unavailable", head, vd)
		}
	}
}
