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
	"path/filepath"
	"strings"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"go.opentelemetry.io/otel/trace"

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
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, verifyUsage); fs.PrintDefaults() }
	configFile := fs.String("config", "", "configuration `file` (default: built-in defaults)")
	zipFile := fs.String("zip", "", "check this local module zip `file`")
	modFile := fs.String("mod", "", "check this local go.mod `file`")
	asJSON := fs.Bool("json", false, "print one JSON object per file instead of text")
	if err := fs.Parse(args); err != nil {
		return exitError
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
		files, err = download(ctx, client, cfg.ModuleProxies, m, tmp)
		if err != nil {
			fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
			return exitError
		}
	}

	status := exitOK
	for _, kind := range []sumdb.Kind{sumdb.KindZip, sumdb.KindMod} {
		file, ok := files[kind]
		if !ok {
			continue
		}
		vd, err := v.Check(ctx, m, kind, file)
		if err != nil {
			fmt.Fprintf(stderr, "sumgate verify: %v\n", err)
			return exitError
		}
		printVerdict(stdout, stderr, vd, *asJSON)
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

// download fetches m's zip and go.mod into dir from the first proxy that
// has them, falling through on 404 and 410 as the go command does, and on
// failures. A body is cut off one byte past the go command's size limit,
// so that an oversized file is reported by the check rather than filling
// the disk.
func download(ctx context.Context, client *http.Client, proxies []string, m module.Version, dir string) (map[sumdb.Kind]string, error) {
	escPath, err := module.EscapePath(m.Path)
	if err != nil {
		return nil, err
	}
	escVers, err := module.EscapeVersion(m.Version)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, proxy := range proxies {
		base := strings.TrimSuffix(proxy, "/") + "/" + escPath + "/@v/" + escVers
		files := map[sumdb.Kind]string{
			sumdb.KindMod: filepath.Join(dir, "go.mod"),
			sumdb.KindZip: filepath.Join(dir, "module.zip"),
		}
		err := fetchFile(ctx, client, base+".mod", files[sumdb.KindMod], modzip.MaxGoMod+1)
		if err == nil {
			err = fetchFile(ctx, client, base+".zip", files[sumdb.KindZip], modzip.MaxZipFile+1)
		}
		if err == nil {
			return files, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, errors.New("no module proxy configured")
	}
	return nil, fmt.Errorf("downloading %s: %w", m, errors.Join(errs...))
}

// fetchFile GETs url into file, keeping at most limit bytes.
func fetchFile(ctx context.Context, client *http.Client, url, file string, limit int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return &sumdb.StatusError{URL: url, Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, io.LimitReader(resp.Body, limit))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}
