package gateway_test

// Tests for the ways module proxies and the paths to them have been seen to
// misbehave in public reports: redirects, content encodings, HEAD and
// Range, GOPROXY spellings and fallbacks, unusual zips, and streams reset
// mid-file. Whatever the route, a client gets the verified file whole or
// an error, never unverified bytes.

import (
	"archive/zip"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
	"github.com/sumgate/sumgate/internal/upstream"
)

// routes is a gateway in front of a fresh world, and a client through it
// that sees exactly what the gateway sends: it neither decompresses nor
// follows redirects.
type routes struct {
	*env
	c *http.Client
}

// startRoutes runs a gateway in front of a fresh world whose Upstream is
// the client `sumgate run` builds (upstream.NewClient): its redirect
// policy, its dialer, its decompression and its HTTP/2 are part of what
// these tests hold. plain maps "host:port" to the address of a plain-HTTP
// server dialled instead.
func startRoutes(t testing.TB, plain map[string]string) *routes {
	t.Helper()
	w := testworld.New(t)
	resolve := maps.Clone(w.Resolve)
	resolve[testworld.CDNHost] = w.Addr // not intercepted (it is not in Resolve), but reachable
	c := upstream.NewClient(upstream.Options{Roots: w.Roots, Resolve: resolve, Timeout: -1})
	t.Cleanup(c.CloseIdleConnections)
	if len(plain) > 0 {
		tr, ok := c.Transport.(*http.Transport)
		if !ok {
			t.Fatalf("upstream.NewClient's transport is a %T, not an *http.Transport", c.Transport)
		}
		base, d := tr.DialContext, &net.Dialer{Timeout: 5 * time.Second}
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := plain[addr]; ok {
				return d.DialContext(ctx, network, to)
			}
			return base(ctx, network, addr)
		}
	}
	e := startWith(t, w, func(cfg *gateway.Config) {
		cfg.Upstream = c
		cfg.Intercept = slices.DeleteFunc(slices.Clone(cfg.Intercept), func(h string) bool { return h == testworld.CDNHost })
	})
	raw := e.proxyClient(pool(e.root))
	raw.Transport.(*http.Transport).DisableCompression = true
	raw.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &routes{env: e, c: raw}
}

// send makes one request and returns the response (its body read and
// closed) and the body. header is name, value pairs.
func send(t testing.TB, c *http.Client, method, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp, body
}

// zipPath is the GOPROXY path of m's zip under a proxy's base.
func zipPath(t testing.TB, m module.Version) string {
	t.Helper()
	p, err := module.EscapePath(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := module.EscapeVersion(m.Version)
	if err != nil {
		t.Fatal(err)
	}
	return "/" + p + "/@v/" + v + ".zip"
}

// serveBytes answers every request with data as status 200.
func serveBytes(data []byte) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/zip")
		rw.Write(data)
	})
}

// zipMagic starts every zip's first local file header: a body holding it
// holds zip bytes.
var zipMagic = []byte("PK\x03\x04")

// corpus returns the world's genuine modules at both versions and its
// tampered zip: three modules a test may fetch once each.
func corpus(w *testworld.World) (good, next, tampered *testworld.Module) {
	return w.Module(testworld.GoodPath, testworld.Version), w.Module(testworld.GoodPath, testworld.NextVersion),
		w.Module(testworld.TamperedZipPath, testworld.Version)
}

// wantVerified fails t unless resp and body are the whole verified file
// want, with its length.
func wantVerified(t testing.TB, resp *http.Response, body, want []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) || resp.ContentLength != int64(len(want)) ||
		resp.Header.Get("X-Sumgate-Verdict") != "verified" || resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("status %d, %d bytes (equal to the genuine file: %v), length %d of %d, verdict %q, encoding %q; want the verified file whole\n%.300s",
			resp.StatusCode, len(body), bytes.Equal(body, want), resp.ContentLength, len(want),
			resp.Header.Get("X-Sumgate-Verdict"), resp.Header.Get("Content-Encoding"), body)
	}
}

// wantAnswer is wantVerified when status is 200, else wantRefused.
func wantAnswer(t testing.TB, resp *http.Response, body []byte, status int, genuine []byte, why string) {
	t.Helper()
	if status == http.StatusOK {
		wantVerified(t, resp, body, genuine)
	} else {
		wantRefused(t, resp, body, status, why)
	}
}

