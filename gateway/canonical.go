package gateway

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// canonicalPath returns the decoded form of the escaped request path p,
// sent to the intercepted host host, on which sumgate decides; or why p
// is not canonical.
//
// sumgate decides on the path exactly as the client sent it, and forwards
// exactly that path. An upstream may normalise a path before routing it
// (nginx resolves dot segments, merges slashes and decodes percent
// escapes by default; Java servers drop ";" parameters; case-insensitive
// servers fold case; Windows trims trailing dots), so a path that is not
// canonical could be read as a module file upstream while sumgate read it
// as something else (threat 24). Every such path is refused:
//
//   - it must start with "/";
//   - once decoded, valid UTF-8;
//   - no percent-encoded unreserved character (RFC 3986, section 6.2.2.2:
//     letters, digits, "-", ".", "_", "~"), and no encoded "/", "\",
//     "%", "?", "#", ";" or control character; other escapes (the go
//     command sends "!" as "%21") are decoded, and the decoded path is
//     what is decided on, so an upstream that decodes reads the same;
//   - in the decoded path: no empty segment ("//"), no "." or ".."
//     segment and no segment ending in a dot, no backslash, no ";";
//   - on a module proxy's host, a path under the proxy's prefix (compared
//     without case) must carry the prefix exactly, and no upper-case
//     letter: the GOPROXY protocol case-encodes module paths and versions
//     ("!a" for "A"), so the go command never sends one; and nothing but
//     ASCII, so that no look-alike of "/" or "@" reaches a server that
//     maps Unicode to ASCII.
func (pol *requestPolicy) canonicalPath(host, p string) (decoded, why string) {
	if !strings.HasPrefix(p, "/") {
		return "", "it does not start with /"
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", "it has a malformed percent-encoding"
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if c < 0x20 || c == 0x7f || isUnreserved(c) || strings.IndexByte(`/\%?#;`, c) >= 0 {
			return "", fmt.Sprintf("it has an encoded %q (%s)", rune(c), p[i:i+3])
		}
		i += 2
	}
	d, err := url.PathUnescape(p)
	if err != nil {
		return "", "it has a malformed percent-encoding"
	}
	if !utf8.ValidString(d) {
		return "", "it is not valid UTF-8 once decoded (an overlong or broken encoding)"
	}
	if strings.Contains(d, "//") {
		return "", "it has repeated slashes"
	}
	if strings.ContainsAny(d, `\;`) {
		return "", `it has a backslash or ";"`
	}
	for _, seg := range strings.Split(d[1:], "/") {
		if strings.HasSuffix(seg, ".") {
			return "", fmt.Sprintf("segment %q is a dot segment or ends in a dot", seg)
		}
	}
	for _, o := range pol.origins {
		if o.host != host || len(d) <= len(o.prefix) || !strings.EqualFold(d[:len(o.prefix)+1], o.prefix+"/") {
			continue
		}
		if d[:len(o.prefix)] != o.prefix {
			return "", fmt.Sprintf("it is a case variant of the module proxy prefix %s", o.prefix)
		}
		if strings.IndexFunc(d, func(r rune) bool { return 'A' <= r && r <= 'Z' }) >= 0 {
			return "", `it has upper-case letters, which module proxy paths case-encode ("!a" for "A")`
		}
		// Module paths and versions are ASCII: anything else here is a
		// look-alike ("／", "＠") or an overlong encoding ("%C0%AF") that a
		// best-fit or Unicode-normalising upstream could read as "/" or "@".
		if strings.IndexFunc(d, func(r rune) bool { return r >= 0x80 }) >= 0 {
			return "", "it has non-ASCII characters, which module proxy paths never have"
		}
	}
	return d, ""
}

// isUnreserved reports whether c is an RFC 3986 unreserved character.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
