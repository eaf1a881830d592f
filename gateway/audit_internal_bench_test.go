package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/internal/telemetry"
	"github.com/sumgate/sumgate/sumdb"
)

// BenchmarkRequestAudit is the audit work of one verified module request
// alone: its span started, decided, given its module and verdict
// attributes and ended, with the request metrics, spans built by the SDK
// and dropped by OTEL_TRACES_EXPORTER=none.
func BenchmarkRequestAudit(b *testing.B) {
	b.Setenv("OTEL_TRACES_EXPORTER", "none")
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	in, err := newInstruments(tel.MeterProvider)
	if err != nil {
		b.Fatal(err)
	}
	g := &Gateway{tracer: tel.TracerProvider.Tracer(scope), metrics: in, log: slog.New(slog.DiscardHandler)}
	req := httptest.NewRequest(http.MethodGet, "https://goproxy.cn/example.com/x/@v/v1.2.3.zip", nil)
	req.Header.Set("User-Agent", "Go-http-client/1.1")
	_, connect := tel.TracerProvider.Tracer("b").Start(context.Background(), "CONNECT")
	t := &tunnel{host: "goproxy.cn", client: "10.1.2.3:5555", audit: &connectAudit{span: connect}, sniName: "goproxy.cn"}
	mr := moduleRequest{mod: module.Version{Path: "example.com/x", Version: "v1.2.3"}, kind: sumdb.KindZip, file: "zip", origin: "https://goproxy.cn"}
	vd := sumdb.Verdict{Module: mr.mod, Kind: sumdb.KindZip, Outcome: sumdb.Verified, Got: "h1:abc=", Want: "h1:abc=", TreeSize: 42, Cached: true}
	b.ReportAllocs()
	for b.Loop() {
		a := g.startRequest(req, t)
		a.set(moduleAttrs(mr)...)
		a.decide(DecisionIntercept, "verify")
		a.verdict(vd)
		a.respond(200)
		a.sent.Add(1 << 20)
		a.end()
	}
}
