package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/sumgate/sumgate/certs"
	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/sumdb"
)

// adminHandler serves the operator's endpoints:
//
//	/metrics  Prometheus text format
//	/healthz  200 while the process runs
//	/readyz   200 once the CA is loaded, the checksum database has
//	          answered at least once, the proxy listener is serving and,
//	          with state.backend etcd, etcd answers a quorum read,
//	          saying which source it was last read from ("ready: checksum
//	          database sum.golang.org via https://…"); otherwise 503 with
//	          the reasons. A fork on record does not
//	          make sumgate unready: it keeps answering every download with
//	          a 403 that says why, which taking it out of a load balancer
//	          would hide (sumgate_sumdb_alert says it instead). A replica
//	          that cannot reach etcd is unready ("shared state
//	          unavailable"): it could serve only what it proved before, so
//	          a load balancer should prefer the replicas that can.
//	/ca.pem   the enterprise root, for clients to install
//	/debug/pprof/  Go's profiler (net/http/pprof), only if pprof is set
//	          (admin_pprof): a profile shows what the process holds, and
//	          taking one costs CPU, so it is off unless asked for
func adminHandler(metrics http.Handler, gw *gateway.Gateway, v *sumdb.Verifier, ca *certs.CA, pprofOn bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var errs []error
		if err := gw.Ready(); err != nil {
			errs = append(errs, err)
		}
		sctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := v.StateReady(sctx)
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
		if !v.Reached() {
			errs = append(errs, fmt.Errorf("checksum database %s not reached yet", v.Name()))
		}
		if len(errs) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, errors.Join(errs...))
			return
		}
		fmt.Fprintln(w, "ready: "+databaseSource(v))
	})
	mux.HandleFunc("GET /ca.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(certs.PEM(ca.Root()))
	})
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// probeUntilReached probes the checksum database until it answers once
// or ctx ends, backing off from 1s to 30s between tries.
func probeUntilReached(ctx context.Context, v *sumdb.Verifier, log *slog.Logger) {
	wait := time.Second
	for !v.Reached() {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := v.Probe(pctx)
		cancel()
		if err == nil {
			log.Info("checksum database reached", "sumdb", v.Name(), "source", v.Source())
			return
		}
		log.Warn("checksum database not reachable yet: not ready", "sumdb", v.Name(), "err", err, "retry_in_s", wait.Seconds())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// databaseSource says which checksum database v reads, and from where.
func databaseSource(v *sumdb.Verifier) string {
	if s := v.Source(); s != "" {
		return fmt.Sprintf("checksum database %s via %s", v.Name(), s)
	}
	return "checksum database " + v.Name()
}
