package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/internal/upstream"
	"github.com/sumgate/sumgate/sumdb"
)

// fetchTimeout bounds one upstream fetch and check of a module file.
const fetchTimeout = 10 * time.Minute

// handle answers every request that reaches the proxy other than CONNECT:
// inside an intercepted tunnel it pins the request to the tunnel's host,
// verifies module files before passing them, and passes the rest through.
func (g *Gateway) handle(req *http.Request, pctx *goproxy.ProxyCtx) (_ *http.Request, resp *http.Response) {
	t, _ := pctx.UserData.(*tunnel)
	a := g.startRequest(req, t)
	req = req.WithContext(a.ctx)
	counted := g.begin()
	defer func() {
		if p := recover(); p != nil {
			g.log.ErrorContext(a.ctx, "panic while handling a request", "url", req.URL.String(), "panic", p, "stack", string(debug.Stack()))
			a.fail("internal error")
			resp = textResponse(req, http.StatusBadGateway, "sumgate: internal error while handling this request")
		}
		// The request is in flight, and its span open, until goproxy has
		// sent the body and closed it.
		if resp.Body == nil {
			resp.Body = http.NoBody
		}
		a.respond(resp.StatusCode)
		end := a.end
		if counted {
			end = func() { a.end(); g.end() }
		}
		resp.Body = &endingBody{ReadCloser: resp.Body, end: end, sent: &a.sent}
	}()
	if !counted {
		return req, a.refuse(req, http.StatusServiceUnavailable, "shutdown", "sumgate: shutting down; retry")
	}
	if t == nil {
		return g.plainHTTP(req, a)
	}
	t.requests.Add(1)
	if host := hostOnly(req.Host); host != t.host || hostOnly(req.URL.Host) != t.host {
		g.log.WarnContext(a.ctx, "refused a request for another host inside a tunnel", "tunnel", t.host, "host", req.Host)
		return req, a.refuse(req, http.StatusForbidden, "host-pin",
			fmt.Sprintf("sumgate: request for host %q inside a tunnel to %q refused", req.Host, t.host))
	}
	// Decide on the path exactly as it was sent, and forward exactly that:
	// an upstream that normalises paths must not read another file than
	// the one decided on (threat 24).
	escaped := req.URL.EscapedPath()
	path, why := g.canonicalPath(t.host, escaped)
	if why != "" {
		g.log.WarnContext(a.ctx, "refused a path that is not canonical", "host", t.host, "path", escaped, "why", why)
		return req, a.refuse(req, http.StatusBadRequest, "path-canonical",
			fmt.Sprintf("sumgate: refused https://%s%s: the path is not canonical: %s", t.host, escaped, why))
	}
	if mr, ok, err := g.classify(t.host, path); ok {
		if err != nil {
			return req, a.refuse(req, http.StatusBadRequest, "module-path", "sumgate: "+err.Error())
		}
		a.set(moduleAttrs(mr)...)
		if mr.kind == sumdb.KindZip || mr.kind == sumdb.KindMod {
			a.decide(DecisionIntercept, "verify")
			return req, g.verified(req, t, mr, a)
		}
		a.decide(DecisionIntercept, "pass-through")
	} else if modPath, ok := vcsModulePath(t.host, req); ok {
		a.set(auditkey.VCSModule.String(modPath))
		rule := "vcs: " + g.cfg.VCS
		if refusal := g.vcsRefusal(modPath); refusal != "" {
			g.log.WarnContext(a.ctx, "refused a direct VCS fetch", "module", modPath, "policy", g.cfg.VCS)
			return req, a.refuse(req, http.StatusForbidden, rule, refusal)
		}
		a.decide(DecisionIntercept, rule)
		g.log.InfoContext(a.ctx, "direct VCS fetch", "module", modPath, "url", req.URL.String())
	} else {
		a.decide(DecisionIntercept, "pass-through")
	}
	return req, g.passThrough(req, t, a)
}

