//go:build unix

package gateway_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/internal/telemetry"
	"github.com/sumgate/sumgate/internal/testworld"
)

var breakdownProfile = flag.String("sumgate.breakdown-profile", "", "BenchmarkBreakdown: write a CPU profile (path.cpu.MODE) and an execution trace (path.trace.MODE) of each timed run")

// BenchmarkBreakdown is BenchmarkGoModDownload's workload through a cold
// sumgate and a warm one with the verified-file cache off, in process,
// with every span recorded. For each run it prints to standard error the
// wall time against a direct run's, the CPU time of the test process (the
// gateway and the test world) and of the go command, and where the time
// went: for each kind of request (the file asked for, or the CONNECT) and
// each span under it, the count, mean, maximum and total duration.
// Spans of one request overlap (a check's lookup and hash run at once),
// and requests run two at a time, so the totals add up to more than the
// wall time. README, Performance, shows one run:
//
//	go test -run XXX -bench Breakdown -benchtime 1x -count 3 ./gateway/ -args -sumgate.large-mib=32
func BenchmarkBreakdown(b *testing.B) {
	w := testworld.New(b)
	mods := publishWorkload(b, w)
	type usage struct{ wall, self, client time.Duration }
	run := func(b *testing.B, env []string) usage {
		var s0, c0, s1, c1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &s0)
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c0)
		start := time.Now()
		if out, err := testworld.GoModDownload(b, env, mods...); err != nil || bytes.Contains(out, []byte(`"Error"`)) {
			b.Fatalf("go mod download: %v\n%s", err, out)
		}
		d := time.Since(start)
		syscall.Getrusage(syscall.RUSAGE_SELF, &s1)
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c1)
		cpu := func(a, b syscall.Rusage) time.Duration {
			return time.Duration(b.Utime.Nano() - a.Utime.Nano() + b.Stime.Nano() - a.Stime.Nano())
		}
		return usage{d, cpu(s0, s1), cpu(c0, c1)}
	}
	directEnv := []string{"GOPROXY=" + w.DirectProxyURL(), "SSL_CERT_FILE=" + w.RootsFile}
	for _, mode := range []string{"cold", "warm-nocache"} {
		b.Run(mode, func(b *testing.B) {
			for b.Loop() {
				rec := tracetest.NewSpanRecorder()
				tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
				e := startTraced(b, w, &telemetry.Telemetry{TracerProvider: tp}, func(c *gateway.Config) {
					if mode != "cold" {
						c.CacheMaxBytes = -1
					}
				})
				env := []string{"GOPROXY=" + w.ProxyURL, "HTTPS_PROXY=http://" + e.addr, "SSL_CERT_FILE=" + e.rootFile}
				if mode != "cold" {
					run(b, env)
					rec.Reset()
				}
				direct := run(b, directEnv) // the pair's baseline, just before
				if *breakdownProfile != "" {
					cpu, err := os.Create(*breakdownProfile + ".cpu." + mode)
					if err != nil {
						b.Fatal(err)
					}
					defer cpu.Close()
					tr, err := os.Create(*breakdownProfile + ".trace." + mode)
					if err != nil {
						b.Fatal(err)
					}
					defer tr.Close()
					pprof.StartCPUProfile(cpu)
					trace.Start(tr)
				}
				u := run(b, env)
				pprof.StopCPUProfile()
				trace.Stop()
				ratio := float64(u.wall) / float64(direct.wall)
				b.ReportMetric(ratio, "x-direct")
				b.ReportMetric(float64(u.self.Milliseconds()), "gw-cpu-ms")
				fmt.Fprintf(os.Stderr, "%s: %v, %.2fx direct (%v); CPU: gateway and world %v (direct: world %v), go command %v (direct %v)\n%s\n",
					mode, u.wall.Round(time.Millisecond), ratio, direct.wall.Round(time.Millisecond),
					u.self.Round(time.Millisecond), direct.self.Round(time.Millisecond), u.client.Round(time.Millisecond), direct.client.Round(time.Millisecond),
					breakdown(rec.Ended()))
			}
		})
	}
}

// breakdown tabulates spans by the kind of request they belong to and
// their name (with the path class of sumdb.read and sumdb.store).
func breakdown(spans []sdktrace.ReadOnlySpan) string {
	byID := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID().String()] = s
	}
	// The request span each span belongs to, and that request's kind.
	kindOf := func(s sdktrace.ReadOnlySpan) string {
		for s != nil {
			for _, a := range s.Attributes() {
				if a.Key == auditkey.ModuleKind {
					return a.Value.AsString()
				}
			}
			if s.Name() == "CONNECT" {
				return "connect"
			}
			s = byID[s.Parent().SpanID().String()]
		}
		return "?"
	}
	type agg struct {
		n   int
		sum time.Duration
		max time.Duration
	}
	rows := map[string]*agg{}
	for _, s := range spans {
		name := s.Name()
		for _, a := range s.Attributes() {
			if a.Key == "sumgate.sumdb.path" {
				p := a.Value.AsString()
				switch {
				case strings.Contains(p, "tile/"):
					p = "tile"
				case strings.HasPrefix(p, "/lookup/"):
					p = "lookup"
				}
				name += " " + p
			}
		}
		k := kindOf(s) + "\t" + name
		a := rows[k]
		if a == nil {
			a = &agg{}
			rows[k] = a
		}
		d := s.EndTime().Sub(s.StartTime())
		a.n++
		a.sum += d
		a.max = max(a.max, d)
	}
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\tspan\tn\tmean\tmax\ttotal")
	for _, k := range keys {
		a := rows[k]
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\n", k, a.n, (a.sum / time.Duration(a.n)).Round(10*time.Microsecond), a.max.Round(10*time.Microsecond), a.sum.Round(time.Millisecond))
	}
	tw.Flush()
	return sb.String()
}
