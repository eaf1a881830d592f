package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
)

// TestModuleFilesOnAnyInterceptedHostAreVerified holds threat 19 for
// intercepted hosts: a mirror that module_proxies does not list (here
// goproxy.cn, and mirrors.aliyun.com with its /goproxy prefix unknown to
// sumgate) still has every module file verified, with the real go
// command and GOSUMDB=off.
func TestModuleFilesOnAnyInterceptedHostAreVerified(t *testing.T) {
	e := start(t, func(c *gateway.Config) { c.ModuleProxies = []string{c.ModuleProxies[0]} }) // the public proxy only
	for _, goproxy := range []string{config.GoproxyCN, config.Aliyun} {
		t.Run(goproxy, func(t *testing.T) { wantVerifiedThrough(t, e, goproxy) })
	}
}

// wantVerifiedThrough runs the real go command through e's gateway, with
// GOPROXY=goproxy and GOSUMDB=off: the genuine module must arrive with
// the checksum database's hashes, and a tampered zip and a tampered
// go.mod must be blocked with a 403 naming the mismatch.
func wantVerifiedThrough(t *testing.T, e *env, goproxy string) {
	t.Helper()
	d := e.download(t, goproxy, testworld.GoodPath+"@"+testworld.Version)
	m := e.w.Module(testworld.GoodPath, testworld.Version)
	if d.Error != "" || d.Sum != m.ZipHash || d.GoModSum != m.ModHash {
		t.Errorf("genuine module through %s: %+v, want the database's hashes %s %s", goproxy, d, m.ZipHash, m.ModHash)
	}
	for _, tt := range []struct{ mod, want string }{
		{testworld.TamperedZipPath, "sumgate: blocked " + testworld.TamperedZipPath + "@v1.0.0 (zip): checksum mismatch"},
		{testworld.TamperedModPath, "sumgate: blocked " + testworld.TamperedModPath + "@v1.0.0 (go.mod): checksum mismatch"},
	} {
		if d := e.download(t, goproxy, tt.mod+"@"+testworld.Version); !strings.Contains(d.Error, tt.want) || !strings.Contains(d.Error, "403 Forbidden") {
			t.Errorf("%s through %s: %q, want a 403 with %q", tt.mod, goproxy, d.Error, tt.want)
		}
	}
}

// TestAmbiguousModuleURLIsVerifiedAsEveryReading: under a prefix sumgate
// does not know, /mirror.example/example.com/good/@v/v1.0.0.zip reads as
// module mirror.example/example.com/good or example.com/good. The file
// passes only as the database's record of a reading it knows; a tampered
// one is blocked.
func TestAmbiguousModuleURLIsVerifiedAsEveryReading(t *testing.T) {
	e := start(t, func(c *gateway.Config) { c.ModuleProxies = []string{c.ModuleProxies[0]} }) // goproxy.cn unknown
	good := e.w.Module(testworld.GoodPath, testworld.Version)
	tampered := e.w.Module(testworld.TamperedZipPath, testworld.Version)
	serve := func(data []byte) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(data) })
	}
	e.w.Override(t, "goproxy.cn", "/mirror.example/example.com/good/", serve(good.Zip))
	e.w.Override(t, "goproxy.cn", "/mirror.example/example.com/tampered/zip/", serve(tampered.Zip))
	client := e.proxyClient(pool(e.root))
	for _, tt := range []struct {
		path   string
		status int
		body   string
	}{
		{"/mirror.example/example.com/good/@v/v1.0.0.zip", http.StatusOK, string(good.Zip)},
		{"/mirror.example/example.com/tampered/zip/@v/v1.0.0.zip", http.StatusForbidden, "checksum mismatch"},
	} {
		resp, err := client.Get("https://goproxy.cn" + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.body) {
			t.Errorf("%s: %d %.200q, want %d with %.60q", tt.path, resp.StatusCode, body, tt.status, tt.body)
		}
	}
}
