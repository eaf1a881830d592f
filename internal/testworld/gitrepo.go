package testworld

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// GitHostAlt is a code host of the world other than GitHubHost, such as a
// company's own git server: the go command knows nothing about it, so it
// finds a repository there by ?go-get=1 discovery, which the host answers
// for every repository NewGitRepo made on it.
const GitHostAlt = "git.testworld.example"

// VanityHost serves only the go-import tags a test sets with ServeGoImport,
// as a vanity import host (gopkg.in, go.uber.org, a company's domain) does:
// its module paths live in repositories on another host.
const VanityHost = "go.testworld.example"

// codeHosts are the hosts NewGitRepo and ServeGoImport accept.
var codeHosts = []string{GitHubHost, GitHostAlt, VanityHost}

// GitRepoOptions are the options of NewGitRepo. The zero value is a
// public repository.
type GitRepoOptions struct {
	// Private makes the repository answer 401, with a WWW-Authenticate
	// Basic challenge, to every smart-HTTP request that does not carry the
	// repository's User and Password. Discovery (?go-get=1) stays
	// anonymous, as on real code hosts.
	Private bool
}

// A GitRepo is a bare git repository that the world serves over git's
// smart HTTP protocol (git http-backend, protocols v0, v1 and v2), at
// https://<host>/<path> and https://<host>/<path>.git. Tests shape it with
// Commit, Tag and TagAnnotated; every change is visible to the next
// request. Its exported fields are set by NewGitRepo and must not be
// modified. Its methods are safe for concurrent use.
type GitRepo struct {
	// Host is the code host serving the repository (GitHubHost,
	// GitHostAlt or VanityHost).
	Host string
	// Path is the repository's URL path without the leading slash and
	// without ".git", e.g. "owner/name".
	Path string
	// User and Password are the only credentials a private repository
	// accepts (HTTP Basic). They are set for public repositories too,
	// which ignore them.
	User, Password string
	// Private is GitRepoOptions.Private.
	Private bool

	gitBin  string
	root    string     // temporary directory holding the repository and its HOME
	bare    string     // the bare repository, root/repo.git
	mu      sync.Mutex // serialises Commit, Tag and TagAnnotated
	commits int        // commits made so far: the next commit's date offset
}

// gitWorld is the part of World that serves git: repositories, go-import
// tags and the log of code-host requests. It has its own lock.
type gitWorld struct {
	mu      sync.Mutex
	repos   map[string]*GitRepo // "host/path" -> repository
	imports []goImport          // ServeGoImport entries, latest last
	log     []*GitRequest       // GitRequests, in order of arrival
}

// A goImport is one go-import tag served by ServeGoImport.
type goImport struct {
	host, prefix, repoURL string
}

// gitEnv is the environment of every git command the world runs, on either
// side: no system or user configuration, a fixed identity.
func gitEnv(home string) []string {
	return []string{
		"HOME=" + home,
		"PATH=" + os.Getenv("PATH"),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_AUTHOR_NAME=testworld", "GIT_AUTHOR_EMAIL=testworld@example.com",
		"GIT_COMMITTER_NAME=testworld", "GIT_COMMITTER_EMAIL=testworld@example.com",
		"LC_ALL=C",
	}
}

