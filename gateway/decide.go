package gateway

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/sumdb"
)

// policy is the part of the configuration that decides requests. It is
// built once, in New, and never changes.
type requestPolicy struct {
	intercept  interceptList    // which hosts are intercepted
	origins    []origin         // module proxies, by host and path prefix
	tunnel     TunnelPolicy     // TunnelAllow or TunnelDeny
	vcs        VCSPolicy        // VCSVerify, VCSAllow, VCSPrivateOnly or VCSDeny
	unverified UnverifiedPolicy // what passes that cannot be verified
	private    string           // GOPRIVATE-syntax patterns of private module paths
}

// origin is one module proxy: a host and a path prefix ("" or "/goproxy").
type origin struct {
	host, prefix string
}

// parseOrigin parses a module proxy base URL: https, a host on port 443,
// and an optional path prefix that is already canonical (lower case, no
// escapes, no empty or dot segments), so that it is compared with request
// paths exactly as written. Anything else (a query, a fragment, user
// information) is an error: a prefix read differently here than where the
// URL was checked would leave the proxy's files unverified.
func parseOrigin(base string) (origin, error) {
	u, err := url.Parse(base)
	if err != nil {
		return origin{}, fmt.Errorf("gateway: module proxy %q: %w", base, err)
	}
	prefix := strings.TrimSuffix(u.EscapedPath(), "/")
	switch {
	case u.Scheme != "https" || u.Host == "":
		return origin{}, fmt.Errorf("gateway: module proxy %q is not an https URL", base)
	case u.Port() != "" && u.Port() != "443":
		return origin{}, fmt.Errorf("gateway: module proxy %q: only port 443 is intercepted", base)
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(base, "?#"):
		return origin{}, fmt.Errorf("gateway: module proxy %q must not have user information, a query or a fragment", base)
	case prefix != "" && (prefix != strings.ToLower(prefix) || strings.ContainsAny(prefix, `%\;`) ||
		strings.Contains(prefix+"/", "//") || strings.Contains(prefix+"/", "./")):
		return origin{}, fmt.Errorf("gateway: module proxy %q: the path prefix must be lower case, with no escapes, empty or dot segments", base)
	}
	return origin{host: canonicalHost(u.Host), prefix: prefix}, nil
}

// canonicalHost is the one form of a host name that sumgate compares:
// lower case, without a port, without IPv6 brackets and without the
// trailing dot of a fully qualified name ("goproxy.cn." is "goproxy.cn").
// Every host name that enters the gateway (CONNECT targets, SNI, Host
// headers, request URLs, configuration) goes through it.
func canonicalHost(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		hostport = h
	}
	hostport = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
	return strings.ToLower(strings.TrimSuffix(hostport, "."))
}

// requestLine is what decides a request that is not a CONNECT.
type requestLine struct {
	method  string
	scheme  string     // the request URL's scheme: "https" inside a tunnel
	host    string     // the Host header, canonical
	urlHost string     // the request URL's host, canonical
	path    string     // the request URL's path, escaped exactly as sent
	query   url.Values // the request URL's query, parsed
	rawQ    string     // the request URL's query, exactly as sent
	rawURL  string     // the request URL as sent, for plain http
	tunnel  string     // the intercepted tunnel's host; "" for plain http
}

// lineOf is the requestLine of req, inside the tunnel to host ("" for
// plain http).
func lineOf(req *http.Request, host string) requestLine {
	return requestLine{
		method:  req.Method,
		scheme:  req.URL.Scheme,
		host:    canonicalHost(req.Host),
		urlHost: canonicalHost(req.URL.Host),
		path:    req.URL.EscapedPath(),
		query:   req.URL.Query(),
		rawQ:    req.URL.RawQuery,
		rawURL:  req.URL.String(),
		tunnel:  host,
	}
}

// action is what sumgate does with a request.
type action int

const (
	actRefuse  action = iota + 1 // answer status and reason; nothing goes upstream
	actVerify                    // fetch the module file, verify it, pass it only if it passes
	actPass                      // forward inside the tunnel and stream the answer back
	actForward                   // forward plain http and stream the answer back
	actGit                       // police a git fetch (vcs: verify): pass it upstream only if what it wants is verified
)