// moduleAttrs are the audit attributes of a module proxy request.
func moduleAttrs(mr moduleRequest) []attribute.KeyValue {
	as := []attribute.KeyValue{auditkey.ModuleKind.String(mr.file), auditkey.ModuleOrigin.String(mr.origin)}
	if mr.mod.Path != "" {
		as = append(as, auditkey.ModulePath.String(mr.mod.Path))
	}
	if mr.mod.Version != "" {
		as = append(as, auditkey.ModuleVersion.String(mr.mod.Version))
	}
	return as
}

// vcsModulePath attributes git smart-HTTP traffic and go-get discovery to
// a module path: github.com/<owner>/<repo> on github.com, the repository
// path elsewhere.
func vcsModulePath(host string, req *http.Request) (string, bool) {
	path := strings.Trim(req.URL.Path, "/")
	switch {
	case req.URL.Query().Get("go-get") == "1":
	case strings.HasSuffix(path, "/info/refs") && strings.HasPrefix(req.URL.Query().Get("service"), "git-"):
		path = strings.TrimSuffix(path, "/info/refs")
	case strings.HasSuffix(path, "/git-upload-pack"), strings.HasSuffix(path, "/git-receive-pack"):
		path = path[:strings.LastIndexByte(path, '/')]
	default:
		return "", false
	}
	if host == "github.com" {
		if parts := strings.SplitN(path, "/", 3); len(parts) >= 2 {
			path = parts[0] + "/" + parts[1]
		}
	}
	path = strings.TrimSuffix(path, ".git")
	if path == "" {
		return "", false
	}
	return host + "/" + path, true
}

// vcsRefusal applies the vcs policy to a direct fetch of modPath; "" lets
// it pass.
func (g *Gateway) vcsRefusal(modPath string) string {
	switch {
	case g.cfg.VCS == VCSAllow:
		return ""
	case g.cfg.VCS == VCSPrivateOnly && g.cfg.Verifier.IsPrivate(modPath):
		return ""
	}
	return fmt.Sprintf("sumgate: direct VCS access to %s refused (sumgate policy vcs: %s).\n"+
		"Fetch public modules through a module proxy (the default GOPROXY), where sumgate verifies them.", modPath, g.cfg.VCS)
}

// moduleRequest is a GOPROXY protocol request for a module file.
type moduleRequest struct {
	mod    module.Version // decoded; as much of it as the request names
	kind   sumdb.Kind     // 0 for list, @latest, .info and /sumdb/
	file   string         // zip, mod, info, list, latest or sumdb
	origin string         // the module proxy's base URL
}