// wantRefused fails t unless resp is status (any 5xx when status is 0)
// and its body holds no zip bytes.
func wantRefused(t testing.TB, resp *http.Response, body []byte, status int, why string) {
	t.Helper()
	ok := resp.StatusCode == status || (status == 0 && resp.StatusCode >= 500)
	if !ok || bytes.Contains(body, zipMagic) || !strings.Contains(string(body), why) {
		t.Errorf("status %d, zip bytes in the body: %v, body %.300q; want status %d (0: any 5xx) saying %q",
			resp.StatusCode, bytes.Contains(body, zipMagic), body, status, why)
	}
}

// TestRedirectToUninterceptedCDNIsVerified: a proxy that redirects a zip
// to a download host sumgate does not intercept is followed by sumgate
// itself, and what the CDN serves is verified.
func TestRedirectToUninterceptedCDNIsVerified(t *testing.T) {
	e := startRoutes(t, nil)
	for _, tt := range []struct {
		name, path string
		want       int // 200: the genuine zip
	}{
		{"genuine", testworld.GoodPath, http.StatusOK},
		{"tampered at the CDN", testworld.TamperedZipPath, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := e.w.Module(tt.path, testworld.Version)
			p := zipPath(t, m.Version)
			e.w.Override(t, config.PublicProxyHost, p, http.RedirectHandler("https://"+testworld.CDNHost+p, http.StatusFound))
			resp, body := send(t, e.c, http.MethodGet, e.w.ProxyURL+p)
			wantAnswer(t, resp, body, tt.want, m.Zip, "checksum mismatch")
			if n := e.w.Requests(testworld.CDNHost, p); n != 1 {
				t.Errorf("the CDN served %d requests for %s, want 1: the redirect was not followed", n, p)
			}
		})
	}
}

// TestRelativeRedirectIsFollowedAndVerified: "Location: /other/path" is
// resolved against the proxy and followed, and what it serves is verified.
func TestRelativeRedirectIsFollowedAndVerified(t *testing.T) {
	e := startRoutes(t, nil)
	good, next, tampered := corpus(e.w)
	for _, tt := range []struct {
		name string
		m    *testworld.Module // the module requested
		blob []byte            // what /blobs/ serves for it
		want int               // 200: m's genuine zip
	}{
		{"genuine", good, good.Zip, http.StatusOK},
		{"tampered", tampered, tampered.Zip, http.StatusForbidden},
		{"genuine zip of another version", next, good.Zip, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := zipPath(t, tt.m.Version)
			e.w.Override(t, config.PublicProxyHost, p, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("Location", "/blobs/"+tt.name)
				rw.WriteHeader(http.StatusFound)
			}))
			e.w.Override(t, config.PublicProxyHost, "/blobs/", serveBytes(tt.blob))
			resp, body := send(t, e.c, http.MethodGet, e.w.ProxyURL+p)
			wantAnswer(t, resp, body, tt.want, tt.m.Zip, "sumgate: blocked "+tt.m.String())
			if n := e.w.Requests(config.PublicProxyHost, "/blobs/"+tt.name); n != 1 {
				t.Errorf("the relative Location was fetched %d times, want 1", n)
			}
		})
	}
}

// TestRedirectToPlainHTTPIsRefused: a redirect that would leave TLS, loop
// forever, or reach an internal address is not followed: a 5xx, never the
// bytes.
func TestRedirectToPlainHTTPIsRefused(t *testing.T) {
	good := testworld.New(t).Module(testworld.GoodPath, testworld.Version) // the same bytes in every world
	var plainHits atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		serveBytes(good.Zip).ServeHTTP(rw, r) // genuine: followed, it would verify
	}))
	t.Cleanup(plain.Close)
	e := startRoutes(t, map[string]string{testworld.CDNHost + ":80": plain.Listener.Addr().String()})
	next := module.Version{Path: testworld.GoodPath, Version: testworld.NextVersion}
	upper := module.Version{Path: testworld.UpperPath, Version: testworld.Version}
	for _, tt := range []struct {
		name     string
		m        module.Version // a module of its own, so that no row is served from another's cache
		location string         // "": the request's own URL
		why      string
	}{
		{"to http://", good.Version, "http://" + testworld.CDNHost + zipPath(t, good.Version), "insecure"},
		{"loop", next, "", "redirects"},
		// The world answers at its loopback address too, with a certificate
		// valid for it: only the refusal to dial internal addresses stops it.
		{"to an internal address", upper, e.w.DirectProxyURL() + zipPath(t, upper), "internal address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := zipPath(t, tt.m)
			location := cmp.Or(tt.location, p)
			e.w.Override(t, config.PublicProxyHost, p, http.RedirectHandler(location, http.StatusFound))
			plainHits.Store(0)
			resp, body := send(t, e.c, http.MethodGet, e.w.ProxyURL+p)
			wantRefused(t, resp, body, 0, tt.why)
			if n := plainHits.Load(); n != 0 {
				t.Errorf("the plain-http server was reached %d times", n)
			}
			// The upstream client makes at most 10 requests for one fetch.
			if n := e.w.Requests(config.PublicProxyHost, p); tt.location == "" && (n < 2 || n > 10) {
				t.Errorf("the loop was fetched %d times, want 2 to 10: followed, then stopped", n)
			}
		})
	}
}

