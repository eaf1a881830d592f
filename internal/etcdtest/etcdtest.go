// Package etcdtest runs a real etcd server in-process on 127.0.0.1 for tests
// of code that shares state through etcd's client (go.etcd.io/etcd/client/v3).
//
// The server is etcd's own, started through go.etcd.io/etcd/server/v3/embed:
// a single-member cluster whose client and peer listeners are both opened on
// 127.0.0.1 port 0, so no port is ever fixed or guessed ahead, and whose data
// and log live in the test's t.TempDir(). Start returns only once the server
// answers a linearizable read on its client endpoint; the server stops in
// t.Cleanup.
//
// A test of what happens when etcd goes away stops the server (Stop) and
// starts it again on the same data (Restart). A restarted server listens on
// a new port, so a client that must survive the restart dials a Forwarder
// (Server.Forward), a TCP forwarder owned by the test that Restart points at
// the new port and that can also cut clients off (Cut, Blackhole, Resume)
// while the server runs.
//
// Only tests may import this package: it links the whole etcd server, and
// the sumgate binary links only the client.
//
// Start, StartTLS and Forward need no package-level state and may be called
// from parallel tests; every server has its own ports, data directory and,
// for StartTLS, its own throwaway CA.
package etcdtest

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
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// startTimeout bounds how long Start and Restart wait for the server to
// become ready and answer its first read. It is generous because the machine
// may be loaded; a healthy server answers in well under a second.
const startTimeout = 60 * time.Second

// Server is a single-member etcd cluster owned by one test. It runs from
// Start or StartTLS until Stop or the test's cleanup, and again after
// Restart.
//
// Stop and Restart must not run concurrently with each other or with reads
// of Endpoints; everything else may be used from any goroutine.
type Server struct {
	// Endpoints are the client endpoints to pass to clientv3.Config, as
	// "http://127.0.0.1:PORT" (Start) or "https://127.0.0.1:PORT" (StartTLS).
	// Restart replaces them: a restarted server listens on a new port.
	Endpoints []string

	// TLS holds the PEM files of the throwaway PKI of a server started by
	// StartTLS; it is nil for a server started by Start.
	TLS *TLSFiles

	clientTLS *tls.Config       // client side of TLS (CA pool and client certificate); nil when plain
	serverTLS transport.TLSInfo // server side of TLS, when clientTLS is not nil
	dir       string            // the test's temporary directory: data, log and PKI
	scheme    string            // of the client endpoints: "http" or "https"

	mu         sync.Mutex   // guards etcd and forwarders
	etcd       *embed.Etcd  // the running member; nil while stopped
	forwarders []*Forwarder // made by s.Forward; Restart points them at the new port
}

// TLSFiles names the PEM files, all in the test's t.TempDir(), of the
// throwaway PKI that StartTLS makes. The server trusts exactly CA for client
// certificates and presents a certificate for IP 127.0.0.1 signed by CA.
type TLSFiles struct {
	CA         string // the CA certificate, to verify the server (and that signed the client's)
	ClientCert string // a client certificate signed by CA (extended key usage client auth)
	ClientKey  string // the client certificate's private key (PKCS#8)
}

// Start starts etcd on 127.0.0.1 with plain-text client and peer listeners
// on free ports, waits until it serves reads, and stops it at t's cleanup.
// It fails t (t.Fatal) if the server does not start.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS is Start with TLS on the client listener and client certificates
// required (etcd's --client-cert-auth): a client is accepted only if it
// presents a certificate signed by the throwaway CA named in Server.TLS.
// The peer listener stays plain text on 127.0.0.1; a single member never
// dials it.
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

// ClientTLS returns the client side of a StartTLS server's TLS: a new
// *tls.Config that trusts the CA and presents the client certificate. It
// returns nil for a server started by Start.
func (s *Server) ClientTLS() *tls.Config {
	if s.clientTLS == nil {
		return nil
	}
	return s.clientTLS.Clone()
}

// Client returns a client of s's current Endpoints with a 10 s dial
// timeout, closed at t's cleanup. It fails t if the client cannot be made.
// The client does not follow a Restart (the port changes); a client that
// must survive one dials a Forwarder instead (see Server.Forward).
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := s.newClient(s.Endpoints)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newClient makes a client of endpoints with s's client TLS.
func (s *Server) newClient(endpoints []string) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         s.ClientTLS(),
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcdtest: making a client of %v: %w", endpoints, err)
	}
	return c, nil
}

// Stop stops the member and closes its listeners, keeping its data
// directory for Restart. Connections to the server are closed and its
// port is free again once Stop returns. Stopping a stopped server does
// nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts the member again on the data directory it had, so every
// key written before survives, on new client and peer listeners on
// 127.0.0.1: the client port differs from the one before, as a restarted
// server's port would in a real deployment. It stops the member first if it
// runs. When it returns, Endpoints name the new port, every Forwarder made
// by s.Forward targets it, and the server has answered a linearizable read.
// It fails t (t.Fatal) if the server does not start; the server still stops
// at the cleanup of the test that started it.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	// Port 0 might hand the old port out again; holding it while the
	// member starts makes sure it does not.
	for _, ep := range s.Endpoints {
		_, host := splitEndpoint(ep)
		if l, err := net.Listen("tcp", host); err == nil {
			defer l.Close()
		}
	}
	if err := s.run(); err != nil {
		t.Fatal(err)
	}
}

