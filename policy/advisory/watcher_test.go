package advisory_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/policy/advisory"
	"github.com/sumgate/sumgate/policy/advisory/advisorytest"
)

// switchable serves the v1 database in dir until failing is set, then 500.
type switchable struct {
	failing atomic.Bool
	mu      sync.Mutex
	dir     string
}

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.failing.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	dir := s.dir
	s.mu.Unlock()
	http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
}

func (s *switchable) set(dir string) {
	s.mu.Lock()
	s.dir = dir
	s.mu.Unlock()
}

func TestWatcherKeepsLastGoodSnapshot(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	advisorytest.WriteV1(t, first, advisorytest.Vuln("GO-2024-0001", nil, advisorytest.Affected("example.com/a", "introduced:0")))
	advisorytest.WriteV1(t, second,
		advisorytest.Vuln("GO-2024-0001", nil, advisorytest.Affected("example.com/a", "introduced:0")),
		advisorytest.Vuln("GO-2024-0002", nil, advisorytest.Affected("example.com/b", "introduced:0")))
	mal := t.TempDir()
	advisorytest.WriteTree(t, mal, advisorytest.Malicious("MAL-2025-0001", "example.com/evil"))
	h := &switchable{dir: first}
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	var reports atomic.Int32

	w, err := advisory.NewWatcher(context.Background(), advisory.WatcherConfig{
		Sources:       []string{srv.URL, mal},
		Refresh:       time.Hour, // refreshed by hand below
		Client:        srv.Client(),
		MeterProvider: mp,
		OnRefresh:     func(string, error) { reports.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	affects := func(path string) bool {
		return len(w.Current().Affecting(module.Version{Path: path, Version: "v1.0.0"})) > 0
	}
	if !affects("example.com/a") || !affects("example.com/evil") || affects("example.com/b") {
		t.Fatal("the first snapshot is not the merge of both sources")
	}

	h.failing.Store(true)
	if err := w.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Refresh with the source down: %v, want the 503", err)
	}
	if !affects("example.com/a") || !affects("example.com/evil") {
		t.Error("a failed refresh dropped the last good snapshot")
	}
	st := w.Status()
	if st[0].Err == nil || st[1].Err != nil || st[0].Entries != 1 || st[0].Loaded.IsZero() {
		t.Errorf("Status after a failed refresh = %+v", st)
	}

	h.set(second)
	h.failing.Store(false)
	if err := w.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !affects("example.com/b") {
		t.Error("a successful refresh did not replace the snapshot")
	}
	if got := reports.Load(); got != 6 {
		t.Errorf("OnRefresh called %d times, want 6 (2 sources × 3 loads)", got)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != advisory.AgeMetric {
				continue
			}
			for _, p := range m.Data.(metricdata.Gauge[float64]).DataPoints {
				s, _ := p.Attributes.Value(attribute.Key("source"))
				sources = append(sources, s.AsString())
				if p.Value < 0 || p.Value > 60 {
					t.Errorf("age of %s = %v s", s.AsString(), p.Value)
				}
			}
		}
	}
	if slices.Sort(sources); !slices.Equal(sources, []string{mal, srv.URL}) {
		t.Errorf("%s reported for %v, want both sources", advisory.AgeMetric, sources)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !affects("example.com/a") {
		t.Error("Current after Close lost the snapshot")
	}
}

func TestWatcherStartFailsClosed(t *testing.T) {
	good := t.TempDir()
	advisorytest.WriteV1(t, good, advisorytest.Vuln("GO-2024-0001", nil, advisorytest.Affected("example.com/a", "introduced:0")))
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := advisory.NewWatcher(context.Background(), advisory.WatcherConfig{
		Sources: []string{good, srv.URL},
		Client:  srv.Client(),
	})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("NewWatcher with a source that cannot load: %v, want its 404", err)
	}
}

func TestWatcherRefreshesInBackground(t *testing.T) {
	h := &switchable{dir: t.TempDir()}
	advisorytest.WriteV1(t, h.dir, advisorytest.Vuln("GO-2024-0001", nil, advisorytest.Affected("example.com/a", "introduced:0")))
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	w, err := advisory.NewWatcher(context.Background(), advisory.WatcherConfig{
		Sources: []string{srv.URL},
		Refresh: 10 * time.Millisecond,
		Client:  srv.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next := t.TempDir()
	advisorytest.WriteV1(t, next, advisorytest.Vuln("GO-2024-0002", nil, advisorytest.Affected("example.com/b", "introduced:0")))
	h.set(next)
	deadline := time.Now().Add(10 * time.Second)
	for w.Current().Affecting(module.Version{Path: "example.com/b", Version: "v1.0.0"}) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the background refresh never loaded the new database")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