// gzipped returns data gzip-compressed.
func gzipped(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestGzipEncodedZipIsVerified: "Content-Encoding: gzip" on a zip is
// decoded before the check, and the client gets the plain zip; gzip of
// tampered bytes is blocked; a gzip header on bytes that are not gzip is
// never a 200.
func TestGzipEncodedZipIsVerified(t *testing.T) {
	e := startRoutes(t, nil)
	good, next, tampered := corpus(e.w)
	for _, tt := range []struct {
		name    string
		m       *testworld.Module
		encoded []byte // sent with Content-Encoding: gzip
		want    int    // 200: m's genuine zip; 0: any status but 200
	}{
		{"genuine", good, gzipped(t, good.Zip), http.StatusOK},
		{"tampered", tampered, gzipped(t, tampered.Zip), http.StatusForbidden},
		{"not gzip", next, next.Zip, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := zipPath(t, tt.m.Version)
			e.w.Override(t, config.PublicProxyHost, p, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("Content-Encoding", "gzip")
				serveBytes(tt.encoded).ServeHTTP(rw, r)
			}))
			resp, body := send(t, e.c, http.MethodGet, e.w.ProxyURL+p)
			switch tt.want {
			case http.StatusOK:
				wantVerified(t, resp, body, tt.m.Zip)
				file := filepath.Join(t.TempDir(), "got.zip")
				writeFile(t, file, body)
				if h, err := dirhash.HashZip(file, dirhash.Hash1); err != nil || h != tt.m.ZipHash {
					t.Errorf("the client's zip hashes to %s (%v), the database has %s", h, err, tt.m.ZipHash)
				}
			case 0:
				if resp.StatusCode == http.StatusOK || bytes.Contains(body, zipMagic) {
					t.Errorf("status %d, %d bytes, zip bytes in the body: %v", resp.StatusCode, len(body), bytes.Contains(body, zipMagic))
				}
			default:
				wantRefused(t, resp, body, tt.want, "checksum mismatch")
			}
		})
	}
}

// TestHeadOnZipIsVerifiedAndBodiless: HEAD on a zip answers as the GET
// would, with the verified length and no body; on a blocked zip, 403.
func TestHeadOnZipIsVerifiedAndBodiless(t *testing.T) {
	e := startRoutes(t, nil)
	good, _, tampered := corpus(e.w)
	for _, tt := range []struct {
		name string
		m    *testworld.Module
		want int
	}{
		{"genuine", good, http.StatusOK},
		{"genuine, from the cache", good, http.StatusOK},
		{"blocked", tampered, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := send(t, e.c, http.MethodHead, e.w.ProxyURL+zipPath(t, tt.m.Version))
			if resp.StatusCode != tt.want || len(body) != 0 {
				t.Fatalf("status %d, %d bytes of body; want %d and none", resp.StatusCode, len(body), tt.want)
			}
			if tt.want == http.StatusOK && (resp.ContentLength != int64(len(tt.m.Zip)) || resp.Header.Get("X-Sumgate-Verdict") != "verified") {
				t.Errorf("Content-Length %d, verdict %q; want %d, verified", resp.ContentLength, resp.Header.Get("X-Sumgate-Verdict"), len(tt.m.Zip))
			}
		})
	}
}