// classify reports whether path on host is a module proxy request, and
// which. A malformed module path or version is an error.
func (g *Gateway) classify(host, path string) (moduleRequest, bool, error) {
	for _, o := range g.origins {
		if o.host != host {
			continue
		}
		rest, ok := strings.CutPrefix(path, o.prefix+"/")
		if !ok {
			continue
		}
		base := "https://" + o.host + o.prefix
		if strings.HasPrefix(rest, "sumdb/") {
			return moduleRequest{file: "sumdb", origin: base}, true, nil
		}
		escPath, file, ok := strings.Cut(rest, "/@v/")
		if !ok {
			if escPath, ok = strings.CutSuffix(rest, "/@latest"); !ok {
				return moduleRequest{}, false, nil
			}
			p, err := module.UnescapePath(escPath)
			return moduleRequest{mod: module.Version{Path: p}, file: "latest", origin: base}, true, err
		}
		if file == "list" {
			p, err := module.UnescapePath(escPath)
			return moduleRequest{mod: module.Version{Path: p}, file: "list", origin: base}, true, err
		}
		var kind sumdb.Kind
		escVers, ext, found := cutLast(file, ".")
		switch {
		case found && ext == "zip":
			kind = sumdb.KindZip
		case found && ext == "mod":
			kind = sumdb.KindMod
		case found && ext == "info":
		default:
			return moduleRequest{}, true, fmt.Errorf("unknown module proxy request %q", path)
		}
		m, err := sumdb.ParseEscaped(escPath, escVers)
		if err != nil {
			return moduleRequest{}, true, err
		}
		return moduleRequest{mod: m, kind: kind, file: ext, origin: base}, true, nil
	}
	return moduleRequest{}, false, nil
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// verified fetches a module file upstream into the spool, checks it, and
// only then answers: the whole file with its Content-Length, or a 403 that
// says why. Concurrent requests for the same URL share one fetch and check.
func (g *Gateway) verified(req *http.Request, t *tunnel, mr moduleRequest, a *requestAudit) *http.Response {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		a.fail("sumgate: module files are fetched with GET")
		return textResponse(req, http.StatusMethodNotAllowed, "sumgate: module files are fetched with GET")
	}
	key := mr.mod.String() + " " + mr.kind.String()
	if _, alerted := g.cfg.Verifier.Alerted(); !alerted {
		f, size, hit := g.cache.get(key)
		g.metrics.cache.Add(a.ctx, 1, metric.WithAttributes(auditkey.CacheHit.Bool(hit)))
		a.set(auditkey.CacheHit.Bool(hit))
		if hit {
			if vd, ok := g.cfg.Verifier.Proven(mr.mod, mr.kind); ok {
				a.verdict(vd)
			}
			var once sync.Once
			resp := fileResponse(req, mr, f, size, func() { once.Do(func() { f.Close() }) })
			resp.Header.Set("X-Sumgate-Cache", "hit")
			return resp
		}
	}
	url := "https://" + t.host + req.URL.EscapedPath()
	res, release, led := g.fetches.do(url, func() *fetchResult {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), fetchTimeout)
		defer cancel()
		return g.fetchAndCheck(ctx, url, mr)
	})
	a.set(auditkey.FetchShared.Bool(!led))
	if res.spooled > 0 {
		a.set(auditkey.SpoolBytes.Int64(res.spooled))
	}
	if res.verdict != nil {
		a.verdict(*res.verdict)
	}
	if res.file == nil {
		release()
		if res.status != http.StatusNotFound && res.status != http.StatusGone {
			first, _, _ := strings.Cut(res.text, "\n")
			a.fail(first)
		}
		r := textResponse(req, res.status, res.text)
		if res.verdict != nil {
			r.Header.Set("X-Sumgate-Verdict", res.verdict.Outcome.String())
		}
		return r
	}
	resp := fileResponse(req, mr, res.file, res.size, release)
	resp.Header.Set("X-Sumgate-Verdict", res.verdict.Outcome.String())
	return resp
}

// fileResponse sends size bytes of f whole, with Content-Length; release
// is called once the body is closed.
func fileResponse(req *http.Request, mr moduleRequest, f *os.File, size int64, release func()) *http.Response {
	ctype := "application/zip"
	if mr.kind == sumdb.KindMod {
		ctype = "text/plain; charset=utf-8"
	}
	resp := &http.Response{
		StatusCode:    http.StatusOK,
		Status:        "200 OK",
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {ctype}, "Content-Length": {strconv.FormatInt(size, 10)}, "X-Sumgate-Verdict": {"verified"}},
		ContentLength: size,
		Request:       req,
		Body:          &releasingReader{Reader: io.NewSectionReader(f, 0, size), release: release},
	}
	if req.Method == http.MethodHead {
		resp.Body.Close()
		resp.Body = http.NoBody
	}
	return resp
}

// fetchResult is the outcome of one fetch and check, shared by every
// request that joined it.
type fetchResult struct {
	file    *os.File       // the verified bytes (already unlinked), or nil
	size    int64          // their length
	spooled int64          // bytes spooled from upstream, whatever the verdict
	verdict *sumdb.Verdict // nil if the bytes never reached the verifier
	status  int            // when file is nil: the status to answer
	text    string         // when file is nil: the text body to answer
}

