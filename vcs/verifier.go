// Package vcs verifies Go modules that clients fetch directly from a git
// repository (GOPROXY=direct, or a proxy list ending in "direct") against
// the Go checksum database, before any of their objects reach the client.
//
// A git fetch names the objects it wants, not the module version. For
// each wanted object, the Verifier lists the repository's tags itself
// (anonymously, through sumgate's own upstream), reads every tag that
// points at the object as every module version the go command could take
// it for (the tag's directory prefix, the major version suffix,
// +incompatible, gopkg.in, and the import paths that go-get discovery
// mapped to the repository), fetches that one commit at depth 1, builds
// each version's module zip and go.mod exactly as the go command does
// (cmd/go/internal/modfetch: git archive with export-subst and
// export-ignore neutralised, then golang.org/x/mod/zip.Create), and
// checks them with a sumdb.Verifier. Git objects are content-addressed, so
// a client whose depth-1 fetch of a verified commit is passed receives
// exactly the verified tree.
package vcs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/mod/module"
	"golang.org/x/sync/singleflight"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/sumdb"
)

// Defaults of Config.
const (
	DefaultMaxPackBytes = 1 << 30
	DefaultCacheEntries = 1 << 14
	DefaultTagsTTL      = 30 * time.Second
	DefaultTimeout      = 10 * time.Minute
	DefaultConcurrent   = 4
)

// Config configures a Verifier.
type Config struct {
	// Client reaches code hosts: sumgate's own upstream. Requests carry
	// no credentials of any client.
	Client *http.Client
	// SumDB checks the module files built from a revision.
	SumDB *sumdb.Verifier
	// Git is the git binary; "" looks "git" up in PATH.
	Git string
	// WorkDir holds each verification's shallow repository and files,
	// removed when it ends.
	WorkDir string
	// MaxPackBytes bounds the pack of one fetched commit; 0 is
	// DefaultMaxPackBytes.
	MaxPackBytes int64
	// CacheEntries bounds the verified revisions remembered in memory; 0
	// is DefaultCacheEntries.
	CacheEntries int
	// TagsTTL is how long a repository's tag list is reused; 0 is
	// DefaultTagsTTL. A stale list cannot pass a moved tag: each
	// revision is checked by its content.
	TagsTTL time.Duration
	// Timeout bounds one revision's verification (listing, fetch, build,
	// checks), which goes on for the clients waiting for it if the one
	// that started it leaves; 0 is DefaultTimeout.
	Timeout time.Duration
	// Concurrent bounds the revisions verified at once, each a git
	// process, a pack and an archive on disk; 0 is DefaultConcurrent.
	// Others wait their turn.
	Concurrent int
	// Logger receives verification failures; nil is slog.Default().
	Logger *slog.Logger
	// TracerProvider traces verifications; nil traces nothing.
	TracerProvider trace.TracerProvider
}

// A Verifier checks direct git fetches. It is safe for concurrent use;
// concurrent checks of the same revision share one verification.
type Verifier struct {
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer
	flight singleflight.Group
	slots  chan struct{} // one per verification under way

	mu       sync.Mutex
	verified map[string]sumdb.Verdict // repo, object and roots -> the passing verdict
	refused  map[string]refusal       // repo + " " + object -> why a fetch of it was refused
	tags     map[string]tagList       // repo -> its tags, listed at
	imports  map[string][]root        // repo (RepoOf) -> import path prefixes go-get discovery mapped to it
}

// refusalTTL is how long a refusal that may change (not found, outage)
// is remembered; a mismatch is remembered as long as there is room.
const refusalTTL = 10 * time.Minute

type refusal struct {
	Result
	at time.Time
}

type tagList struct {
	refs []Ref
	at   time.Time
}