// TestRangeRequestNeverGetsUnverifiedBytes documents what sumgate does
// with "Range: bytes=0-9" on a zip: today it answers 200 with the whole
// verified file (Range is optional in HTTP). A 206 would do too, if it
// held the right prefix of the genuine file; unverified bytes never do.
// An upstream that answers a GET with 206 and a prefix is a 502.
func TestRangeRequestNeverGetsUnverifiedBytes(t *testing.T) {
	e := startRoutes(t, nil)
	good, next, tampered := corpus(e.w)
	for _, tt := range []struct {
		name string
		m    *testworld.Module
		want int    // 200: the genuine zip, whole or its first 10 bytes with 206
		why  string // what a refusal says
	}{
		{"genuine", good, http.StatusOK, ""},
		{"genuine, from the cache", good, http.StatusOK, ""},
		{"tampered", tampered, http.StatusForbidden, "checksum mismatch"},
		{"upstream answers 206", next, http.StatusBadGateway, "206"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := zipPath(t, tt.m.Version)
			if tt.want == http.StatusBadGateway {
				e.w.Override(t, config.PublicProxyHost, p, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
					rw.Header().Set("Content-Range", "bytes 0-9/"+strconv.Itoa(len(tt.m.Zip)))
					rw.WriteHeader(http.StatusPartialContent)
					rw.Write(tt.m.Zip[:10])
				}))
			}
			resp, body := send(t, e.c, http.MethodGet, e.w.ProxyURL+p, "Range", "bytes=0-9")
			switch {
			case tt.want != http.StatusOK:
				wantRefused(t, resp, body, tt.want, tt.why)
			case resp.StatusCode == http.StatusPartialContent:
				if !bytes.Equal(body, tt.m.Zip[:10]) || resp.Header.Get("Content-Range") != "bytes 0-9/"+strconv.Itoa(len(tt.m.Zip)) {
					t.Errorf("206 with %q, Content-Range %q; want the genuine zip's first 10 bytes", body, resp.Header.Get("Content-Range"))
				}
			default:
				wantVerified(t, resp, body, tt.m.Zip)
			}
		})
	}
}

// downloadAll runs the real go command through the gateway for mods and
// returns its answer for each, by module@version.
func (e *env) downloadAll(t testing.TB, goproxy string, mods ...string) map[string]modDownload {
	t.Helper()
	out, err := testworld.GoModDownload(t, []string{"GOPROXY=" + goproxy, "HTTPS_PROXY=http://" + e.addr, "SSL_CERT_FILE=" + e.rootFile}, mods...)
	got := map[string]modDownload{}
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var d modDownload
		if jerr := dec.Decode(&d); errors.Is(jerr, io.EOF) {
			break
		} else if jerr != nil {
			t.Fatalf("go mod download %v: %v\n%s", mods, err, out)
		}
		got[d.Path+"@"+d.Version] = d
	}
	if len(got) != len(mods) {
		t.Fatalf("go mod download %v answered for %d modules: %v\n%s", mods, len(got), err, out)
	}
	return got
}

// wantGoCommand fails t unless the go command got good with the
// database's hashes and was refused tampered with sumgate's 403.
func wantGoCommand(t testing.TB, got map[string]modDownload, good, tampered *testworld.Module) {
	t.Helper()
	if d := got[good.String()]; d.Error != "" || d.Sum != good.ZipHash || d.GoModSum != good.ModHash {
		t.Errorf("%s: error %q, go.sum %s %s; the database has %s %s", good, d.Error, d.Sum, d.GoModSum, good.ZipHash, good.ModHash)
	}
	if d := got[tampered.String()]; !strings.Contains(d.Error, "403 Forbidden") || !strings.Contains(d.Error, "sumgate: blocked "+tampered.String()+" (zip)") {
		t.Errorf("%s: error %q, want sumgate's 403", tampered, d.Error)
	}
}

