// Package vcs verifies Go modules that clients fetch directly from a git
// repository (GOPROXY=direct, or a proxy list ending in "direct") against
// the Go checksum database, and serves a verified fetch from sumgate's own
// copy of the verified objects, never from the code host's answer.
//
// A git fetch names the objects it wants, not the module version. For
// each wanted object, the Verifier lists the repository's tags itself
// (anonymously, through sumgate's own upstream) and adds the tags the code
// host showed clients (ShowRefs), fetches the commit and every tag object
// naming it at depth 1, peels them locally, reads every tag as every module
// version the go command could take it for (the tag's directory prefix,
// the major version suffix, +incompatible, gopkg.in, the import paths that
// go-get discovery mapped to the repository, and the module path its
// go.mod declares), builds each version's module zip and go.mod exactly as
// the go command does (cmd/go/internal/modfetch: git archive with
// export-subst and export-ignore neutralised, then
// golang.org/x/mod/zip.Create), and checks them with a sumdb.Verifier.
// Every reading must be the database's record. The client's fetch is then
// answered by git upload-pack over the verified objects only (Serve).
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
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/sync/singleflight"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/sumdb"
)

// Defaults of Config.
const (
	DefaultMaxPackBytes = 1 << 30
	DefaultCacheEntries = 1 << 14
	DefaultStoreEntries = 64
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
	// WorkDir holds each verification's scratch repository (removed when
	// it ends) and the store of verified revisions that fetches are
	// served from.
	WorkDir string
	// MaxPackBytes bounds the pack of one fetched commit; 0 is
	// DefaultMaxPackBytes.
	MaxPackBytes int64
	// CacheEntries bounds the refusals and learned import paths
	// remembered in memory; 0 is DefaultCacheEntries.
	CacheEntries int
	// StoreEntries bounds the verified revisions kept on disk to serve
	// fetches from; the least recently used is removed first. 0 is
	// DefaultStoreEntries.
	StoreEntries int
	// Timeout bounds one revision's verification (listing, fetch, build,
	// checks), which goes on for the clients waiting for it if the one
	// that started it leaves; 0 is DefaultTimeout.
	Timeout time.Duration
	// Concurrent bounds the revisions verified at once, each a git
	// process, a pack and an archive on disk; 0 is DefaultConcurrent.
	// Others wait their turn.
	Concurrent int
	// PassUnverified says versions the database does not know pass
	// (on_unverified: allow): the other readings of a revision are then
	// still checked, since a mismatch never passes; otherwise the first
	// reading the database does not know decides.
	PassUnverified bool
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

	mu      sync.Mutex
	store   map[string]*entry    // repo + " " + commit -> the verified revision on disk
	refused map[string]refusal   // repo + " " + object -> why a fetch of it was refused
	imports map[string][]root    // repo (RepoOf) -> import path prefixes go-get discovery mapped to it
	shown   map[string]*shownSet // repo -> the tags the code host showed clients
}

// refusalTTL is how long a refusal that may change (not found, outage)
// is remembered; a mismatch, or a verification that failed, is
// remembered as long as there is room.
const refusalTTL = 10 * time.Minute

// shownTTL is how long a ref a client was shown is read as a tag.
const shownTTL = time.Hour

type refusal struct {
	Result
	failed error // the verification failed: refused whatever the policy
	at     time.Time
}

// Bounds of what clients were shown: tags a repository, and repositories.
const (
	maxShownTags  = 1 << 16
	maxShownRepos = 1 << 10
)

type shownSet struct {
	refs     map[string]Ref // ref name -> what it was shown to name
	at       time.Time      // last shown
	overflow bool           // more tags were shown than kept
}

// maxTags bounds the version tags read on one commit: each is a module
// zip and two lookups per reading.
const maxTags = 256

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
	if cfg.StoreEntries <= 0 {
		cfg.StoreEntries = DefaultStoreEntries
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
	// Scratch repositories, served fetches and a store a crash (or the
	// previous run) left behind: the store is in memory.
	for _, pattern := range []string{"rev-*", "serve-*", "store-*"} {
		if old, err := filepath.Glob(filepath.Join(cfg.WorkDir, pattern)); err == nil {
			for _, d := range old {
				os.RemoveAll(d)
			}
		}
	}
	return &Verifier{cfg: cfg, log: cfg.Logger.With("component", "vcs"), tracer: cfg.TracerProvider.Tracer("github.com/sumgate/sumgate/vcs"),
		slots: make(chan struct{}, cfg.Concurrent), store: map[string]*entry{}, refused: map[string]refusal{},
		imports: map[string][]root{}, shown: map[string]*shownSet{}}, nil
}

