package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/policy"
	"github.com/sumgate/sumgate/sumdb"
	"github.com/sumgate/sumgate/vcs"
)

// outcome is what acting on a decision produced. A refusal produces
// nothing; a verified file is res with err nil; a failed fetch is err,
// with res saying what is known of it; a request passed upstream is resp,
// or err.
type outcome struct {
	res    *Result          // actVerify: the fetch (with or without a file)
	resp   *http.Response   // actPass, actForward, actGit: the upstream's answer
	git    *vcs.Result      // actGit: what the vcs verifier concluded
	served *vcs.Answer      // actGit: a verified fetch, answered from sumgate's copy
	err    error            // why there is no file or no answer
	pol    *policy.Decision // the policy's decision on the module version, if it was asked
}

// respond is the only place that turns a request's decision and outcome
// into the client's answer, and the only place that writes its audit
// record: decision, rule, module, verdict, failure and status. The record
// ends (bytes sent, span end, metrics) when the answer's body is closed,
// which the caller (goproxy, or notAProxyRequest) must do. counted says
// the request holds one of the gateway's in-flight places, released then
// too; t is its tunnel, or nil.
func (g *Gateway) respond(req *http.Request, a *requestAudit, d decision, out outcome, counted bool, t *tunnel) *http.Response {
	a.decide(d.auditName(), d.rule)
	if d.mod != nil {
		a.set(moduleAttrs(*d.mod)...)
	}
	if d.vcs != "" {
		a.set(auditkey.VCSModule.String(d.vcs))
	}
	if r := out.res; r != nil {
		a.set(auditkey.CacheHit.Bool(r.CacheHit))
		if !r.CacheHit {
			a.set(auditkey.FetchShared.Bool(r.Shared))
		}
		if r.Spooled > 0 {
			a.set(auditkey.SpoolBytes.Int64(r.Spooled))
		}
		if r.Verdict != nil {
			a.verdict(*r.Verdict)
			if d.any != nil && r.Verdict.Module.Path != "" {
				a.set(auditkey.ModulePath.String(r.Verdict.Module.Path)) // the reading it was checked as
			}
		}
	}
	if gr := out.git; gr != nil {
		if gr.Outcome != 0 && gr.Module.Path != "" {
			a.set(auditkey.ModulePath.String(gr.Module.Path))
			if gr.Module.Version != "" {
				a.set(auditkey.ModuleVersion.String(gr.Module.Version))
			}
			a.verdict(gr.Verdict)
		}
		if gr.Commit != "" {
			a.set(auditkey.VCSCommit.String(gr.Commit))
		}
		if gr.Tag != "" {
			a.set(auditkey.VCSTag.String(gr.Tag))
		}
	}
	if out.pol != nil {
		a.set(policyAttrs(*out.pol)...)
	}
	var resp *http.Response
	var refused *gitRefusal
	var denied *PolicyError
	switch {
	case d.action == actRefuse:
		a.fail(d.reason)
		resp = textResponse(req, d.status, d.reason)
	case errors.As(out.err, new(*refusedDial)):
		rd := (*refusedDial)(nil)
		errors.As(out.err, &rd)
		reason := fmt.Sprintf("sumgate: %s refused: %v", redacted(req.URL), rd.err)
		a.decide(DecisionDeny, rd.rule)
		a.fail(reason)
		resp = textResponse(req, http.StatusForbidden, reason)
	case errors.As(out.err, &refused):
		a.decide(DecisionDeny, d.rule)
		a.fail(refused.reason)
		resp = gitErrResponse(req, refused.reason)
	case errors.As(out.err, &denied):
		if out.pol == nil { // else recorded above
			a.set(policyAttrs(denied.Decision)...)
		}
		first, _, _ := strings.Cut(denied.Decision.Reason, "\n")
		a.fail(first)
		resp = textResponse(req, http.StatusForbidden, denied.Decision.Reason)
		resp.Header.Set("X-Sumgate-Rule", strings.Join(policyIDs(denied.Decision), ", "))
	case out.err != nil:
		status, text, failure := g.answerError(out.err)
		if failure != "" {
			a.fail(failure)
		} else if status != http.StatusNotFound && status != http.StatusGone {
			a.set(auditkey.Reason.String(out.err.Error()))
		}
		resp = textResponse(req, status, text)
		if r := out.res; r != nil && r.Verdict != nil {
			resp.Header.Set("X-Sumgate-Verdict", r.Verdict.Outcome.String())
		}
	case out.res != nil:
		resp = fileResponse(req, d.mod.kind, out.res)
	case out.served != nil:
		resp = servedResponse(req, out.served)
	default:
		resp = out.resp
		// Only sumgate says what it verified: an upstream cannot.
		resp.Header.Del("X-Sumgate-Verdict")
		resp.Header.Del("X-Sumgate-Cache")
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	a.respond(resp.StatusCode)
	end := func() {
		a.end()
		if counted {
			g.end()
		}
		if t != nil {
			t.awaitRequest()
		}
	}
	resp.Body = &endingBody{ReadCloser: resp.Body, end: end, audit: a, want: resp.ContentLength, head: req.Method == http.MethodHead}
	return resp
}

// answerError maps a failure to the client's status and text, and the
// failure to record ("" when the answer is the upstream's own).
//
//   - a blocked file: 403 with the verdict explained, never 404 or 410,
//     which would make the go command fall back to another proxy;
//   - an upstream's 4xx: the same status and the upstream's own text
//     (sanitised), as for metadata;
//   - an upstream's other answers: 502, naming the upstream and status;
//   - a timeout or a stalled upstream: 504;
//   - sumgate's own disk: 500;
//   - anything else (connection refused, reset, cut short): 502.
func (g *Gateway) answerError(err error) (status int, text, failure string) {
	var be *BlockedError
	var ue *UpstreamError
	switch {
	case errors.As(err, &be):
		if be.Verdict != nil {
			text = blockMessage(*be.Verdict, g.cfg.OnUnverified)
		} else {
			text = fitDetail([]string{"sumgate: " + be.Error()})
		}
		first, _, _ := strings.Cut(text, "\n")
		return http.StatusForbidden, text, first
	case errors.As(err, &ue) && ue.Status >= 400 && ue.Status < 500:
		text = ue.Text
		if strings.TrimSpace(text) == "" {
			text = fmt.Sprintf("%d %s", ue.Status, http.StatusText(ue.Status))
		}
		return ue.Status, text, ""
	case isTimeout(err):
		status = http.StatusGatewayTimeout
	case errors.Is(err, errSpool):
		status = http.StatusInternalServerError
	default:
		status = http.StatusBadGateway
	}
	text = "sumgate: " + err.Error()
	return status, text, text
}

// fileResponse sends a verified file whole, with its Content-Length; the
// file's share is released when the body is closed.
func fileResponse(req *http.Request, kind sumdb.Kind, r *Result) *http.Response {
	ctype := "application/zip"
	if kind == sumdb.KindMod {
		ctype = "text/plain; charset=utf-8"
	}
	outcome := sumdb.Verified.String()
	if r.Verdict != nil {
		outcome = r.Verdict.Outcome.String()
	}
	resp := &http.Response{
		StatusCode:    http.StatusOK,
		Status:        "200 OK",
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {ctype}, "Content-Length": {strconv.FormatInt(r.Size, 10)}, "X-Sumgate-Verdict": {outcome}},
		ContentLength: r.Size,
		Request:       req,
		Body: struct {
			io.Reader
			io.Closer
		}{r.Body(), r},
	}
	if r.CacheHit {
		resp.Header.Set("X-Sumgate-Cache", "hit")
	}
	if req.Method == http.MethodHead {
		r.Close()
		resp.Body = http.NoBody
	}
	return resp
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

// The go command prints at most this much of an error response, and only
// up to the first blank line (cmd/go/internal/web).
const (
	maxDetailLines = 8
	maxDetailBytes = maxDetailLines * 81
	wrapColumn     = 78
)

// blockMessage explains a blocked verdict in the room the go command
// prints: what was blocked and why, both hashes, and what to do. The
// words for each outcome are the verdict's own ([sumdb.Verdict.Headline],
// [sumdb.Verdict.Advice]).
func blockMessage(vd sumdb.Verdict, onUnverified UnverifiedPolicy) string {
	headline, detail := vd.Headline()
	// The first line stays whole, however long the module path, so that it
	// names the module, version and file in one piece.
	lines := []string{fmt.Sprintf("sumgate: blocked %s (%s): %s", shorten(vd.Module.String(), maxHeadline), vd.Kind, headline)}
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
	var tail []string
	if vd.Outcome == sumdb.NotFound || vd.Outcome == sumdb.Unavailable {
		tail = append(tail, "(sumgate policy on_unverified: "+string(onUnverified)+")")
	}
	tail = append(tail, wrap(vd.Advice())...)
	if detail != "" {
		// The detail gets the room the advice leaves, so that what to do is
		// never cut off; a cut detail ends in "...".
		rows, bytes := maxDetailLines-len(lines)-len(tail), maxDetailBytes-size(lines)-size(tail)
		d := wrap(detail)
		for i, l := range d {
			last := i == len(d)-1
			if !last && (rows == 1 || len(l)+1 > bytes-len(" ...")) {
				if l = cut(l); len(l)+1 <= bytes && rows > 0 {
					lines = append(lines, l)
				}
				break
			}
			if rows == 0 || len(l)+1 > bytes {
				break
			}
			lines = append(lines, l)
			rows, bytes = rows-1, bytes-len(l)-1
		}
	}
	return fitDetail(append(lines, tail...))
}

// size is the bytes lines take, one newline each.
func size(lines []string) int {
	n := 0
	for _, l := range lines {
		n += len(l) + 1
	}
	return n
}

// maxHeadline bounds the module@version in a block message's first line,
// so that the hashes and the advice keep their room: module paths have no
// length limit.
const maxHeadline = 200

// shorten keeps the start and the end of s, at most max bytes in all.
func shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	half := (max - 3) / 2
	return s[:half] + "..." + s[len(s)-half:]
}

