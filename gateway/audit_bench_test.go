package gateway_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/otlptest"
	"github.com/sumgate/sumgate/internal/telemetry"
	"github.com/sumgate/sumgate/internal/testworld"
)

// BenchmarkTracing measures what the audit trail costs: requests through
// an intercepted tunnel (a cached verified zip and a pass-through
// metadata request, alternately, on keep-alive connections) with spans
// exported over OTLP/gRPC to a receiver on loopback, written to the
// audit file, built but dropped (OTEL_TRACES_EXPORTER=none), and not
// built at all. Compare them in one run with benchstat.
func BenchmarkTracing(b *testing.B) {
	for _, exporter := range []string{"otlp", "file", "none", "off"} {
		b.Run("exporter="+exporter, func(b *testing.B) {
			for _, kv := range [][2]string{{"OTEL_TRACES_EXPORTER", ""}, {"OTEL_EXPORTER_OTLP_ENDPOINT", ""}, {"OTEL_EXPORTER_OTLP_PROTOCOL", ""}} {
				b.Setenv(kv[0], kv[1])
			}
			var tel *telemetry.Telemetry
			switch exporter {
			case "otlp":
				rcv := otlptest.Start(b)
				b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.GRPCAddr)
				b.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
			case "none":
				b.Setenv("OTEL_TRACES_EXPORTER", "none")
			}
			if exporter != "off" {
				var err error
				tel, err = telemetry.Setup(context.Background(), telemetry.Options{DataDir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { tel.Shutdown(context.Background()) })
			}
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
			b.StopTimer()
			if tel != nil && tel.Dropped() > 0 {
				b.Logf("%d spans dropped", tel.Dropped())
			}
		})
	}
}