// fetchAndCheck downloads url into an anonymous spool file and checks it.
func (g *Gateway) fetchAndCheck(ctx context.Context, url string, mr moduleRequest) *fetchResult {
	limit := int64(modzip.MaxZipFile)
	if mr.kind == sumdb.KindMod {
		limit = modzip.MaxGoMod
	}
	greq, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return &fetchResult{status: http.StatusBadGateway, text: "sumgate: " + err.Error()}
	}
	greq.Header.Set("User-Agent", "sumgate")
	start := time.Now()
	resp, err := g.cfg.Upstream.Do(greq)
	if err != nil {
		g.recordUpstream(ctx, greq, start, "module")
		return upstreamFailure(url, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		// The go command falls back to the next proxy on these: keep them.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return &fetchResult{status: resp.StatusCode, text: string(body)}
	case resp.StatusCode != http.StatusOK:
		return &fetchResult{status: http.StatusBadGateway, text: fmt.Sprintf("sumgate: %s answered %s for %s", hostOnly(resp.Request.URL.Host), resp.Status, url)}
	case resp.ContentLength > limit:
		return g.block(ctx, mr, fmt.Sprintf("%s (%s): too large: %d bytes, over the go command's limit of %d", mr.mod, mr.kind, resp.ContentLength, limit), nil)
	}

	f, err := os.CreateTemp(g.spool, "dl-*")
	if err != nil {
		return &fetchResult{status: http.StatusInternalServerError, text: "sumgate: cannot spool the download: " + err.Error()}
	}
	keep := false
	defer func() {
		os.Remove(f.Name()) // a kept file stays readable through its descriptor
		if !keep {
			f.Close()
		}
	}()
	n, err := io.Copy(f, io.LimitReader(resp.Body, limit+1))
	g.recordUpstream(ctx, greq, start, "module")
	g.metrics.bytes.Add(ctx, n, g.metrics.direction("spooled"))
	switch {
	case err != nil:
		return upstreamFailure(url, fmt.Errorf("download cut short after %d bytes: %w", n, err))
	case n > limit:
		return g.block(ctx, mr, fmt.Sprintf("%s (%s): too large: over the go command's limit of %d bytes", mr.mod, mr.kind, limit), nil)
	}
	vd, err := g.cfg.Verifier.Check(ctx, mr.mod, mr.kind, f.Name())
	if err != nil {
		return &fetchResult{status: http.StatusBadGateway, text: "sumgate: cannot verify " + url + ": " + err.Error(), spooled: n}
	}
	if !vd.Cached && vd.Lookup > 0 {
		g.metrics.lookup.Record(ctx, vd.Lookup.Seconds(), metric.WithAttributes(auditkey.Verdict.String(vd.Outcome.String())))
	}
	if !g.passes(vd) {
		r := g.block(ctx, mr, vd.String(), &vd)
		r.spooled = n
		return r
	}
	g.log.InfoContext(ctx, "verified", "module", mr.mod.String(), "kind", mr.kind.String(), "outcome", vd.Outcome.String(), "hash", vd.Got)
	if vd.Outcome == sumdb.Verified {
		g.cache.put(mr.mod.String()+" "+mr.kind.String(), f.Name(), n)
	}
	keep = true
	return &fetchResult{file: f, size: n, verdict: &vd, spooled: n}
}

// passes is the verify-before-pass policy: verified and private pass; not
// found and unavailable pass only with on_unverified: allow; a mismatch or
// a security error never does.
func (g *Gateway) passes(vd sumdb.Verdict) bool {
	switch vd.Outcome {
	case sumdb.Verified, sumdb.Private:
		return true
	case sumdb.NotFound, sumdb.Unavailable:
		return g.cfg.OnUnverified == UnverifiedAllow
	}
	return false
}

// block is a 403 the go command prints as-is: never 404 or 410, which
// would make it fall back to another proxy or to direct.
func (g *Gateway) block(ctx context.Context, mr moduleRequest, why string, vd *sumdb.Verdict) *fetchResult {
	var body string
	if vd != nil {
		body = blockMessage(*vd, g.cfg.OnUnverified)
	} else {
		body = fitDetail([]string{"sumgate: blocked " + why})
	}
	g.log.WarnContext(ctx, "blocked", "module", mr.mod.String(), "kind", mr.kind.String(), "reason", why)
	return &fetchResult{status: http.StatusForbidden, text: body, verdict: vd}
}

