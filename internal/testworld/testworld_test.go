package testworld_test

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/testworld"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

// get fetches url with c and returns the status code and body.
func get(t testing.TB, c *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, body
}

// proxyURLs are the base URLs of every module proxy of w.
func proxyURLs(w *testworld.World) []string { return append([]string{w.ProxyURL}, w.MirrorURLs...) }

// modURL is the GOPROXY URL of m's file with the given suffix (".mod", ".zip", ".info").
func modURL(t testing.TB, base string, m module.Version, suffix string) string {
	t.Helper()
	p, err := module.EscapePath(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := module.EscapeVersion(m.Version)
	if err != nil {
		t.Fatal(err)
	}
	return base + "/" + p + "/@v/" + v + suffix
}

func TestProxiesServeCorpus(t *testing.T) {
	w := testworld.New(t)
	c := w.HTTPClient()
	for _, base := range proxyURLs(w) {
		for _, m := range w.Modules() {
			t.Run(base+"/"+m.String(), func(t *testing.T) {
				for suffix, want := range map[string][]byte{".mod": m.Mod, ".zip": m.Zip} {
					code, body := get(t, c, modURL(t, base, m.Version, suffix))
					if code != http.StatusOK || !bytes.Equal(body, want) {
						t.Errorf("%s: status %d, body equal to served bytes: %v", suffix, code, bytes.Equal(body, want))
					}
				}
				code, body := get(t, c, modURL(t, base, m.Version, ".info"))
				var info struct{ Version, Time string }
				if err := json.Unmarshal(body, &info); code != http.StatusOK || err != nil || info.Version != m.Version.Version {
					t.Errorf(".info: status %d, %q, %v", code, body, err)
				}
				code, body = get(t, c, strings.TrimSuffix(modURL(t, base, m.Version, ""), m.Version.Version)+"list")
				if code != http.StatusOK || !slices.Contains(strings.Fields(string(body)), m.Version.Version) {
					t.Errorf("list: status %d, %q", code, body)
				}
			})
		}
	}
}

func TestProxyProtocol(t *testing.T) {
	w := testworld.New(t)
	c := w.HTTPClient()
	for _, tc := range []struct {
		path string
		code int
		body string // substring
	}{
		{"/example.com/good/@v/list", 200, "v1.0.0\nv1.1.0\n"},
		{"/example.com/good/@latest", 200, `"Version":"v1.1.0"`},
		{"/example.com/good/@v/v1.1.0.info", 200, `{"Version":"v1.1.0","Time":"2024-01-01T00:00:00Z"}`},
		{"/example.com/good/@v/v9.9.9.zip", 404, "not found: "},
		{"/example.com/nope/@v/list", 404, "not found: "},
		{"/github.com/!upper/!case/@v/v1.0.0.mod", 200, "module " + testworld.UpperPath},
		{"/github.com/Upper/Case/@v/v1.0.0.mod", 404, "not found: "},
		{"/corp.example/private/@v/v1.0.0.mod", 200, "module " + testworld.PrivatePath},
		{"/example.com/unknown/@latest", 200, `"Version":"v1.0.0"`},
		{"/sumdb/sum.golang.org/supported", 200, ""},
		{"/sumdb/other.example/supported", 404, ""},
	} {
		for _, base := range proxyURLs(w) {
			code, body := get(t, c, base+tc.path)
			if code != tc.code || !strings.Contains(string(body), tc.body) {
				t.Errorf("GET %s%s = %d %q; want %d containing %q", base, tc.path, code, body, tc.code, tc.body)
			}
		}
	}
	if code, _ := get(t, c, "https://mirrors.aliyun.com/example.com/good/@v/list"); code != 404 {
		t.Errorf("aliyun without /goproxy prefix: status %d, want 404", code)
	}
}

func TestCorpusHashes(t *testing.T) {
	w := testworld.New(t)
	hostile := map[string]struct {
		checkZipFails bool // whether zip.CheckZip rejects the served zip
		hashZipWorks  bool // whether dirhash.HashZip succeeds on it (then it equals ZipHash)
	}{
		testworld.HostileTraversal: {true, true},
		testworld.HostileCasefold:  {true, true},
		testworld.HostileSymlink:   {false, true},
		testworld.HostilePrefix:    {true, true},
		testworld.HostileOversize:  {true, false},
		testworld.HostileInflate:   {false, false},
	}
	seen := map[string]bool{}
	for _, m := range w.Modules() {
		t.Run(m.String(), func(t *testing.T) {
			if len(m.Zip) > 16<<10 {
				t.Errorf("zip is %d bytes, want small", len(m.Zip))
			}
			zipFile, modFile := m.WriteZip(t), m.WriteMod(t)
			if data, err := os.ReadFile(modFile); err != nil || !bytes.Equal(data, m.Mod) {
				t.Errorf("WriteMod: %v", err)
			}
			zipHash, hashErr := dirhash.HashZip(zipFile, dirhash.Hash1)
			modHash, _ := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(m.Mod)), nil
			})
			_, checkErr := modzip.CheckZip(m.Version, zipFile)
			if want := !m.Private && m.Path != testworld.UnknownPath; m.InSumDB != want || (m.ZipHash != "") != want || (m.ModHash != "") != want {
				t.Fatalf("InSumDB=%v ZipHash=%q ModHash=%q; want logged=%v", m.InSumDB, m.ZipHash, m.ModHash, want)
			}
			if m.Private != strings.HasPrefix(m.Path, testworld.PrivatePattern+"/") {
				t.Errorf("Private = %v", m.Private)
			}

			if m.Hostile != "" {
				seen[m.Hostile] = true
				h, ok := hostile[m.Hostile]
				if !ok || m.Path != "example.com/hostile/"+m.Hostile {
					t.Fatalf("unexpected hostile class %q", m.Hostile)
				}
				if (checkErr != nil) != h.checkZipFails {
					t.Errorf("CheckZip error = %v, want failure %v", checkErr, h.checkZipFails)
				}
				if (hashErr == nil) != h.hashZipWorks || (hashErr == nil && zipHash != m.ZipHash) {
					t.Errorf("HashZip = %q, %v; ZipHash %q", zipHash, hashErr, m.ZipHash)
				}
				if modHash != m.ModHash {
					t.Errorf("go.mod hash %q, logged %q", modHash, m.ModHash)
				}
				return
			}
			if hashErr != nil || checkErr != nil {
				t.Fatalf("HashZip: %v; CheckZip: %v", hashErr, checkErr)
			}
			if m.InSumDB {
				if zipOK := zipHash == m.ZipHash; zipOK != (m.Path != testworld.TamperedZipPath) {
					t.Errorf("served zip hash %q, logged %q", zipHash, m.ZipHash)
				}
				if modOK := modHash == m.ModHash; modOK != (m.Path != testworld.TamperedModPath) {
					t.Errorf("served go.mod hash %q, logged %q", modHash, m.ModHash)
				}
			}
		})
	}
	if len(seen) != len(hostile) {
		t.Errorf("hostile classes in corpus: %v, want %d", seen, len(hostile))
	}
}

