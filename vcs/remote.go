package vcs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// A Ref is one ref a repository advertises.
type Ref struct {
	Name   string // full name: refs/tags/v1.2.3
	Object string // the object it points to: a commit, or an annotated tag
	Peeled string // for an annotated tag, the object it peels to; else ""
}

// NotAnonymousError reports a repository that sumgate cannot read
// without credentials: private, or not there (code hosts answer both
// alike). Its module paths are never sent to the checksum database.
type NotAnonymousError struct {
	Repo   string // https://host/path
	Status int    // the code host's HTTP status
}

func (e *NotAnonymousError) Error() string {
	return fmt.Sprintf("%s cannot be read anonymously (%d %s)", e.Repo, e.Status, http.StatusText(e.Status))
}

// maxLsRefsBytes bounds an ls-refs answer: about 100 bytes a tag.
const maxLsRefsBytes = 32 << 20

// rpc posts one protocol v2 command to repo's git-upload-pack with no
// credentials, and returns the answer's body for the caller to read and
// close. A 401, 403 or 404 is a *NotAnonymousError.
func (v *Verifier) rpc(ctx context.Context, repo string, body []byte) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, repo+"/git-upload-pack", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	req.Header.Set("Accept", "application/x-git-upload-pack-result")
	req.Header.Set("Git-Protocol", "version=2")
	// Code hosts serve the smart protocol to git's user agent.
	req.Header.Set("User-Agent", "git/2-sumgate")
	resp, err := v.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		return nil, &NotAnonymousError{Repo: repo, Status: resp.StatusCode}
	case resp.StatusCode != http.StatusOK:
		resp.Body.Close()
		return nil, fmt.Errorf("%s/git-upload-pack answered %s", repo, resp.Status)
	case resp.Header.Get("Content-Type") != "application/x-git-upload-pack-result":
		resp.Body.Close()
		return nil, fmt.Errorf("%s/git-upload-pack answered %q, not git's smart protocol", repo, resp.Header.Get("Content-Type"))
	}
	return resp.Body, nil
}

// lsRefs lists repo's tags, peeled, with protocol v2's ls-refs.
func (v *Verifier) lsRefs(ctx context.Context, repo string) ([]Ref, error) {
	var body []byte
	body = appendPkt(body, "command=ls-refs\n")
	body = append(body, "0001"...)
	body = appendPkt(body, "peel\n")
	body = appendPkt(body, "ref-prefix refs/tags/\n")
	body = append(body, "0000"...)
	rc, err := v.rpc(ctx, repo, body)
	if err != nil {
		return nil, fmt.Errorf("listing the tags of %s: %w", repo, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxLsRefsBytes+1))
	if err != nil {
		return nil, fmt.Errorf("listing the tags of %s: %w", repo, err)
	}
	if len(data) > maxLsRefsBytes {
		return nil, fmt.Errorf("listing the tags of %s: more than %d bytes", repo, maxLsRefsBytes)
	}
	refs, err := parseLsRefs(data)
	if err != nil {
		return nil, fmt.Errorf("listing the tags of %s: %w (does it speak git protocol v2?)", repo, err)
	}
	return refs, nil
}

// parseLsRefs parses an ls-refs answer: "<oid> <name>[ peeled:<oid>]"
// lines, then a flush.
func parseLsRefs(data []byte) ([]Ref, error) {
	r := &pktReader{buf: data}
	var refs []Ref
	for {
		line, n, ok, err := r.line()
		switch {
		case err != nil:
			return nil, err
		case !ok:
			return nil, errors.New("no flush-pkt at the end")
		case n == pktFlush:
			return refs, nil
		case n < 0:
			return nil, errors.New("unexpected special packet")
		}
		if msg, ok := strings.CutPrefix(line, "ERR "); ok {
			return nil, fmt.Errorf("the server said: %s", msg)
		}
		f := strings.Fields(line)
		if len(f) < 2 || !isObjectID(f[0]) {
			return nil, fmt.Errorf("bad ref line %q", line)
		}
		ref := Ref{Name: f[1], Object: f[0]}
		for _, attr := range f[2:] {
			if p, ok := strings.CutPrefix(attr, "peeled:"); ok && isObjectID(p) {
				ref.Peeled = p
			}
		}
		refs = append(refs, ref)
	}
}

// fetchPack fetches objects (commits, annotated tags) from repo at depth
// 1 with protocol v2's fetch, and writes the pack to pack. It returns the
// shallow commits the server names, for the repository's shallow file. At
// most maxBytes of pack are accepted.
func (v *Verifier) fetchPack(ctx context.Context, repo string, objects []string, pack io.Writer, maxBytes int64) (shallow []string, err error) {
	var body []byte
	body = appendPkt(body, "command=fetch\n")
	body = append(body, "0001"...)
	args := []string{"no-progress", "ofs-delta", "deepen 1"}
	for _, o := range objects {
		args = append(args, "want "+o)
	}
	for _, arg := range append(args, "done") {
		body = appendPkt(body, arg+"\n")
	}
	body = append(body, "0000"...)
	rc, err := v.rpc(ctx, repo, body)
	if err != nil {
		return nil, fmt.Errorf("fetching %s from %s: %w", objects[0], repo, err)
	}
	defer rc.Close()
	shallow, err = readFetchResponse(bufio.NewReaderSize(rc, maxPktLen), pack, maxBytes)
	if err != nil {
		return nil, fmt.Errorf("fetching %s from %s: %w", objects[0], repo, err)
	}
	return shallow, nil
}