// The go command prints at most this much of an error response, and only
// up to the first blank line (cmd/go/internal/web).
const (
	maxDetailLines = 8
	maxDetailBytes = maxDetailLines * 81
	wrapColumn     = 78
)

// blockMessage explains a blocked verdict in the room the go command
// prints: what was blocked and why, both hashes, and what to do.
func blockMessage(vd sumdb.Verdict, onUnverified string) string {
	var headline, detail string
	switch vd.Outcome {
	case sumdb.Mismatch:
		headline = "checksum mismatch"
		if vd.Reason != "" {
			headline, detail = "malformed module zip", vd.Reason
		}
	case sumdb.NotFound:
		headline = "not in the checksum database"
	case sumdb.Unavailable:
		headline, detail = "checksum database unavailable", vd.Reason
	case sumdb.SecurityError:
		headline, detail = "checksum database security error", vd.Reason
	default:
		headline = vd.Outcome.String()
	}
	// The first line stays whole, however long the module path, so that it
	// names the module, version and file in one piece.
	lines := []string{fmt.Sprintf("sumgate: blocked %s (%s): %s", vd.Module, vd.Kind, headline)}
	if vd.Got != "" {
		lines = append(lines, "downloaded "+vd.Got)
	}
	if vd.Want != "" {
		tree := ""
		if vd.TreeSize > 0 {
			tree = fmt.Sprintf(" (tree size %d)", vd.TreeSize)
		}
		lines = append(lines, "checksum database has "+vd.Want+tree)
	}
	if detail != "" {
		d := wrap(detail)
		if len(d) > 2 {
			d = append(d[:2:2], "...")
		}
		lines = append(lines, d...)
	}
	if vd.Outcome == sumdb.NotFound || vd.Outcome == sumdb.Unavailable {
		lines = append(lines, "(sumgate policy on_unverified: "+onUnverified+")")
	}
	lines = append(lines, wrap(vd.Advice())...)
	return fitDetail(lines)
}

