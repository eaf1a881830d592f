package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sumgate/sumgate/certs"
	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/upstream"
)

// drainTimeout bounds how long SIGTERM waits for in-flight downloads.
const drainTimeout = 30 * time.Second

// runCmd implements 'sumgate run': the gateway, until SIGTERM or SIGINT.
func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "configuration `file` (default: built-in defaults)")
	listen := fs.String("listen", "", "listen `address`, overriding the file's listen")
	dataDir := fs.String("data-dir", "", "data `directory`, overriding the file's data_dir")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "sumgate run: %v\n", err)
		return exitError
	}
	cfg, err := config.Load(*configFile)
	if err != nil {
		return fail(err)
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	roots, err := upstream.Roots(cfg.Upstream.Roots)
	if err != nil {
		return fail(err)
	}
	// No total timeout: the gateway bounds each request with its context.
	client := upstream.NewClient(upstream.Options{Roots: roots, Resolve: cfg.Upstream.Resolve, Timeout: -1})
	v, err := newVerifier(cfg, client, logger)
	if err != nil {
		return fail(err)
	}
	ccfg, err := caConfig(cfg)
	if err != nil {
		return fail(err)
	}
	ccfg.Logger = logger
	ca, err := certs.New(ctx, ccfg) // creates the local CA on first start
	if err != nil {
		return fail(err)
	}
	defer ca.Stop()
	gw, err := gateway.New(gateway.Config{
		Intercept:     cfg.Intercept,
		ModuleProxies: cfg.ModuleProxies,
		Tunnel:        cfg.Tunnel,
		OnUnverified:  cfg.OnUnverified,
		VCS:           cfg.VCS,
		CacheMaxBytes: cacheBytes(cfg.CacheMaxMB),
		Resolve:       cfg.Upstream.Resolve,
		DataDir:       cfg.DataDir,
		Verifier:      v,
		CA:            ca,
		Upstream:      client,
		Logger:        logger,
	})
	if err != nil {
		return fail(err)
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(err)
	}
	bundle := filepath.Join(cfg.DataDir, "ca", "bundle.pem")
	if abs, err := filepath.Abs(bundle); err == nil {
		bundle = abs // the banner is pasted into other shells, in other folders
	}
	if b, err := certs.Bundle(ca.Root(), ""); err == nil {
		os.WriteFile(bundle, b, 0o644)
	} else {
		bundle = filepath.Join(filepath.Dir(bundle), "root.pem")
		os.WriteFile(bundle, certs.PEM(ca.Root()), 0o644)
	}
	fmt.Fprintf(stdout, `sumgate is listening on %s
Point clients at it:
    export HTTPS_PROXY=http://%s
    export SSL_CERT_FILE=%s
(or install the root in the system trust store: sumgate ca export)
Enterprise root SHA-256: %s
`, l.Addr(), l.Addr(), bundle, certs.Fingerprint(ca.Root()))

	done := make(chan error, 1)
	go func() { done <- gw.Serve(l) }()
	select {
	case err := <-done:
		return fail(err)
	case <-ctx.Done():
	}
	logger.Info("draining", "timeout", drainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := gw.Shutdown(sctx); err != nil {
		logger.Warn("drain incomplete", "err", err)
	}
	return exitOK
}

// cacheBytes maps cache_max_mb (0 disables) to gateway.Config.CacheMaxBytes
// (negative disables).
func cacheBytes(mb int64) int64 {
	if mb == 0 {
		return -1
	}
	return mb << 20
}