func start(t testing.TB, withTLS bool) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{dir: dir, scheme: "http"}
	if withTLS {
		s.scheme = "https"
		files, clientTLS, serverInfo, err := makePKI(dir)
		if err != nil {
			t.Fatalf("etcdtest: making the throwaway PKI: %v", err)
		}
		s.TLS = files
		s.clientTLS = clientTLS
		s.serverTLS = serverInfo
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("etcdtest: server log:%s", logTail(s.logFile()))
		}
	})
	if err := s.run(); err != nil {
		t.Fatal(err)
	}
	return s
}

// config returns a new configuration of the member: its data and log in
// s.dir, its listeners on 127.0.0.1 port 0. embed.StartEtcd fills in parts
// of the configuration it is given, so every start takes a new one.
func (s *Server) config() *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = filepath.Join(s.dir, "data")
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{s.logFile()}
	// A single member is leader alone: it never misses a heartbeat, and
	// a short election timeout only shortens each start's first election
	// (etcd's defaults are 100 ms and 1 s).
	cfg.TickMs, cfg.ElectionMs = 10, 100
	if s.clientTLS != nil {
		cfg.ClientTLSInfo = s.serverTLS
	}
	clientURL := url.URL{Scheme: s.scheme, Host: "127.0.0.1:0"}
	peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	return cfg
}

// logFile is the name of the server's log, which every start appends to.
func (s *Server) logFile() string { return filepath.Join(s.dir, "etcd.log") }

// run starts the member from s.cfg, waits until it is ready and answers a
// linearizable read, and publishes its endpoints to s.Endpoints and s's
// forwarders. On error the member is stopped again.
func (s *Server) run() error {
	e, err := embed.StartEtcd(s.config())
	if err != nil {
		return fmt.Errorf("etcdtest: starting etcd: %w%s", err, logTail(s.logFile()))
	}
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		s.Stop()
		return fmt.Errorf("etcdtest: etcd failed while starting: %w%s", err, logTail(s.logFile()))
	case <-time.After(startTimeout):
		s.Stop()
		return fmt.Errorf("etcdtest: etcd not ready after %v%s", startTimeout, logTail(s.logFile()))
	}

	var endpoints []string
	for _, l := range e.Clients {
		endpoints = append(endpoints, s.scheme+"://"+l.Addr().String())
	}

	// Ready means the member has joined and applied its first entries; a
	// linearizable read through the client endpoint proves the listener,
	// TLS and raft all serve.
	c, err := s.newClient(endpoints)
	if err != nil {
		s.Stop()
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if _, err := c.Get(ctx, "etcdtest-health"); err != nil {
		s.Stop()
		return fmt.Errorf("etcdtest: first read from %v: %w%s", endpoints, err, logTail(s.logFile()))
	}

	s.Endpoints = endpoints
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.forwarders {
		f.SetTarget(endpoints[0])
	}
	return nil
}

// logTail returns the end of the server's log file for an error message, or
// "" if it is empty or unreadable.
func logTail(path string) string {
	const max = 4096
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\n" + string(b)
}

// makePKI writes a throwaway CA, a server certificate for IP 127.0.0.1 and a
// client certificate into dir, and returns their file names, the client's
// tls.Config and the server's TLS settings (client certificates required).
func makePKI(dir string) (*TLSFiles, *tls.Config, transport.TLSInfo, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, transport.TLSInfo{}, fmt.Errorf("generating the CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, nil, transport.TLSInfo{}, fmt.Errorf("signing the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, transport.TLSInfo{}, fmt.Errorf("parsing the CA certificate: %w", err)
	}

	leaf := func(serial int64, name string, usage x509.ExtKeyUsage, ips []net.IP) (certFile, keyFile string, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", fmt.Errorf("generating the %s key: %w", name, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "etcdtest " + name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			return "", "", fmt.Errorf("signing the %s certificate: %w", name, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", "", fmt.Errorf("encoding the %s key: %w", name, err)
		}
		certFile = filepath.Join(dir, name+".crt")
		keyFile = filepath.Join(dir, name+".key")
		if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
			return "", "", err
		}
		if err := writePEM(keyFile, "PRIVATE KEY", keyDER); err != nil {
			return "", "", err
		}
		return certFile, keyFile, nil
	}

	files := &TLSFiles{CA: filepath.Join(dir, "ca.crt")}
	if err := writePEM(files.CA, "CERTIFICATE", caDER); err != nil {
		return nil, nil, transport.TLSInfo{}, err
	}
	serverCert, serverKey, err := leaf(2, "server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, transport.TLSInfo{}, err
	}
	files.ClientCert, files.ClientKey, err = leaf(3, "client", x509.ExtKeyUsageClientAuth, nil)
	if err != nil {
		return nil, nil, transport.TLSInfo{}, err
	}

	clientPair, err := tls.LoadX509KeyPair(files.ClientCert, files.ClientKey)
	if err != nil {
		return nil, nil, transport.TLSInfo{}, fmt.Errorf("loading the client certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	clientTLS := &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{clientPair},
		MinVersion:   tls.VersionTLS12,
	}
	serverInfo := transport.TLSInfo{
		CertFile:       serverCert,
		KeyFile:        serverKey,
		TrustedCAFile:  files.CA,
		ClientCertAuth: true,
	}
	return files, clientTLS, serverInfo, nil
}

// writePEM writes one PEM block to a new file readable only by its owner.
func writePEM(path, blockType string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing a PEM %s: %w", blockType, err)
	}
	return nil
}