func TestHostileDetails(t *testing.T) {
	w := testworld.New(t)
	open := func(path string) *zip.Reader {
		t.Helper()
		data := w.Module(path, testworld.Version).Zip
		z, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return z
	}

	// symlink: same names and content as the genuine module, so the same hash.
	v := module.Version{Path: testworld.HostileSymlinkPath, Version: testworld.Version}
	sym := open(v.Path)
	var files []modzip.File
	for _, f := range sym.File {
		data := readZipFile(t, f)
		files = append(files, memFile{strings.TrimPrefix(f.Name, v.String()+"/"), data})
		if strings.HasSuffix(f.Name, "lib.go") != (f.Mode()&fs.ModeType == fs.ModeSymlink) {
			t.Errorf("%s: mode %v", f.Name, f.Mode())
		}
	}
	var genuine bytes.Buffer
	if err := modzip.Create(&genuine, v, files); err != nil {
		t.Fatal(err)
	}
	gen := (&testworld.Module{Version: v, Zip: genuine.Bytes()}).WriteZip(t)
	if h, err := dirhash.HashZip(gen, dirhash.Hash1); err != nil || h != w.Module(v.Path, v.Version).ZipHash {
		t.Errorf("genuine hash %q, %v; symlink module logs %q", h, err, w.Module(v.Path, v.Version).ZipHash)
	}

	// oversize: declares more than MaxZipFile.
	var total uint64
	for _, f := range open(testworld.HostileOversizePath).File {
		total += f.UncompressedSize64
	}
	if total <= modzip.MaxZipFile {
		t.Errorf("oversize declares %d bytes", total)
	}

	// inflate: an entry inflates past its declared size; Unzip refuses it.
	m := w.Module(testworld.HostileInflatePath, testworld.Version)
	for _, f := range open(m.Path).File {
		rc, err := f.OpenRaw()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(flate.NewReader(rc))
		if err != nil {
			t.Fatal(err)
		}
		if inflated := uint64(len(data)) > f.UncompressedSize64; inflated != strings.HasSuffix(f.Name, "lib.go") {
			t.Errorf("%s: %d bytes inflated, %d declared", f.Name, len(data), f.UncompressedSize64)
		}
	}
	if err := modzip.Unzip(t.TempDir(), m.Version, m.WriteZip(t)); err == nil {
		t.Error("Unzip(inflate) succeeded")
	}
}

