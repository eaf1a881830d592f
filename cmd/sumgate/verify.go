package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"golang.org/x/mod/module"

	"go.opentelemetry.io/otel/trace"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/upstream"
	"github.com/sumgate/sumgate/sumdb"
)

const verifyUsage = `usage: sumgate verify [-config FILE] [-zip FILE] [-mod FILE] [-json] MODULE@VERSION

Checks a module version's zip and go.mod against the Go checksum database.
With -zip and/or -mod it checks those local files; otherwise it downloads
both from the configured module proxies, in order.

Exit status: 0 verified (or private), 1 blocked (mismatch, not in the
checksum database, security error), 2 usage error or database unreachable.

Flags:
`

// verifyCmd implements 'sumgate verify'.
func verifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	configFile := fs.String("config", "", "configuration `file` (default: built-in defaults)")
	zipFile := fs.String("zip", "", "check this local module zip `file`")
	modFile := fs.String("mod", "", "check this local go.mod `file`")
	asJSON := fs.Bool("json", false, "print one JSON object per file instead of text")
	if err := parseFlags(fs, verifyUsage, args, stdout, stderr); err != nil {
		return flagStatus(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitError
	}
	m, err := parseModuleArg(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
		return exitError
	}
	cfg, err := config.Load(*configFile)
	if err != nil {
		fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
		return exitError
	}
	client, err := upstreamClient(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
		return exitError
	}
	quiet := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	v, err := newVerifier(cfg, client, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
	if err != nil {
		fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
		return exitError
	}

	files := map[sumdb.Kind]string{}
	if *zipFile != "" {
		files[sumdb.KindZip] = *zipFile
	}
	if *modFile != "" {
		files[sumdb.KindMod] = *modFile
	}
	if len(files) == 0 {
		if v.IsPrivate(m.Path) {
			fmt.Fprintf(stdout, "%s: private module: not looked up in the public checksum database and not downloaded from public module proxies; pass -zip or -mod to hash local files\n", m)
			return exitOK
		}
		tmp, err := os.MkdirTemp("", "sumgate-verify-")
		if err != nil {
			fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
			return exitError
		}
		defer os.RemoveAll(tmp)
		f, err := gateway.NewFetcher(gateway.FetcherConfig{Client: client, Verifier: v, SpoolDir: tmp,
			Timeout: cfg.Timeouts.Fetch, StallTimeout: cfg.Timeouts.Idle, Logger: quiet})
		if err != nil {
			fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
			return exitError
		}
		return printVerdicts(stdout, stderr, *asJSON, func(kind sumdb.Kind) (sumdb.Verdict, error) {
			return fetchVerdict(ctx, f, cfg.ModuleProxies, m, kind)
		})
	}
	return printVerdicts(stdout, stderr, *asJSON, func(kind sumdb.Kind) (sumdb.Verdict, error) {
		file, ok := files[kind]
		if !ok {
			return sumdb.Verdict{}, errSkip
		}
		return v.Check(ctx, m, kind, file)
	})
}

// errSkip is a kind of file that was not asked for.
var errSkip = errors.New("not asked for")

// printVerdicts prints the verdict that check gives for the zip and the
// go.mod, and returns the exit status they add up to.
func printVerdicts(stdout, stderr io.Writer, asJSON bool, check func(sumdb.Kind) (sumdb.Verdict, error)) int {
	status := exitOK
	for _, kind := range []sumdb.Kind{sumdb.KindZip, sumdb.KindMod} {
		vd, err := check(kind)
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
			return exitError
		}
		printVerdict(stdout, stderr, vd, asJSON)
		switch vd.Outcome {
		case sumdb.Verified, sumdb.Private:
		case sumdb.Unavailable:
			if status == exitOK {
				status = exitError
			}
		default:
			status = exitBlocked
		}
	}
	return status
}

// parseModuleArg parses MODULE@VERSION, with the path either as written
// (upper case allowed) or case-encoded ("!a").
func parseModuleArg(arg string) (module.Version, error) {
	path, vers, ok := strings.Cut(arg, "@")
	if !ok || path == "" || vers == "" {
		return module.Version{}, fmt.Errorf("%q: want MODULE@VERSION", arg)
	}
	if strings.Contains(path, "!") || strings.Contains(vers, "!") {
		return sumdb.ParseEscaped(path, vers)
	}
	m := module.Version{Path: path, Version: vers}
	return m, sumdb.CheckModule(m)
}

