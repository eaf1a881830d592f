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