// fitDetail joins lines, dropping whole lines from the end so that the
// go command prints all of what remains.
func fitDetail(lines []string) string {
	var b strings.Builder
	for i, l := range lines {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if i >= maxDetailLines || b.Len()+len(l)+1 > maxDetailBytes {
			break
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// wrap breaks s into lines of at most wrapColumn bytes at spaces (a longer
// word stands alone).
func wrap(s string) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > wrapColumn {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

func upstreamFailure(url string, err error) *fetchResult {
	status := http.StatusBadGateway
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		status = http.StatusGatewayTimeout
	}
	return &fetchResult{status: status, text: fmt.Sprintf("sumgate: fetching %s failed: %v", url, err)}
}

// hopHeaders are removed from requests passed upstream: hop-by-hop
// headers, proxy credentials, and trace context that must not leak to
// third parties.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Traceparent", "Tracestate", "Baggage",
}

// stripHopHeaders removes hopHeaders and the headers Connection names.
func stripHopHeaders(h http.Header) {
	for _, name := range strings.Split(h.Get("Connection"), ",") {
		if name = strings.TrimSpace(name); name != "" {
			h.Del(name)
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// passThrough forwards a request that needs no verification (metadata,
// /sumdb/, code hosts) to the tunnel's host and streams the answer back.
func (g *Gateway) passThrough(req *http.Request, t *tunnel, a *requestAudit) *http.Response {
	out := req.Clone(req.Context())
	out.RequestURI = ""
	out.URL = &url.URL{Scheme: "https", Host: t.host, Path: req.URL.Path, RawPath: req.URL.EscapedPath(), RawQuery: req.URL.RawQuery}
	out.Host = t.host
	stripHopHeaders(out.Header)
	start := time.Now()
	resp, err := g.cfg.Upstream.Do(out)
	g.recordUpstream(req.Context(), out, start, "pass-through")
	if err != nil {
		f := upstreamFailure(out.URL.String(), err)
		a.fail(f.text)
		return textResponse(req, f.status, f.text)
	}
	return resp
}

// recordUpstream records an upstream fetch's duration.
func (g *Gateway) recordUpstream(ctx context.Context, req *http.Request, start time.Time, kind string) {
	g.metrics.upstream.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(
		semconv.ServerAddress(hostOnly(req.URL.Host)), attribute.String("kind", kind)))
}

// plainHTTP decides an http:// request sent to the proxy: intercepted
// hosts must be reached over https (where they are verified); other hosts
// follow the tunnel policy, and are dialled only at public addresses.
func (g *Gateway) plainHTTP(req *http.Request, a *requestAudit) (*http.Request, *http.Response) {
	host := hostOnly(req.URL.Host)
	switch {
	case req.URL.Scheme != "http" || host == "":
		return req, a.refuse(req, http.StatusBadRequest, "not-a-proxy-request", "sumgate: not a proxy request")
	case g.intercept[host]:
		return req, a.refuse(req, http.StatusForbidden, "https-only", "sumgate: "+host+" is reached over https only: use https://"+host)
	case g.cfg.Tunnel != TunnelAllow:
		return req, a.refuse(req, http.StatusForbidden, "tunnel: deny", "sumgate: http://"+host+" refused: only intercepted hosts are reachable (tunnel: deny)")
	}
	a.decide(DecisionForward, "tunnel: allow")
	out := req.Clone(req.Context())
	out.RequestURI = ""
	stripHopHeaders(out.Header)
	start := time.Now()
	resp, err := g.plainTr.RoundTrip(out)
	g.recordUpstream(req.Context(), out, start, "forward")
	if err != nil {
		f := upstreamFailure(req.URL.String(), err)
		a.fail(f.text)
		return req, textResponse(req, f.status, f.text)
	}
	return req, resp
}

// safeDial dials addr for plain http forwarding: a host the operator
// resolved goes where it said; anything else only to a public address.
func (g *Gateway) safeDial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	host = strings.ToLower(host)
	d := &net.Dialer{Timeout: 10 * time.Second, Control: upstream.MarkControl(g.cfg.Mark)}
	if to, ok := g.cfg.Resolve[host]; ok {
		return d.DialContext(ctx, network, to)
	}
	if port != "80" {
		return nil, fmt.Errorf("sumgate: port %s refused: plain http is forwarded to port 80 only", port)
	}
	a, err := upstream.PublicAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("sumgate: %v", err)
	}
	return d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
}

// textResponse is a text/plain answer.
func textResponse(req *http.Request, status int, text string) *http.Response {
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	return &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Length": {strconv.Itoa(len(text))}},
		ContentLength: int64(len(text)),
		Body:          io.NopCloser(bytes.NewReader([]byte(text))),
		Request:       req,
	}
}

// hostOnly returns the lower-case host of a host[:port].
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		hostport = h
	}
	return strings.ToLower(strings.TrimSuffix(hostport, "."))
}

// endingBody counts the bytes sent and ends a request's accounting when
// its body is closed.
type endingBody struct {
	io.ReadCloser
	once sync.Once
	end  func()
	sent *atomic.Int64
}

func (b *endingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.sent.Add(int64(n))
	return n, err
}

func (b *endingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.end)
	return err
}

// releasingReader releases its share of a spooled file when closed.
type releasingReader struct {
	io.Reader
	once    sync.Once
	release func()
}

func (r *releasingReader) Close() error {
	r.once.Do(r.release)
	return nil
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
	res  *fetchResult
	refs atomic.Int32 // holders of res; incremented only while the flight is in the map
}

// do returns fn's result for key, the function that releases this
// caller's share of it, and whether this caller ran fn.
func (g *flightGroup) do(key string, fn func() *fetchResult) (*fetchResult, func(), bool) {
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
			f.res = &fetchResult{status: http.StatusBadGateway, text: "sumgate: internal error"}
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