// TestTrailingSlashInGOPROXYIsVerified: GOPROXY with a trailing slash,
// with and without a path prefix, reaches the proxy through sumgate and
// is verified (the go command, run for real, trims the slash); a client
// that sends the doubled slash gets no unverified bytes either.
func TestTrailingSlashInGOPROXYIsVerified(t *testing.T) {
	e := startRoutes(t, nil)
	tampered := e.w.Module(testworld.TamperedZipPath, testworld.Version)
	for _, tt := range []struct {
		goproxy, host, prefix, version string // the version of GoodPath to fetch; each is fetched once (the cache)
	}{
		{e.w.ProxyURL + "/", config.PublicProxyHost, "", testworld.Version},
		{config.Aliyun + "/", "mirrors.aliyun.com", "/goproxy", testworld.NextVersion},
	} {
		t.Run(tt.goproxy, func(t *testing.T) {
			good := e.w.Module(testworld.GoodPath, tt.version)
			got := e.downloadAll(t, tt.goproxy, good.String(), tampered.String())
			wantGoCommand(t, got, good, tampered)
			if n := e.w.Requests(tt.host, tt.prefix+zipPath(t, good.Version)); n != 1 {
				t.Errorf("%s%s was fetched %d times, want 1", tt.host, tt.prefix+zipPath(t, good.Version), n)
			}

			// A client that does not trim the slash sends "//": a proxy
			// that cleans paths would serve the file there.
			doubled := tt.prefix + "/" + zipPath(t, tampered.Version)
			e.w.Override(t, tt.host, doubled, serveBytes(tampered.Zip))
			resp, body := send(t, e.c, http.MethodGet, "https://"+tt.host+doubled)
			if resp.StatusCode == http.StatusOK || bytes.Contains(body, zipMagic) {
				t.Errorf("GET %s: status %d, zip bytes in the body: %v", doubled, resp.StatusCode, bytes.Contains(body, zipMagic))
			}
		})
	}
}