func readZipFile(t testing.TB, f *zip.File) []byte {
	t.Helper()
	r, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type memFile struct {
	name string
	data []byte
}

func (f memFile) Path() string                 { return f.name }
func (f memFile) Lstat() (fs.FileInfo, error)  { return fileInfo{f}, nil }
func (f memFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.data)), nil }

type fileInfo struct{ f memFile }

func (i fileInfo) Name() string       { return i.f.name[strings.LastIndex(i.f.name, "/")+1:] }
func (i fileInfo) Size() int64        { return int64(len(i.f.data)) }
func (i fileInfo) Mode() fs.FileMode  { return 0o644 }
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any           { return nil }

// memOps is an in-memory sumdb.ClientOps reading base+path through an HTTP client.
type memOps struct {
	client *http.Client
	base   string // e.g. "https://sum.golang.org"
	key    string

	mu       sync.Mutex
	config   map[string][]byte
	security []string // SecurityError messages
}

func newClient(t testing.TB, w *testworld.World, base string) (*sumdb.Client, *memOps) {
	t.Helper()
	ops := &memOps{client: w.HTTPClient(), base: base, key: w.SumDBKey, config: map[string][]byte{}}
	return sumdb.NewClient(ops), ops
}

func (o *memOps) ReadRemote(path string) ([]byte, error) {
	resp, err := o.client.Get(o.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, err
}

func (o *memOps) ReadConfig(file string) ([]byte, error) {
	if file == "key" {
		return []byte(o.key), nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.config[file], nil
}

func (o *memOps) WriteConfig(file string, old, new []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !bytes.Equal(o.config[file], old) {
		return sumdb.ErrWriteConflict
	}
	o.config[file] = new
	return nil
}

func (o *memOps) ReadCache(string) ([]byte, error) { return nil, os.ErrNotExist }
func (o *memOps) WriteCache(string, []byte)        {}
func (o *memOps) Log(string)                       {}

func (o *memOps) SecurityError(msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.security = append(o.security, msg)
}

func (o *memOps) securityErrors() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.security)
}

// sumDBURLs are every URL the world serves its checksum database at.
func sumDBURLs(w *testworld.World) []string {
	urls := []string{"https://" + config.SumDBName}
	for _, base := range proxyURLs(w) {
		urls = append(urls, base+"/sumdb/"+config.SumDBName)
	}
	return urls
}

