package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/sumdb"
)

// FetcherConfig configures a [Fetcher]. Client, Verifier and SpoolDir are
// required.
type FetcherConfig struct {
	// Client fetches module files. It must verify TLS. Redirects are
	// followed by it (https only), and a gzip Content-Encoding it asked
	// for is undone by it.
	Client *http.Client
	// Verifier checks every file before it is handed out.
	Verifier *sumdb.Verifier
	// SpoolDir holds files being downloaded and checked. It is created
	// (0700) and emptied by NewFetcher: what a crash left there is partial.
	SpoolDir string
	// CacheDir, if set, keeps verified files (outcome verified only) for
	// repeat fetches, at most CacheMaxBytes bytes (zero or less: no cache).
	CacheDir      string
	CacheMaxBytes int64
	// OnUnverified is UnverifiedBlock (zero value) or UnverifiedAllow:
	// whether a file the checksum database does not know, or cannot
	// answer for, is handed out.
	OnUnverified UnverifiedPolicy
	// Timeout bounds one fetch and check, from the request to the verdict.
	// Zero means 10 minutes.
	Timeout time.Duration
	// StallTimeout ends a fetch whose upstream sends no byte for this
	// long, as a timeout. Zero means 5 minutes.
	StallTimeout time.Duration
	// Logger receives one line per verdict. Zero means slog.Default().
	Logger *slog.Logger
	// MeterProvider receives upstream latency, spooled bytes, lookup
	// latency and cache lookups. Zero records nothing.
	MeterProvider metric.MeterProvider
}

// A Fetcher owns the path of a module file from the module proxy to the
// client: fetch into an anonymous spool file, verify against the
// checksum database, hand out only what passed, cache what was verified.
// Concurrent fetches of one URL share one download and one check. It is
// safe for concurrent use.
type Fetcher struct {
	cfg     FetcherConfig
	log     *slog.Logger
	metrics *instruments
	cache   *fileCache  // verified files, bounded; disabled when CacheMaxBytes <= 0
	flights flightGroup // one download and check per URL at a time
}

// NewFetcher returns a Fetcher for cfg.
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	if cfg.Client == nil || cfg.Verifier == nil || cfg.SpoolDir == "" {
		return nil, errors.New("gateway: a Fetcher needs Client, Verifier and SpoolDir")
	}
	if cfg.OnUnverified == "" {
		cfg.OnUnverified = UnverifiedBlock
	}
	if cfg.OnUnverified != UnverifiedBlock && cfg.OnUnverified != UnverifiedAllow {
		return nil, fmt.Errorf("gateway: OnUnverified %q: want block or allow", cfg.OnUnverified)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = noopmetric.NewMeterProvider()
	}
	metrics, err := newInstruments(cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: creating the spool folder: %w", err)
	}
	// Files left by a crash are partial downloads: never serve them.
	if leftovers, err := filepath.Glob(filepath.Join(cfg.SpoolDir, "*")); err == nil {
		for _, f := range leftovers {
			os.Remove(f)
		}
	}
	cacheMax := cfg.CacheMaxBytes
	if cfg.CacheDir == "" {
		cacheMax = 0
	}
	cache, err := newFileCache(cfg.CacheDir, cacheMax)
	if err != nil {
		return nil, fmt.Errorf("gateway: opening the verified-file cache: %w", err)
	}
	return &Fetcher{cfg: cfg, log: cfg.Logger, metrics: metrics, cache: cache}, nil
}

// A Result is a verified module file, or what is known of a fetch that
// gave none. Fetch returns one with every error too.
type Result struct {
	Verdict  *sumdb.Verdict // the verdict; nil if the bytes never reached the verifier
	Size     int64          // the verified file's length, in bytes
	Spooled  int64          // bytes downloaded into the spool, whatever the verdict
	Shared   bool           // the download and check were another caller's
	CacheHit bool           // served from the verified-file cache, without a fetch

	file    *os.File // the verified bytes (unlinked from the spool), or nil
	release func()   // releases this caller's share of file
	once    sync.Once
}

// Body returns a reader of the whole verified file. It is valid until
// Close.
func (r *Result) Body() *io.SectionReader { return io.NewSectionReader(r.file, 0, r.Size) }