// A Fetch is one client's git-upload-pack request.
type Fetch struct {
	Repo      string        // the repository's URL, as the client named it
	Client    string        // the client's address (an IP): what it learned and met is its own
	Anonymous bool          // the request carries no credentials (Authorization, Cookie)
	Request   UploadRequest // what it asks
}

// A Result is what a Verifier concluded about one fetch.
type Result struct {
	// Verdict decides: Verified or Private passes; NotFound means the
	// fetch could not be mapped to versions the checksum database knows
	// (Reason says why), and follows on_unverified like Unavailable; a
	// Mismatch or SecurityError never passes. It names the module version
	// and both hashes when one was checked.
	sumdb.Verdict
	// Tag and Commit name the revision the verdict is about, when one was.
	Tag, Commit string

	entries []*entry // Verified: the revisions to serve the fetch from
}

// Serves reports whether the fetch is to be answered by Serve, from the
// verified revisions, rather than passed to the code host.
func (r Result) Serves() bool { return len(r.entries) > 0 }

// MovedTag is the words for a mismatch of a revision fetched from git.
const MovedTag = "the tag was moved or the repository differs from what the checksum database logged"

// LearnImport records go-get discovery's answer that importPrefix is
// served by the git repository repoURL (an https URL), so that tags of
// that repository are also read as versions of modules under
// importPrefix (the repository's subdir, if the tag has a fourth field,
// Go 1.25's subdirectory). Answers for other VCSs, or whose import prefix
// is not on host (the host that answered), are ignored: a page may speak
// only for its own host's import paths. What a client learns is its own
// (client is its address): a page one client read cannot change how
// another client's fetches are read.
func (v *Verifier) LearnImport(client, host, importPrefix, vcs, repoURL, subdir string) {
	repo, err := RepoOf(repoURL)
	if err != nil || vcs != "git" || module.CheckImportPath(importPrefix) != nil ||
		!(importPrefix == host || strings.HasPrefix(importPrefix, host+"/")) ||
		subdir != "" && (path.Clean(subdir) != subdir || path.IsAbs(subdir) || strings.HasPrefix(subdir, "..")) {
		return
	}
	rt := root{path: importPrefix, subdir: subdir}
	v.mu.Lock()
	defer v.mu.Unlock()
	repo = client + " " + repo
	if slices.Contains(v.imports[repo], rt) {
		return
	}
	if len(v.imports) >= v.cfg.CacheEntries {
		clear(v.imports)
	}
	v.imports[repo] = append(v.imports[repo], rt)
}

// ShowRefs records the refs of repoURL that the code host showed a client
// (an ls-refs answer passing through): a tag a client was told names an
// object is read as a version of it, whatever the host tells sumgate
// itself, so a host cannot show sumgate one set of tags and clients
// another. A repository's set is never dropped to make room for its own
// tags: one that shows more than maxShownTags makes its fetches fail.
func (v *Verifier) ShowRefs(repoURL string, refs []Ref) {
	repo, err := RepoOf(repoURL)
	if err != nil {
		return
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	set := v.shown[repo]
	if set == nil {
		for len(v.shown) >= maxShownRepos {
			var oldest string
			for k, s := range v.shown {
				if oldest == "" || s.at.Before(v.shown[oldest].at) {
					oldest = k
				}
			}
			delete(v.shown, oldest)
		}
		set = &shownSet{refs: map[string]Ref{}}
		v.shown[repo] = set
	}
	set.at = now
	for _, r := range refs {
		if !strings.HasPrefix(r.Name, "refs/tags/") {
			continue
		}
		if _, ok := set.refs[r.Name]; !ok && len(set.refs) >= maxShownTags {
			set.overflow = true
			continue
		}
		set.refs[r.Name] = r
	}
}

// shownTo returns the tags of repo clients were shown lately, or an
// error if there were more than sumgate keeps.
func (v *Verifier) shownTo(repo string) ([]Ref, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	set := v.shown[repo]
	if set == nil || time.Since(set.at) >= shownTTL {
		return nil, nil
	}
	if set.overflow {
		return nil, fmt.Errorf("the code host showed clients more than %d tags of %s, more than sumgate keeps to check them", maxShownTags, repo)
	}
	out := make([]Ref, 0, len(set.refs))
	for _, r := range set.refs {
		out = append(out, r)
	}
	return out, nil
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
// path, and what go-get discovery through client mapped to it.
func (v *Verifier) roots(client, repo string) []root {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]root{{path: strings.TrimPrefix(repo, "https://")}}, v.imports[client+" "+repo]...)
}