// A decision is what decideRequest concluded about one request.
// Refusals carry status and reason; every other action carries the
// upstream URL to use, exactly: the request goes upstream only as that
// URL.
type decision struct {
	action action
	rule   string           // the rule that decided, as docs/audit.md lists them
	status int              // actRefuse: the status to answer
	reason string           // actRefuse: the text to answer and record
	mod    *moduleRequest   // a module proxy request (verified, or metadata passed through)
	any    []module.Version // a module file on a host of unknown prefix: every reading of its URL (see Fetcher.FetchAny)
	vcs    string           // a direct VCS fetch: the module path it is attributed to
	repo   string           // actGit: the repository's URL, as the client named it
	learn  bool             // go-get discovery under vcs: verify: its answer maps import paths to repositories
	url    string           // the upstream URL
}

// auditName is the sumgate.decision value of d.
func (d decision) auditName() string {
	switch d.action {
	case actRefuse:
		return DecisionDeny
	case actForward:
		return DecisionForward
	}
	return DecisionIntercept
}

func refusal(status int, rule, format string, args ...any) decision {
	return decision{action: actRefuse, rule: rule, status: status, reason: "sumgate: " + fmt.Sprintf(format, args...)}
}

// decide is the whole policy for a request that is not a CONNECT. It
// reads nothing but r and the configuration, and never touches the
// network.
//
// Plain http: intercepted hosts are reached over https only; other hosts
// follow the tunnel policy. Inside an intercepted tunnel: the request
// must name the tunnel's host and have a canonical path; module files
// (.zip, .mod) on a module proxy are verified; other module proxy
// requests (list, @latest, .info, /sumdb/) and everything else pass
// through; git smart HTTP and go-get discovery are attributed to a module
// path and decided by the vcs policy.
func (p *requestPolicy) decide(r requestLine) decision {
	if r.tunnel == "" {
		switch {
		case r.scheme != "http" || r.urlHost == "":
			return refusal(http.StatusBadRequest, "not-a-proxy-request", "not a proxy request; set HTTPS_PROXY=http://<this address> to use sumgate")
		case p.intercept.intercepts(r.urlHost):
			return refusal(http.StatusForbidden, "https-only", "%s is reached over https only: use https://%s", r.urlHost, r.urlHost)
		case p.tunnel != TunnelAllow:
			return refusal(http.StatusForbidden, "tunnel: deny", "http://%s refused: only intercepted hosts are reachable (tunnel: deny)", r.urlHost)
		}
		return decision{action: actForward, rule: "tunnel: allow", url: r.rawURL}
	}
	if r.host != r.tunnel || r.urlHost != r.tunnel {
		other := r.host
		if other == r.tunnel {
			other = r.urlHost
		}
		return refusal(http.StatusForbidden, "host-pin", "request for host %q inside a tunnel to %q refused: a tunnel carries requests for its own host only", other, r.tunnel)
	}
	path, why := p.canonicalPath(r.tunnel, r.path)
	if why != "" {
		return refusal(http.StatusBadRequest, "path-canonical", "refused https://%s%s: the path is not canonical: %s", r.tunnel, r.path, why)
	}
	pass := exactURL(r)
	if mr, ok, err := p.classify(r.tunnel, path); ok {
		switch {
		case err != nil:
			return refusal(http.StatusBadRequest, "module-path", "%v", err)
		case mr.kind != sumdb.KindZip && mr.kind != sumdb.KindMod:
			return decision{action: actPass, rule: "pass-through", mod: &mr, url: pass}
		case r.method != http.MethodGet && r.method != http.MethodHead:
			d := refusal(http.StatusMethodNotAllowed, "module-method", "module files are fetched with GET, not %s", r.method)
			d.mod = &mr
			return d
		}
		// The query is not forwarded: the file is the path's.
		return decision{action: actVerify, rule: "verify", mod: &mr, url: "https://" + r.tunnel + r.path}
	}
	if cands, mr, ok, err := anyModuleFile(r.tunnel, path); ok {
		switch {
		case err != nil:
			return refusal(http.StatusBadRequest, "module-path", "%v", err)
		case r.method != http.MethodGet && r.method != http.MethodHead:
			return refusal(http.StatusMethodNotAllowed, "module-method", "module files are fetched with GET, not %s", r.method)
		}
		return decision{action: actVerify, rule: "verify: any host", mod: &mr, any: cands, url: "https://" + r.tunnel + r.path}
	}
	if modPath, ok := vcsModulePath(r.tunnel, path, r.query); ok {
		rule := "vcs: " + string(p.vcs)
		private := module.MatchPrefixPatterns(p.private, modPath)
		if p.vcs == VCSDeny || p.vcs == VCSPrivateOnly && !private {
			d := refusal(http.StatusForbidden, rule, "direct VCS access to %s refused (sumgate policy vcs: %s).\n"+
				"Fetch public modules through a module proxy (the default GOPROXY), where sumgate verifies them.", modPath, p.vcs)
			d.vcs = modPath
			return d
		}
		d := decision{action: actPass, rule: rule, vcs: modPath, url: pass}
		if p.vcs != VCSVerify || private {
			return d
		}
		return p.decideGit(r, path, d)
	}
	return decision{action: actPass, rule: "pass-through", url: pass}
}

