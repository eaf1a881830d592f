// Package testworld is a hermetic stand-in for the public Go module
// ecosystem, for tests: the public module proxy and its mirrors, the checksum
// database sum.golang.org and github.com, all served over TLS on 127.0.0.1
// under their real host names, with a throwaway root CA and a throwaway
// database signing key. Its fixed corpus holds honest, tampered, unknown,
// private and hostile modules (see the *Path constants). A download host,
// CDNHost, serves the corpus too, and Override makes any host misbehave for
// a path. NewGitRepo makes git repositories on its code hosts (github.com,
// GitHostAlt, VanityHost) that the real go command fetches directly
// (GoDirect) through the world's blind CONNECT proxy, ConnectProxyURL.
//
// A World makes no network connection beyond 127.0.0.1 and keeps no
// package-level state; any number may run in parallel.
package testworld

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/config"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
)

// GitHubHost is the code host the world serves go-get discovery for.
const GitHubHost = "github.com"

// CDNHost is a download host of the world that is not a module proxy: it
// serves the corpus at the GOPROXY paths (/<escaped path>/@v/<version>.zip,
// .mod, .info), as the storage a proxy redirects downloads to would. It is
// not in Resolve, so a gateway that intercepts the hosts of Resolve does
// not intercept it; HTTPClient dials it at Addr all the same.
const CDNHost = "cdn.testworld.example"

// UnknownMirrorHost is a module mirror that no configuration names (not
// config.Default, not a module_proxies list): it serves the corpus, as
// every proxy of the world does, under the path prefix /go (see
// UnknownMirrorURL). It is in Resolve and in the world's certificate.
const UnknownMirrorHost = "mirror.unlisted.example"

// UnknownMirrorURL is the GOPROXY base URL of UnknownMirrorHost.
const UnknownMirrorURL = "https://" + UnknownMirrorHost + "/go"

// A World is a running hermetic test world. Its exported fields are set by
// New and must not be modified. All methods are safe for concurrent use.
type World struct {
	// Addr is the "127.0.0.1:port" of the one TLS listener that serves
	// every host in Resolve, routed by the request's Host.
	Addr string
	// Resolve maps every served host name but CDNHost to Addr:
	// sum.golang.org, the public proxy host, goproxy.cn, goproxy.io,
	// mirrors.aliyun.com, UnknownMirrorHost, and the code hosts
	// github.com, GitHostAlt and VanityHost.
	Resolve map[string]string
	// RootsFile is a PEM file (in a t.TempDir()) holding the throwaway root
	// CA certificate that signs the world's server certificate.
	RootsFile string
	// Roots holds the same root certificate.
	Roots *x509.CertPool
	// SumDBKey is the note verifier key of the world's checksum database,
	// whose name is config.SumDBName.
	SumDBKey string
	// ProxyURL is "https://" + config.PublicProxyHost.
	ProxyURL string
	// MirrorURLs are config.GoproxyCN, config.GoproxyIO and config.Aliyun.
	MirrorURLs []string
	// ConnectProxyURL is "http://127.0.0.1:port", a blind forward proxy
	// into the world: it tunnels CONNECT <host>:443 for every host the
	// world serves to Addr, untouched, and refuses anything else. As
	// HTTPS_PROXY it lets the real go command and git reach the world
	// without a gateway (see GoDirect).
	ConnectProxyURL string

	cmu     sync.RWMutex // guards corpus and byKey, which Publish extends
	corpus  []*Module
	byKey   map[module.Version]*Module
	honest  *ledger      // honest checksum database
	forked  *ledger      // forked checksum database
	mode    atomic.Int32 // SumDBMode
	routes  map[string]http.Handler
	mu      sync.Mutex
	counts  map[string]map[string]int // host -> URL path -> requests
	over    map[string][]*override    // host -> handlers replacing its own (Override)
	leaks   map[string][]string       // internal header -> "host/path: value" it arrived with
	gits    gitWorld                  // git repositories, go-import tags, code-host requests (gitrepo.go)
	clients []*http.Transport         // closed at cleanup
}