// TestToolchainZipIsVerified: a golang.org/toolchain module (files under
// go/, a version such as v0.0.1-go1.21.0.linux-amd64) is verified like
// any other: genuine passes, tampered is blocked.
func TestToolchainZipIsVerified(t *testing.T) {
	e := startRoutes(t, nil)
	toolchain := func(version, goVersion string) []byte {
		var b bytes.Buffer
		files := []modzip.File{
			memFile{"go/VERSION", []byte(goVersion + "\ntime 2023-08-08T15:00:00Z\n")},
			memFile{"go/bin/go", []byte("\x7fELF not really a go command\n")},
			memFile{"go/src/runtime/extern.go", []byte("package runtime\n")},
		}
		if err := modzip.Create(&b, module.Version{Path: "golang.org/toolchain", Version: version}, files); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	mod := []byte("module golang.org/toolchain\n")
	linux := module.Version{Path: "golang.org/toolchain", Version: "v0.0.1-go1.21.0.linux-amd64"}
	darwin := module.Version{Path: "golang.org/toolchain", Version: "v0.0.1-go1.21.0.darwin-arm64"}
	genuine := e.w.Publish(t, linux, toolchain(linux.Version, "go1.21.0"), mod)
	e.w.Publish(t, darwin, toolchain(darwin.Version, "go1.21.0"), mod)
	e.w.Override(t, config.PublicProxyHost, zipPath(t, darwin), serveBytes(toolchain(darwin.Version, "go1.21.0-evil")))

	resp, body := send(t, e.c, http.MethodGet, e.w.ProxyURL+zipPath(t, linux))
	wantVerified(t, resp, body, genuine.Zip)
	resp, body = send(t, e.c, http.MethodGet, e.w.ProxyURL+zipPath(t, darwin))
	wantRefused(t, resp, body, http.StatusForbidden, "sumgate: blocked "+darwin.String()+" (zip): checksum mismatch")
}

// buildZip writes a module zip by hand: one entry per name, under m's
// prefix, with content files[name]; a name ending in "/" is a directory
// entry.
func buildZip(t testing.TB, m module.Version, names []string, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, name := range names {
		fh := &zip.FileHeader{Name: m.String() + "/" + name, Method: zip.Deflate}
		if strings.HasSuffix(name, "/") {
			fh.Method = zip.Store
		}
		fw, err := zw.CreateHeader(fh)
		if err == nil {
			_, err = io.WriteString(fw, files[name])
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeFile writes data to file or fails t.
func writeFile(t testing.TB, file string, data []byte) {
	t.Helper()
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestZipsWithNestedVendorAndDirectoryEntriesAreVerified: zips that
// zip.Create would not make but the go command accepts (files in nested
// vendor/ directories; explicit directory entries) verify, hashed as the
// go command hashes them (dirhash.HashZip).
func TestZipsWithNestedVendorAndDirectoryEntriesAreVerified(t *testing.T) {
	e := startRoutes(t, nil)
	for _, tt := range []struct {
		path  string
		names []string
	}{
		{"example.com/vendored", []string{"go.mod", "lib.go", "vendor/modules.txt", "sub/vendor/x.go", "a/b/vendor/example.net/y/y.go"}},
		{"example.com/dirs", []string{"", "go.mod", "sub/", "sub/x.go", "sub/deeper/", "sub/deeper/y.go"}},
		{"example.com/both", []string{"go.mod", "sub/", "sub/vendor/", "sub/vendor/x.go"}},
	} {
		t.Run(tt.path, func(t *testing.T) {
			m := module.Version{Path: tt.path, Version: testworld.Version}
			files := map[string]string{"go.mod": "module " + tt.path + "\n", "lib.go": "package lib\n", "vendor/modules.txt": "# none\n",
				"sub/vendor/x.go": "package x\n", "a/b/vendor/example.net/y/y.go": "package y\n", "sub/x.go": "package sub\n", "sub/deeper/y.go": "package deeper\n"}
			data := buildZip(t, m, tt.names, files)
			file := filepath.Join(t.TempDir(), "m.zip")
			writeFile(t, file, data)
			// The go command unpacks a downloaded zip with zip.Unzip: the
			// fixture is one it accepts.
			if err := modzip.Unzip(filepath.Join(t.TempDir(), "x"), m, file); err != nil {
				t.Fatalf("the go command would reject the fixture: %v", err)
			}
			h, err := dirhash.HashZip(file, dirhash.Hash1)
			if err != nil {
				t.Fatal(err)
			}
			if pm := e.w.Publish(t, m, data, []byte(files["go.mod"])); pm.ZipHash != h {
				t.Fatalf("the database logs %s, dirhash.HashZip says %s", pm.ZipHash, h)
			}
			resp, body := send(t, e.c, http.MethodGet, e.w.ProxyURL+zipPath(t, m))
			wantVerified(t, resp, body, data)
		})
	}
}

// TestGoneFromFirstProxyFallsThroughToVerifiedSecond: with
// GOPROXY=https://goproxy.cn,<public proxy> and goproxy.cn answering 410,
// sumgate passes the 410 as it is, so the go command (run for real) falls
// through to the public proxy, where the module is verified.
func TestGoneFromFirstProxyFallsThroughToVerifiedSecond(t *testing.T) {
	e := startRoutes(t, nil)
	cn := strings.TrimPrefix(config.GoproxyCN, "https://")
	e.w.Override(t, cn, "/example.com/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.Error(rw, "gone: not mirrored here", http.StatusGone)
	}))
	good, _, tampered := corpus(e.w)
	got := e.downloadAll(t, config.GoproxyCN+","+e.w.ProxyURL, good.String(), tampered.String())
	wantGoCommand(t, got, good, tampered)
	if n := e.w.Requests(cn, "/example.com/good/"); n == 0 {
		t.Error("goproxy.cn was never asked: the fallback was not exercised")
	}
	if n := e.w.Requests(config.PublicProxyHost, zipPath(t, good.Version)); n != 1 {
		t.Errorf("the public proxy served the zip %d times, want 1", n)
	}
}

// TestHTTP2ResetMidZipIsNeverPartial: an upstream HTTP/2 stream reset
// after half the zip is a 502 with no byte of it; once the upstream
// serves it whole again, the next request verifies.
func TestHTTP2ResetMidZipIsNeverPartial(t *testing.T) {
	e := startRoutes(t, nil)
	m := e.w.Module(testworld.GoodPath, testworld.Version)
	p := zipPath(t, m.Version)
	var calls atomic.Int32
	var proto atomic.Value
	e.w.Override(t, config.PublicProxyHost, p, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > 1 {
			serveBytes(m.Zip).ServeHTTP(rw, r)
			return
		}
		proto.Store(r.Proto)
		rw.Header().Set("Content-Length", strconv.Itoa(len(m.Zip)))
		rw.Write(m.Zip[:len(m.Zip)/2])
		rw.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // HTTP/2: RST_STREAM
	}))

	resp, body := send(t, e.c, http.MethodGet, e.w.ProxyURL+p)
	if got := proto.Load(); got != "HTTP/2.0" {
		t.Fatalf("the upstream fetch spoke %v, not HTTP/2: the test does not exercise a stream reset", got)
	}
	wantRefused(t, resp, body, http.StatusBadGateway, "cut short")
	resp, body = send(t, e.c, http.MethodGet, e.w.ProxyURL+p)
	wantVerified(t, resp, body, m.Zip)
}