// New returns a Verifier for cfg. It fails if git cannot be found.
func New(cfg Config) (*Verifier, error) {
	if cfg.Client == nil || cfg.SumDB == nil || cfg.WorkDir == "" {
		return nil, errors.New("vcs: Client, SumDB and WorkDir are required")
	}
	if cfg.Git == "" {
		git, err := exec.LookPath("git")
		if err != nil {
			return nil, fmt.Errorf("vcs: direct git fetches are verified with git, which is not installed: %w", err)
		}
		cfg.Git = git
	}
	if cfg.MaxPackBytes <= 0 {
		cfg.MaxPackBytes = DefaultMaxPackBytes
	}
	if cfg.CacheEntries <= 0 {
		cfg.CacheEntries = DefaultCacheEntries
	}
	if cfg.TagsTTL <= 0 {
		cfg.TagsTTL = DefaultTagsTTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrent <= 0 {
		cfg.Concurrent = DefaultConcurrent
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = nooptrace.NewTracerProvider()
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("vcs: %w", err)
	}
	// Scratch repositories a crash left behind.
	if old, err := filepath.Glob(filepath.Join(cfg.WorkDir, "rev-*")); err == nil {
		for _, d := range old {
			os.RemoveAll(d)
		}
	}
	return &Verifier{cfg: cfg, slots: make(chan struct{}, cfg.Concurrent), log: cfg.Logger.With("component", "vcs"), tracer: cfg.TracerProvider.Tracer("github.com/sumgate/sumgate/vcs"),
		verified: map[string]sumdb.Verdict{}, refused: map[string]refusal{}, tags: map[string]tagList{}, imports: map[string][]root{}}, nil
}

// A Result is what a Verifier concluded about one fetch.
type Result struct {
	// Verdict decides: Verified or Private passes; NotFound means the
	// fetch could not be mapped to a version the checksum database knows
	// (Reason says why), and follows on_unverified like Unavailable; a
	// Mismatch or SecurityError never passes. It names the module version
	// and both hashes when one was checked.
	sumdb.Verdict
	// Tag and Commit name the revision the verdict is about, when one was.
	Tag, Commit string
}

// MovedTag is the words for a mismatch of a revision fetched from git.
const MovedTag = "the tag was moved or the repository differs from what the checksum database logged"

// LearnImport records go-get discovery's answer that importPrefix is
// served by the git repository repoURL (an https URL), so that tags of
// that repository are also read as versions of modules under
// importPrefix (the repository's subdir, if the tag has a fourth field,
// Go 1.25's subdirectory). Answers for other VCSs, or whose import prefix
// is not on host (the host that answered), are ignored: a page may speak
// only for its own host's import paths.
func (v *Verifier) LearnImport(host, importPrefix, vcs, repoURL, subdir string) {
	repo, err := RepoOf(repoURL)
	if err != nil || vcs != "git" || module.CheckImportPath(importPrefix) != nil ||
		!(importPrefix == host || strings.HasPrefix(importPrefix, host+"/")) ||
		subdir != "" && (path.Clean(subdir) != subdir || path.IsAbs(subdir) || strings.HasPrefix(subdir, "..")) {
		return
	}
	rt := root{path: importPrefix, subdir: subdir}
	v.mu.Lock()
	defer v.mu.Unlock()
	if slices.Contains(v.imports[repo], rt) {
		return
	}
	if len(v.imports) >= v.cfg.CacheEntries {
		for k := range v.imports {
			delete(v.imports, k)
			break
		}
	}
	v.imports[repo] = append(v.imports[repo], rt)
}

// RepoOf is the canonical form of a git repository's https URL, as
// sumgate names repositories: "https://host/path", lower-case host,
// without a trailing ".git" or slash.
func RepoOf(repoURL string) (string, error) {
	u, err := url.Parse(repoURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("vcs: %q is not an https repository URL", repoURL)
	}
	p := strings.TrimSuffix(strings.TrimSuffix(u.EscapedPath(), "/"), ".git")
	if p == "" || p == "/" {
		return "", fmt.Errorf("vcs: %q names no repository", repoURL)
	}
	return "https://" + strings.ToLower(u.Host) + p, nil
}

// roots are the module path prefixes of repo (RepoOf): its own host and
// path, and what go-get discovery mapped to it.
func (v *Verifier) roots(repo string) []root {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]root{{path: strings.TrimPrefix(repo, "https://")}}, v.imports[repo]...)
}