// NewGitRepo makes an empty bare repository that the world serves at
// https://<host>/<path> and https://<host>/<path>.git until t ends. host is
// GitHubHost, GitHostAlt or VanityHost; on GitHubHost, path must be
// "owner/name", since that is all the go command maps to a repository
// there. A repository made on the same host and path replaces the earlier
// one until t ends. NewGitRepo skips t when git is not installed.
//
// The repository allows any object in a want (uploadpack.allowAnySHA1InWant),
// as GitHub does: a commit a moved tag no longer names can still be
// fetched by its hash.
func (w *World) NewGitRepo(t testing.TB, host, path string, opts GitRepoOptions) *GitRepo {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed")
	}
	host = strings.ToLower(host)
	if !slices.Contains(codeHosts, host) {
		t.Fatalf("testworld: NewGitRepo: %s is not a code host of the world (%v)", host, codeHosts)
	}
	path = strings.TrimSuffix(strings.Trim(path, "/"), ".git")
	if path == "" || strings.Contains(path, "..") || (host == GitHubHost && strings.Count(path, "/") != 1) {
		t.Fatalf("testworld: NewGitRepo: bad repository path %q for %s", path, host)
	}
	secret := make([]byte, 12)
	rand.Read(secret)
	r := &GitRepo{
		Host:     host,
		Path:     path,
		User:     "testworld",
		Password: hex.EncodeToString(secret),
		Private:  opts.Private,
		gitBin:   gitBin,
		root:     t.TempDir(),
	}
	r.bare = filepath.Join(r.root, "repo.git")
	if _, err := r.git(nil, "init", "-q", "--bare", "-b", "main", r.bare); err != nil {
		t.Fatalf("testworld: %v", err)
	}
	for _, kv := range [][2]string{
		{"uploadpack.allowAnySHA1InWant", "true"},
		{"uploadpack.allowFilter", "true"},
		{"http.receivepack", "false"},
	} {
		if _, err := r.git(nil, "config", kv[0], kv[1]); err != nil {
			t.Fatalf("testworld: %v", err)
		}
	}

	key := host + "/" + path
	w.gits.mu.Lock()
	if w.gits.repos == nil {
		w.gits.repos = make(map[string]*GitRepo)
	}
	prev := w.gits.repos[key]
	w.gits.repos[key] = r
	w.gits.mu.Unlock()
	t.Cleanup(func() {
		w.gits.mu.Lock()
		defer w.gits.mu.Unlock()
		if w.gits.repos[key] == r {
			if prev != nil {
				w.gits.repos[key] = prev
			} else {
				delete(w.gits.repos, key)
			}
		}
	})
	return r
}

