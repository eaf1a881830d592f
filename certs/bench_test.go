package certs

import (
	"crypto/tls"
	"fmt"
	"testing"
)

// BenchmarkHandshake compares, in one run, a full TLS handshake over
// loopback (client verification included, no resumption) that mints a
// leaf for a new host, one served from certmagic's cache, and one with a
// static crypto/tls certificate.
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
