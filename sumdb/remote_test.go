package sumdb

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// fakeDB is a tiny HTTP server answering each path with a fixed status,
// counting requests per path.
type fakeDB struct {
	*httptest.Server
	mu     sync.Mutex
	hits   map[string]int
	status int           // status for every path but /supported
	body   string        // body for 200s
	delay  time.Duration // before answering
}

func newFakeDB(t *testing.T, status int, body string) *fakeDB {
	f := &fakeDB{hits: map[string]int{}, status: status, body: body}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.hits[r.URL.Path]++
		status, body := f.status, f.body
		f.mu.Unlock()
		select {
		case <-time.After(f.delay):
		case <-r.Context().Done():
			return
		}
		if strings.HasSuffix(r.URL.Path, "/supported") {
			return // 200
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(f.Close)
	return f
}

// setStatus changes the status of every later answer.
func (f *fakeDB) setStatus(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = status
}

func (f *fakeDB) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[path]
}

func TestRemoteFallsThroughFailingBases(t *testing.T) {
	down := newFakeDB(t, http.StatusBadGateway, "")
	up := newFakeDB(t, http.StatusOK, "tree")
	r := newRemote(http.DefaultClient, "sum.example", []string{down.URL, up.URL}, nil)
	for range 3 {
		data, err := r.get(context.Background(), "/latest")
		if err != nil || string(data) != "tree" {
			t.Fatalf("get = %q, %v", data, err)
		}
	}
	if down.count("/latest") != 1 || up.count("/latest") != 3 {
		t.Errorf("hits: down %d, up %d; want the failing base tried once, then the working one first", down.count("/latest"), up.count("/latest"))
	}
}

func TestRemoteNotFoundIsAuthoritative(t *testing.T) {
	nf := newFakeDB(t, http.StatusNotFound, "not found")
	other := newFakeDB(t, http.StatusOK, "record")
	r := newRemote(http.DefaultClient, "sum.example", []string{nf.URL, other.URL}, nil)
	_, err := r.get(context.Background(), "/lookup/example.com/m@v1.0.0")
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Fatalf("err = %v, want a 404 StatusError", err)
	}
	if n := other.count("/lookup/example.com/m@v1.0.0"); n != 0 {
		t.Errorf("a 404 fell through to the next base (%d requests)", n)
	}
}

func TestRemoteProxyFallback(t *testing.T) {
	direct := newFakeDB(t, http.StatusServiceUnavailable, "")
	proxy := newFakeDB(t, http.StatusOK, "tile")
	r := newRemote(http.DefaultClient, "sum.example", nil, []string{proxy.URL + "/"})
	r.bases = []string{direct.URL} // stand-in for https://sum.example
	for range 2 {
		if data, err := r.get(context.Background(), "/tile/8/0/000"); err != nil || string(data) != "tile" {
			t.Fatalf("get = %q, %v", data, err)
		}
	}
	if n := proxy.count("/sumdb/sum.example/supported"); n != 1 {
		t.Errorf("supported probed %d times, want 1", n)
	}
	if n := proxy.count("/sumdb/sum.example/tile/8/0/000"); n != 2 {
		t.Errorf("proxy served %d tiles, want 2", n)
	}
}

func TestRemoteBoundsResponses(t *testing.T) {
	big := newFakeDB(t, http.StatusOK, strings.Repeat("x", maxRemoteBody+1))
	r := newRemote(http.DefaultClient, "sum.example", []string{big.URL}, nil)
	if _, err := r.get(context.Background(), "/latest"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want a size error", err)
	}
}