// git runs git in the bare repository (or, before it exists, in root) with
// stdin, and returns its standard output.
func (r *GitRepo) git(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command(r.gitBin, args...)
	cmd.Dir = r.root
	if _, err := os.Stat(r.bare); err == nil {
		cmd.Dir = r.bare
	}
	cmd.Env = gitEnv(r.root)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// commitEpoch is the date of a repository's first commit; each later one
// is a minute later, so that commit ids do not depend on the clock.
var commitEpoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Commit makes a commit on branch main, on top of its previous commit if
// any, whose tree is exactly files (slash-separated path -> content; all
// files are mode 100644), and returns the commit's id. A file such as
// .gitattributes is just a file. Commit dates are fixed, so the same
// sequence of commits yields the same ids in every world.
func (r *GitRepo) Commit(t testing.TB, files map[string]string) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	date := commitEpoch.Add(time.Duration(r.commits) * time.Minute).Unix()
	var b bytes.Buffer
	fmt.Fprintf(&b, "commit refs/heads/main\ncommitter testworld <testworld@example.com> %d +0000\n", date)
	msg := fmt.Sprintf("commit %d\n", r.commits+1)
	fmt.Fprintf(&b, "data %d\n%s", len(msg), msg)
	if r.commits > 0 {
		b.WriteString("from refs/heads/main^0\n")
	}
	b.WriteString("deleteall\n")
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if name == "" || strings.ContainsAny(name, "\n\"") || strings.HasPrefix(name, "/") {
			t.Fatalf("testworld: Commit: unsupported file name %q", name)
		}
		fmt.Fprintf(&b, "M 100644 inline %s\ndata %d\n%s\n", name, len(files[name]), files[name])
	}
	b.WriteString("\n")
	if _, err := r.git(b.Bytes(), "fast-import", "--quiet"); err != nil {
		t.Fatalf("testworld: Commit: %v", err)
	}
	r.commits++
	out, err := r.git(nil, "rev-parse", "refs/heads/main")
	if err != nil {
		t.Fatalf("testworld: Commit: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// tagDate is the tagger date of every annotated tag.
var tagDate = commitEpoch.Add(-time.Hour)

// Tag makes name (e.g. "v1.0.0" or "sub/v1.2.3", without "refs/tags/") a
// lightweight tag of commit, moving it if it exists. The next fetch sees
// the tag where it is now.
func (r *GitRepo) Tag(t testing.TB, name, commit string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.git(nil, "tag", "-f", "--no-sign", "--end-of-options", name, commit); err != nil {
		t.Fatalf("testworld: Tag: %v", err)
	}
}

// TagAnnotated is Tag with an annotated tag object (message "tag <name>",
// fixed tagger and date) instead of a lightweight tag. It returns the tag
// object's id, which is what a fetch of the tag wants, not the commit's.
func (r *GitRepo) TagAnnotated(t testing.TB, name, commit string) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(r.gitBin, "tag", "-f", "-a", "--no-sign", "-m", "tag "+name, "--end-of-options", name, commit)
	cmd.Dir = r.bare
	cmd.Env = append(gitEnv(r.root), fmt.Sprintf("GIT_COMMITTER_DATE=%d +0000", tagDate.Unix()))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testworld: TagAnnotated: git tag: %v\n%s", err, out)
	}
	out, err := r.git(nil, "rev-parse", "--verify", "--end-of-options", "refs/tags/"+name)
	if err != nil {
		t.Fatalf("testworld: TagAnnotated: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// RemoteURL returns "https://<host>/<path>", the URL the go command uses
// for the repository.
func (r *GitRepo) RemoteURL() string { return "https://" + r.Host + "/" + r.Path }

// Netrc returns the .netrc line ("machine <host> login <user> password
// <password>\n") that makes the go command and git send the repository's
// credentials. Write it to $HOME/.netrc of the client.
func (r *GitRepo) Netrc() string {
	return fmt.Sprintf("machine %s login %s password %s\n", r.Host, r.User, r.Password)
}

// serve answers one smart-HTTP request for the repository; rest is the URL
// path after the repository's, e.g. "info/refs" or "git-upload-pack".
func (r *GitRepo) serve(rw http.ResponseWriter, req *http.Request, rest string) {
	if r.Private {
		if u, p, ok := req.BasicAuth(); !ok || u != r.User || p != r.Password {
			rw.Header().Set("WWW-Authenticate", `Basic realm="testworld git"`)
			http.Error(rw, "authentication required", http.StatusUnauthorized)
			return
		}
	}
	env := []string{"GIT_PROJECT_ROOT=" + r.root, "GIT_HTTP_EXPORT_ALL=1"}
	for _, kv := range gitEnv(r.root) {
		if !strings.HasPrefix(kv, "PATH=") { // cgi sets PATH itself
			env = append(env, kv)
		}
	}
	// Protocol v2 needs the Git-Protocol header in GIT_PROTOCOL, as git's
	// documented Apache configuration passes it. git http-backend 2.34 and
	// later also read it from HTTP_GIT_PROTOCOL, which cgi sets; older ones
	// speak v0 without this.
	if v := req.Header.Get("Git-Protocol"); v != "" {
		env = append(env, "GIT_PROTOCOL="+v)
	}
	req2 := req.Clone(req.Context())
	req2.URL.Path = "/repo.git/" + rest
	req2.URL.RawPath = ""
	(&cgi.Handler{Path: r.gitBin, Args: []string{"http-backend"}, Env: env, Dir: r.root}).ServeHTTP(rw, req2)
}

// A GitRequest is one request a code host of the world (GitHubHost,
// GitHostAlt, VanityHost) received, as recorded for GitRequests.
type GitRequest struct {
	Host        string // lower case, without port
	Method      string // GET, POST
	Path        string // URL path, e.g. "/owner/repo/info/refs"
	Query       string // raw query, e.g. "service=git-upload-pack" or "go-get=1"
	GitProtocol string // the Git-Protocol header, e.g. "version=2"
	Status      int    // the response's status code
	// Body is the start of the request body as the server read it, at most
	// 4 KiB, decompressed when the request's Content-Encoding is gzip (git
	// compresses larger upload-pack requests).
	Body []byte
}

// maxRecordedBody bounds GitRequest.Body.
const maxRecordedBody = 4 << 10

// PktLines decodes Body as git pkt-lines: each data line without its
// trailing newline, and "0000" (flush), "0001" (delim) and "0002"
// (response end) for the special packets. It stops at the first malformed
// or truncated packet. For a protocol v2 upload-pack request the lines are
// e.g. "command=fetch", "agent=git/2.39.5", "0001", "want <id>",
// "deepen 1", "done", "0000".
func (g GitRequest) PktLines() []string {
	var lines []string
	b := g.Body
	for len(b) >= 4 {
		var n int
		if _, err := fmt.Sscanf(string(b[:4]), "%04x", &n); err != nil {
			break
		}
		if n < 4 {
			lines = append(lines, string(b[:4]))
			b = b[4:]
			continue
		}
		if n > len(b) {
			break
		}
		lines = append(lines, strings.TrimSuffix(string(b[4:n]), "\n"))
		b = b[n:]
	}
	return lines
}

// String formats the request on one line: method, host, path, query,
// Git-Protocol header, status, and the pkt-lines of a POST's body.
func (g GitRequest) String() string {
	s := fmt.Sprintf("%s %s%s", g.Method, g.Host, g.Path)
	if g.Query != "" {
		s += "?" + g.Query
	}
	if g.GitProtocol != "" {
		s += " [Git-Protocol: " + g.GitProtocol + "]"
	}
	s += fmt.Sprintf(" -> %d", g.Status)
	if g.Method == http.MethodPost {
		s += fmt.Sprintf(" %q", g.PktLines())
	}
	return s
}

// GitRequests returns every request the code hosts (GitHubHost,
// GitHostAlt, VanityHost) have answered themselves since the world started
// or ResetGitRequests, in order of arrival: discovery (?go-get=1) and
// smart HTTP alike. Requests answered by an Override are not recorded.
// A request is recorded once its answer is complete.
func (w *World) GitRequests() []GitRequest {
	w.gits.mu.Lock()
	defer w.gits.mu.Unlock()
	out := make([]GitRequest, len(w.gits.log))
	for i, g := range w.gits.log {
		out[i] = *g
		out[i].Body = bytes.Clone(g.Body)
	}
	return out
}

// ResetGitRequests forgets every request GitRequests would return.
func (w *World) ResetGitRequests() {
	w.gits.mu.Lock()
	defer w.gits.mu.Unlock()
	w.gits.log = nil
}

// ServeGoImport makes host (GitHubHost, GitHostAlt or VanityHost) answer
// ?go-get=1 discovery for importPrefix and every path under it with
//
//	<meta name="go-import" content="<importPrefix> git <repoURL>">
//
// until t ends. importPrefix is an import path on host, such as
// "go.testworld.example/foo"; repoURL is where the go command then fetches
// with git, such as a GitRepo's RemoteURL. Among matching prefixes the
// longest wins, then the latest. It takes precedence over the tags a code
// host answers by itself (for its own repositories, and on GitHubHost for
// any "owner/name").
func (w *World) ServeGoImport(t testing.TB, host, importPrefix, repoURL string) {
	t.Helper()
	host = strings.ToLower(host)
	if !slices.Contains(codeHosts, host) {
		t.Fatalf("testworld: ServeGoImport: %s is not a code host of the world (%v)", host, codeHosts)
	}
	if importPrefix != host && !strings.HasPrefix(importPrefix, host+"/") {
		t.Fatalf("testworld: ServeGoImport: import prefix %q is not on host %s", importPrefix, host)
	}
	gi := &goImport{host: host, prefix: strings.TrimSuffix(importPrefix, "/"), repoURL: repoURL}
	w.gits.mu.Lock()
	w.gits.imports = append(w.gits.imports, *gi)
	w.gits.mu.Unlock()
	t.Cleanup(func() {
		w.gits.mu.Lock()
		defer w.gits.mu.Unlock()
		for i := len(w.gits.imports) - 1; i >= 0; i-- {
			if w.gits.imports[i] == *gi {
				w.gits.imports = slices.Delete(w.gits.imports, i, i+1)
				break
			}
		}
	})
}

// statusRecorder remembers the status code written through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// bodyRecorder keeps the first bytes read through it.
type bodyRecorder struct {
	io.ReadCloser
	buf bytes.Buffer
}

// maxRawBody bounds what bodyRecorder keeps, enough for 4 KiB once
// decompressed in all but pathological cases.
const maxRawBody = 64 << 10

func (b *bodyRecorder) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if room := maxRawBody - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(n, room)])
	}
	return n, err
}

