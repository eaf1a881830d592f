// Package etcdstate connects sumgate to the etcd cluster that holds the
// state its replicas share (see README, "Running several replicas").
//
// Only the client (go.etcd.io/etcd/client/v3) is linked; etcd is reached
// with TLS and a client certificate, or in plain text on 127.0.0.1 only,
// which config validation enforces.
package etcdstate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sumgate/sumgate/internal/config"
)

// Dial connects to the cluster cfg names and checks, with one
// linearizable read bounded by cfg.DialTimeout, that it answers. The
// caller closes the client.
func Dial(ctx context.Context, cfg config.Etcd) (*clientv3.Client, error) {
	var tlsConfig *tls.Config
	if cfg.TLS != (config.EtcdTLS{}) {
		info := transport.TLSInfo{TrustedCAFile: cfg.TLS.CA, CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key}
		c, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd: loading client TLS: %w", err)
		}
		c.MinVersion = tls.VersionTLS12
		tlsConfig = c
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: cfg.DialTimeout,
		TLS:                  tlsConfig,
		Logger:               zap.NewNop(),
		Context:              ctx,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: connecting to %v: %w", cfg.Endpoints, err)
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := c.Get(rctx, cfg.Prefix, clientv3.WithCountOnly()); err != nil {
		c.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v", cfg.DialTimeout)
		}
		return nil, fmt.Errorf("etcd: reading from %v: %w", cfg.Endpoints, err)
	}
	return c, nil
}
