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
	modzip "golang.org/x/mod/zip"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/sumgate/sumgate/gateway"
	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/internal/etcdstate"
	"github.com/sumgate/sumgate/internal/upstream"
	"github.com/sumgate/sumgate/sumdb"
)

const verifyUsage = `usage: sumgate verify [-config FILE] [-zip FILE] [-mod FILE] [-json] MODULE@VERSION

Checks a module version's zip and go.mod against the Go checksum database.
With -zip and/or -mod it checks those local files; otherwise it downloads
both from the configured module proxies, in order.

It prints one line per file, and on standard error what to do about
anything blocked. With -json it prints one JSON object per file instead,
and an object with "outcome": "error" for an error (see the README).

Exit status: 0 verified (or private), 1 blocked (mismatch, malformed zip,
not in the checksum database, security error), 2 usage or configuration
error, download failed, or checksum database unavailable.

Flags:
`

// verifyCmd implements 'sumgate verify'.
func verifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	configFile := fs.String("config", "", "configuration `file` (default: built-in defaults)")
	zipFile := fs.String("zip", "", "check this local module zip `file`")
	modFile := fs.String("mod", "", "check this local go.mod `file`")
	asJSON := fs.Bool("json", false, "print one JSON object per file (or error) instead of text")
	err := parseFlags(fs, verifyUsage, args, stdout, stderr)
	out := &verifyOutput{stdout: stdout, stderr: stderr, json: *asJSON} // -json counts if it came before a bad flag
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			out.errorObject(0, fmt.Errorf("usage: %w", err))
		}
		return flagStatus(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		out.errorObject(0, fmt.Errorf("usage: want one MODULE@VERSION argument, got %d", fs.NArg()))
		return exitError
	}
	m, err := parseModuleArg(fs.Arg(0))
	if err != nil {
		return out.fail(0, err)
	}
	out.m = m
	cfg, err := config.Load(*configFile)
	if err != nil {
		return out.fail(0, err)
	}
	client, err := upstreamClient(cfg)
	if err != nil {
		return out.fail(0, err)
	}
	quiet := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	etcd, err := dialState(ctx, cfg)
	if err != nil {
		return out.fail(0, err)
	}
	defer closeState(etcd)
	v, err := newVerifier(cfg, etcd, client, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
	if err != nil {
		return out.fail(0, err)
	}
	defer v.Close()

	files := map[sumdb.Kind]string{}
	if *zipFile != "" {
		files[sumdb.KindZip] = *zipFile
	}
	if *modFile != "" {
		files[sumdb.KindMod] = *modFile
	}
	if len(files) == 0 {
		if v.IsPrivate(m.Path) {
			out.private()
			return exitOK
		}
		tmp, err := os.MkdirTemp("", "sumgate-verify-")
		if err != nil {
			return out.fail(0, err)
		}
		defer os.RemoveAll(tmp)
		f, err := gateway.NewFetcher(gateway.FetcherConfig{Client: client, Verifier: v, SpoolDir: tmp,
			Timeout: cfg.Timeouts.Fetch, StallTimeout: cfg.Timeouts.Idle, Logger: quiet})
		if err != nil {
			return out.fail(0, err)
		}
		return out.verdicts(func(kind sumdb.Kind) (sumdb.Verdict, error) {
			return fetchVerdict(ctx, f, cfg.ModuleProxies, m, kind)
		})
	}
	// The files are checked as private copies: a file that changed while
	// it was read could otherwise have the digest of other bytes
	// remembered as verified (see sumdb.Verifier.Check).
	tmp, err := os.MkdirTemp("", "sumgate-verify-")
	if err != nil {
		return out.fail(0, err)
	}
	defer os.RemoveAll(tmp)
	return out.verdicts(func(kind sumdb.Kind) (sumdb.Verdict, error) {
		file, ok := files[kind]
		if !ok {
			return sumdb.Verdict{}, errSkip
		}
		limit := int64(modzip.MaxZipFile)
		if kind == sumdb.KindMod {
			limit = modzip.MaxGoMod
		}
		own, err := privateCopy(tmp, file, limit)
		if err != nil {
			return sumdb.Verdict{}, err
		}
		return v.Check(ctx, m, kind, own)
	})
}

// privateCopy copies file into dir, up to one byte past limit (enough for
// the check to find it too large), and returns the copy's name.
func privateCopy(dir, file string, limit int64) (string, error) {
	in, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, "file-*")
	if err != nil {
		return "", fmt.Errorf("copying %s: %w", file, err)
	}
	_, err = io.Copy(out, io.LimitReader(in, limit+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("copying %s: %w", file, err)
	}
	return out.Name(), nil
}

// errSkip is a kind of file that was not asked for.
var errSkip = errors.New("not asked for")

// verifyOutput prints what 'sumgate verify' found: in text, one line per
// file on stdout, and advice and errors on stderr; with -json, one
// object per file or error on stdout too (errors and usage still go to
// stderr as well).
type verifyOutput struct {
	stdout, stderr io.Writer
	json           bool           // -json
	m              module.Version // the module version, once parsed
}

