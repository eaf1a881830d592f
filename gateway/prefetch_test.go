package gateway_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
)

// TestInfoPrefetchesTheProof: the go command asks a module proxy for a
// version's .info before its .mod and .zip, so the gateway looks the
// version up while the .info is answered; the files' checks then find
// the proof on disk. A private module's .info looks nothing up.
func TestInfoPrefetchesTheProof(t *testing.T) {
	e := start(t, nil)
	client := e.proxyClient(pool(e.root))
	get := func(path, file string) {
		t.Helper()
		resp, err := client.Get(e.w.ProxyURL + "/" + path + "/@v/" + testworld.Version + file)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s%s: %d %s", path, file, resp.StatusCode, body)
		}
	}
	lookups := func() int { return e.w.Requests(config.SumDBName, "/lookup/") }

	get(testworld.PrivatePath, ".info")
	get(testworld.GoodPath, ".info")
	for deadline := time.Now().Add(30 * time.Second); lookups() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a .info made no lookup within 30s")
		}
	}
	get(testworld.GoodPath, ".mod")
	get(testworld.GoodPath, ".zip")
	if n := lookups(); n != 1 {
		t.Errorf("%d lookups, want the one the .info started (and none for the private module)", n)
	}
}

// TestPrefetchEndsWithTheVerifier: a lookup a .info started may still be
// in flight when the client has its answer; the verifier's Close waits
// for it, so that nothing reads the database or writes under the data
// directory once the gateway and its verifier are closed (a test's
// TempDir cleanup would otherwise race the writes: "directory not
// empty").
func TestPrefetchEndsWithTheVerifier(t *testing.T) {
	w := testworld.New(t)
	// The database's own host answers late and fails, so the lookup goes
	// on to a module proxy's /sumdb/ once the .info is answered.
	w.Override(t, config.SumDBName, "/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		http.Error(rw, "late", http.StatusBadGateway)
	}))
	reads := func() int { return w.Requests(config.SumDBName, "/") + w.Requests(config.PublicProxyHost, "/sumdb/") }
	t.Run("info", func(t *testing.T) {
		e := startWith(t, w, nil)
		resp, err := e.proxyClient(pool(e.root)).Get(e.w.ProxyURL + "/" + testworld.GoodPath + "/@v/" + testworld.Version + ".info")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	})
	closed := reads()
	time.Sleep(time.Second)
	if n := reads(); n != closed {
		t.Errorf("the checksum database was read %d times after the gateway and its verifier were closed", n-closed)
	}
}
