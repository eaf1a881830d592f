package testworld

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/sumgate/sumgate/internal/config"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
)

// A SumDBMode selects what the world's checksum database serves.
type SumDBMode int

const (
	// SumDBHonest serves the honest tree: fillers, then every InSumDB corpus
	// module in Modules order, then more fillers.
	SumDBHonest SumDBMode = iota
	// SumDBForked serves a fork signed with the same key: it shares the
	// honest records up to TamperedZipPath, logs for it the hash of the
	// zip the proxies serve (legitimising the tampering), then repeats the
	// remaining honest records and one more filler, so it is one record
	// larger than the honest tree. A client that has seen an honest tree head
	// detects the inconsistency when it sees a forked one, and vice versa.
	SumDBForked
	// SumDBDown answers 503 to every database request.
	SumDBDown
	// SumDBNotFound answers 404 to every database request
	// (the "everything looks unknown" attack).
	SumDBNotFound
)

// fillers is the number of filler records in the honest tree.
const fillers = 20

// A record is one checksum database record: a module and its go.sum lines.
type record struct {
	mod   module.Version
	lines []byte
}

func gosumLines(m module.Version, zipHash, modHash string) []byte {
	return fmt.Appendf(nil, "%s %s %s\n%s %s/go.mod %s\n", m.Path, m.Version, zipHash, m.Path, m.Version, modHash)
}

func filler(i int) record {
	m := module.Version{Path: "example.com/filler/" + strconv.Itoa(i), Version: Version}
	h := func(s string) string {
		sum := sha256.Sum256([]byte(m.String() + s))
		return "h1:" + base64.StdEncoding.EncodeToString(sum[:])
	}
	return record{m, gosumLines(m, h(""), h("/go.mod"))}
}

// newSumDBs generates a signing key named config.SumDBName and returns its
// verifier key and the honest and forked database servers, each fully
// populated in a fixed order.
func newSumDBs(t testing.TB, corpus []*Module, b *corpusBuilder) (vkey string, honest, forked *ledger) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, config.SumDBName)
	if err != nil {
		t.Fatalf("testworld: %v", err)
	}

	var honestRecs []record
	for i := range fillers / 2 {
		honestRecs = append(honestRecs, filler(i))
	}
	for _, m := range corpus {
		if m.InSumDB {
			honestRecs = append(honestRecs, record{m.Version, gosumLines(m.Version, m.ZipHash, m.ModHash)})
		}
	}
	for i := fillers / 2; i < fillers; i++ {
		honestRecs = append(honestRecs, filler(i))
	}

	// The fork logs the served (tampered) zip's hash for TamperedZipPath.
	tz := corpus[slices.IndexFunc(corpus, func(m *Module) bool { return m.Path == TamperedZipPath })]
	served, err := b.hashZip(tz.Zip)
	if err != nil {
		t.Fatalf("testworld: %v", err)
	}
	forkRecs := append(slices.Clone(honestRecs), filler(fillers))
	i := slices.IndexFunc(forkRecs, func(r record) bool { return r.mod == tz.Version })
	forkRecs[i].lines = gosumLines(tz.Version, served, tz.ModHash)

	return vkey, newSumDB(t, skey, honestRecs), newSumDB(t, skey, forkRecs)
}

// A ledger is one checksum database: the server and the go.sum lines it
// will log for each module version when first asked.
type ledger struct {
	http.Handler
	mu    sync.Mutex
	byKey map[string][]byte // module@version -> go.sum lines
}

// add makes the database log lines for m; it joins the tree at the end
// when first looked up.
func (l *ledger) add(m module.Version, lines []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byKey[m.String()] = lines
}

// newSumDB returns a database server holding exactly recs, in that order.
func newSumDB(t testing.TB, skey string, recs []record) *ledger {
	t.Helper()
	l := &ledger{byKey: make(map[string][]byte)}
	for _, r := range recs {
		l.add(r.mod, r.lines)
	}
	ts := sumdb.NewTestServer(skey, func(path, vers string) ([]byte, error) {
		m := module.Version{Path: path, Version: vers}
		l.mu.Lock()
		lines, ok := l.byKey[m.String()]
		l.mu.Unlock()
		if ok {
			return lines, nil
		}
		// A *fs.PathError so that os.IsNotExist holds and the server answers
		// 404, with a body that starts "not found:" like the real database's.
		return nil, &fs.PathError{Op: "not found:", Path: m.String(), Err: os.ErrNotExist}
	})
	// TestServer appends records lazily on Lookup: add them all now so the
	// tree is complete and deterministic before anyone asks.
	for _, r := range recs {
		if _, err := ts.Lookup(context.Background(), r.mod); err != nil {
			t.Fatalf("testworld: populating checksum database: %v", err)
		}
	}
	l.Handler = sumdb.NewServer(ts)
	return l
}

// Log makes the honest checksum database log zipHash and modHash for m.
// The record joins the end of the tree when first looked up, so the tree
// grows then. Use it for modules built by a test, such as large ones for
// benchmarks.
func (w *World) Log(m module.Version, zipHash, modHash string) {
	w.honest.add(m, gosumLines(m, zipHash, modHash))
}

// SetSumDB switches what the checksum database serves from now on, at
// https://sum.golang.org/ and under every proxy's /sumdb/sum.golang.org/.
// (The proxies' /sumdb/sum.golang.org/supported always answers 200.)
// Safe for concurrent use.
func (w *World) SetSumDB(mode SumDBMode) {
	if mode < SumDBHonest || mode > SumDBNotFound {
		panic(fmt.Sprintf("testworld: invalid SumDBMode %d", mode))
	}
	w.mode.Store(int32(mode))
}

// serveSumDB serves the checksum database protocol according to the mode.
func (w *World) serveSumDB(rw http.ResponseWriter, r *http.Request) {
	switch SumDBMode(w.mode.Load()) {
	case SumDBForked:
		w.forked.ServeHTTP(rw, r)
	case SumDBDown:
		http.Error(rw, "checksum database unavailable (test world)", http.StatusServiceUnavailable)
	case SumDBNotFound:
		http.Error(rw, "not found: "+r.URL.Path, http.StatusNotFound)
	default:
		w.honest.ServeHTTP(rw, r)
	}
}