// New builds and starts a world listening on 127.0.0.1. It fails t on any
// error, and stops the servers and the clients' idle connections in t.Cleanup.
// Its database starts in SumDBHonest mode.
func New(t testing.TB) *World {
	t.Helper()
	w := &World{
		ProxyURL:   "https://" + config.PublicProxyHost,
		MirrorURLs: []string{config.GoproxyCN, config.GoproxyIO, config.Aliyun},
		counts:     make(map[string]map[string]int),
		leaks:      make(map[string][]string),
		byKey:      make(map[module.Version]*Module),
	}

	b := &corpusBuilder{t: t, dir: t.TempDir()}
	w.corpus = b.build()
	for _, m := range w.corpus {
		w.byKey[m.Version] = m
	}
	w.SumDBKey, w.honest, w.forked = newSumDBs(t, w.corpus, b)

	w.routes = map[string]http.Handler{
		config.SumDBName:  http.HandlerFunc(w.serveSumDB),
		GitHubHost:        http.HandlerFunc(w.serveCodeHost),
		GitHostAlt:        http.HandlerFunc(w.serveCodeHost),
		VanityHost:        http.HandlerFunc(w.serveCodeHost),
		CDNHost:           w.proxyHandler(""),
		UnknownMirrorHost: w.proxyHandler("/go"),
	}
	for _, base := range append([]string{w.ProxyURL}, w.MirrorURLs...) {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatalf("testworld: %v", err)
		}
		w.routes[u.Host] = w.proxyHandler(strings.TrimSuffix(u.Path, "/"))
	}
	var hosts []string
	for h := range w.routes {
		hosts = append(hosts, h)
	}

	rootPEM, leaf := newCerts(t, hosts)
	w.RootsFile = writeTemp(t, t.TempDir(), "roots.pem", rootPEM)
	w.Roots = x509.NewCertPool()
	w.Roots.AppendCertsFromPEM(rootPEM)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{leaf},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatalf("testworld: %v", err)
	}
	w.Addr = ln.Addr().String()
	w.Resolve = make(map[string]string)
	for _, h := range hosts {
		if h != CDNHost {
			w.Resolve[h] = w.Addr
		}
	}

	serveUntilCleanup(t, ln, http.HandlerFunc(w.route), func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, tr := range w.clients {
			tr.CloseIdleConnections()
		}
	})
	w.ConnectProxyURL = w.startConnectProxy(t)
	return w
}

// newCerts returns a fresh root CA certificate (PEM) and a leaf certificate
// signed by it, valid for hosts and 127.0.0.1.
func newCerts(t testing.TB, hosts []string) (rootPEM []byte, leaf tls.Certificate) {
	t.Helper()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("testworld: making certificates: %v", err)
		}
	}
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	root := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sumgate testworld throwaway root CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	check(err)
	root, err = x509.ParseCertificate(rootDER)
	check(err)

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "sumgate testworld server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		DNSNames:     hosts,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, root, &leafKey.PublicKey, rootKey)
	check(err)

	rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	return rootPEM, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
}

// internalHeaders must never reach an upstream: trace context and proxy
// credentials (threat 15).
var internalHeaders = []string{"Traceparent", "Tracestate", "Baggage", "Proxy-Authorization", "Proxy-Connection"}

