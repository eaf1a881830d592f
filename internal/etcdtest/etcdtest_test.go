package etcdtest_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestCompareAndSwap proves the harness with the transaction sumgate's
// shared state relies on: a key is created only if it does not exist
// (creation revision 0), then replaced only if it still holds the value the
// writer read, so a replica holding a stale value loses.
func TestCompareAndSwap(t *testing.T) {
	t.Parallel()
	servers := []struct {
		name  string
		start func(testing.TB) *etcdtest.Server
	}{
		{"plain", etcdtest.Start},
		{"tls", etcdtest.StartTLS},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			s := srv.start(t)
			c := s.Client(t)
			const key = "sumgate/sumdb/latest"
			create := func(v string) clientv3.Op {
				return clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
					[]clientv3.Op{clientv3.OpPut(key, v)}, nil)
			}
			swap := func(old, v string) clientv3.Op {
				return clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", old)},
					[]clientv3.Op{clientv3.OpPut(key, v)}, nil)
			}
			steps := []struct {
				name      string
				op        clientv3.Op
				succeeded bool
				after     string // the key's value after the step
			}{
				{"first create wins", create("tree 1"), true, "tree 1"},
				{"second create loses", create("tree 1'"), false, "tree 1"},
				{"swap from the current value wins", swap("tree 1", "tree 2"), true, "tree 2"},
				{"swap from a stale value loses", swap("tree 1", "tree 3"), false, "tree 2"},
				{"swap from the new value wins", swap("tree 2", "tree 3"), true, "tree 3"},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, st := range steps {
				resp, err := c.Do(ctx, st.op)
				if err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				if got := resp.Txn().Succeeded; got != st.succeeded {
					t.Errorf("%s: succeeded = %v, want %v", st.name, got, st.succeeded)
				}
				g, err := c.Get(ctx, key)
				if err != nil {
					t.Fatalf("%s: reading back: %v", st.name, err)
				}
				if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != st.after {
					t.Errorf("%s: value after = %q, want %q", st.name, g.Kvs, st.after)
				}
			}
		})
	}
}

// TestTLSRefusesClientWithoutCertificate checks that StartTLS really
// requires client certificates: a client that trusts the CA but presents no
// certificate gets no answer, and one that presents the certificate does.
func TestTLSRefusesClientWithoutCertificate(t *testing.T) {
	t.Parallel()
	s := etcdtest.StartTLS(t)
	if s.TLS == nil || s.ClientTLS() == nil {
		t.Fatal("StartTLS: Server.TLS or ClientTLS() is nil")
	}
	for _, ep := range s.Endpoints {
		if !strings.HasPrefix(ep, "https://127.0.0.1:") {
			t.Errorf("endpoint %q is not https on 127.0.0.1", ep)
		}
	}
	tests := []struct {
		name    string
		tls     func() *tls.Config
		wantErr bool
	}{
		{"no client certificate", noClientCert(s), true},
		{"client certificate", s.ClientTLS, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := clientv3.New(clientv3.Config{
				Endpoints:   s.Endpoints,
				TLS:         tt.tls(),
				DialTimeout: 2 * time.Second,
				Logger:      zap.NewNop(), // the refused client's retries would log warnings
			})
			if err != nil {
				t.Fatalf("clientv3.New: %v", err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, err = c.Put(ctx, "k", "v")
			if (err != nil) != tt.wantErr {
				t.Errorf("Put error = %v, want error: %v", err, tt.wantErr)
			}
		})
	}

	// The client above only times out; a bare TLS connection shows why.
	// In TLS 1.3 the server's refusal arrives after the client's handshake
	// completes, on the first read.
	t.Run("server alert", func(t *testing.T) {
		host := strings.TrimPrefix(s.Endpoints[0], "https://")
		conn, err := tls.Dial("tcp", host, noClientCert(s)())
		if err != nil {
			t.Fatalf("tls.Dial: %v", err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		if err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Errorf("first read without a client certificate: %v, want the certificate required alert", err)
		}
	})
}

// noClientCert returns a func giving s's client TLS without the client
// certificate: it still trusts the CA.
func noClientCert(s *etcdtest.Server) func() *tls.Config {
	return func() *tls.Config {
		c := s.ClientTLS()
		c.Certificates = nil
		return c
	}
}

// TestPlainHasNoTLS checks Start's contract: plain http endpoints on
// 127.0.0.1 and no TLS material.
func TestPlainHasNoTLS(t *testing.T) {
	t.Parallel()
	s := etcdtest.Start(t)
	if s.TLS != nil || s.ClientTLS() != nil {
		t.Error("Start: TLS material on a plain server")
	}
	for _, ep := range s.Endpoints {
		if !strings.HasPrefix(ep, "http://127.0.0.1:") {
			t.Errorf("endpoint %q is not http on 127.0.0.1", ep)
		}
	}
}