func TestRemoteHonoursDeadline(t *testing.T) {
	slow := newFakeDB(t, http.StatusOK, "late")
	slow.delay = time.Minute
	r := newRemote(http.DefaultClient, "sum.example", []string{slow.URL}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := r.get(ctx, "/latest"); err == nil {
		t.Fatal("a stuck database answered")
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("deadline ignored")
	}
}

// TestRemoteOnlyAnswersAreFinal: whatever way one source fails, the next is
// asked. Only an answer ends the search: a 200 the database could have
// sent, or a 404 or 410 to a lookup (the database has no such record).
func TestRemoteOnlyAnswersAreFinal(t *testing.T) {
	const (
		lookup    = "/lookup/example.com/m@v1.0.0"
		tile      = "/tile/8/0/000.p/1"
		blockPage = "<html>Blocked by corporate policy</html>"
	)
	type source struct {
		status int    // 0: nothing listens
		body   string // of a 200
	}
	ok := source{http.StatusOK, "answer"}
	tests := []struct {
		name  string
		path  string
		srcs  []source
		want  string // "answer", "404" or "410" (a final *StatusError), or "unreachable"
		asked []int  // requests each listening source received
	}{
		{"lookup 404 is final", lookup, []source{{404, ""}, ok}, "404", []int{1, 0}},
		{"lookup 410 is final", lookup, []source{{410, ""}, ok}, "410", []int{1, 0}},
		{"lookup 403 moves on", lookup, []source{{403, blockPage}, ok}, "answer", []int{1, 1}},
		{"lookup 401 moves on", lookup, []source{{401, ""}, ok}, "answer", []int{1, 1}},
		{"lookup 400 moves on", lookup, []source{{400, ""}, ok}, "answer", []int{1, 1}},
		{"lookup 429 moves on", lookup, []source{{429, ""}, ok}, "answer", []int{1, 1}},
		{"lookup 500 moves on", lookup, []source{{500, ""}, ok}, "answer", []int{1, 1}},
		{"lookup 503 moves on", lookup, []source{{503, ""}, ok}, "answer", []int{1, 1}},
		{"lookup unreachable moves on", lookup, []source{{}, ok}, "answer", []int{0, 1}},
		{"lookup 200 block page moves on", lookup, []source{{200, blockPage}, ok}, "answer", []int{1, 1}},
		{"latest 404 moves on", "/latest", []source{{404, ""}, ok}, "answer", []int{1, 1}},
		{"latest 403 moves on", "/latest", []source{{403, ""}, ok}, "answer", []int{1, 1}},
		{"tile 404 moves on", tile, []source{{404, ""}, ok}, "answer", []int{1, 1}},
		{"tile 410 moves on", tile, []source{{410, ""}, ok}, "answer", []int{1, 1}},
		{"tile 403 moves on", tile, []source{{403, ""}, ok}, "answer", []int{1, 1}},
		{"lookup 404 after an unreachable source", lookup, []source{{}, {404, ""}}, "404", []int{0, 1}},
		{"lookup 404 after a 403", lookup, []source{{403, ""}, {404, ""}}, "404", []int{1, 1}},
		{"lookup 404 before an unreachable source", lookup, []source{{404, ""}, {}}, "404", []int{1, 0}},
		{"every source failing", lookup, []source{{403, ""}, {503, ""}, {}}, "unreachable", []int{1, 1, 0}},
		{"tile 404 everywhere", tile, []source{{404, ""}, {404, ""}}, "unreachable", []int{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var urls []string
			var dbs []*fakeDB
			for _, s := range tt.srcs {
				f := newFakeDB(t, s.status, s.body)
				if s.status == 0 {
					f.Close() // refuses connections from now on
				}
				urls = append(urls, f.URL)
				dbs = append(dbs, f)
			}
			r := newRemote(http.DefaultClient, "sum.example", urls, nil)
			r.accept = func(path string, data []byte) error {
				if string(data) == blockPage {
					return errors.New("a block page")
				}
				return nil
			}
			data, err := r.get(context.Background(), tt.path)
			var got string
			var se *StatusError
			switch {
			case err == nil:
				got = string(data)
			case errors.As(err, &se) && final(tt.path, err):
				got = strconv.Itoa(se.Status)
			case strings.Contains(err.Error(), "unreachable"):
				got = "unreachable"
			default:
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("get = %q (err %v), want %q", got, err, tt.want)
			}
			for i, f := range dbs {
				if n := f.count(tt.path); n != tt.asked[i] {
					t.Errorf("source %d asked %d times, want %d", i, n, tt.asked[i])
				}
			}
			wantSource := ""
			if tt.want == "answer" {
				wantSource = urls[len(urls)-1]
			}
			if s := r.source(); s != wantSource {
				t.Errorf("source() = %q, want %q", s, wantSource)
			}
		})
	}
}

// TestRemotePreferredDoesNotStick: the base that last answered is asked
// first, until it fails; then the next base to answer takes its place.
func TestRemotePreferredDoesNotStick(t *testing.T) {
	a := newFakeDB(t, http.StatusOK, "a")
	b := newFakeDB(t, http.StatusOK, "b")
	r := newRemote(http.DefaultClient, "sum.example", []string{a.URL, b.URL}, nil)
	const tile = "/tile/8/0/000"
	steps := []struct {
		name         string
		aStatus      int
		bStatus      int
		want         string
		aHits, bHits int // cumulative requests for tile
	}{
		{"a answers", 200, 200, "a", 1, 0},
		{"a forbidden: b answers", 403, 200, "b", 2, 1},
		{"b is asked first now", 200, 200, "b", 2, 2},
		{"b has no such tile: a answers", 200, 404, "a", 3, 3},
		{"a is asked first again", 200, 200, "a", 4, 3},
	}
	for _, st := range steps {
		a.setStatus(st.aStatus)
		b.setStatus(st.bStatus)
		data, err := r.get(context.Background(), tile)
		if err != nil || string(data) != st.want {
			t.Fatalf("%s: get = %q, %v; want %q", st.name, data, err, st.want)
		}
		if a.count(tile) != st.aHits || b.count(tile) != st.bHits {
			t.Fatalf("%s: a asked %d times, b %d; want %d and %d", st.name, a.count(tile), b.count(tile), st.aHits, st.bHits)
		}
		if want := map[string]string{"a": a.URL, "b": b.URL}[st.want]; r.source() != want {
			t.Fatalf("%s: source() = %q, want %q", st.name, r.source(), want)
		}
	}
}

// TestPlausibleAnswer: a 200 counts as the database's answer only if it
// could be one: a signed tree head, a record with one, a tile of the
// right size.
func TestPlausibleAnswer(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "sum.example")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := note.GenerateKey(rand.Reader, "sum.example")
	sign := func(text string) []byte {
		s, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := note.Sign(&note.Note{Text: text}, s)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	head := sign(string(tlog.FormatTree(tlog.Tree{N: 1, Hash: tlog.RecordHash([]byte("x"))})))
	record := append([]byte("0\nexample.com/m v1.0.0 h1:x=\n\n"), head...)
	v, _ := note.NewVerifier(vkey)
	other, _ := note.NewVerifier(otherKey)
	tests := []struct {
		path string
		data []byte
		ok   bool
	}{
		{"/latest", head, true},
		{"/latest", []byte("<html>Blocked</html>"), false},
		{"/latest", sign("not a tree\n"), true}, // signed: x/mod judges the text
		{"/lookup/example.com/m@v1.0.0", record, true},
		{"/lookup/example.com/m@v1.0.0", head, false},
		{"/lookup/example.com/m@v1.0.0", []byte("<html>Blocked</html>"), false},
		{"/tile/8/0/000", make([]byte, 256*tlog.HashSize), true},
		{"/tile/8/1/000.p/3", make([]byte, 3*tlog.HashSize), true},
		{"/tile/8/0/000.p/3", make([]byte, 2*tlog.HashSize), false},
		{"/tile/8/0/000", []byte("<html>Blocked</html>"), false},
		{"/tile/8/data/000.p/1", []byte("any record text"), true},
	}
	for _, tt := range tests {
		err := plausibleAnswer(note.VerifierList(v), tt.path, tt.data)
		if (err == nil) != tt.ok {
			t.Errorf("plausibleAnswer(%s, %.30q) = %v, want ok %v", tt.path, tt.data, err, tt.ok)
		}
	}
	if err := plausibleAnswer(note.VerifierList(other), "/latest", head); err == nil {
		t.Error("a tree head signed with another key was taken")
	}
}
