package vcs

import (
	"bufio"
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
)

const (
	oidA = "0123456789abcdef0123456789abcdef01234567"
	oidB = "89abcdef0123456789abcdef0123456789abcdef"
)

// pkts builds a pkt-line stream: "0000", "0001" and "0002" are written
// as they are, anything else as a pkt-line with a newline.
func pkts(lines ...string) []byte {
	var b []byte
	for _, l := range lines {
		switch l {
		case "0000", "0001", "0002":
			b = append(b, l...)
		default:
			b = appendPkt(b, l+"\n")
		}
	}
	return b
}

func TestParseUploadRequest(t *testing.T) {
	for _, tt := range []struct {
		name    string
		body    []byte
		v2      bool
		want    UploadRequest
		wantErr string
	}{
		{name: "v2 fetch at depth 1, as the go command sends it",
			body: pkts("command=fetch", "agent=git/2.39.5", "object-format=sha1", "0001", "thin-pack", "no-progress", "ofs-delta", "deepen 1", "want "+oidA, "done", "0000"),
			v2:   true, want: UploadRequest{Command: "fetch", V2: true, Wants: []string{oidA}, Deepen: 1}},
		{name: "v2 ls-refs delivers no objects",
			body: pkts("command=ls-refs", "0001", "peel", "ref-prefix refs/tags/v1.0.0", "0000"),
			v2:   true, want: UploadRequest{Command: "ls-refs", V2: true}},
		{name: "v2 want-ref and deepen-since",
			body: pkts("command=fetch", "0001", "want-ref refs/tags/v1.0.0", "deepen-since 1234", "0000"),
			v2:   true, want: UploadRequest{Command: "fetch", V2: true, WantRefs: []string{"refs/tags/v1.0.0"}, DeepenOther: true}},
		{name: "v2 packfile-uris",
			body: pkts("command=fetch", "0001", "packfile-uris https", "want "+oidA, "0000"),
			v2:   true, want: UploadRequest{Command: "fetch", V2: true, Wants: []string{oidA}, PackfileURIs: true}},
		{name: "v0 with capabilities on the first want",
			body: pkts("want "+oidA+" multi_ack_detailed side-band-64k thin-pack ofs-delta agent=git/2.39.5", "want "+oidB, "deepen 1", "0000", "have "+oidB, "done"),
			want: UploadRequest{Command: "fetch", Wants: []string{oidA, oidB}, Deepen: 1}},
		{name: "v0 without depth asks for history",
			body: pkts("want "+oidA+" side-band-64k", "0000", "done"),
			want: UploadRequest{Command: "fetch", Wants: []string{oidA}}},
		{name: "v2 body under a v0 header", body: pkts("command=fetch", "0001", "want "+oidA, "0000"), wantErr: "does not match"},
		{name: "v0 body under a v2 header", body: pkts("want "+oidA, "0000"), v2: true, wantErr: "does not match"},
		{name: "upper-case object id", body: pkts("command=fetch", "0001", "want "+strings.ToUpper(oidA), "0000"), v2: true, wantErr: "bad want"},
		{name: "short object id", body: pkts("want 0123", "0000"), wantErr: "bad want"},
		{name: "no flush", body: pkts("command=fetch", "0001", "want "+oidA), v2: true, wantErr: "no flush"},
		{name: "data after the flush", body: append(pkts("command=fetch", "0001", "want "+oidA, "0000"), pkts("want "+oidB)...), v2: true, wantErr: "after the flush"},
		{name: "cut short", body: pkts("command=fetch", "0001", "want "+oidA)[:30], v2: true, wantErr: "cut short"},
		{name: "bad length", body: []byte("zzzzcommand=fetch"), v2: true, wantErr: "bad pkt-line length"},
		{name: "empty", body: nil, wantErr: "empty"},
		{name: "deepen 0", body: pkts("command=fetch", "0001", "deepen 0", "0000"), v2: true, wantErr: "bad deepen"},
		{name: "want-ref in v0", body: pkts("want-ref refs/tags/v1.0.0", "0000"), wantErr: "want-ref in protocol v0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUploadRequest(tt.body, tt.v2)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Command != tt.want.Command || got.V2 != tt.want.V2 || !slices.Equal(got.Wants, tt.want.Wants) ||
				!slices.Equal(got.WantRefs, tt.want.WantRefs) || got.Deepen != tt.want.Deepen ||
				got.DeepenOther != tt.want.DeepenOther || got.PackfileURIs != tt.want.PackfileURIs {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseUploadRequest: a request sumgate accepts names only
// well-formed object ids, and the parse never panics.
func FuzzParseUploadRequest(f *testing.F) {
	f.Add(pkts("command=fetch", "0001", "deepen 1", "want "+oidA, "done", "0000"), true)
	f.Add(pkts("want "+oidA+" side-band-64k", "deepen 1", "0000", "have "+oidB, "done"), false)
	f.Add(pkts("command=ls-refs", "0001", "peel", "0000"), true)
	f.Fuzz(func(t *testing.T, body []byte, v2 bool) {
		req, err := ParseUploadRequest(body, v2)
		if err != nil {
			return
		}
		for _, w := range req.Wants {
			if !isObjectID(w) {
				t.Fatalf("accepted want %q", w)
			}
		}
		if req.Command == "fetch" && req.Deepen == 1 && !req.DeepenOther && !bytes.Contains(body, []byte("deepen 1")) {
			t.Fatalf("depth 1 without a deepen line: %q", body)
		}
	})
}

func TestParseLsRefs(t *testing.T) {
	got, err := parseLsRefs(pkts(oidA+" refs/tags/v1.0.0", oidB+" refs/tags/v1.1.0 peeled:"+oidA, "0000"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Ref{{Name: "refs/tags/v1.0.0", Object: oidA}, {Name: "refs/tags/v1.1.0", Object: oidB, Peeled: oidA}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range [][]byte{pkts(oidA + " refs/tags/v1.0.0"), pkts("ERR access denied", "0000"), pkts("xyz refs/tags/v1", "0000")} {
		if _, err := parseLsRefs(bad); err == nil {
			t.Errorf("parseLsRefs(%q) succeeded", bad)
		}
	}
}

// FuzzFetchResponse: whatever a code host answers, reading it never
// panics, and pack bytes are bounded.
func FuzzFetchResponse(f *testing.F) {
	f.Add(append(pkts("shallow-info", "shallow "+oidA, "0001", "packfile"), appendPkt(nil, "\x01PACK....")...), int64(100))
	f.Add(pkts("ERR no such repository"), int64(100))
	f.Fuzz(func(t *testing.T, data []byte, max int64) {
		max &= 1<<20 - 1
		var pack bytes.Buffer
		shallow, err := readFetchResponse(bufio.NewReader(bytes.NewReader(data)), &pack, max)
		if err != nil {
			return
		}
		if int64(pack.Len()) > max {
			t.Fatalf("wrote %d bytes of pack, over the bound %d", pack.Len(), max)
		}
		for _, s := range shallow {
			if !isObjectID(s) {
				t.Fatalf("shallow %q", s)
			}
		}
		parseLsRefs(data)
	})
}

func TestErrPacket(t *testing.T) {
	got := string(ErrPacket("blocked x@v1.0.0:\n  the tag was moved"))
	if want := "002dERR blocked x@v1.0.0:; the tag was moved\n"; got != want {
		t.Fatalf("ErrPacket = %q, want %q", got, want)
	}
	long := ErrPacket(strings.Repeat("x", 70000))
	if len(long) != maxPktLen {
		t.Fatalf("a long message makes a pkt-line of %d bytes, want %d", len(long), maxPktLen)
	}
}

func TestReadings(t *testing.T) {
	gh := []root{{path: "github.com/o/r"}}
	for _, tt := range []struct {
		roots []root
		tag   string
		want  []string // module@version codeDir pathMajor
	}{
		{gh, "v1.2.3", []string{"github.com/o/r@v1.2.3  "}},
		{gh, "v0.1.0-rc.1", []string{"github.com/o/r@v0.1.0-rc.1  "}},
		{gh, "sub/v1.2.3", []string{"github.com/o/r/sub@v1.2.3 sub "}},
		{gh, "v2.0.0", []string{"github.com/o/r/v2@v2.0.0  /v2", "github.com/o/r@v2.0.0+incompatible  "}},
		{gh, "a/b/v3.1.0", []string{"github.com/o/r/a/b/v3@v3.1.0 a/b /v3", "github.com/o/r/a/b@v3.1.0+incompatible a/b "}},
		{[]root{{path: "gopkg.in/yaml.v2"}}, "v2.4.0", []string{"gopkg.in/yaml.v2@v2.4.0  .v2"}},
		{[]root{{path: "gopkg.in/yaml.v2"}}, "v3.0.0", nil}, // gopkg.in/yaml.v2 has no v3
		{[]root{{path: "github.com/o/r"}, {path: "go.example.com/m"}}, "v1.0.0", []string{"github.com/o/r@v1.0.0  ", "go.example.com/m@v1.0.0  "}},
		{[]root{{path: "go.example.com/m", subdir: "go"}}, "go/v1.0.0", []string{"go.example.com/m@v1.0.0 go "}},
		{[]root{{path: "go.example.com/m", subdir: "go"}}, "v1.0.0", nil},
		{[]root{{path: "go.example.com/m", subdir: "go"}}, "gopher/v1.0.0", nil},
		{gh, "v1.2", nil},          // not canonical: the go command ignores it
		{gh, "v1.2.3+meta", nil},   // build metadata
		{gh, "release-1", nil},     // not a version
		{gh, "refs/v1.0.0/x", nil}, // the version is the last element
		{gh, "Sub/v1.0.0", []string{"github.com/o/r/Sub@v1.0.0 Sub "}},
	} {
		var got []string
		for _, rd := range readings(tt.roots, tt.tag) {
			got = append(got, rd.mod.String()+" "+rd.codeDir+" "+rd.pathMajor)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("readings(%v, %q) = %q, want %q", tt.roots, tt.tag, got, tt.want)
		}
	}
}

// FuzzWatchRefs: a well-formed ls-refs answer read in any chunks reaches
// the client unchanged with its tags recorded; one that does not parse is
// cut off; whatever the host sends, reading it never panics.
func FuzzWatchRefs(f *testing.F) {
	f.Add(pkts(oidA+" refs/tags/v1.0.0", oidB+" refs/tags/v1.1.0 peeled:"+oidA, "0000"), uint8(7))
	f.Add([]byte("0004\xff\xff"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		v := &Verifier{cfg: Config{CacheEntries: 100}, shown: map[string]*shownSet{}}
		w := v.WatchRefs("https://example.com/r", io.NopCloser(&chunkReader{data: data, n: int(chunk%16) + 1}))
		got, err := io.ReadAll(w)
		if _, perr := parseLsRefs(data); err != nil {
			if perr == nil {
				t.Fatalf("a well-formed answer was cut off: %v", err)
			}
			return
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("the client read %q, want %q", got, data)
		}
		if refs, err := parseLsRefs(data); err == nil {
			shown, _ := v.shownTo("https://example.com/r")
			for _, r := range refs {
				if strings.HasPrefix(r.Name, "refs/tags/") && !slices.ContainsFunc(shown, func(s Ref) bool { return s.Name == r.Name }) {
					t.Fatalf("tag %s of a well-formed answer was not recorded", r.Name)
				}
			}
		}
	})
}

// chunkReader reads data n bytes at a time.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.data)
	c.data = c.data[n:]
	return n, nil
}
