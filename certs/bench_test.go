package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkHandshake compares, in one run, a full TLS handshake over
// loopback (client verification included, no resumption) that mints a
// leaf for a new host, one served from certmagic's cache, and one with a
// static crypto/tls certificate. New leaves are written to storage in the
// background, during the mint handshakes that follow; flush-ms/op is the
// wait, after the last one, for the writes still queued, per mint.
func BenchmarkHandshake(b *testing.B) {
	const names = 20000
	hosts := make([]string, names)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%d.bench.example", i)
	}
	// The parent keeps the intermediate's name constraints to one entry.
	c := newCA(b, Config{Intercept: append(hosts, "bench.example")})
	roots := pool(c.Root())
	addr := serve(b, c)

	next := 0 // the next unminted host; -count reruns sub-benchmarks on this same CA
	b.Run("mint", func(b *testing.B) {
		before, start := c.Issued(), next
		defer func() { b.ReportMetric(float64(c.Issued()-before)/float64(next-start), "mints/op") }()
		for b.Loop() {
			if next == names {
				b.Fatalf("more than %d mints; raise names", names)
			}
			if _, err := handshake(addr, hosts[next], roots); err != nil {
				b.Fatal(err)
			}
			next++
		}
		// Leaves are written in the background: wait, untimed, for what
		// is left, so that the writes do not slow the sub-benchmarks
		// that follow, and report that wait per mint.
		wait := time.Now()
		if err := c.store.flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(wait).Microseconds())/1000/float64(b.N), "flush-ms/op")
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := handshake(addr, hosts[0], roots); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("static", func(b *testing.B) {
		cert, err := c.GetCertificate(&tls.ClientHelloInfo{ServerName: hosts[0]})
		if err != nil {
			b.Fatal(err)
		}
		static := serveTLS(b, &tls.Config{Certificates: []tls.Certificate{*cert}})
		for b.Loop() {
			if _, err := handshake(static, hosts[0], roots); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMintUnderWildcard measures what intercept: ["*"] costs the CA
// (threat 10): a fresh CA is handshaken by names distinct names, each a
// first contact (mint, store, serve), over loopback with client
// verification and no resumption. It reports the mean first-contact
// handshake (ms/first), the mean handshake for a leaf held in memory
// (ms/cached), the mean handshake for the first 100 names again
// (ms/again: read back from storage once evicted from the bounded
// cache), the heap in use after a GC less the heap before the CA
// (heap-MiB), the leaves held in memory and the storage written per name.
// Run it alone, once per count:
//
//	go test -run XXX -bench MintUnderWildcard -benchtime 1x -count 5 ./certs/
func BenchmarkMintUnderWildcard(b *testing.B) {
	for _, names := range []int{100, 10000} {
		b.Run(fmt.Sprintf("names=%d", names), func(b *testing.B) {
			for b.Loop() {
				mintUnderWildcard(b, names)
			}
		})
	}
}

func mintUnderWildcard(b *testing.B, names int) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	dir := b.TempDir()
	c := newCA(b, Config{DataDir: dir, Intercept: []string{"*"}})
	roots := pool(c.Root())
	addr := serve(b, c)
	run := rand.Text()[:10] // certmagic tracks names in flight process-wide: these are this run's own
	hosts := make([]string, names)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%d.%s.wildcard.example", i, strings.ToLower(run))
	}
	timed := func(hosts []string) float64 {
		start := time.Now()
		for _, h := range hosts {
			chain, err := handshake(addr, h, roots)
			if err != nil {
				b.Fatal(err)
			}
			if k, ok := chain[0].PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				b.Fatalf("leaf key %T, want ECDSA P-256", chain[0].PublicKey)
			}
		}
		return float64(time.Since(start).Microseconds()) / 1000 / float64(len(hosts))
	}
	first := timed(hosts)
	if c.Issued() != int64(names) {
		b.Fatalf("%d handshakes minted %d leaves", names, c.Issued())
	}
	cached := timed(slices.Repeat(hosts[len(hosts)-1:], 100))
	again := timed(hosts[:100])
	runtime.GC()
	runtime.ReadMemStats(&after)
	if err := c.store.flush(context.Background()); err != nil { // leaves are written in the background
		b.Fatal(err)
	}
	var disk int64
	filepath.WalkDir(c.leafDir(), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				disk += info.Size()
			}
		}
		return nil
	})
	b.ReportMetric(first, "ms/first")
	b.ReportMetric(cached, "ms/cached")
	b.ReportMetric(again, "ms/again")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "heap-MiB")
	held := 0
	for _, h := range hosts {
		if len(c.cache.AllMatchingCertificates(h)) > 0 {
			held++
		}
	}
	b.ReportMetric(float64(held), "leaves-held")
	b.ReportMetric(float64(disk)/float64(names), "disk-B/name")
	runtime.KeepAlive(c)
}
