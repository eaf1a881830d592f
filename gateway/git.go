package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/sumgate/sumgate/policy"
	"github.com/sumgate/sumgate/sumdb"
	"github.com/sumgate/sumgate/vcs"
)

// gitRefusal is a git fetch refused under vcs: verify: the client is
// told in-band (an ERR packet, which git prints as "remote error: ..."),
// since git shows no HTTP error body.
type gitRefusal struct {
	res    vcs.Result
	reason string // one line
}

func (e *gitRefusal) Error() string { return e.reason }

// actGit polices one POST to git-upload-pack (decideGit): it reads the
// request (at most vcs.MaxRequestBytes, after any gzip), has the vcs
// verifier check what it wants, and passes it upstream unchanged only if
// that passes: verified, private, or unverified under on_unverified:
// allow. A mismatch or a fork is never passed.
func (g *Gateway) actGit(ctx context.Context, req *http.Request, d decision) (vcs.Result, outcome) {
	raw, err := io.ReadAll(io.LimitReader(req.Body, vcs.MaxRequestBytes+1))
	if err != nil {
		return vcs.Result{}, outcome{err: fmt.Errorf("reading the git request: %w", err)}
	}
	refuse := func(res vcs.Result, format string, args ...any) (vcs.Result, outcome) {
		return res, outcome{err: &gitRefusal{res: res, reason: "sumgate: " + fmt.Sprintf(format, args...)}}
	}
	if len(raw) > vcs.MaxRequestBytes {
		return refuse(vcs.Result{}, "the git request is larger than %d bytes, which sumgate does not verify", vcs.MaxRequestBytes)
	}
	body := raw
	if enc := strings.ToLower(req.Header.Get("Content-Encoding")); enc == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			body, err = io.ReadAll(io.LimitReader(zr, vcs.MaxRequestBytes+1))
		}
		if err != nil || len(body) > vcs.MaxRequestBytes {
			return refuse(vcs.Result{}, "the git request's gzip body is malformed or larger than %d bytes", vcs.MaxRequestBytes)
		}
	} else if enc != "" && enc != "identity" {
		return refuse(vcs.Result{}, "the git request's Content-Encoding %q is not one sumgate reads", enc)
	}
	v2 := strings.Contains(req.Header.Get("Git-Protocol"), "version=2")
	ur, err := vcs.ParseUploadRequest(body, v2)
	if err != nil {
		return refuse(vcs.Result{}, "%s: %v", d.repo, err)
	}
	refusePolicy := func(res vcs.Result, pd *policy.Decision) (vcs.Result, outcome) {
		_, o := refuse(res, "%s", strings.TrimPrefix(pd.Reason, "sumgate: "))
		o.pol = pd
		return res, o
	}
	key := clientIP(req) + " " + d.repo
	if res, pd, blocked := g.refusedGit(ctx, key, ur.Wants); blocked {
		return refusePolicy(res, pd)
	}
	res, err := g.vcs.Check(ctx, vcs.Fetch{Repo: d.repo, Client: clientIP(req), Request: ur,
		Anonymous: req.Header.Get("Authorization") == "" && req.Header.Get("Cookie") == ""})
	if err != nil {
		return refuse(res, "%s: could not verify this fetch: %v", d.repo, err)
	}
	if !passes(res.Verdict, g.cfg.OnUnverified) {
		return refuse(res, "%s", gitBlockMessage(d.repo, g.cfg.Verifier.Name(), res, g.cfg.OnUnverified))
	}
	if pd, blocked := g.decideGit(ctx, res, d.vcs, ur.Command == "fetch", key, ur.Wants); blocked {
		return refusePolicy(res, pd)
	} else if pd != nil && res.Serves() {
		ans, err := g.vcs.Serve(ctx, res, body, v2)
		if err != nil {
			return refuse(res, "%s: could not serve this verified fetch: %v", d.repo, err)
		}
		return res, outcome{served: ans, pol: pd}
	}
	if res.Serves() {
		// A verified fetch is answered from sumgate's own copy of the
		// verified objects: the code host's answer could carry other
		// objects, or other refs, than those checked.
		ans, err := g.vcs.Serve(ctx, res, body, v2)
		if err != nil {
			return refuse(res, "%s: could not serve this verified fetch: %v", d.repo, err)
		}
		return res, outcome{served: ans}
	}
	pass := req.Clone(ctx)
	pass.Body = io.NopCloser(bytes.NewReader(raw))
	pass.ContentLength = int64(len(raw))
	if ur.Command == "ls-refs" {
		// Its answer is read on the way back: ask for it plain (sumgate's
		// client decodes gzip itself then), and refuse another encoding.
		pass.Header.Del("Accept-Encoding")
	}
	out := g.forward(pass, d.url, g.cfg.Upstream.Do, "pass-through")
	if ur.Command == "ls-refs" && out.resp != nil && out.resp.StatusCode == http.StatusOK {
		if enc := out.resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
			out.close()
			return refuse(res, "%s: the code host answered ls-refs with Content-Encoding %q, which sumgate does not read", d.repo, enc)
		}
		out.resp.Body = g.vcs.WatchRefs(d.repo, out.resp.Body)
	}
	return res, out
}

// clientIP is the address of the client that sent req, without its
// port: a client's go-get discovery and its git fetches come on different
// connections.
func clientIP(req *http.Request) string {
	if h, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		return h
	}
	return req.RemoteAddr
}

// servedResponse is a verified fetch answered from sumgate's copy.
func servedResponse(req *http.Request, ans *vcs.Answer) *http.Response {
	resp := textResponse(req, http.StatusOK, "")
	resp.Header.Set("Content-Type", "application/x-git-upload-pack-result")
	resp.Header.Set("Content-Length", fmt.Sprint(ans.Size))
	resp.Header.Set("Cache-Control", "no-cache")
	resp.ContentLength = ans.Size
	resp.Body = ans
	return resp
}