func TestSumDBLookup(t *testing.T) {
	w := testworld.New(t)
	for _, base := range sumDBURLs(w) {
		t.Run(base, func(t *testing.T) {
			client, ops := newClient(t, w, base)
			for _, m := range w.Modules() {
				path, vers := m.Path, m.Version.Version
				lines, err := client.Lookup(path, vers)
				modLines, modErr := client.Lookup(path, vers+"/go.mod")
				if !m.InSumDB {
					if err == nil || !strings.Contains(err.Error(), "404 Not Found: not found: ") || modErr == nil {
						t.Errorf("%s: lookup = %q, %v; want 404 not found", m, lines, err)
					}
					continue
				}
				want := []string{path + " " + vers + " " + m.ZipHash}
				wantMod := []string{path + " " + vers + "/go.mod " + m.ModHash}
				if err != nil || modErr != nil || !slices.Equal(lines, want) || !slices.Equal(modLines, wantMod) {
					t.Errorf("%s: lookup = %q, %v; %q, %v; want %q, %q", m, lines, err, modLines, modErr, want, wantMod)
				}
			}
			if _, err := client.Lookup("example.com/filler/0", testworld.Version); err != nil {
				t.Errorf("filler lookup: %v", err)
			}
			if n := ops.securityErrors(); n != 0 {
				t.Errorf("%d security errors from the honest database", n)
			}
		})
	}
}

func TestSumDBFork(t *testing.T) {
	w := testworld.New(t)
	for _, tc := range []struct {
		name          string
		first, second testworld.SumDBMode
	}{
		{"honest-then-forked", testworld.SumDBHonest, testworld.SumDBForked},
		{"forked-then-honest", testworld.SumDBForked, testworld.SumDBHonest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, ops := newClient(t, w, "https://"+config.SumDBName)
			w.SetSumDB(tc.first)
			if _, err := client.Lookup(testworld.GoodPath, testworld.Version); err != nil {
				t.Fatalf("first lookup: %v", err)
			}
			w.SetSumDB(tc.second)
			defer w.SetSumDB(testworld.SumDBHonest)
			_, err := client.Lookup(testworld.UpperPath, testworld.Version)
			if !errors.Is(err, sumdb.ErrSecurity) && !strings.Contains(fmt.Sprint(err), "security error") {
				t.Errorf("second lookup error = %v, want security error", err)
			}
			if ops.securityErrors() == 0 {
				t.Errorf("SecurityError was not called")
			}
		})
	}

	// On its own the fork is self-consistent and vouches for the tampered zip.
	w.SetSumDB(testworld.SumDBForked)
	client, _ := newClient(t, w, w.ProxyURL+"/sumdb/"+config.SumDBName)
	lines, err := client.Lookup(testworld.TamperedZipPath, testworld.Version)
	m := w.Module(testworld.TamperedZipPath, testworld.Version)
	served, _ := dirhash.HashZip(m.WriteZip(t), dirhash.Hash1)
	if err != nil || len(lines) != 1 || !strings.HasSuffix(lines[0], " "+served) || served == m.ZipHash {
		t.Errorf("forked lookup = %q, %v; want served hash %q", lines, err, served)
	}
}

func TestSumDBModes(t *testing.T) {
	w := testworld.New(t)
	c := w.HTTPClient()
	for _, tc := range []struct {
		mode testworld.SumDBMode
		code int
	}{
		{testworld.SumDBDown, http.StatusServiceUnavailable},
		{testworld.SumDBNotFound, http.StatusNotFound},
		{testworld.SumDBHonest, http.StatusOK},
		{testworld.SumDBForked, http.StatusOK},
	} {
		w.SetSumDB(tc.mode)
		for _, base := range sumDBURLs(w) {
			for _, p := range []string{"/latest", "/lookup/example.com/good@v1.0.0", "/tile/8/0/000.p/1"} {
				if code, body := get(t, c, base+p); code != tc.code {
					t.Errorf("mode %d: GET %s%s = %d %q, want %d", tc.mode, base, p, code, body, tc.code)
				}
			}
		}
		if code, _ := get(t, c, w.ProxyURL+"/sumdb/"+config.SumDBName+"/supported"); code != http.StatusOK {
			t.Errorf("mode %d: supported = %d, want 200", tc.mode, code)
		}
	}
}