// Check decides whether the objects req asks of repoURL may reach the
// client. Only a protocol v2 or v0 fetch of objects at depth 1, each of
// them a tag's object or target, can be verified; anything else that
// delivers objects is NotFound with the reason. A request that fetches
// nothing (ls-refs, a fetch without wants) passes, to the code host.
//
// Each wanted object passes only if every reading of every tag naming its
// commit as a module version the go command would accept is the checksum
// database's record, zip and go.mod, and there is at least one. A
// repository that sumgate cannot read anonymously is never looked up.
// A verified fetch must then be answered with Serve. A host that refuses
// sumgate's anonymous read while serving a client that sent no
// credentials is hiding from it: that is refused whatever the policy.
// A refusal is remembered for the client that met it, for the go
// command's fallback fetch.
func (v *Verifier) Check(ctx context.Context, f Fetch) (res Result, err error) {
	repoURL, req := f.Repo, f.Request
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
	roots := v.roots(f.Client, key)
	mem := f.Client + " " + key // what this client's refusals are remembered under
	for _, r := range roots {
		if v.cfg.SumDB.IsPrivate(r.path) {
			return Result{Verdict: sumdb.Verdict{Module: module.Version{Path: r.path}, Outcome: sumdb.Private}}, nil
		}
	}
	unmapped := func(why string) (Result, error) {
		return Result{Verdict: sumdb.Verdict{Module: module.Version{Path: roots[0].path}, Outcome: sumdb.NotFound, Reason: why}}, nil
	}
	// An object refused before is refused again, whatever the fetch: the
	// go command falls back from a refused depth-1 fetch to fetching
	// every branch and tag with their history, which must neither pass a
	// mismatching revision under on_unverified: allow nor hide why. A
	// refusal that never passes wins over one that on_unverified may pass.
	if r, failed := v.earlierRefusal(mem, req.Wants); failed != nil {
		return r, failed
	} else if r.Outcome != 0 {
		return r, nil
	}
	// The tags as they are now: a list taken before a tag moved would
	// read the moved tag's new commit as something else.
	refs, err := v.lsRefs(ctx, repoURL)
	var na *NotAnonymousError
	switch {
	case errors.As(err, &na) && f.Anonymous:
		return Result{}, fmt.Errorf("the code host refuses sumgate's anonymous read of %s (%d) while it serves this client without credentials", repoURL, na.Status)
	case errors.As(err, &na):
		return unmapped(fmt.Sprintf("sumgate cannot read %s anonymously (%d), so it treats it as private and never sends its path to the checksum database; "+
			"if it is a private module, add its path to the private key of sumgate's configuration", repoURL, na.Status))
	case err != nil:
		return Result{}, err
	case req.Deepen != 1 || req.DeepenOther:
		return unmapped("the fetch asks for history (not --depth=1), which sumgate cannot map to one verified version: pseudo-versions and branches are fetched so")
	case req.PackfileURIs:
		return unmapped("the fetch accepts packfile URIs, whose objects would not pass through sumgate")
	case !req.V2:
		return unmapped("a protocol v0 fetch: sumgate reads the tags clients are shown in protocol v2 only (the code host did not speak v2 to this client)")
	}
	shown, err := v.shownTo(key)
	if err != nil {
		return Result{}, err
	}
	refs = append(refs, shown...)
	wants := slices.Clone(req.Wants)
	for _, name := range req.WantRefs {
		i := slices.IndexFunc(refs, func(r Ref) bool { return r.Name == name })
		if i < 0 {
			return unmapped(fmt.Sprintf("the fetch asks for %s, which is not a tag of %s", name, repoURL))
		}
		wants = append(wants, refs[i].Object)
	}
	var last Result
	var entries []*entry
	for _, want := range wants {
		r, err := v.checkObject(ctx, repoURL, key, roots, refs, want)
		if err != nil || !r.Pass() {
			v.remember(mem, want, r, err)
			v.release(entries)
			return r, err
		}
		entries = append(entries, r.entries...)
		last = r
	}
	last.entries = entries
	return last, nil
}

