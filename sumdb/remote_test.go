package sumdb

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
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
		f.mu.Unlock()
		select {
		case <-time.After(f.delay):
		case <-r.Context().Done():
			return
		}
		if strings.HasSuffix(r.URL.Path, "/supported") {
			return // 200
		}
		w.WriteHeader(f.status)
		w.Write([]byte(f.body))
	}))
	t.Cleanup(f.Close)
	return f
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
