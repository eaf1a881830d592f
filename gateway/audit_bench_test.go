package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/otlptest"
	"github.com/sumgate/sumgate/internal/telemetry"
	"github.com/sumgate/sumgate/internal/testworld"
)

// exporters are the configurations BenchmarkTracing* compare: spans
// exported over OTLP/gRPC to a receiver on loopback, written to the audit
// file, built but dropped (OTEL_TRACES_EXPORTER=none), and not built at
// all (no telemetry).
var exporters = []string{"otlp", "file", "none", "off"}

// setupTelemetry configures telemetry as exporter names, through the
// environment as sumgate run does; "off" returns nil.
func setupTelemetry(b *testing.B, exporter string) *telemetry.Telemetry {
	b.Helper()
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		b.Setenv(k, "")
	}
	switch exporter {
	case "off":
		return nil
	case "otlp":
		rcv := otlptest.Start(b)
		b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.GRPCAddr)
		b.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	case "none":
		b.Setenv("OTEL_TRACES_EXPORTER", "none")
	}
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if d := tel.Dropped(); d > 0 {
			b.Logf("%d spans dropped", d)
		}
		tel.Shutdown(context.Background())
	})
	return tel
}

// BenchmarkTracing measures what the audit trail costs on the gateway's
// lightest path: requests through an intercepted tunnel, a cached verified
// zip and a pass-through metadata request alternately, on keep-alive
// connections, eight clients at once. Compare the exporters in one run
// with benchstat.
func BenchmarkTracing(b *testing.B) {
	for _, exporter := range exporters {
		b.Run("exporter="+exporter, func(b *testing.B) {
			tel := setupTelemetry(b, exporter)
			e := startTraced(b, testworld.New(b), tel, nil)
			pu, _ := url.Parse("http://" + e.addr)
			c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
				Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool(e.root)}, MaxIdleConnsPerHost: 64}}
			urls := []string{e.w.ProxyURL + "/" + testworld.GoodPath + "/@v/v1.0.0.zip", e.w.ProxyURL + "/" + testworld.GoodPath + "/@v/list"}
			for _, u := range urls { // warm: leaf minted, zip verified and cached
				if status, body := get(b, c, u); status != 200 {
					b.Fatalf("%s: %d %s", u, status, body)
				}
			}
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					resp, err := c.Get(urls[i%2])
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					i++
				}
			})
		})
	}
}

// BenchmarkTracingGoModDownload measures the audit trail on the heaviest
// path: the go command downloading -sumgate.small fresh modules through a
// new gateway each time (leaf minted, every file fetched, looked up,
// hashed and checked, each with its spans).
func BenchmarkTracingGoModDownload(b *testing.B) {
	w := testworld.New(b)
	var mods []string
	for i := range *smallMods {
		mods = append(mods, publishModule(b, w, fmt.Sprintf("example.com/trace/small%d", i), 48<<10))
	}
	for _, exporter := range exporters {
		b.Run("exporter="+exporter, func(b *testing.B) {
			tel := setupTelemetry(b, exporter)
			for b.Loop() {
				b.StopTimer()
				e := startTraced(b, w, tel, nil)
				b.StartTimer()
				env := []string{"GOPROXY=" + w.ProxyURL, "HTTPS_PROXY=http://" + e.addr, "SSL_CERT_FILE=" + e.rootFile}
				if out, err := testworld.GoModDownload(b, env, mods...); err != nil || strings.Contains(string(out), `"Error"`) {
					b.Fatalf("go mod download: %v\n%s", err, out)
				}
			}
		})
	}
}
