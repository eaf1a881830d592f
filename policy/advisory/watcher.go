package advisory

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// DefaultRefresh is how often a [Watcher] reloads its sources when
// [WatcherConfig].Refresh is zero.
const DefaultRefresh = time.Hour

// AgeMetric is the observable gauge a [Watcher] registers: the age in
// seconds of each source's snapshot, with the attribute "source".
const AgeMetric = "sumgate.advisories.age"

// meterScope is the instrumentation scope of the Watcher's metric.
const meterScope = "github.com/sumgate/sumgate/policy/advisory"

// WatcherConfig configures [NewWatcher].
type WatcherConfig struct {
	Sources       []string             // what Load accepts, in order; none is allowed (an empty snapshot)
	Refresh       time.Duration        // between reloads; zero means DefaultRefresh
	Client        *http.Client         // for https sources, e.g. through sumgate's verified upstream
	Limits        Limits               // per source; zero fields take the defaults
	MeterProvider metric.MeterProvider // nil: no AgeMetric
	// OnRefresh, if non-nil, is called after every load of a source, on
	// the Watcher's goroutine, with the load's error (nil on success). A
	// failed refresh keeps the previous snapshot; this is where it is
	// logged.
	OnRefresh func(source string, err error)
}

// SourceStatus is the state of one source of a [Watcher].
type SourceStatus struct {
	Source  string    // as configured, with any URL password hidden
	Loaded  time.Time // when the snapshot in use was loaded
	Entries int       // advisories in that snapshot
	Err     error     // the last refresh's error; nil if it succeeded
}

// A Watcher keeps a merged snapshot of several advisory sources,
// reloading each in the background. It starts its goroutine in
// [NewWatcher] and stops it in [Watcher.Close]. Its methods are safe for
// concurrent use.
type Watcher struct {
	cfg     WatcherConfig
	current atomic.Pointer[DB] // merged snapshot of every source's last good load
	reg     metric.Registration
	stop    context.CancelFunc
	done    chan struct{}

	refreshing sync.Mutex // serializes refreshes

	mu     sync.Mutex     // guards status and dbs; never held during a load
	status []SourceStatus // parallel to cfg.Sources
	dbs    []*DB          // last good snapshot of each source
}

// NewWatcher loads every source once and starts refreshing them every
// cfg.Refresh until Close. If any source cannot be loaded the first time,
// it returns the error and starts nothing: a block list configured against
// a source that never loaded would silently block nothing, so start-up
// fails closed. After a successful start, a failed refresh of one source
// keeps its last good snapshot (and reports the error to OnRefresh and in
// Status); its age keeps growing in the AgeMetric.
func NewWatcher(ctx context.Context, cfg WatcherConfig) (*Watcher, error) {
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	w := &Watcher{
		cfg:    cfg,
		status: make([]SourceStatus, len(cfg.Sources)),
		dbs:    make([]*DB, len(cfg.Sources)),
		done:   make(chan struct{}),
	}
	for i, s := range cfg.Sources {
		w.status[i].Source = redact(s)
	}
	if errs := w.Refresh(ctx); errs != nil {
		return nil, errs
	}
	if cfg.MeterProvider != nil {
		g, err := cfg.MeterProvider.Meter(meterScope).Float64ObservableGauge(AgeMetric,
			metric.WithUnit("s"),
			metric.WithDescription("Age of the advisory snapshot in use, by source: it grows while refreshes fail."))
		if err != nil {
			return nil, fmt.Errorf("registering %s: %w", AgeMetric, err)
		}
		w.reg, err = cfg.MeterProvider.Meter(meterScope).RegisterCallback(func(_ context.Context, o metric.Observer) error {
			now := time.Now()
			for _, s := range w.Status() {
				o.ObserveFloat64(g, now.Sub(s.Loaded).Seconds(), metric.WithAttributes(attribute.String("source", s.Source)))
			}
			return nil
		}, g)
		if err != nil {
			return nil, fmt.Errorf("registering %s: %w", AgeMetric, err)
		}
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	w.stop = stop
	go w.run(bg)
	return w, nil
}

// run refreshes every cfg.Refresh until ctx is done.
func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = w.Refresh(ctx) // reported through OnRefresh and Status
		}
	}
}

// Refresh reloads every source now, one after the other. A source that
// loads replaces its snapshot; one that fails keeps its last good one
// (none before the first success). It returns the failures joined, nil
// when every source loaded.
func (w *Watcher) Refresh(ctx context.Context) error {
	w.refreshing.Lock()
	defer w.refreshing.Unlock()
	var errs []error
	for i, s := range w.cfg.Sources {
		db, err := Load(ctx, s, w.cfg.Client, w.cfg.Limits)
		w.mu.Lock()
		w.status[i].Err = err
		if err != nil {
			errs = append(errs, err)
		} else {
			w.dbs[i] = db
			w.status[i].Loaded = time.Now()
			w.status[i].Entries = db.Len()
		}
		w.mu.Unlock()
		if w.cfg.OnRefresh != nil {
			w.cfg.OnRefresh(s, err)
		}
	}
	w.mu.Lock()
	merged := Merge(w.dbs...)
	w.mu.Unlock()
	w.current.Store(merged)
	return errors.Join(errs...)
}

// Current returns the merged snapshot of every source's last good load.
// It never returns nil once NewWatcher has returned, and costs one atomic
// load.
func (w *Watcher) Current() *DB {
	return w.current.Load()
}

// Status returns the state of each source, in configuration order.
func (w *Watcher) Status() []SourceStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]SourceStatus(nil), w.status...)
}

// Close stops the background refresh, waits for it to end and unregisters
// the metric. Current keeps returning the last snapshot.
func (w *Watcher) Close() error {
	w.stop()
	<-w.done
	if w.reg != nil {
		return w.reg.Unregister()
	}
	return nil
}