// Close releases the caller's share of the verified file; the file is
// closed when the last share is released. It is safe to call more than
// once, and on a Result without a file.
func (r *Result) Close() error {
	r.once.Do(func() {
		if r.release != nil {
			r.release()
		}
	})
	return nil
}

// An UpstreamError is a module proxy's answer other than 200 OK.
type UpstreamError struct {
	URL    string // what was fetched (before redirects)
	Status int    // the HTTP status code
	Text   string // the start of the response body, sanitised: printable text, at most the go command's 8 lines
}

func (e *UpstreamError) Error() string {
	msg := fmt.Sprintf("%s answered %d %s", e.URL, e.Status, http.StatusText(e.Status))
	if e.Text != "" {
		msg += ": " + strings.ReplaceAll(strings.TrimSpace(e.Text), "\n", " ")
	}
	return msg
}

// A BlockedError is a module file that did not pass: its verdict (a
// mismatch, a fork, or not verifiable under on_unverified: block), or a
// size over the go command's limit, found before any check.
type BlockedError struct {
	Module  module.Version
	Kind    sumdb.Kind
	Verdict *sumdb.Verdict // nil when the file was blocked before it was checked
	Reason  string         // why, on one line
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("blocked %s (%s): %s", e.Module, e.Kind, e.Reason)
}

// errSpool marks a failure to spool on sumgate's own disk.
var errSpool = errors.New("spooling the download")

// stallError is an upstream that sent no byte for the stall timeout.
type stallError struct{ d time.Duration }

func (e stallError) Error() string   { return fmt.Sprintf("the upstream sent no byte for %s", e.d) }
func (e stallError) Timeout() bool   { return true }
func (e stallError) Temporary() bool { return true }

// isTimeout reports whether err is a deadline or a stalled upstream.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// Fetch downloads kind of module version m from url (a module proxy's
// .zip or .mod URL, exactly as it is to be requested), verifies it and
// returns it. The error is a *BlockedError when the file did not pass, an
// *UpstreamError when the module proxy answered other than 200, a timeout
// (net.Error with Timeout) when the fetch ran out of time or the upstream
// stalled, or another error saying what failed. The Result is never nil;
// the caller must Close it.
//
// A verified file in the cache is returned at once, unless a fork is on
// record. Concurrent fetches of url share one download and check; the
// download outlives a caller that gives up, bounded by the timeout.
func (f *Fetcher) Fetch(ctx context.Context, url string, m module.Version, kind sumdb.Kind) (*Result, error) {
	return f.fetch(ctx, url, []module.Version{m}, kind)
}

// FetchAny is Fetch for a URL whose module path is ambiguous: a module
// file on a host whose module proxy prefix is not known, where any split
// of the path before /@v/ may be the module (threat 19). candidates are
// every reading of the URL as a valid module version, all with the same
// version. The file passes only if it is the checksum database's record
// for at least one candidate, and for every candidate the database knows
// (a zip whose entries name another module is not that module's file:
// the go command would refuse it as that module). Nothing is served from
// the cache for an ambiguous URL; a verified file is cached as the
// module it was verified as.
func (f *Fetcher) FetchAny(ctx context.Context, url string, candidates []module.Version, kind sumdb.Kind) (*Result, error) {
	if len(candidates) == 0 {
		return &Result{}, fmt.Errorf("fetching %s: no module path in the URL", url)
	}
	return f.fetch(ctx, url, candidates, kind)
}

func (f *Fetcher) fetch(ctx context.Context, url string, candidates []module.Version, kind sumdb.Kind) (*Result, error) {
	m := candidates[0]
	key := m.String() + " " + kind.String()
	if _, alerted := f.cfg.Verifier.Alerted(); !alerted && f.cache.max > 0 && len(candidates) == 1 {
		file, size, hit := f.cache.get(key)
		f.metrics.cache.Add(ctx, 1, metric.WithAttributes(auditkey.CacheHit.Bool(hit)))
		if hit {
			r := &Result{Size: size, CacheHit: true, file: file, release: func() { file.Close() }}
			if vd, ok := f.cfg.Verifier.Proven(m, kind); ok {
				r.Verdict = &vd
			}
			return r, nil
		}
	}
	res, release, led := f.flights.do(url, func() *flightResult {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.cfg.Timeout)
		defer cancel()
		return f.fetchAndCheck(ctx, url, candidates, kind)
	})
	r := &Result{Verdict: res.verdict, Size: res.size, Spooled: res.spooled, Shared: !led, file: res.file, release: release}
	if res.err != nil {
		r.Close()
		return r, res.err
	}
	return r, nil
}