// cut marks a line as cut short.
func cut(line string) string {
	if len(line)+4 > wrapColumn {
		line = line[:wrapColumn-4]
	}
	return line + " ..."
}

// fitDetail joins lines, dropping blank ones and whole lines from the end
// so that the go command prints all of what remains.
func fitDetail(lines []string) string {
	var b strings.Builder
	n := 0
	for _, l := range lines {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if n == 0 {
			l = shorten(l, maxDetailBytes-1) // never an empty answer
		}
		if n >= maxDetailLines || b.Len()+len(l)+1 > maxDetailBytes {
			break
		}
		b.WriteString(l)
		b.WriteByte('\n')
		n++
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

// endingBody counts the bytes sent and ends a request's audit record when
// its body is closed: by then the client has the whole answer, or has
// gone away, which is recorded as an incomplete delivery.
type endingBody struct {
	io.ReadCloser
	audit *requestAudit
	want  int64 // Content-Length, or -1
	head  bool  // a HEAD request: no body is owed
	end   func()
	eof   atomic.Bool
	once  sync.Once
}

func (b *endingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.audit.sent.Add(int64(n))
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

func (b *endingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		sent := b.audit.sent.Load()
		if !b.head && b.ReadCloser != http.NoBody && !b.eof.Load() && (b.want < 0 || sent < b.want) {
			b.audit.incomplete(sent, b.want)
		}
		b.end()
	})
	return err
}