func TestRequests(t *testing.T) {
	w := testworld.New(t)
	c := w.HTTPClient()
	get(t, c, "https://"+config.SumDBName+"/latest") // counted, then reset
	w.ResetRequests()

	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for _, u := range []string{
				w.ProxyURL + "/example.com/good/@v/list",
				config.Aliyun + "/example.com/good/@v/v1.0.0.zip",
				"https://" + config.SumDBName + "/latest",
				"https://GitHub.com:443/nobody/nothing",
			} {
				resp, err := c.Get(u)
				if err != nil {
					t.Error(err)
					continue
				}
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	for _, tc := range []struct {
		host, prefix string
		want         int
	}{
		{config.PublicProxyHost, "", n},
		{config.PublicProxyHost, "/example.com/good/@v/", n},
		{config.PublicProxyHost, "/example.com/good/@v/v", 0},
		{"mirrors.aliyun.com", "/goproxy/example.com/", n},
		{"mirrors.aliyun.com", "/example.com/", 0},
		{config.SumDBName, "/latest", n},
		{config.SumDBName, "/lookup/", 0},
		{"github.com", "", n},
		{"goproxy.cn", "", 0},
	} {
		if got := w.Requests(tc.host, tc.prefix); got != tc.want {
			t.Errorf("Requests(%q, %q) = %d, want %d", tc.host, tc.prefix, got, tc.want)
		}
	}
	w.ResetRequests()
	if got := w.Requests(config.PublicProxyHost, ""); got != 0 {
		t.Errorf("after ResetRequests: %d", got)
	}
}

func TestGitHub(t *testing.T) {
	w := testworld.New(t)
	c := w.HTTPClient()
	const meta = `<meta name="go-import" content="github.com/Upper/Case git https://github.com/Upper/Case">`
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/Upper/Case?go-get=1", 200, meta},
		{"/Upper/Case/sub/pkg?go-get=1", 200, meta},
		{"/Upper/Case", 404, ""},
		{"/Upper?go-get=1", 404, ""},
		{"/Upper/Case/info/refs?service=git-upload-pack", 404, ""},
	} {
		code, body := get(t, c, "https://github.com"+tc.path)
		if code != tc.code || !strings.Contains(string(body), tc.body) {
			t.Errorf("GET %s = %d %q; want %d containing %q", tc.path, code, body, tc.code, tc.body)
		}
	}
}

func TestTLSAndResolve(t *testing.T) {
	w := testworld.New(t)
	hosts := []string{config.SumDBName, config.PublicProxyHost, "goproxy.cn", "goproxy.io", "mirrors.aliyun.com", "github.com",
		testworld.GitHostAlt, testworld.VanityHost, testworld.UnknownMirrorHost}
	if len(w.Resolve) != len(hosts) {
		t.Errorf("Resolve = %v", w.Resolve)
	}
	for _, h := range hosts {
		if w.Resolve[h] != w.Addr || !strings.HasPrefix(w.Addr, "127.0.0.1:") {
			t.Errorf("Resolve[%s] = %q, Addr %q", h, w.Resolve[h], w.Addr)
		}
	}

	// A client built from RootsFile alone, dialing Addr by IP with SNI, trusts the world.
	pemData, err := os.ReadFile(w.RootsFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatal("RootsFile holds no certificate")
	}
	for _, h := range append(hosts, "127.0.0.1") {
		conn, err := tls.Dial("tcp", w.Addr, &tls.Config{RootCAs: pool, ServerName: h})
		if err != nil {
			t.Errorf("TLS to %s: %v", h, err)
			continue
		}
		conn.Close()
	}
	// The system roots do not trust the world; the world's client dials no one else.
	if _, err := tls.Dial("tcp", w.Addr, &tls.Config{ServerName: config.SumDBName}); err == nil {
		t.Error("world certificate verified without its root")
	}
	if _, err := w.HTTPClient().Get("https://example.org/"); err == nil || !strings.Contains(err.Error(), "refusing to dial") {
		t.Errorf("GET outside the world: %v", err)
	}
}