// flightResult is the outcome of one download and check, shared by every
// caller that joined it.
type flightResult struct {
	file    *os.File       // the verified bytes (already unlinked), or nil
	size    int64          // their length
	spooled int64          // bytes spooled from upstream, whatever the verdict
	verdict *sumdb.Verdict // nil if the bytes never reached the verifier
	err     error          // why there is no file
}

// fetchAndCheck downloads url into a spool file and checks it.
func (f *Fetcher) fetchAndCheck(ctx context.Context, url string, candidates []module.Version, kind sumdb.Kind) *flightResult {
	m := candidates[0]
	limit := int64(modzip.MaxZipFile)
	if kind == sumdb.KindMod {
		limit = modzip.MaxGoMod
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A stalled upstream is cut off: the client must not wait the whole
	// fetch timeout for an answer that is not coming.
	stall := time.AfterFunc(f.cfg.StallTimeout, func() { cancel(stallError{f.cfg.StallTimeout}) })
	defer stall.Stop()
	fail := func(err error) *flightResult {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = fmt.Errorf("fetching %s: %w", url, cause)
		}
		return &flightResult{err: err}
	}
	greq, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return &flightResult{err: fmt.Errorf("fetching %s: %w", url, err)}
	}
	greq.Header.Set("User-Agent", "sumgate")
	start := time.Now()
	resp, err := f.cfg.Client.Do(greq)
	if err != nil {
		f.recordUpstream(ctx, greq, start)
		return fail(fmt.Errorf("fetching %s: %w", url, err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return &flightResult{err: &UpstreamError{URL: url, Status: resp.StatusCode, Text: sanitise(body)}}
	case resp.ContentLength > limit:
		return f.block(ctx, m, kind, fmt.Sprintf("too large: %d bytes, over the go command's limit of %d", resp.ContentLength, limit), nil)
	}

	file, err := os.CreateTemp(f.cfg.SpoolDir, "dl-*")
	if err != nil {
		return &flightResult{err: fmt.Errorf("%w: %w", errSpool, err)}
	}
	keep := false
	defer func() {
		os.Remove(file.Name()) // a kept file stays readable through its descriptor
		if !keep {
			file.Close()
		}
	}()
	n, err := io.Copy(file, io.LimitReader(&stallReader{r: resp.Body, t: stall, d: f.cfg.StallTimeout}, limit+1))
	f.recordUpstream(ctx, greq, start)
	f.metrics.bytes.Add(ctx, n, f.metrics.direction("spooled"))
	var pe *os.PathError
	switch {
	case errors.As(err, &pe):
		return &flightResult{spooled: n, err: fmt.Errorf("%w: %w", errSpool, err)}
	case err != nil:
		r := fail(fmt.Errorf("fetching %s: download cut short after %d bytes: %w", url, n, err))
		r.spooled = n
		return r
	case n > limit:
		return f.block(ctx, m, kind, fmt.Sprintf("too large: over the go command's limit of %d bytes", limit), nil)
	}
	stall.Stop()
	vd, err := f.check(ctx, candidates, kind, file.Name())
	if err != nil {
		return &flightResult{spooled: n, err: fmt.Errorf("verifying %s: %w", url, err)}
	}
	m = vd.Module // the candidate it was verified (or blocked) as
	if !vd.Cached && vd.Lookup > 0 {
		f.metrics.lookup.Record(ctx, vd.Lookup.Seconds(), metric.WithAttributes(auditkey.Verdict.String(vd.Outcome.String())))
	}
	if !passes(vd, f.cfg.OnUnverified) {
		r := f.block(ctx, m, kind, vd.String(), &vd)
		r.spooled = n
		return r
	}
	f.log.InfoContext(ctx, "verified", "module", m.String(), "kind", kind.String(), "outcome", vd.Outcome.String(), "hash", vd.Got)
	if vd.Outcome == sumdb.Verified {
		f.cache.put(m.String()+" "+kind.String(), file.Name(), n)
	}
	keep = true
	return &flightResult{file: file, size: n, verdict: &vd, spooled: n}
}

// check checks file as each candidate (see FetchAny) and returns the
// verdict that decides: a passing one only if no candidate the database
// knows disagrees.
func (f *Fetcher) check(ctx context.Context, candidates []module.Version, kind sumdb.Kind, file string) (sumdb.Verdict, error) {
	if len(candidates) == 1 {
		return f.cfg.Verifier.Check(ctx, candidates[0], kind, file)
	}
	var pass, notFound, malformed *sumdb.Verdict
	for _, c := range candidates {
		vd, err := f.cfg.Verifier.Check(ctx, c, kind, file)
		if err != nil {
			return vd, err
		}
		switch {
		case vd.Outcome == sumdb.Verified || vd.Outcome == sumdb.Private:
			if pass == nil {
				pass = &vd
			}
		case vd.Outcome == sumdb.NotFound:
			if notFound == nil {
				notFound = &vd
			}
		case vd.Outcome == sumdb.Mismatch && kind == sumdb.KindZip && vd.Reason != "":
			// Malformed as this module (its entries name another one, or
			// it is malformed as every module, which no candidate passes).
			if malformed == nil {
				malformed = &vd
			}
		default:
			return vd, nil // a record that differs, an outage or a fork decides
		}
	}
	for _, vd := range []*sumdb.Verdict{pass, notFound, malformed} {
		if vd != nil {
			return *vd, nil
		}
	}
	return sumdb.Verdict{}, errors.New("no candidate was checked")
}

// passes is the verify-before-pass policy: verified and private pass; not
// found and unavailable pass only with on_unverified: allow; a mismatch or
// a security error never does.
func passes(vd sumdb.Verdict, onUnverified UnverifiedPolicy) bool {
	switch vd.Outcome {
	case sumdb.Verified, sumdb.Private:
		return true
	case sumdb.NotFound, sumdb.Unavailable:
		return onUnverified == UnverifiedAllow
	}
	return false
}

// block records and returns a blocked file.
func (f *Fetcher) block(ctx context.Context, m module.Version, kind sumdb.Kind, why string, vd *sumdb.Verdict) *flightResult {
	f.log.WarnContext(ctx, "blocked", "module", m.String(), "kind", kind.String(), "reason", why)
	return &flightResult{verdict: vd, err: &BlockedError{Module: m, Kind: kind, Verdict: vd, Reason: why}}
}

// recordUpstream records an upstream fetch's duration.
func (f *Fetcher) recordUpstream(ctx context.Context, req *http.Request, start time.Time) {
	f.metrics.recordUpstream(ctx, req, start, "module")
}

// stallReader pushes the stall timer forward with every byte read.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.d)
	}
	return n, err
}