// decideGit is the vcs: verify policy for git traffic on an intercepted
// host, d being the decision to pass it. A fetch from git-upload-pack is
// policed (actGit); the ref advertisement, pushes and go-get discovery
// pass (discovery is read, to learn the repository of a vanity import
// path); git's dumb protocol, whose object requests cannot be tied to a
// revision, follows on_unverified.
func (p *requestPolicy) decideGit(r requestLine, path string, d decision) decision {
	switch {
	case r.query.Get("go-get") == "1":
		d.learn = true
		return d
	case strings.HasSuffix(path, "/git-upload-pack"):
		if r.method != http.MethodPost {
			break
		}
		d.action = actGit
		d.repo = "https://" + r.tunnel + strings.TrimSuffix(r.path, "/git-upload-pack")
		return d
	case strings.HasSuffix(path, "/info/refs") && (r.rawQ == "service=git-upload-pack" || r.rawQ == "service=git-receive-pack"),
		strings.HasSuffix(path, "/git-receive-pack"):
		return d
	}
	if p.unverified == UnverifiedAllow {
		d.rule = "vcs: verify, on_unverified: allow"
		return d
	}
	refused := refusal(http.StatusForbidden, "vcs: verify", "%s %s refused: sumgate verifies direct git fetches only over git's smart HTTP protocol "+
		"(on_unverified: block).\nFetch public modules through a module proxy (the default GOPROXY), where sumgate verifies them.", r.method, exactURL(r))
	refused.vcs = d.vcs
	return refused
}

// exactURL is the URL of a request inside a tunnel, exactly as sent.
func exactURL(r requestLine) string {
	u := "https://" + r.tunnel + r.path
	if r.rawQ != "" {
		u += "?" + r.rawQ
	}
	return u
}

// vcsModulePath attributes git smart-HTTP traffic and go-get discovery to
// a module path: github.com/<owner>/<repo> on github.com, the repository
// path elsewhere. path is the decoded request path.
//
// Git's smart protocol (info/refs?service=git-…, git-upload-pack,
// git-receive-pack) and its dumb one (info/refs without a service, HEAD,
// objects/…, the alternates files) are both recognised, whatever the
// query says: a repository's refs or objects are never passed as plain
// web traffic. So is Mercurial's (?cmd=…), off github.com.
func vcsModulePath(host, path string, query url.Values) (string, bool) {
	path = strings.Trim(path, "/")
	switch host {
	case "codeload.github.com":
		return "", false // archives of a repository, not git
	case "github.com":
		// Repositories are exactly <owner>/<repo>: git's paths follow
		// them directly, so /owner/repo/tree/HEAD is a web page.
		segs := strings.Split(path, "/")
		if len(segs) < 2 || segs[0] == "" || segs[1] == "" {
			return "", false
		}
		rest := segs[2:]
		switch {
		case query.Get("go-get") == "1",
			len(rest) == 2 && rest[0] == "info" && rest[1] == "refs",
			len(rest) == 1 && (rest[0] == "git-upload-pack" || rest[0] == "git-receive-pack" || rest[0] == "HEAD"),
			len(rest) >= 2 && rest[0] == "objects":
			return host + "/" + segs[0] + "/" + strings.TrimSuffix(segs[1], ".git"), true
		}
		return "", false
	}
	switch {
	case query.Get("go-get") == "1":
	case query.Get("cmd") != "":
		// Mercurial's HTTP protocol (?cmd=capabilities, lookup, getbundle).
	case strings.HasSuffix(path, "/info/refs"):
		path = strings.TrimSuffix(path, "/info/refs")
	case strings.HasSuffix(path, "/git-upload-pack"), strings.HasSuffix(path, "/git-receive-pack"), strings.HasSuffix(path, "/HEAD"):
		path = path[:strings.LastIndexByte(path, '/')]
	case strings.Contains(path, "/objects/"):
		path = path[:strings.Index(path, "/objects/")]
	default:
		return "", false
	}
	path = strings.TrimSuffix(path, ".git")
	if path == "" {
		return "", false
	}
	return host + "/" + path, true
}