// Check decides whether the objects req asks of repo ("https://host/path",
// see RepoOf) may reach the client. Only a protocol v2 or v0 fetch of
// objects at depth 1, each of them a tag's target, can be verified;
// anything else that delivers objects is NotFound with the reason. A
// request that fetches nothing (ls-refs, a fetch without wants) passes.
//
// Each wanted object passes only if some tag points at it, every reading
// of those tags as a module version that the checksum database knows
// matches it, zip and go.mod, and there is at least one. A repository
// that sumgate cannot read anonymously is never looked up.
func (v *Verifier) Check(ctx context.Context, repoURL string, req UploadRequest) (res Result, err error) {
	ctx, span := v.tracer.Start(ctx, "vcs.check", trace.WithAttributes(auditkey.VCSRepo.String(repoURL)))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(sumdb.VerdictAttributes(res.Verdict)...)
			if res.Module.Path != "" {
				span.SetAttributes(auditkey.ModulePath.String(res.Module.Path), auditkey.ModuleVersion.String(res.Module.Version))
			}
			if res.Commit != "" {
				span.SetAttributes(auditkey.VCSCommit.String(res.Commit), auditkey.VCSTag.String(res.Tag))
			}
		}
		span.End()
	}()
	if req.Command != "fetch" || len(req.Wants)+len(req.WantRefs) == 0 {
		return Result{Verdict: sumdb.Verdict{Outcome: sumdb.Verified}}, nil
	}
	key, err := RepoOf(repoURL)
	if err != nil {
		return Result{}, err
	}
	roots := v.roots(key)
	for _, r := range roots {
		if v.cfg.SumDB.IsPrivate(r.path) {
			return Result{Verdict: sumdb.Verdict{Module: module.Version{Path: r.path}, Outcome: sumdb.Private}}, nil
		}
	}
	repo := repoURL
	unmapped := func(why string) (Result, error) {
		return Result{Verdict: sumdb.Verdict{Module: module.Version{Path: roots[0].path}, Outcome: sumdb.NotFound, Reason: why}}, nil
	}
	// An object refused before is refused again, whatever the fetch: the
	// go command falls back from a refused depth-1 fetch to fetching
	// every branch and tag with their history, which must neither pass a
	// mismatching revision under on_unverified: allow nor hide why.
	// A refusal that never passes (a mismatch, a fork) wins over one that
	// on_unverified may pass.
	var earlier *Result
	v.mu.Lock()
	for _, want := range req.Wants {
		r, ok := v.refused[key+" "+want]
		switch {
		case !ok || r.Outcome != sumdb.Mismatch && time.Since(r.at) >= refusalTTL:
		case r.Outcome == sumdb.Mismatch || r.Outcome == sumdb.SecurityError:
			earlier = &r.Result
		case earlier == nil:
			earlier = &r.Result
		}
		if earlier != nil && (earlier.Outcome == sumdb.Mismatch || earlier.Outcome == sumdb.SecurityError) {
			break
		}
	}
	v.mu.Unlock()
	if earlier != nil {
		return *earlier, nil
	}
	refs, err := v.tagsOf(ctx, repo, false)
	if err == nil && !allTagged(refs, req.Wants) {
		refs, err = v.tagsOf(ctx, repo, true) // a tag may have moved since the list was taken
	}
	var na *NotAnonymousError
	switch {
	case errors.As(err, &na):
		return unmapped(fmt.Sprintf("sumgate cannot read %s anonymously (%d), so it treats it as private and never sends its path to the checksum database; "+
			"if it is a private module, add its path to the private key of sumgate's configuration", repo, na.Status))
	case err != nil:
		return Result{}, err
	case req.Deepen != 1 || req.DeepenOther:
		return unmapped("the fetch asks for history (not --depth=1), which sumgate cannot map to one verified version: pseudo-versions and branches are fetched so")
	case req.PackfileURIs:
		return unmapped("the fetch accepts packfile URIs, whose objects would not pass through sumgate")
	}
	wants := slices.Clone(req.Wants)
	for _, name := range req.WantRefs {
		i := slices.IndexFunc(refs, func(r Ref) bool { return r.Name == name })
		if i < 0 {
			return unmapped(fmt.Sprintf("the fetch asks for %s, which is not a tag of %s", name, repo))
		}
		wants = append(wants, refs[i].Object)
	}
	var last Result
	for _, want := range wants {
		r, err := v.checkObject(ctx, repo, roots, refs, want)
		if err != nil {
			return r, err
		}
		if !r.Pass() {
			v.mu.Lock()
			if len(v.refused) >= v.cfg.CacheEntries {
				clear(v.refused)
			}
			v.refused[key+" "+want] = refusal{Result: r, at: time.Now()}
			v.mu.Unlock()
			return r, nil
		}
		last = r
	}
	return last, nil
}