// serveCodeHost answers, and records for GitRequests, one request to a
// code host: ?go-get=1 discovery, or git's smart HTTP for a repository
// made by NewGitRepo on that host; 404 to anything else.
func (w *World) serveCodeHost(rw http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	rec := &GitRequest{Host: host, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, GitProtocol: r.Header.Get("Git-Protocol")}
	body := &bodyRecorder{ReadCloser: r.Body}
	r.Body = body
	srw := &statusRecorder{ResponseWriter: rw}
	defer func() {
		rec.Body = recordedBody(body.buf.Bytes(), r.Header.Get("Content-Encoding"))
		rec.Status = srw.status
		if rec.Status == 0 {
			rec.Status = http.StatusOK
		}
		w.gits.mu.Lock()
		w.gits.log = append(w.gits.log, rec)
		w.gits.mu.Unlock()
	}()

	if r.URL.Query().Get("go-get") == "1" {
		w.serveGoGet(srw, host, r.URL.Path)
		return
	}
	if repo, rest := w.gitRepoFor(host, r.URL.Path); repo != nil {
		repo.serve(srw, r, rest)
		return
	}
	http.Error(srw, "not found", http.StatusNotFound)
}

// recordedBody returns the first maxRecordedBody bytes of raw, decoded
// according to encoding ("gzip" or none).
func recordedBody(raw []byte, encoding string) []byte {
	if strings.EqualFold(encoding, "gzip") {
		if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
			out, _ := io.ReadAll(io.LimitReader(zr, maxRecordedBody)) // a prefix is fine
			return out
		}
	}
	return bytes.Clone(raw[:min(len(raw), maxRecordedBody)])
}