// gitBlockMessage is the one line a refused git fetch says: module,
// version, tag and both hashes for a mismatch; the reason otherwise; and
// what to do.
func gitBlockMessage(repo, sumdbName string, res vcs.Result, onUnverified UnverifiedPolicy) string {
	vd := res.Verdict
	rev := ""
	if res.Tag != "" {
		rev = fmt.Sprintf(" (tag %s, commit %.12s)", res.Tag, res.Commit)
	}
	switch vd.Outcome {
	case sumdb.Mismatch:
		if vd.Reason != "" {
			return fmt.Sprintf("blocked %s%s from %s: its module zip is malformed: %s", vd.Module, rev, repo, vd.Reason)
		}
		return fmt.Sprintf("blocked %s%s from %s: %s: the repository has %s, %s has %s. Do not use this version; report it to the module's authors",
			vd.Module, rev, repo, vcs.MovedTag, vd.Got, sumdbName, vd.Want)
	case sumdb.NotFound, sumdb.Unavailable:
		headline, detail := vd.Headline()
		what, advice := vd.Module.String(), "If it is a private module, add its path to the private key of sumgate's configuration"
		if vd.Module.Version == "" {
			headline, what = "not verified", repo
			advice = "Use a tagged version, or a module proxy (the default GOPROXY), where sumgate verifies pseudo-versions too"
		}
		if strings.Contains(detail, "private key") {
			advice = "" // the reason says what to do
		}
		return strings.TrimSpace(fmt.Sprintf("blocked %s%s: %s: %s (on_unverified: %s). %s", what, rev, headline, detail, onUnverified, advice))
	}
	headline, detail := vd.Headline()
	return fmt.Sprintf("blocked %s%s from %s: %s: %s", vd.Module, rev, repo, headline, detail)
}

// gitErrResponse answers a refused git fetch: 200, with the reason in an
// ERR packet, the only way git shows it.
func gitErrResponse(req *http.Request, reason string) *http.Response {
	resp := textResponse(req, http.StatusOK, "")
	body := vcs.ErrPacket(reason)
	resp.Header.Set("Content-Type", "application/x-git-upload-pack-result")
	resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
	resp.Header.Set("Cache-Control", "no-cache")
	resp.ContentLength = int64(len(body))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

// maxDiscoveryBytes bounds how much of a go-get discovery page is read
// for its go-import tags; the go command reads no further than </head>.
const maxDiscoveryBytes = 1 << 20

// learnImports wraps a go-get discovery answer so that, as the client
// reads it, its <meta name="go-import"> tags are passed to the vcs
// verifier (vcs.Verifier.LearnImport). The client's bytes are not
// changed.
func (g *Gateway) learnImports(client, host string, resp *http.Response) {
	if resp.StatusCode != http.StatusOK || resp.Body == nil {
		return
	}
	pr, pw := io.Pipe()
	tee := &limitedTee{w: pw, n: maxDiscoveryBytes}
	resp.Body = &teeBody{ReadCloser: resp.Body, tee: tee, done: pw}
	go func() {
		defer pr.Close()
		for _, f := range parseGoImports(pr) {
			subdir := ""
			if len(f) == 4 {
				subdir = f[3]
			}
			g.vcs.LearnImport(client, host, f[0], f[1], f[2], subdir)
		}
		io.Copy(io.Discard, pr)
	}()
}

// teeBody copies what is read from a body to tee, and ends it on close.
type teeBody struct {
	io.ReadCloser
	tee  *limitedTee
	done *io.PipeWriter
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.tee.Write(p[:n])
	if err != nil {
		b.done.Close()
	}
	return n, err
}

func (b *teeBody) Close() error {
	b.done.Close()
	return b.ReadCloser.Close()
}

// limitedTee writes at most n bytes to w, then drops the rest.
type limitedTee struct {
	w *io.PipeWriter
	n int
}

func (t *limitedTee) Write(p []byte) {
	if t.n <= 0 || len(p) == 0 {
		return
	}
	p = p[:min(len(p), t.n)]
	t.n -= len(p)
	t.w.Write(p)
}

// parseGoImports returns the go-import meta tags of an HTML page as
// (import-prefix, vcs, repo-root, subdirectory) fields, read as the go
// command reads them (cmd/go/internal/vcs's discovery): a lenient XML
// tokenizer, up to </head> or <body>, UTF-8 or ASCII only.
func parseGoImports(r io.Reader) [][]string {
	d := xml.NewDecoder(r)
	d.Strict = false
	d.CharsetReader = func(charset string, input io.Reader) (io.Reader, error) {
		if cs := strings.ToLower(charset); cs == "utf-8" || cs == "ascii" {
			return input, nil
		}
		return nil, fmt.Errorf("charset %q", charset)
	}
	attr := func(e xml.StartElement, name string) string {
		for _, a := range e.Attr {
			if strings.EqualFold(a.Name.Local, name) {
				return a.Value
			}
		}
		return ""
	}
	var out [][]string
	for {
		t, err := d.RawToken()
		if err != nil {
			return out
		}
		switch e := t.(type) {
		case xml.StartElement:
			if strings.EqualFold(e.Name.Local, "body") {
				return out
			}
			if !strings.EqualFold(e.Name.Local, "meta") || attr(e, "name") != "go-import" {
				continue
			}
			if f := strings.Fields(attr(e, "content")); len(f) == 3 || len(f) == 4 {
				out = append(out, f)
			}
		case xml.EndElement:
			if strings.EqualFold(e.Name.Local, "head") {
				return out
			}
		}
	}
}