// Leaks returns, for each internal header (trace context, proxy
// credentials) that reached any host of the world, where and with what
// value. It is empty when nothing leaked.
func (w *World) Leaks() map[string][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]string{}
	for k, v := range w.leaks {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// route counts the request and hands it to its override (Override), if
// any, else to its host's handler.
func (w *World) route(rw http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	w.mu.Lock()
	if w.counts[host] == nil {
		w.counts[host] = make(map[string]int)
	}
	w.counts[host][r.URL.Path]++
	for _, name := range internalHeaders {
		if v := r.Header.Values(name); len(v) > 0 {
			w.leaks[name] = append(w.leaks[name], host+r.URL.Path+": "+strings.Join(v, ", "))
		}
	}
	h := w.overrideFor(host, r.URL.Path)
	w.mu.Unlock()

	if h == nil {
		h = w.routes[host]
	}
	if h != nil {
		h.ServeHTTP(rw, r)
		return
	}
	if host == "127.0.0.1" {
		// DirectProxyURL: the public proxy without a host name, for
		// clients that cannot resolve the real names (benchmarks' baseline).
		w.routes[config.PublicProxyHost].ServeHTTP(rw, r)
		return
	}
	http.Error(rw, "not found: no such host in test world: "+host, http.StatusNotFound)
}

// HTTPClient returns a new client that trusts only Roots, dials every host
// in Resolve, and CDNHost, at Addr whatever port the URL names, refuses to
// dial any other host, ignores proxy environment variables, and times out
// after 30s.
func (w *World) HTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			target, ok := w.Resolve[strings.ToLower(host)]
			if strings.EqualFold(host, CDNHost) {
				target, ok = w.Addr, true
			}
			if !ok {
				return nil, fmt.Errorf("testworld: refusing to dial %s: not a host of the test world", addr)
			}
			return dialer.DialContext(ctx, network, target)
		},
		TLSClientConfig:       &tls.Config{RootCAs: w.Roots},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		IdleConnTimeout:       30 * time.Second,
	}
	w.mu.Lock()
	w.clients = append(w.clients, tr)
	w.mu.Unlock()
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// Requests reports how many requests the world has served (with any status)
// for host whose URL path starts with pathPrefix; pathPrefix "" counts all
// of host's requests. Host names are compared case-insensitively and
// without port. Proxy paths include any mirror prefix (e.g. "/goproxy/").
func (w *World) Requests(host, pathPrefix string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for p, c := range w.counts[strings.ToLower(host)] {
		if strings.HasPrefix(p, pathPrefix) {
			n += c
		}
	}
	return n
}

// ResetRequests sets every request count to zero.
func (w *World) ResetRequests() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.counts)
}

// Module returns the corpus entry for the decoded path@version, or nil.
func (w *World) Module(path, version string) *Module {
	w.cmu.RLock()
	defer w.cmu.RUnlock()
	return w.byKey[module.Version{Path: path, Version: version}]
}

// DirectProxyURL returns the public module proxy's base URL by address,
// "https://127.0.0.1:port": a client that trusts RootsFile reaches it with
// no proxy and no name resolution.
func (w *World) DirectProxyURL() string { return "https://" + w.Addr }

// Publish adds a genuine module to the corpus, served by every module
// proxy and logged by the honest checksum database (at the end of the
// tree, when first looked up). Use it for modules a test builds, such as
// large ones for benchmarks.
func (w *World) Publish(t testing.TB, m module.Version, zip, mod []byte) *Module {
	t.Helper()
	file := writeTemp(t, t.TempDir(), "m.zip", zip)
	zh, err := dirhash.HashZip(file, dirhash.Hash1)
	if err != nil {
		t.Fatalf("testworld: hashing %s: %v", m, err)
	}
	e := &Module{Version: m, Zip: zip, Mod: mod, ZipHash: zh, ModHash: hashMod(mod), InSumDB: true}
	w.cmu.Lock()
	defer w.cmu.Unlock()
	w.corpus = append(w.corpus, e)
	w.byKey[m] = e
	w.Log(m, e.ZipHash, e.ModHash)
	return e
}

// Modules returns all corpus entries sorted by path, then by semver.
// The slice is fresh; the entries are shared.
func (w *World) Modules() []*Module {
	w.cmu.RLock()
	defer w.cmu.RUnlock()
	return append([]*Module(nil), w.corpus...)
}

// UpstreamConfig is the part of a sumgate configuration file (YAML) that
// points a gateway at w: w's module proxy, its checksum database's key,
// its roots (rootsFile: where the gateway reads RootsFile, which differs
// inside a container), its addresses, and every host it serves
// intercepted. Each line ends in a newline, so more keys can follow.
func (w *World) UpstreamConfig(rootsFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "module_proxies: [%s]\nsumdb:\n  key: %s\nupstream:\n  roots: %s\n  resolve:\n", w.ProxyURL, w.SumDBKey, rootsFile)
	hosts := make([]string, 0, len(w.Resolve))
	for host, addr := range w.Resolve {
		fmt.Fprintf(&b, "    %s: %q\n", host, addr) // an IPv6 address starts with [
		hosts = append(hosts, host)
	}
	fmt.Fprintf(&b, "intercept: [%s]\n", strings.Join(hosts, ", "))
	return b.String()
}