// earlierRefusal is the refusal remembered for any of wants: a failed
// verification first, then one that never passes, then any.
func (v *Verifier) earlierRefusal(repo string, wants []string) (Result, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var found *refusal
	for _, want := range wants {
		r, ok := v.refused[repo+" "+want]
		never := r.failed != nil || r.Outcome == sumdb.Mismatch || r.Outcome == sumdb.SecurityError
		switch {
		case !ok || !never && time.Since(r.at) >= refusalTTL:
		case r.failed != nil:
			return r.Result, fmt.Errorf("an earlier verification of %s failed: %w", want, r.failed)
		case never || found == nil:
			found = &r
		}
	}
	if found == nil {
		return Result{}, nil
	}
	return found.Result, nil
}

// remember records why a fetch of want was refused.
func (v *Verifier) remember(repo, want string, r Result, err error) {
	if err != nil && errors.Is(err, context.Canceled) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.refused) >= v.cfg.CacheEntries {
		clear(v.refused)
	}
	v.refused[repo+" "+want] = refusal{Result: r, failed: err, at: time.Now()}
}

// checkObject checks one wanted object: see Check. A passing Result holds
// the store entry of its revision, in use until the fetch is served.
func (v *Verifier) checkObject(ctx context.Context, repoURL, repo string, roots []root, refs []Ref, want string) (Result, error) {
	// The commit the host says the want is or peels to, and every tag it
	// says names that commit: git wants the objects of other tags naming
	// the same commit too (include-tag). Claims are checked locally once
	// the objects are here.
	commit := want
	for _, r := range refs {
		if r.Object == want && r.Peeled != "" {
			commit = r.Peeled
		}
	}
	tags := map[string]string{} // tag -> its object
	for _, r := range refs {
		if r.Object == commit || r.Peeled == commit || r.Object == want {
			if t, ok := strings.CutPrefix(r.Name, "refs/tags/"); ok {
				tags[t] = r.Object
			}
		}
	}
	if len(tags) > maxTags {
		return Result{}, fmt.Errorf("more than %d tags name commit %s of %s, more than sumgate checks", maxTags, commit, repoURL)
	}
	if len(tags) == 0 {
		why := fmt.Sprintf("%s is not a tag of %s or its target, so sumgate cannot map it to one verified version "+
			"(a pseudo-version, a branch or an unknown commit)", want, repoURL)
		return Result{Verdict: sumdb.Verdict{Module: module.Version{Path: roots[0].path}, Outcome: sumdb.NotFound, Reason: why}, Commit: want}, nil
	}
	names := make([]string, 0, len(tags))
	for t, o := range tags {
		names = append(names, t+"="+o)
	}
	slices.Sort(names)
	key := fmt.Sprint(repo, " ", want, " ", commit, " ", names, " ", roots)
	if e := v.acquire(key); e != nil {
		r := e.result
		r.Cached = true
		r.entries = []*entry{e}
		return r, nil
	}
	ch := v.flight.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.Timeout)
		defer cancel()
		select {
		case v.slots <- struct{}{}:
			defer func() { <-v.slots }()
		case <-ctx.Done():
			return Result{}, fmt.Errorf("vcs: waiting to verify %s of %s: %w", commit, repoURL, ctx.Err())
		}
		return v.verify(ctx, repoURL, key, want, commit, tags, roots)
	})
	select {
	case r := <-ch:
		res, _ := r.Val.(Result)
		if r.Err != nil || !res.Pass() {
			return res, r.Err
		}
		if e := v.acquire(key); e != nil {
			res.entries = []*entry{e}
			return res, nil
		}
		return Result{}, fmt.Errorf("vcs: the verified revision %s of %s left the store before it was served", commit, repoURL)
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// verify fetches want and every tag object naming commit into a scratch
// repository, checks locally that each peels to commit, builds the module
// zip and go.mod of every reading of every tag, and checks them. It
// passes only if every reading the go command would accept is verified,
// and there is one; the scratch repository then joins the store under
// key. Otherwise the verdict that decides is the first that never passes,
// else the first not found.
func (v *Verifier) verify(ctx context.Context, repoURL, key, want, commit string, tags map[string]string, roots []root) (Result, error) {
	dir, err := os.MkdirTemp(v.cfg.WorkDir, "rev-")
	if err != nil {
		return Result{}, fmt.Errorf("vcs: %w", err)
	}
	defer os.RemoveAll(dir)
	r, err := initRepo(ctx, v.cfg.Git, filepath.Join(dir, "repo.git"))
	if err != nil {
		return Result{}, fmt.Errorf("vcs: %w", err)
	}
	objs := []string{want}
	for _, o := range tags {
		if !slices.Contains(objs, o) {
			objs = append(objs, o)
		}
	}
	if err := v.fetchInto(ctx, r, repoURL, objs); err != nil {
		return Result{}, err
	}
	// What the objects are, not what the host said they are.
	local, err := r.peel(ctx, want)
	if err != nil {
		return Result{}, fmt.Errorf("vcs: %s of %s: %w", want, repoURL, err)
	}
	if local != commit {
		return Result{}, fmt.Errorf("vcs: %s: the code host says %s is (or peels to) commit %s, but it is %s", repoURL, want, commit, local)
	}
	for t, o := range tags {
		c, err := r.peel(ctx, o)
		if err != nil || c != commit {
			return Result{}, fmt.Errorf("vcs: %s: the code host says tag %s names commit %s, but its object %s does not", repoURL, t, commit, o)
		}
	}
	archives := map[string]string{} // module directory -> its git archive
	tagNames := make([]string, 0, len(tags))
	for t := range tags {
		tagNames = append(tagNames, t)
	}
	slices.SortFunc(tagNames, func(a, b string) int { return semver.Compare(path.Base(b), path.Base(a)) })
	var pass, notFound *Result
	n := 0
	for _, tag := range tagNames {
		// The readings of one tag that the database knows, and those it
		// does not, by the module directory and version they are: an
		// unknown reading passes only as the same files and version as a
		// verified one, named by another module path (a repository path
		// and a vanity path of one module).
		verified := map[string]bool{}
		var unknown []struct {
			same string
			res  Result
		}
		rts := append(slices.Clone(roots), r.declaredRoots(ctx, commit, tag)...)
		for _, rd := range readings(rts, tag) {
			sub, gomod, declared, err := r.findDir(ctx, commit, rd)
			if err != nil || declared != "" && declared != rd.mod.Path ||
				strings.HasSuffix(rd.mod.Version, "+incompatible") && (rd.codeDir != "" || gomod != nil) {
				// The go command refuses this reading (+incompatible only
				// at a root without go.mod: codeRepo.convert), or its
				// go.mod declares another module: no client builds it.
				continue
			}
			same := sub + "@" + rd.mod.Version
			if gomod == nil {
				gomod = legacyGoMod(rd.mod.Path)
			} else {
				same += " " + string(gomod) // a synthesised go.mod names the path
			}
			n++
			res := Result{Tag: tag, Commit: commit}
			modFile := filepath.Join(dir, fmt.Sprintf("%d.mod", n))
			if err := os.WriteFile(modFile, gomod, 0o600); err != nil {
				return Result{}, fmt.Errorf("vcs: %w", err)
			}
			archive, ok := archives[sub]
			if !ok {
				archive = filepath.Join(dir, fmt.Sprintf("archive-%d.zip", len(archives)))
				if err := r.archive(ctx, commit, sub, archive); err != nil {
					return Result{}, fmt.Errorf("vcs: archiving %s of %s: %w", commit, repoURL, err)
				}
				archives[sub] = archive
			}
			zipFile := filepath.Join(dir, fmt.Sprintf("%d.zip", n))
			if err := r.moduleZip(ctx, commit, archive, sub, rd.mod, zipFile); err != nil {
				// x/mod/zip refuses what the go command would refuse too
				// (too large, bad file names): no client can use it.
				v.log.InfoContext(ctx, "reading refused", "module", rd.mod.String(), "repo", repoURL, "error", err)
				n--
				continue
			}
		files:
			for _, f := range []struct {
				kind sumdb.Kind
				file string
			}{{sumdb.KindZip, zipFile}, {sumdb.KindMod, modFile}} {
				vd, err := v.cfg.SumDB.Check(ctx, rd.mod, f.kind, f.file)
				if err != nil {
					return Result{}, fmt.Errorf("vcs: checking %s of %s: %w", rd.mod, repoURL, err)
				}
				res.Verdict = vd
				switch vd.Outcome {
				case sumdb.Verified, sumdb.Private:
					if f.kind == sumdb.KindMod {
						verified[same] = true
					}
					if pass == nil && f.kind == sumdb.KindZip {
						p := res
						pass = &p
					}
				case sumdb.NotFound:
					unknown = append(unknown, struct {
						same string
						res  Result
					}{same, res})
					break files
				default:
					return res, nil // a record that differs, an outage or a fork decides
				}
			}
		}
		for _, u := range unknown {
			if verified[u.same] {
				continue
			}
			if !v.cfg.PassUnverified {
				return u.res, nil // refused whatever the other tags are
			}
			if notFound == nil {
				nf := u.res
				notFound = &nf
			}
		}
	}
	switch {
	case notFound != nil:
		return *notFound, nil
	case pass == nil:
		tag := tagNames[0]
		return Result{Verdict: sumdb.Verdict{Module: module.Version{Path: roots[0].path, Version: path.Base(tag)}, Outcome: sumdb.NotFound,
			Reason: "no reading of its tags is a module the go command would accept"}, Tag: tag, Commit: commit}, nil
	}
	if err := v.keep(ctx, key, r, *pass, tags, objs); err != nil {
		return Result{}, err
	}
	return *pass, nil
}

// fetchInto fetches objs from repoURL into r at depth 1.
func (v *Verifier) fetchInto(ctx context.Context, r *repo, repoURL string, objs []string) error {
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
	shallow, ferr := v.fetchPack(ctx, repoURL, objs, pw, v.cfg.MaxPackBytes)
	pw.Close()
	ierr := <-done
	if ferr != nil {
		return fmt.Errorf("vcs: %w", ferr)
	}
	if ierr != nil {
		return fmt.Errorf("vcs: storing the pack of %s from %s: %w", objs[0], repoURL, ierr)
	}
	if len(shallow) > 0 {
		if err := os.WriteFile(filepath.Join(r.dir, "shallow"), []byte(strings.Join(shallow, "\n")+"\n"), 0o644); err != nil {
			return fmt.Errorf("vcs: %w", err)
		}
	}
	return nil
}

// declaredRoots are the module path prefixes that the go.mod files a tag
// could use declare: the module line of <dir>/go.mod, and for a major
// version 2 or more of <dir>/vN/go.mod, less the major suffix and the
// tag's directory. A client that reaches the repository through an import
// path sumgate did not see discovered (a vanity host it does not
// intercept) uses the path the go.mod declares, so that reading is
// checked too.
func (r *repo) declaredRoots(ctx context.Context, commit, tag string) []root {
	dir, vers := path.Dir(tag), path.Base(tag)
	if dir == "." {
		dir = ""
	}
	files := []string{path.Join(dir, "go.mod")}
	if m := semver.Major(vers); m != "v0" && m != "v1" {
		files = append(files, path.Join(dir, m, "go.mod"))
	}
	var out []root
	for _, f := range files {
		data, err := r.readFile(ctx, commit, f, maxGoMod)
		if err != nil {
			continue
		}
		p := modfile.ModulePath(data)
		if prefix, _, ok := module.SplitPathVersion(p); ok && !strings.HasPrefix(p, "gopkg.in/") {
			p = prefix
		}
		if dir != "" {
			var ok bool
			if p, ok = strings.CutSuffix(p, "/"+dir); !ok {
				continue
			}
		}
		if p != "" && !slices.Contains(out, root{path: p}) {
			out = append(out, root{path: p})
		}
	}
	return out
}