// gitRepoFor returns the repository on host whose URL path, with or
// without ".git", is a prefix of urlPath, the longest such, and the rest
// of urlPath after it; or nil.
func (w *World) gitRepoFor(host, urlPath string) (*GitRepo, string) {
	w.gits.mu.Lock()
	defer w.gits.mu.Unlock()
	var best *GitRepo
	var rest string
	for _, repo := range w.gits.repos {
		if repo.Host != host || (best != nil && len(repo.Path) <= len(best.Path)) {
			continue
		}
		for _, base := range []string{"/" + repo.Path + "/", "/" + repo.Path + ".git/"} {
			if r, ok := strings.CutPrefix(urlPath, base); ok {
				best, rest = repo, r
				break
			}
		}
	}
	return best, rest
}

// serveGoGet answers ?go-get=1 for host and urlPath: with ServeGoImport's
// tag for the longest matching prefix, else with the tag of the host's
// own repository under urlPath, else, on GitHubHost, with the tag of
// github.com/<owner>/<name> for any /<owner>/<name>[/...]; else 404.
func (w *World) serveGoGet(rw http.ResponseWriter, host, urlPath string) {
	full := host + strings.TrimSuffix(urlPath, "/")
	under := func(prefix string) bool { return full == prefix || strings.HasPrefix(full, prefix+"/") }
	var prefix, repoURL string
	w.gits.mu.Lock()
	for _, gi := range w.gits.imports {
		if gi.host == host && under(gi.prefix) && len(gi.prefix) >= len(prefix) {
			prefix, repoURL = gi.prefix, gi.repoURL
		}
	}
	if prefix == "" {
		for key, repo := range w.gits.repos {
			if repo.Host == host && under(key) && len(key) > len(prefix) {
				prefix, repoURL = key, repo.RemoteURL()
			}
		}
	}
	w.gits.mu.Unlock()
	if prefix == "" && host == GitHubHost {
		if parts := strings.Split(strings.TrimPrefix(urlPath, "/"), "/"); len(parts) >= 2 && parts[0] != "" && parts[1] != "" {
			prefix = GitHubHost + "/" + parts[0] + "/" + parts[1]
			repoURL = "https://" + prefix
		}
	}
	if prefix == "" {
		http.Error(rw, "not found", http.StatusNotFound)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(rw, "<!DOCTYPE html>\n<html><head>\n<meta name=\"go-import\" content=\"%s git %s\">\n</head><body></body></html>\n",
		html.EscapeString(prefix), html.EscapeString(repoURL))
}
