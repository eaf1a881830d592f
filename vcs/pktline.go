package vcs

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Git's pkt-line framing (gitprotocol-common(5)): four hex digits giving
// the length of the line including themselves, then the payload. The
// special lengths 0000 (flush), 0001 (delimiter, protocol v2) and 0002
// (response end, protocol v2) carry no payload.
const (
	pktFlush    = -1
	pktDelim    = -2
	pktResponse = -3

	maxPktLen = 65520 // LARGE_PACKET_MAX: the longest pkt-line git sends, header included
)

// errShortPkt is a pkt-line cut short by the end of its input.
var errShortPkt = errors.New("pkt-line cut short")

// pktReader reads pkt-lines from an in-memory buffer.
type pktReader struct {
	buf []byte
}

// next returns the next pkt-line's payload, or one of pktFlush, pktDelim,
// pktResponse as n with a nil payload. At the end of the input it returns
// n == 0 and io.EOF-like ok == false.
func (r *pktReader) next() (payload []byte, n int, ok bool, err error) {
	if len(r.buf) == 0 {
		return nil, 0, false, nil
	}
	if len(r.buf) < 4 {
		return nil, 0, false, errShortPkt
	}
	l, special, err := pktLen(r.buf[:4])
	switch {
	case err != nil:
		return nil, 0, false, err
	case special < 0:
		r.buf = r.buf[4:]
		return nil, special, true, nil
	}
	if int(l) > len(r.buf) {
		return nil, 0, false, errShortPkt
	}
	payload, r.buf = r.buf[4:l], r.buf[l:]
	return payload, len(payload), true, nil
}

// pktLen reads a pkt-line header: the line's whole length, or a special
// packet (pktFlush, pktDelim, pktResponse) as special.
func pktLen(hdr []byte) (l, special int, err error) {
	n, err := strconv.ParseUint(string(hdr), 16, 16)
	switch {
	case err != nil || n == 3:
		return 0, 0, fmt.Errorf("bad pkt-line length %q", hdr)
	case n <= 2:
		return 0, -1 - int(n), nil
	case n > maxPktLen:
		return 0, 0, fmt.Errorf("pkt-line of %d bytes exceeds %d", n, maxPktLen)
	}
	return int(n), 0, nil
}

// line is next for text lines: the payload without its trailing newline.
func (r *pktReader) line() (text string, n int, ok bool, err error) {
	p, n, ok, err := r.next()
	return string(bytes.TrimSuffix(p, []byte("\n"))), n, ok, err
}

// appendPkt appends payload as one pkt-line. A payload too long for one
// pkt-line is cut to fit.
func appendPkt(dst []byte, payload string) []byte {
	if len(payload) > maxPktLen-4 {
		payload = payload[:maxPktLen-4]
	}
	dst = fmt.Appendf(dst, "%04x", len(payload)+4)
	return append(dst, payload...)
}

// ErrPacket is a git smart-HTTP response body that carries msg in-band as
// an ERR packet, which git prints as "remote error: <msg>" and then
// stops (gitprotocol-pack(5): "ERR" packets may be sent at any time). A
// git client ignores an HTTP error's body, so a refusal must be said this
// way to be seen. Newlines in msg become "; " (an ERR packet is one line);
// a message too long for one pkt-line is cut.
func ErrPacket(msg string) []byte {
	return appendPkt(nil, "ERR "+oneLine(msg)+"\n")
}

// oneLine joins the non-empty lines of s with "; ".
func oneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(l); t != "" {
			lines = append(lines, t)
		}
	}
	return strings.Join(lines, "; ")
}
