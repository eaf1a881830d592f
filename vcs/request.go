package vcs

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxRequestBytes bounds the upload-pack request body sumgate reads to
// police it: a fetch names its wants, shallows and haves in it, about 50
// bytes each. Larger requests (a client holding tens of thousands of
// commits negotiating) are refused as unverifiable.
const MaxRequestBytes = 4 << 20

// An UploadRequest is what a client asks of git-upload-pack in one POST
// of git's smart HTTP protocol: protocol v2 (gitprotocol-v2(5), a command
// and its arguments) or protocol v0/v1 (gitprotocol-pack(5), want lines,
// then haves). Object ids are lower-case hex, SHA-1 or SHA-256.
type UploadRequest struct {
	// Command is the protocol v2 command ("ls-refs", "fetch",
	// "object-info", ...). A protocol v0/v1 request, which can only
	// fetch, has Command "fetch".
	Command string
	// V2 reports a protocol v2 request.
	V2 bool
	// Wants are the objects the client asks for ("want <oid>").
	Wants []string
	// WantRefs are the refs the client asks for by name ("want-ref <ref>",
	// protocol v2 only).
	WantRefs []string
	// Deepen is the depth asked for ("deepen <n>"); 0 when absent, which
	// asks for the whole history of each want.
	Deepen int
	// DeepenOther reports a history bounded otherwise than by depth:
	// deepen-since, deepen-not or deepen-relative, whose objects go
	// beyond the wants' own trees.
	DeepenOther bool
	// PackfileURIs reports that the client accepts part of the pack as
	// URIs to download from elsewhere (protocol v2 packfile-uris), whose
	// objects would not pass through here.
	PackfileURIs bool
}

// ParseUploadRequest parses the body of a POST to git-upload-pack. v2
// says the request's Git-Protocol header asks for version 2; a body that
// does not match it is an error, as is anything malformed: an upstream
// that read it differently could send objects that were not policed.
func ParseUploadRequest(body []byte, v2 bool) (UploadRequest, error) {
	r := &pktReader{buf: body}
	first, n, ok, err := r.line()
	if err != nil {
		return UploadRequest{}, fmt.Errorf("reading upload-pack request: %w", err)
	}
	if !ok || n < 0 {
		return UploadRequest{}, fmt.Errorf("reading upload-pack request: empty")
	}
	isV2 := strings.HasPrefix(first, "command=")
	if isV2 != v2 {
		return UploadRequest{}, fmt.Errorf("reading upload-pack request: the body does not match the protocol version the Git-Protocol header names")
	}
	if v2 {
		return parseV2(r, strings.TrimPrefix(first, "command="))
	}
	return parseV0(r, first)
}

// parseV2 reads a protocol v2 command request after its command line:
// capabilities up to a delimiter, then arguments up to a flush.
func parseV2(r *pktReader, command string) (UploadRequest, error) {
	req := UploadRequest{Command: command, V2: true}
	if command == "" || strings.ContainsAny(command, " \t") {
		return req, fmt.Errorf("reading upload-pack request: bad command %q", command)
	}
	args := false
	for {
		line, n, ok, err := r.line()
		switch {
		case err != nil:
			return req, fmt.Errorf("reading upload-pack request: %w", err)
		case !ok:
			return req, fmt.Errorf("reading upload-pack request: no flush-pkt at the end")
		case n == pktDelim && !args:
			args = true
			continue
		case n == pktFlush:
			if len(r.buf) != 0 {
				return req, fmt.Errorf("reading upload-pack request: data after the flush-pkt")
			}
			return req, nil
		case n < 0:
			return req, fmt.Errorf("reading upload-pack request: unexpected special packet")
		case !args:
			continue // a capability: agent=, object-format=, server-option=
		}
		if command != "fetch" {
			continue // ls-refs, object-info: no objects delivered
		}
		if err := req.arg(line); err != nil {
			return req, err
		}
	}
}

// parseV0 reads a protocol v0/v1 upload-pack request: want lines (the
// first with capabilities), shallow and deepen lines, a flush, then
// haves and "done".
func parseV0(r *pktReader, first string) (UploadRequest, error) {
	req := UploadRequest{Command: "fetch"}
	line, n := first, 1
	for i := 0; ; i++ {
		if i > 0 {
			var ok bool
			var err error
			line, n, ok, err = r.line()
			switch {
			case err != nil:
				return req, fmt.Errorf("reading upload-pack request: %w", err)
			case !ok:
				return req, nil // a stateless request may end after the haves
			}
		}
		switch {
		case n == pktFlush:
			continue
		case n < 0:
			return req, fmt.Errorf("reading upload-pack request: unexpected special packet")
		}
		if i == 0 {
			// Capabilities follow the first want after a space.
			if f := strings.Fields(line); len(f) > 2 && f[0] == "want" {
				line = f[0] + " " + f[1]
			}
		}
		if strings.HasPrefix(line, "want-ref ") {
			return req, fmt.Errorf("reading upload-pack request: want-ref in protocol v0")
		}
		if err := req.arg(line); err != nil {
			return req, err
		}
	}
}

// arg records one argument of a fetch.
func (req *UploadRequest) arg(line string) error {
	name, value, _ := strings.Cut(line, " ")
	switch name {
	case "want":
		if !isObjectID(value) {
			return fmt.Errorf("reading upload-pack request: bad want %q", value)
		}
		req.Wants = append(req.Wants, value)
	case "want-ref":
		if !strings.HasPrefix(value, "refs/") || strings.ContainsAny(value, " \t") {
			return fmt.Errorf("reading upload-pack request: bad want-ref %q", value)
		}
		req.WantRefs = append(req.WantRefs, value)
	case "deepen":
		d, err := strconv.Atoi(value)
		if err != nil || d < 1 {
			return fmt.Errorf("reading upload-pack request: bad deepen %q", value)
		}
		req.Deepen = d
	case "deepen-since", "deepen-not", "deepen-relative":
		req.DeepenOther = true
	case "packfile-uris":
		req.PackfileURIs = true
	case "have", "shallow":
		if !isObjectID(value) {
			return fmt.Errorf("reading upload-pack request: bad %s %q", name, value)
		}
	}
	// done, thin-pack, no-progress, include-tag, ofs-delta, filter,
	// sideband-all, wait-for-done: nothing that widens
	// what the wants deliver.
	return nil
}

// isObjectID reports whether s is a lower-case hex SHA-1 or SHA-256
// object id.
func isObjectID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