// verdicts prints the verdict that check gives for the zip and the
// go.mod, and returns the exit status they add up to. An error stops it.
func (o *verifyOutput) verdicts(check func(sumdb.Kind) (sumdb.Verdict, error)) int {
	status := exitOK
	for _, kind := range []sumdb.Kind{sumdb.KindZip, sumdb.KindMod} {
		vd, err := check(kind)
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return o.fail(kind, err)
		}
		o.verdict(vd)
		switch vd.Outcome {
		case sumdb.Verified, sumdb.Private:
		case sumdb.Unavailable, sumdb.StateUnavailable:
			if status == exitOK {
				status = exitError
			}
		default:
			status = exitBlocked
		}
	}
	return status
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
	Reason   string        `json:"reason,omitempty"` // why the outcome is not verified, in words
}

// jsonError is the -json form of an error: the file, or the whole
// command, has no verdict.
type jsonError struct {
	Module  string `json:"module"`         // "" when the argument could not be parsed
	Version string `json:"version"`        // "" likewise
	Kind    string `json:"kind,omitempty"` // the file the error is about, if one
	Outcome string `json:"outcome"`        // always "error"
	Error   string `json:"error"`
}

// verdict prints one file's verdict: its line, and on stderr the advice
// for a blocked one; or, with -json, its object, with a reason whenever the
// outcome is not verified.
func (o *verifyOutput) verdict(vd sumdb.Verdict) {
	if !o.json {
		fmt.Fprintln(o.stdout, vd.String())
		if a := vd.Advice(); a != "" {
			fmt.Fprintf(o.stderr, "%s (%s): %s\n", vd.Module, vd.Kind, a)
		}
		return
	}
	reason := vd.Reason
	if reason == "" && !vd.Pass() {
		reason = vd.Detail() // a checksum mismatch: both hashes
	}
	json.NewEncoder(o.stdout).Encode(jsonVerdict{
		Module: vd.Module.Path, Version: vd.Module.Version, Kind: vd.Kind, Outcome: vd.Outcome,
		Got: vd.Got, Want: vd.Want, TreeSize: vd.TreeSize,
		LookupMS: float64(vd.Lookup.Microseconds()) / 1000, Cached: vd.Cached, Reason: reason,
	})
}

// private reports a private module that was neither looked up nor
// downloaded: one line, or one object per file.
func (o *verifyOutput) private() {
	const why = "not looked up in the public checksum database and not downloaded from public module proxies; pass -zip or -mod to hash local files"
	if !o.json {
		fmt.Fprintf(o.stdout, "%s: private module: %s\n", o.m, why)
		return
	}
	for _, kind := range []sumdb.Kind{sumdb.KindZip, sumdb.KindMod} {
		json.NewEncoder(o.stdout).Encode(jsonVerdict{Module: o.m.Path, Version: o.m.Version, Kind: kind, Outcome: sumdb.Private, Reason: why})
	}
}

// fail reports err, about the file kind (0: about no one file), and
// returns exitError.
func (o *verifyOutput) fail(kind sumdb.Kind, err error) int {
	fmt.Fprintf(o.stderr, "sumgate verify: %v\n", err)
	o.errorObject(kind, err)
	return exitError
}

// errorObject prints err's JSON object, with -json.
func (o *verifyOutput) errorObject(kind sumdb.Kind, err error) {
	if !o.json {
		return
	}
	e := jsonError{Module: o.m.Path, Version: o.m.Version, Outcome: "error", Error: err.Error()}
	if kind != 0 {
		e.Kind = kind.String()
	}
	json.NewEncoder(o.stdout).Encode(e)
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

// newVerifier builds the checksum-database verifier the file describes,
// its shared state in etcd (nil for the file backend).
func newVerifier(cfg *config.Config, etcd *clientv3.Client, client *http.Client, logger *slog.Logger, tp trace.TracerProvider) (*sumdb.Verifier, error) {
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
		Etcd:           etcd,
		EtcdPrefix:     cfg.State.Etcd.Prefix,
		EtcdTimeout:    cfg.State.Etcd.DialTimeout,
	})
}

// dialState connects to the etcd cluster that holds the replicas' shared
// state, for state.backend etcd; it returns nil for the file backend.
func dialState(ctx context.Context, cfg *config.Config) (*clientv3.Client, error) {
	if cfg.State.Backend != "etcd" {
		return nil, nil
	}
	return etcdstate.Dial(ctx, cfg.State.Etcd)
}

// closeState closes what dialState opened.
func closeState(c *clientv3.Client) {
	if c != nil {
		c.Close()
	}
}

func upstreamClient(cfg *config.Config) (*http.Client, error) {
	roots, err := upstream.Roots(cfg.Upstream.Roots)
	if err != nil {
		return nil, err
	}
	return upstream.NewClient(upstream.Options{Roots: roots, Resolve: cfg.Upstream.Resolve, Origins: cfg.Origins()}), nil
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