// newVerifier builds the checksum-database verifier the file describes.
func newVerifier(cfg *config.Config, client *http.Client, logger *slog.Logger, tp trace.TracerProvider) (*sumdb.Verifier, error) {
	return sumdb.New(sumdb.Config{
		Key:            cfg.SumDB.Key,
		DataDir:        cfg.DataDir,
		URLs:           cfg.SumDB.URLs,
		ModuleProxies:  cfg.ModuleProxies,
		Private:        cfg.Private,
		MaxZipEntries:  cfg.SumDB.MaxZipEntries,
		HTTPClient:     client,
		Logger:         logger,
		TracerProvider: tp,
	})
}

func upstreamClient(cfg *config.Config) (*http.Client, error) {
	roots, err := upstream.Roots(cfg.Upstream.Roots)
	if err != nil {
		return nil, err
	}
	return upstream.NewClient(upstream.Options{Roots: roots, Resolve: cfg.Upstream.Resolve}), nil
}

// jsonVerdict is the -json form of a verdict.
type jsonVerdict struct {
	Module   string        `json:"module"`
	Version  string        `json:"version"`
	Kind     sumdb.Kind    `json:"kind"`
	Outcome  sumdb.Outcome `json:"outcome"`
	Got      string        `json:"got,omitempty"`
	Want     string        `json:"want,omitempty"`
	TreeSize int64         `json:"tree_size,omitempty"`
	LookupMS float64       `json:"lookup_ms"`
	Cached   bool          `json:"cached"`
	Reason   string        `json:"reason,omitempty"`
}

func printVerdict(stdout, stderr io.Writer, vd sumdb.Verdict, asJSON bool) {
	if asJSON {
		json.NewEncoder(stdout).Encode(jsonVerdict{
			Module: vd.Module.Path, Version: vd.Module.Version, Kind: vd.Kind, Outcome: vd.Outcome,
			Got: vd.Got, Want: vd.Want, TreeSize: vd.TreeSize,
			LookupMS: float64(vd.Lookup.Microseconds()) / 1000, Cached: vd.Cached, Reason: vd.Reason,
		})
		return
	}
	fmt.Fprintln(stdout, vd.String())
	if a := vd.Advice(); a != "" {
		fmt.Fprintf(stderr, "%s (%s): %s\n", vd.Module, vd.Kind, a)
	}
}

// fetchVerdict fetches kind of m from the first module proxy that has it,
// with the gateway's own fetcher (redirects, gzip, size limits, spool and
// check), falling through on 404 and 410 as the go command does, and on
// failures. What a proxy served decides: a mismatch is not retried
// elsewhere.
func fetchVerdict(ctx context.Context, f *gateway.Fetcher, proxies []string, m module.Version, kind sumdb.Kind) (sumdb.Verdict, error) {
	escPath, err := module.EscapePath(m.Path)
	if err != nil {
		return sumdb.Verdict{}, err
	}
	escVers, err := module.EscapeVersion(m.Version)
	if err != nil {
		return sumdb.Verdict{}, err
	}
	ext := ".zip"
	if kind == sumdb.KindMod {
		ext = ".mod"
	}
	var errs []error
	for _, proxy := range proxies {
		url := strings.TrimSuffix(proxy, "/") + "/" + escPath + "/@v/" + escVers + ext
		res, err := f.Fetch(ctx, url, m, kind)
		res.Close()
		var be *gateway.BlockedError
		switch {
		case err == nil && res.Verdict != nil:
			return *res.Verdict, nil
		case errors.As(err, &be) && be.Verdict != nil:
			return *be.Verdict, nil
		case errors.As(err, &be):
			return sumdb.Verdict{Module: m, Kind: kind, Outcome: sumdb.Mismatch, Reason: be.Reason}, nil
		case err == nil:
			err = fmt.Errorf("%s: no verdict", url)
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return sumdb.Verdict{}, errors.New("no module proxy configured")
	}
	return sumdb.Verdict{}, fmt.Errorf("downloading %s (%s): %w", m, kind, errors.Join(errs...))
}