// readFetchResponse reads a protocol v2 fetch answer: sections
// (shallow-info, wanted-refs, packfile), each a header line then lines up
// to a delimiter or flush. The packfile section is side-band: band 1 is
// the pack, 2 progress, 3 a fatal error.
func readFetchResponse(r *bufio.Reader, pack io.Writer, maxBytes int64) (shallow []string, err error) {
	var section string
	var written int64
	for {
		payload, n, err := readPkt(r)
		if err != nil {
			return nil, err
		}
		switch {
		case n == pktFlush:
			if section != "packfile" {
				return nil, errors.New("the answer ended without a pack")
			}
			return shallow, nil
		case n == pktDelim:
			section = ""
			continue
		case n < 0:
			return nil, errors.New("unexpected special packet")
		case section == "":
			section = strings.TrimSuffix(string(payload), "\n")
			if msg, ok := strings.CutPrefix(section, "ERR "); ok {
				return nil, fmt.Errorf("the server said: %s", msg)
			}
			continue
		}
		switch section {
		case "shallow-info":
			line := strings.TrimSuffix(string(payload), "\n")
			if oid, ok := strings.CutPrefix(line, "shallow "); ok && isObjectID(oid) {
				shallow = append(shallow, oid)
			}
		case "packfile":
			if len(payload) == 0 {
				return nil, errors.New("empty side-band packet")
			}
			switch payload[0] {
			case 1:
				written += int64(len(payload) - 1)
				if written > maxBytes {
					return nil, fmt.Errorf("the pack is larger than %d bytes", maxBytes)
				}
				if _, err := pack.Write(payload[1:]); err != nil {
					return nil, err
				}
			case 3:
				return nil, fmt.Errorf("the server said: %s", strings.TrimSpace(string(payload[1:])))
			}
		}
	}
}

// readPkt reads one pkt-line from a stream; see pktReader.next.
func readPkt(r *bufio.Reader) (payload []byte, n int, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, 0, err
	}
	l, special, err := pktLen(hdr[:])
	switch {
	case err != nil:
		return nil, 0, err
	case special < 0:
		return nil, special, nil
	}
	payload = make([]byte, l-4)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, 0, fmt.Errorf("pkt-line cut short: %w", err)
	}
	return payload, len(payload), nil
}

// WatchRefs wraps the body of an ls-refs answer that repoURL's code host
// sends a client, so that each tag in it is recorded (ShowRefs) before
// the client can read the bytes that name it. The client's bytes are not
// changed; an answer that does not parse is cut off with an error where
// it stops parsing, so that nothing sumgate could not read reaches git.
func (v *Verifier) WatchRefs(repoURL string, body io.ReadCloser) io.ReadCloser {
	return &refsWatcher{ReadCloser: body, v: v, repo: repoURL}
}

type refsWatcher struct {
	io.ReadCloser
	v    *Verifier
	repo string
	buf  []byte // an incomplete pkt-line
	done bool   // the flush was seen
	bad  error  // the answer did not parse
}

func (w *refsWatcher) Read(p []byte) (int, error) {
	if w.bad != nil {
		return 0, w.bad
	}
	n, err := w.ReadCloser.Read(p)
	if n > 0 && !w.done {
		w.buf = append(w.buf, p[:n]...)
		var refs []Ref
		for !w.done && len(w.buf) >= 4 {
			r := &pktReader{buf: w.buf}
			line, kind, ok, perr := r.line()
			if perr == errShortPkt {
				break // the rest of the packet comes in a later read
			}
			if perr != nil || !ok {
				w.bad = fmt.Errorf("the code host's ls-refs answer does not parse: %v", perr)
				w.v.ShowRefs(w.repo, refs)
				return 0, w.bad
			}
			w.buf = r.buf
			if kind < 0 {
				w.done = kind == pktFlush
				continue
			}
			if f := strings.Fields(line); len(f) >= 2 && isObjectID(f[0]) {
				ref := Ref{Name: f[1], Object: f[0]}
				for _, attr := range f[2:] {
					if pl, ok := strings.CutPrefix(attr, "peeled:"); ok && isObjectID(pl) {
						ref.Peeled = pl
					}
				}
				refs = append(refs, ref)
			}
		}
		if w.done {
			w.buf = nil
		}
		w.v.ShowRefs(w.repo, refs)
	}
	if err == io.EOF && !w.done {
		w.bad = errors.New("the code host's ls-refs answer ended without a flush-pkt")
		return n, w.bad
	}
	return n, err
}