func TestWorldsAreDeterministic(t *testing.T) {
	a, b := testworld.New(t), testworld.New(t)
	if a.SumDBKey == b.SumDBKey {
		t.Error("two worlds share a database key")
	}
	ma, mb := a.Modules(), b.Modules()
	if len(ma) != len(mb) {
		t.Fatalf("%d vs %d modules", len(ma), len(mb))
	}
	for i := range ma {
		if ma[i].Version != mb[i].Version || !bytes.Equal(ma[i].Zip, mb[i].Zip) || ma[i].ZipHash != mb[i].ZipHash {
			t.Errorf("module %d differs: %v vs %v", i, ma[i].Version, mb[i].Version)
		}
	}
	if a.Module(testworld.GoodPath, testworld.NextVersion) == nil || a.Module(testworld.GoodPath, "v9.0.0") != nil {
		t.Error("Module lookup")
	}
}

func TestServeGit(t *testing.T) {
	w := testworld.New(t)
	w.ServeGit(t, "owner/repo")
	for _, path := range []string{"/owner/repo/info/refs?service=git-upload-pack", "/owner/repo.git/info/refs?service=git-upload-pack"} {
		resp, err := w.HTTPClient().Get("https://github.com" + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-git-upload-pack-advertisement" || !strings.Contains(string(body), "refs/tags/v1.0.0") {
			t.Fatalf("%s: %d %q %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}

func TestCDNHostServesCorpusOutsideResolve(t *testing.T) {
	w := testworld.New(t)
	if _, ok := w.Resolve[testworld.CDNHost]; ok {
		t.Errorf("Resolve holds %s; a gateway built from it would intercept it", testworld.CDNHost)
	}
	m := w.Module(testworld.GoodPath, testworld.Version)
	code, body := get(t, w.HTTPClient(), modURL(t, "https://"+testworld.CDNHost, m.Version, ".zip"))
	if code != http.StatusOK || !bytes.Equal(body, m.Zip) {
		t.Errorf("CDN zip: status %d, %d bytes, want the corpus zip", code, len(body))
	}
	if n := w.Requests(testworld.CDNHost, "/example.com/good/"); n != 1 {
		t.Errorf("CDN requests counted: %d, want 1", n)
	}
}

func TestOverrideReplacesAHostForAPrefixUntilTheTestEnds(t *testing.T) {
	w := testworld.New(t)
	c := w.HTTPClient()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	good, tampered := w.Module(testworld.GoodPath, testworld.Version), w.Module(testworld.TamperedZipPath, testworld.Version)
	zipURL := modURL(t, w.ProxyURL, good.Version, ".zip")
	t.Run("overridden", func(t *testing.T) {
		w.Override(t, config.PublicProxyHost, "/example.com/good/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			http.Error(rw, "gone", http.StatusGone)
		}))
		w.Override(t, config.PublicProxyHost, "/example.com/good/@v/v1.0.0.zip", http.RedirectHandler("https://"+testworld.CDNHost+"/x", http.StatusFound))
		for _, tt := range []struct {
			url  string
			code int
		}{
			{zipURL, http.StatusFound},                                        // the longest prefix wins
			{modURL(t, w.ProxyURL, good.Version, ".mod"), http.StatusGone},    // the shorter one
			{modURL(t, w.ProxyURL, tampered.Version, ".zip"), http.StatusOK},  // other paths: the host's own
			{modURL(t, w.MirrorURLs[0], good.Version, ".zip"), http.StatusOK}, // other hosts: their own
		} {
			if code, _ := get(t, c, tt.url); code != tt.code {
				t.Errorf("GET %s: %d, want %d", tt.url, code, tt.code)
			}
		}
		if n := w.Requests(config.PublicProxyHost, "/example.com/good/"); n != 2 {
			t.Errorf("overridden requests counted: %d, want 2", n)
		}
	})
	if code, body := get(t, c, zipURL); code != http.StatusOK || !bytes.Equal(body, good.Zip) {
		t.Errorf("after the subtest: %d, %d bytes; the override outlived its test", code, len(body))
	}
}