// tagsOf lists repo's tags, reusing a list younger than TagsTTL unless
// fresh.
func (v *Verifier) tagsOf(ctx context.Context, repo string, fresh bool) ([]Ref, error) {
	v.mu.Lock()
	tl, ok := v.tags[repo]
	v.mu.Unlock()
	if ok && !fresh && time.Since(tl.at) < v.cfg.TagsTTL {
		return tl.refs, nil
	}
	ch := v.flight.DoChan("tags "+repo, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.Timeout)
		defer cancel()
		refs, err := v.lsRefs(ctx, repo)
		if err == nil {
			v.mu.Lock()
			if len(v.tags) >= v.cfg.CacheEntries {
				clear(v.tags)
			}
			v.tags[repo] = tagList{refs: refs, at: time.Now()}
			v.mu.Unlock()
		}
		return refs, err
	})
	select {
	case r := <-ch:
		refs, _ := r.Val.([]Ref)
		return refs, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// allTagged reports whether every want is a tag's object or its target.
func allTagged(refs []Ref, wants []string) bool {
	for _, w := range wants {
		if !slices.ContainsFunc(refs, func(r Ref) bool { return r.Object == w || r.Peeled == w }) {
			return false
		}
	}
	return true
}

// checkObject checks one wanted object: see Check.
func (v *Verifier) checkObject(ctx context.Context, repo string, roots []root, refs []Ref, want string) (Result, error) {
	// The commit the want is, or peels to; then every tag of that
	// commit: git wants the objects of other tags naming the same commit
	// too (include-tag), which deliver no other tree.
	commit := want
	for _, r := range refs {
		if r.Object == want && r.Peeled != "" {
			commit = r.Peeled
		}
	}
	var tags []string
	for _, r := range refs {
		if r.Object == commit || r.Peeled == commit {
			tags = append(tags, strings.TrimPrefix(r.Name, "refs/tags/"))
		}
	}
	// The readings depend on the roots: a root learned later is checked.
	key := fmt.Sprint(repo, " ", commit, " ", roots)
	v.mu.Lock()
	vd, ok := v.verified[key]
	v.mu.Unlock()
	if ok {
		vd.Cached = true
		return Result{Verdict: vd, Commit: commit}, nil
	}
	var rds []reading
	var tagOf []string
	for _, t := range tags {
		for _, rd := range readings(roots, t) {
			rds = append(rds, rd)
			tagOf = append(tagOf, t)
		}
	}
	if len(rds) == 0 {
		why := fmt.Sprintf("%s is not the target of a semantic-version tag of %s, so sumgate cannot map it to one verified version "+
			"(a pseudo-version, a branch or an unknown commit)", want, repo)
		return Result{Verdict: sumdb.Verdict{Module: module.Version{Path: roots[0].path}, Outcome: sumdb.NotFound, Reason: why}, Commit: want}, nil
	}
	ch := v.flight.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.Timeout)
		defer cancel()
		select {
		case v.slots <- struct{}{}:
			defer func() { <-v.slots }()
		case <-ctx.Done():
			return Result{}, fmt.Errorf("vcs: waiting to verify %s of %s: %w", commit, repo, ctx.Err())
		}
		return v.verify(ctx, repo, want, commit, rds, tagOf)
	})
	select {
	case r := <-ch:
		res, _ := r.Val.(Result)
		if r.Err == nil && res.Outcome == sumdb.Verified {
			v.mu.Lock()
			if len(v.verified) >= v.cfg.CacheEntries {
				clear(v.verified)
			}
			v.verified[key] = res.Verdict
			v.mu.Unlock()
		}
		return res, r.Err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// verify fetches commit (the peeled target of want) into a scratch
// repository, builds the module zip and go.mod of every reading, and
// checks them. The verdict that decides is the first one that does not
// pass and is not NotFound; else the first that passes; else NotFound.
func (v *Verifier) verify(ctx context.Context, repo, want, commit string, rds []reading, tagOf []string) (Result, error) {
	dir, err := os.MkdirTemp(v.cfg.WorkDir, "rev-")
	if err != nil {
		return Result{}, fmt.Errorf("vcs: %w", err)
	}
	defer os.RemoveAll(dir)
	r, err := initRepo(ctx, v.cfg.Git, filepath.Join(dir, "repo.git"))
	if err != nil {
		return Result{}, fmt.Errorf("vcs: %w", err)
	}
	if err := v.fetchInto(ctx, r, repo, want); err != nil {
		return Result{}, err
	}
	archive := filepath.Join(dir, "archive.zip")
	if err := r.archive(ctx, commit, archive); err != nil {
		return Result{}, fmt.Errorf("vcs: archiving %s of %s: %w", commit, repo, err)
	}
	var pass, notFound *Result
	for i, rd := range rds {
		sub, gomod, err := r.findDir(ctx, commit, rd)
		if err != nil {
			continue // the go command refuses this reading: no client can use it
		}
		if gomod == nil {
			gomod = legacyGoMod(rd.mod.Path)
		}
		res := Result{Tag: tagOf[i], Commit: commit}
		modFile := filepath.Join(dir, fmt.Sprintf("%d.mod", i))
		if err := os.WriteFile(modFile, gomod, 0o600); err != nil {
			return Result{}, fmt.Errorf("vcs: %w", err)
		}
		zipFile := filepath.Join(dir, fmt.Sprintf("%d.zip", i))
		if err := r.moduleZip(ctx, commit, archive, sub, rd.mod, zipFile); err != nil {
			// x/mod/zip refuses what the go command would refuse too
			// (too large, bad file names): no client can use it.
			v.log.InfoContext(ctx, "reading refused", "module", rd.mod.String(), "repo", repo, "error", err)
			continue
		}
		for _, f := range []struct {
			kind sumdb.Kind
			file string
		}{{sumdb.KindZip, zipFile}, {sumdb.KindMod, modFile}} {
			vd, err := v.cfg.SumDB.Check(ctx, rd.mod, f.kind, f.file)
			if err != nil {
				return Result{}, fmt.Errorf("vcs: checking %s of %s: %w", rd.mod, repo, err)
			}
			res.Verdict = vd
			switch vd.Outcome {
			case sumdb.Verified, sumdb.Private:
				if pass == nil && f.kind == sumdb.KindZip {
					p := res
					pass = &p
				}
				continue
			case sumdb.NotFound:
				if notFound == nil {
					n := res
					notFound = &n
				}
			default:
				return res, nil // a record that differs, an outage or a fork decides
			}
			break // not known as this reading: its go.mod is not looked at
		}
	}
	switch {
	case pass != nil:
		return *pass, nil
	case notFound != nil:
		return *notFound, nil
	}
	return Result{Verdict: sumdb.Verdict{Module: rds[0].mod, Outcome: sumdb.NotFound,
		Reason: "no reading of its tags is a module the go command would accept"}, Tag: tagOf[0], Commit: commit}, nil
}

// fetchInto fetches want from repo into r at depth 1.
func (v *Verifier) fetchInto(ctx context.Context, r *repo, repo, want string) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("vcs: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		err := r.run(ctx, pr, nil, "index-pack", "--stdin", "--fix-thin")
		pr.Close()
		done <- err
	}()
	shallow, ferr := v.fetchPack(ctx, repo, want, pw, v.cfg.MaxPackBytes)
	pw.Close()
	ierr := <-done
	if ferr != nil {
		return fmt.Errorf("vcs: %w", ferr)
	}
	if ierr != nil {
		return fmt.Errorf("vcs: storing the pack of %s from %s: %w", want, repo, ierr)
	}
	if len(shallow) > 0 {
		if err := os.WriteFile(filepath.Join(r.dir, "shallow"), []byte(strings.Join(shallow, "\n")+"\n"), 0o644); err != nil {
			return fmt.Errorf("vcs: %w", err)
		}
	}
	return nil
}