// sanitise makes an upstream's body fit to show a developer: printable
// text only (other bytes become "?"), blank lines dropped (the go command
// stops at the first), within the room the go command prints.
func sanitise(body []byte) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case r == '\r':
			return -1
		case r < 0x20 || r == 0x7f || r == 0xfffd:
			return '?'
		}
		return r
	}, string(body))
	return fitDetail(strings.Split(s, "\n"))
}

// A flightGroup runs one function per key at a time and shares its result
// with everyone who asks meanwhile. The result's file is closed when the
// last of them releases it.
type flightGroup struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	res  *flightResult
	refs atomic.Int32 // holders of res; incremented only while the flight is in the map
}

// do returns fn's result for key, the function that releases this
// caller's share of it, and whether this caller ran fn.
func (g *flightGroup) do(key string, fn func() *flightResult) (*flightResult, func(), bool) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*flight{}
	}
	f, ok := g.m[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		g.m[key] = f
	}
	f.refs.Add(1)
	g.mu.Unlock()
	if !ok {
		func() {
			defer func() {
				g.mu.Lock()
				delete(g.m, key)
				g.mu.Unlock()
				close(f.done)
			}()
			f.res = &flightResult{err: errors.New("internal error")}
			f.res = fn()
		}()
	}
	<-f.done
	return f.res, func() {
		if f.refs.Add(-1) == 0 && f.res.file != nil {
			f.res.file.Close()
		}
	}, !ok
}
