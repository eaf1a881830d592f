package gateway_test

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/policy/advisory/advisorytest"
)

// TestCacheHitWithoutItsProofIsDecided: a verified zip in the cache whose
// proof is no longer at hand (its proven/ file lost) is served without a
// verdict; the policy still decides it, so an advisory that arrived
// refuses it.
func TestCacheHitWithoutItsProofIsDecided(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	advisorytest.WriteV1(t, dir, advisorytest.Vuln("GO-2099-0009", nil, advisorytest.Affected("example.com/other", "introduced:0")))
	w := testworld.New(t)
	pe := startPolicy(t, w, config.Policy{Advisories: config.Advisories{Sources: []string{dir}, Block: []string{"all"}}}, nil)
	u := w.ProxyURL + "/example.com/good/@v/v1.0.0.zip"
	if status, body := get(t, pe.oneShot(), u); status != http.StatusOK {
		t.Fatalf("before the advisory: %d %s", status, body)
	}
	advisorytest.WriteV1(t, dir, advisorytest.Vuln("GO-2099-0010", nil, advisorytest.Affected(testworld.GoodPath, "introduced:0")))
	if err := pe.advisory.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(filepath.Dir(pe.rootFile), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "proven" {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			return filepath.SkipDir
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, pe.oneShot(), u); status != http.StatusForbidden || !strings.Contains(string(body), "advisory GO-2099-0010") {
		t.Errorf("a cached zip without its proof, after the advisory: %d %.200q; want 403 naming GO-2099-0010", status, body)
	}
}

// TestListPolicyBypasses: ways a version list could reach the client
// unfiltered, or cost a round trip per version.
func TestListPolicyBypasses(t *testing.T) {
	t.Parallel()
	t.Run("a Range header", func(t *testing.T) {
		t.Parallel()
		w := testworld.New(t)
		pu, _ := url.Parse(w.ProxyURL)
		// A module proxy that honours Range, as a file server does.
		w.Override(t, pu.Host, pu.Path+"/example.com/good/@v/list", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			http.ServeContent(rw, r, "list", time.Time{}, strings.NewReader("v1.0.0\nv1.1.0\n"))
		}))
		pe := startPolicy(t, w, config.Policy{Rules: []config.Rule{{ID: "old", Deny: testworld.GoodPath, Versions: "< v1.1.0"}}}, nil)
		for _, rng := range []string{"bytes=0-", "bytes=0-6"} {
			status, body := get(t, pe.oneShot(), w.ProxyURL+"/example.com/good/@v/list", "Range", rng)
			if strings.Contains(string(body), "v1.0.0") {
				t.Errorf("Range %s: %d %q lists the denied v1.0.0", rng, status, body)
			}
		}
	})
	t.Run("a long list under a cooldown", func(t *testing.T) {
		t.Parallel()
		w := testworld.New(t)
		const path, n = "example.com/many", 300
		var list strings.Builder
		for i := range n {
			fmt.Fprintf(&list, "v1.0.%d\n", i)
		}
		pu, _ := url.Parse(w.ProxyURL)
		w.Override(t, pu.Host, pu.Path+"/"+path+"/@v/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/list") {
				rw.Write([]byte(list.String()))
				return
			}
			rw.Write([]byte(`{"Version":"v1.0.0","Time":"2020-01-01T00:00:00Z"}`))
		}))
		pe := startPolicy(t, w, config.Policy{Cooldown: 72 * time.Hour}, nil)
		status, body := get(t, pe.oneShot(), w.ProxyURL+"/"+path+"/@v/list")
		if got := strings.Count(string(body), "\n"); status != http.StatusOK || got != n {
			t.Errorf("the list: %d, %d versions; want 200, %d", status, got, n)
		}
		// The newest 32 are dated (here by their .info: the database
		// does not know them, and the history is new); no other.
		if infos := w.Requests(pu.Host, pu.Path+"/"+path+"/@v/v"); infos > 32 {
			t.Errorf("one list of %d versions cost %d .info requests upstream; want at most 32", n, infos)
		}
	})
}

// TestCooldownDoesNotTakeTheInfoTimeOnceTheHistorySpansIt: under
// on_unverified: allow, a version the checksum database cannot prove
// (here: it is down) passes verification; once the tree-head history
// spans the cooldown, its .info time (2024, the publisher's word) does not
// date it, and the cooldown blocks it.
func TestCooldownDoesNotTakeTheInfoTimeOnceTheHistorySpansIt(t *testing.T) {
	t.Parallel()
	w := testworld.New(t)
	pe := startPolicy(t, w, config.Policy{Cooldown: 72 * time.Hour}, func(c *gateway.Config) { c.OnUnverified = gateway.UnverifiedAllow })
	pe.clock.Set(policyNow.Add(-10 * 24 * time.Hour))
	pe.expect(t, testworld.GoodPath+"@v1.0.0") // the history begins
	pe.clock.Set(policyNow)
	publishPackage(t, w, "example.com/young", "v1.0.0")
	w.SetSumDB(testworld.SumDBDown)
	status, body := get(t, pe.oneShot(), w.ProxyURL+"/example.com/young/@v/v1.0.0.zip")
	if status != http.StatusForbidden || !strings.Contains(string(body), "cooldown 72h: its age is unknown") {
		t.Errorf("an unproven young version, the history 10 days long: %d %.300q; want 403, age unknown", status, body)
	}
	// A private module has no proof to date it: its .info time still does.
	if status, body := get(t, pe.oneShot(), w.ProxyURL+"/"+testworld.PrivatePath+"/@v/v1.0.0.zip"); status != http.StatusOK {
		t.Errorf("a private module: %d %.300q; want 200", status, body)
	}
}
