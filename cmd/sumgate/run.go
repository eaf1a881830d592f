package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/sumgate/sumgate/certs"
	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/telemetry"
	"github.com/sumgate/sumgate/internal/upstream"
)

const runUsage = `usage: sumgate run [-config FILE] [-listen ADDR] [-transparent-listen ADDR] [-admin-listen ADDR|off] [-data-dir DIR]

Starts the gateway: it intercepts TLS to the configured hosts and passes a
module zip or go.mod on only once the Go checksum database has vouched for
it. Under the default vcs: verify, a direct git fetch through an
intercepted host is answered only with tagged revisions whose modules the
database has vouched for; that needs git installed. On start it prints how
to point clients at it. SIGTERM or SIGINT stops
accepting, lets downloads in flight finish (timeouts.drain), flushes the
audit spans and exits 0.

Exit status: 0 after SIGTERM or SIGINT, 2 if it cannot start or stops
serving.

Flags:
`

// logBuffer bounds the log lines `sumgate run` holds for a collector that
// has fallen behind: about 4,000 lines, seconds of a busy gateway's log.
const logBuffer = 1 << 20

// runCmd implements 'sumgate run': the gateway, until SIGTERM or SIGINT.
func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	configFile := fs.String("config", "", "configuration `file` (default: built-in defaults)")
	listen := fs.String("listen", "", "listen `address`, overriding the file's listen")
	adminListen := fs.String("admin-listen", "", "admin `address` (or off), overriding the file's admin_listen")
	transparentListen := fs.String("transparent-listen", "", "transparent-mode `address`, overriding the file's transparent_listen")
	dataDir := fs.String("data-dir", "", "data `directory`, overriding the file's data_dir")
	if err := parseFlags(fs, runUsage, args, stdout, stderr); err != nil {
		return flagStatus(err)
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
	if *adminListen != "" {
		cfg.AdminListen = *adminListen
	}
	if *transparentListen != "" {
		cfg.TransparentListen = *transparentListen
	}
	level, _ := cfg.Level() // validated by Load
	// Log lines leave through a buffer, so a request never waits on a
	// log collector that stalls (see telemetry.AsyncWriter); it is
	// written out last, after the final spans are flushed.
	logOut := telemetry.NewAsyncWriter(stderr, logBuffer)
	defer logOut.Close()
	// From here on, the error that stops run is its last line: written
	// through the same buffer as the log, once everything started below
	// has stopped (and logged what it had to say).
	var failed error
	defer func() {
		if failed != nil {
			fmt.Fprintf(logOut, "sumgate run: %v\n", failed)
		}
	}()
	fail = func(err error) int {
		failed = err
		return exitError
	}
	logger := telemetry.NewLogger(logOut, cfg.LogFormat, level)
	tel, err := telemetry.Setup(ctx, telemetry.Options{
		DataDir:     cfg.DataDir,
		Version:     version(),
		QueueSize:   cfg.Audit.QueueSize,
		FileMaxMB:   cfg.Audit.FileMaxMB,
		FileBackups: cfg.Audit.FileBackups,
		Logger:      logger,
	})
	if err != nil {
		return fail(err)
	}
	defer func() {
		// Spans of the last requests, the drain included, are flushed.
		fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tel.Shutdown(fctx); err != nil {
			logger.Error("flushing audit spans", "err", err)
		}
	}()
	roots, err := upstream.Roots(cfg.Upstream.Roots)
	if err != nil {
		return fail(err)
	}
	// No total timeout: the gateway bounds each request with its context.
	client := upstream.NewClient(upstream.Options{Roots: roots, Resolve: cfg.Upstream.Resolve, Timeout: -1,
		TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider, Mark: cfg.Transparent.Mark, Origins: cfg.Origins()})
	etcd, err := dialState(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	defer closeState(etcd) // after the verifier and the CA, which use it
	v, err := newVerifier(cfg, etcd, client, logger, tel.TracerProvider)
	if err != nil {
		return fail(err)
	}
	defer v.Close() // the lookups a .info started, after the drain
	ccfg, err := caConfig(cfg)
	if err != nil {
		return fail(err)
	}
	ccfg.Logger = logger
	ccfg.TracerProvider, ccfg.MeterProvider = tel.TracerProvider, tel.MeterProvider
	// The leaves of the names listed exactly are readied in the background.
	ccfg.Premint = true
	if etcd != nil {
		// Leaves too are shared, so that replicas mint each name once.
		ccfg.Etcd, ccfg.EtcdPrefix, ccfg.EtcdTimeout = etcd, cfg.State.Etcd.Prefix, cfg.State.Etcd.DialTimeout
	}
	ca, err := certs.New(ctx, ccfg) // creates the local CA on first start
	if err != nil {
		return fail(err)
	}
	defer ca.Stop()
	dir := absPath(cfg.DataDir) // the banner is pasted into other shells, in other folders
	bundle, err := writeBundle(filepath.Join(dir, "ca"), ca.Root())
	if err != nil {
		return fail(err)
	}
	rules, stopRules, err := newPolicy(ctx, cfg, client, logger, tel.MeterProvider)
	if err != nil {
		return fail(err)
	}
	defer stopRules()
	gw, err := gateway.New(gateway.Config{
		Policy:         rules,
		Intercept:      cfg.Intercept,
		Splice:         cfg.Splice,
		ModuleProxies:  cfg.ModuleProxies,
		Tunnel:         gateway.TunnelPolicy(cfg.Tunnel),
		OnUnverified:   gateway.UnverifiedPolicy(cfg.OnUnverified),
		VCS:            gateway.VCSPolicy(cfg.VCS),
		CacheMaxBytes:  cacheBytes(cfg.CacheMaxMB),
		IdleTimeout:    cfg.Timeouts.Idle,
		HeaderTimeout:  cfg.Timeouts.Header,
		FetchTimeout:   cfg.Timeouts.Fetch,
		Resolve:        cfg.Upstream.Resolve,
		DataDir:        cfg.DataDir,
		Verifier:       v,
		CA:             ca,
		Upstream:       client,
		Logger:         logger,
		TracerProvider: tel.TracerProvider,
		MeterProvider:  tel.MeterProvider,
		Transparent: gateway.TransparentConfig{
			NoSNI:       gateway.NoSNIPolicy(cfg.Transparent.NoSNI),
			SNIMismatch: gateway.SNIMismatchPolicy(cfg.Transparent.SNIMismatch),
			PeekTimeout: cfg.Transparent.PeekTimeout,
		},
		Mark: cfg.Transparent.Mark,
	})
	if err != nil {
		return fail(err)
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(err)
	}
	warnSmallBacklog(logger, somaxconnFile)
	adminAddr := "off"
	var admin *http.Server
	if cfg.AdminListen != "off" {
		al, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			l.Close()
			return fail(fmt.Errorf("admin_listen: %w", err))
		}
		adminAddr = "http://" + al.Addr().String()
		admin = &http.Server{Handler: adminHandler(tel.MetricsHandler(), gw, v, ca, cfg.AdminPprof), ReadHeaderTimeout: 10 * time.Second}
		go admin.Serve(al)
		defer admin.Close()
	}
	transparentAddr := "off"
	var tl net.Listener
	if cfg.TransparentListen != "" {
		tl, err = gateway.ListenTransparent(ctx, cfg.TransparentListen, cfg.Transparent.TProxy)
		if err != nil {
			l.Close()
			return fail(fmt.Errorf("transparent_listen: %w", err))
		}
		transparentAddr = tl.Addr().String() + " (redirect port 443 here: see deploy/transparent)"
	}
	pctx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go probeUntilReached(pctx, v, logger)
	// What 'sumgate ca export' needs to find this root: the same file and
	// data directory.
	export := "sumgate ca export"
	if *configFile != "" {
		export += " -config " + absPath(*configFile)
	}
	export += " -data-dir " + dir
	// A configuration change needs a restart, which drains downloads in
	// flight: listeners, the CA's intermediate and its name constraints,
	// the verifier's keys and the policy are each built and checked once,
	// and a reload that applied some of them and not others would leave a
	// gateway no configuration describes. SIGHUP, which would otherwise
	// end the process without draining, says so and changes nothing.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				logger.Warn("SIGHUP: the configuration is not reloaded; restart sumgate to apply a change (SIGTERM drains downloads in flight)")
			case <-ctx.Done():
				return
			}
		}
	}()
	fmt.Fprintf(stdout, `sumgate is listening on %s
Point clients at it:
    export HTTPS_PROXY=http://%s
    export SSL_CERT_FILE=%s
    export GIT_SSL_CAINFO=%s
(git, which GOPROXY=direct and private modules use, ignores SSL_CERT_FILE;
instead of GIT_SSL_CAINFO: git config --global http.sslCAInfo %s)
(or install the root in the system trust store: %s)
Enterprise root SHA-256: %s
Transparent: %s
Admin (metrics, health, /ca.pem): %s
Audit spans: %s
`, l.Addr(), l.Addr(), bundle, bundle, bundle, export,
		certs.Fingerprint(ca.Root()), transparentAddr, adminAddr, tel.Destination)

	done := make(chan error, 2)
	go func() { done <- gw.Serve(l) }()
	if tl != nil {
		go func() { done <- gw.ServeTransparent(tl) }()
	}
	// Under systemd (Type=notify), ready once the CA is loaded and the
	// listeners accept; then the watchdog is fed while the process runs.
	// Without NOTIFY_SOCKET these do nothing.
	daemon.SdNotify(false, daemon.SdNotifyReady)
	if wd, err := daemon.SdWatchdogEnabled(false); err == nil && wd > 0 {
		go feedWatchdog(ctx, wd/2)
	}
	select {
	case err := <-done:
		return fail(err)
	case <-ctx.Done():
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	logger.Info("draining", "timeout_s", cfg.Timeouts.Drain.Seconds())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Drain)
	defer cancel()
	if err := gw.Shutdown(sctx); err != nil {
		logger.Warn("drain incomplete", "err", err)
	}
	return exitOK
}

// writeBundle writes the file the banner points clients at, in dir: the
// system roots and root (bundle.pem), or root alone (root.pem) where no
// system roots are found, and returns its name. It creates dir, which
// holds nothing else when the CA is imported or a step-ca: the banner
// must never name a file that does not exist.
func writeBundle(dir string, root *x509.Certificate) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating the folder of the client bundle: %w", err)
	}
	file, data := filepath.Join(dir, "bundle.pem"), certs.PEM(root)
	if b, err := certs.Bundle(root, ""); err == nil {
		data = b
	} else {
		file = filepath.Join(dir, "root.pem")
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return "", fmt.Errorf("writing the client bundle: %w", err)
	}
	return file, nil
}

// feedWatchdog tells systemd the process is alive every interval until
// ctx ends.
func feedWatchdog(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		case <-ctx.Done():
			return
		}
	}
}

// absPath is path made absolute, or path itself if that fails.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// cacheBytes maps cache_max_mb (0 disables) to gateway.Config.CacheMaxBytes
// (negative disables).
func cacheBytes(mb int64) int64 {
	if mb == 0 {
		return -1
	}
	return mb << 20
}