// moduleRequest is a GOPROXY protocol request (go help goproxy).
type moduleRequest struct {
	mod    module.Version // decoded; as much of it as the request names
	kind   sumdb.Kind     // KindZip or KindMod; 0 for list, @latest, .info and /sumdb/
	file   string         // zip, mod, info, list, latest or sumdb
	origin string         // the module proxy's base URL
}

// classify reports whether the decoded path on host is a module proxy
// request, and which. A malformed module path or version, or an unknown
// file under /@v/, is an error.
func (p *requestPolicy) classify(host, path string) (moduleRequest, bool, error) {
	for _, o := range p.origins {
		if o.host != host {
			continue
		}
		rest, ok := strings.CutPrefix(path, o.prefix+"/")
		if !ok {
			continue
		}
		base := "https://" + o.host + o.prefix
		if strings.HasPrefix(rest, "sumdb/") {
			return moduleRequest{file: "sumdb", origin: base}, true, nil
		}
		escPath, file, ok := strings.Cut(rest, "/@v/")
		if !ok {
			if escPath, ok = strings.CutSuffix(rest, "/@latest"); !ok {
				return moduleRequest{}, false, nil
			}
			p, err := module.UnescapePath(escPath)
			return moduleRequest{mod: module.Version{Path: p}, file: "latest", origin: base}, true, err
		}
		if file == "list" {
			p, err := module.UnescapePath(escPath)
			return moduleRequest{mod: module.Version{Path: p}, file: "list", origin: base}, true, err
		}
		var kind sumdb.Kind
		escVers, ext, found := cutLast(file, ".")
		switch {
		case found && ext == "zip":
			kind = sumdb.KindZip
		case found && ext == "mod":
			kind = sumdb.KindMod
		case found && ext == "info":
			// The go command asks .info of any query, not only canonical
			// versions (m@master, m@<commit>, m@v1): it is metadata,
			// passed through, so the version need only be well escaped.
			p, err := module.UnescapePath(escPath)
			if err != nil {
				return moduleRequest{}, true, fmt.Errorf("invalid module path %q: %w", escPath, err)
			}
			v, err := module.UnescapeVersion(escVers)
			if err != nil {
				return moduleRequest{}, true, fmt.Errorf("invalid version %q of %s: %w", escVers, p, err)
			}
			return moduleRequest{mod: module.Version{Path: p, Version: v}, file: ext, origin: base}, true, nil
		default:
			return moduleRequest{}, true, fmt.Errorf("unknown module proxy request %q", path)
		}
		m, err := sumdb.ParseEscaped(escPath, escVers)
		if err != nil {
			return moduleRequest{}, true, err
		}
		return moduleRequest{mod: m, kind: kind, file: ext, origin: base}, true, nil
	}
	return moduleRequest{}, false, nil
}

// anyModuleFile reports whether the decoded path, on an intercepted host
// that is not a known module proxy (or outside its prefix), asks for a
// module .zip or .mod in the GOPROXY protocol, and returns every reading
// of it as a module version: each split of the path before /@v/ whose
// remainder is a valid module path, with the version in the file name.
// A path that names such a file but no valid module version is an error.
func anyModuleFile(host, path string) ([]module.Version, moduleRequest, bool, error) {
	i := strings.LastIndex(path, "/@v/")
	if i < 0 {
		return nil, moduleRequest{}, false, nil
	}
	escVers, ext, _ := cutLast(path[i+len("/@v/"):], ".")
	var kind sumdb.Kind
	switch ext {
	case "zip":
		kind = sumdb.KindZip
	case "mod":
		kind = sumdb.KindMod
	default:
		return nil, moduleRequest{}, false, nil // metadata, or not the module protocol
	}
	mr := moduleRequest{kind: kind, file: ext, origin: "https://" + host}
	vers, err := module.UnescapeVersion(escVers)
	if err != nil || module.CanonicalVersion(vers) != vers {
		return nil, mr, true, fmt.Errorf("%s looks like a module file, but %q is not a canonical version", path, escVers)
	}
	var cands []module.Version
	segs := strings.Split(strings.Trim(path[:i], "/"), "/")
	for j := range segs {
		p, err := module.UnescapePath(strings.Join(segs[j:], "/"))
		if m := (module.Version{Path: p, Version: vers}); err == nil && sumdb.CheckModule(m) == nil {
			cands = append(cands, m)
		}
	}
	if len(cands) == 0 {
		return nil, mr, true, fmt.Errorf("%s looks like a module file, but names no valid module path", path)
	}
	mr.mod = cands[len(cands)-1] // the shortest reading, for the audit record until a verdict names one
	return cands, mr, true, nil
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}
