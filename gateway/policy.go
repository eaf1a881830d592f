package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/sync/errgroup"

	"github.com/sumgate/sumgate/internal/auditkey"
	"github.com/sumgate/sumgate/policy"
	"github.com/sumgate/sumgate/sumdb"
	"github.com/sumgate/sumgate/vcs"
)

// PolicyError is a module version the operator's policy (package policy)
// refuses: a deny rule, an advisory or the cooldown. Its Reason is the
// 403's text/plain body.
type PolicyError struct {
	Decision policy.Decision
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("policy refuses %s: %s", e.Decision.Module, strings.Join(policyIDs(e.Decision), ", "))
}

// policyIDs names what objected to a version: the deny rules, the
// advisories (with aliases), and "cooldown".
func policyIDs(d policy.Decision) []string {
	ids := append([]string(nil), d.Rules...)
	for _, f := range d.Advisories {
		ids = append(ids, f.ID)
	}
	if d.Cooldown != nil {
		ids = append(ids, "cooldown")
	}
	return ids
}

// policyAttrs are the span attributes of a policy decision.
func policyAttrs(d policy.Decision) []attribute.KeyValue {
	var as []attribute.KeyValue
	switch {
	case d.Block:
		as = append(as, auditkey.PolicyDecision.String("block"))
	case d.WouldBlock:
		as = append(as, auditkey.PolicyDecision.String("would-block"), auditkey.PolicyWouldBlock.Bool(true))
	default:
		as = append(as, auditkey.PolicyDecision.String("pass"))
	}
	if len(d.Rules) > 0 {
		as = append(as, auditkey.PolicyRules.StringSlice(d.Rules))
	}
	if len(d.Advisories) > 0 {
		var ids []string
		for _, f := range d.Advisories {
			ids = append(ids, f.ID)
			ids = append(ids, f.Aliases...)
		}
		as = append(as, auditkey.PolicyAdvisories.StringSlice(ids))
	}
	if d.Cooldown != nil {
		as = append(as, auditkey.PolicyCooldownEvidence.String(d.Cooldown.Evidence))
		if !d.Cooldown.Until.IsZero() {
			as = append(as, auditkey.PolicyCooldownUntil.String(d.Cooldown.Until.UTC().Format(time.RFC3339)))
		}
	}
	if len(d.Allowed) > 0 {
		as = append(as, auditkey.PolicyAllowed.StringSlice(d.Allowed))
	}
	if len(d.Waivers) > 0 {
		var ws []string
		for _, w := range d.Waivers {
			ws = append(ws, w.String())
		}
		as = append(as, auditkey.PolicyWaivers.StringSlice(ws))
	}
	return as
}

// policyGate applies the policy to module versions on their way to a
// client. It is nil when no policy is configured.
type policyGate struct {
	engine   *policy.Engine
	verifier *sumdb.Verifier
	upstream *http.Client
	counter  metric.Int64Counter
	infoMu   sync.Mutex
	infos    map[string]time.Time // .info times fetched, by URL; bounded by maxInfos
	gitMu    sync.Mutex
	gitSeen  map[string]gitPolicyRefusal // direct git fetches refused, by client, repository and wanted object; bounded by maxInfos
}

// gitPolicyRefusal is a direct git fetch the policy refused: the verified
// revision it asked for, and when.
type gitPolicyRefusal struct {
	res vcs.Result
	at  time.Time
}

// gitRefusalTTL is how long a policy refusal of a direct git fetch is
// applied to the client's fallback fetches of the same objects.
const gitRefusalTTL = 10 * time.Minute

// maxInfos bounds the .info times a policyGate remembers.
const maxInfos = 10000

// maxListAges bounds the versions of one list whose age is looked up for
// the cooldown, newest first: a list's purpose is to let the go command
// pick an allowed version, which is among the newest; older ones stay in
// the list and are refused, if they must be, at their .zip.
const maxListAges = 32

// maxPolicyBody bounds a version list or @latest answer read for
// filtering; a longer one is refused (a list of every version of a very
// large module is about 100 KB).
const maxPolicyBody = 4 << 20

func newPolicyGate(e *policy.Engine, v *sumdb.Verifier, up *http.Client, mp metric.MeterProvider) (*policyGate, error) {
	c, err := mp.Meter(scope).Int64Counter("sumgate.policy.decisions", metric.WithUnit("{decision}"),
		metric.WithDescription("Policy decisions on module versions that objected, by decision (block, would-block) and what objected (rule, advisory, cooldown)."))
	if err != nil {
		return nil, fmt.Errorf("gateway: creating metrics: %w", err)
	}
	return &policyGate{engine: e, verifier: v, upstream: up, counter: c,
		infos: make(map[string]time.Time), gitSeen: make(map[string]gitPolicyRefusal)}, nil
}

// count records an objection in sumgate.policy.decisions.
func (p *policyGate) count(ctx context.Context, d policy.Decision) {
	if !d.Objects() {
		return
	}
	decision := "block"
	if d.WouldBlock {
		decision = "would-block"
	}
	for _, id := range policyIDs(d) {
		what := "rule"
		switch {
		case id == "cooldown":
			what = "cooldown"
		case strings.ToUpper(id) == id:
			what = "advisory"
		}
		p.counter.Add(ctx, 1, metric.WithAttributes(auditkey.PolicyDecision.String(decision), attribute.String("sumgate.policy.objection", what)))
	}
}

// age returns the cooldown evidence for versions of a module served at
// base (a module proxy base URL with the module's escaped path, ending
// before "/@v/"): the tree-head history where it dates the version, and
// otherwise the module proxy's .info time, which is the publisher's word
// (none for base "": a direct VCS fetch).
func (p *policyGate) age(ctx context.Context, base string) policy.AgeFunc {
	return func(m module.Version) policy.Age {
		since, evidence, ok := p.verifier.LoggedBy(m)
		if ok {
			return policy.Age{Known: true, Since: since, Evidence: evidence}
		}
		if !p.verifier.IsPrivate(m.Path) && p.verifier.HistorySpans(p.engine.Cooldown()) {
			// The .info time stands in only where the history is too
			// short to date the version (a new installation), or for
			// a proof kept before record indexes were: a public
			// version the database has not proven (under
			// on_unverified: allow, or while it is unreachable) is not
			// dated by its publisher's word.
			if _, proven := p.verifier.Proven(m, sumdb.KindZip); !proven {
				return policy.Age{Evidence: evidence + "; the checksum database has not proven it, and the tree-head history spans the cooldown, so its .info time is not evidence"}
			}
		}
		ev, err := module.EscapeVersion(m.Version)
		if err != nil || base == "" {
			return policy.Age{Evidence: evidence}
		}
		t, err := p.infoTime(ctx, base+"/@v/"+ev+".info")
		if err != nil {
			return policy.Age{Evidence: evidence + "; no .info time either: " + err.Error()}
		}
		return policy.Age{Known: true, Since: t, Evidence: fmt.Sprintf("the module proxy's .info time %s (%s)", t.UTC().Format(time.RFC3339), evidence)}
	}
}

// infoTime returns the Time of the .info at url, fetched through the
// verified upstream, and remembers it.
func (p *policyGate) infoTime(ctx context.Context, url string) (time.Time, error) {
	p.infoMu.Lock()
	t, ok := p.infos[url]
	p.infoMu.Unlock()
	if ok {
		return t, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := p.upstream.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return time.Time{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var info struct{ Time time.Time }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&info); err != nil || info.Time.IsZero() {
		return time.Time{}, fmt.Errorf("%s: no time in the .info (%v)", url, err)
	}
	p.infoMu.Lock()
	if len(p.infos) >= maxInfos {
		clear(p.infos)
	}
	p.infos[url] = info.Time
	p.infoMu.Unlock()
	return info.Time, nil
}

// moduleBase returns the URL of a module's files at a module proxy, from
// the URL of one of them: everything before "/@v/" or "/@latest".
func moduleBase(u string) string {
	if i := strings.LastIndex(u, "/@v/"); i >= 0 {
		return u[:i]
	}
	return strings.TrimSuffix(u, "/@latest")
}

// decideFile applies the policy to a verified .zip about to be served
// (fetched or from the cache): a refusal closes the file and becomes the
// outcome's error, which respond answers with a 403.
func (g *Gateway) decideFile(ctx context.Context, d decision, out outcome) outcome {
	if g.policy == nil || out.err != nil || out.res == nil || d.mod == nil || d.mod.kind != sumdb.KindZip {
		return out
	}
	// The reading that was verified; a cache hit whose proof is no longer
	// at hand has no verdict, and is the one module its URL names (an
	// ambiguous URL is never served from the cache).
	m := d.mod.mod
	if out.res.Verdict != nil {
		m = out.res.Verdict.Module
	}
	pd := g.policy.engine.Decide(m, g.policy.age(ctx, moduleBase(d.url)))
	out.pol = &pd
	g.policy.count(ctx, pd)
	if pd.Block {
		out.res.Close()
		out.err = &PolicyError{Decision: pd}
	}
	return out
}

// filterList applies the policy to a version list (@v/list) or an
// @latest answer passing through: versions the policy blocks are left
// out of a list, and the span says which and why; a list left empty, or
// a blocked @latest, is a 403 with the reasons. In dry-run nothing is
// left out; what would have been is recorded.
func (g *Gateway) filterList(ctx context.Context, a *requestAudit, d decision, out outcome) outcome {
	if g.policy == nil || d.mod == nil || (d.mod.file != "list" && d.mod.file != "latest") ||
		out.err != nil || out.resp == nil || out.resp.StatusCode/100 != 2 {
		return out
	}
	if out.resp.StatusCode != http.StatusOK {
		// Asked for whole (no Range): a partial or other 2xx answer is
		// not a list sumgate can filter.
		status := out.resp.StatusCode
		out.resp.Body.Close()
		out.resp = nil
		out.err = fmt.Errorf("the module proxy answered the %s of %s with status %d, which sumgate cannot filter for policy", d.mod.file, d.mod.mod.Path, status)
		return out
	}
	if enc := out.resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		// Asked for plain (the client decodes gzip itself): an answer in
		// another encoding cannot be filtered, so it is not passed.
		out.resp.Body.Close()
		out.resp = nil
		out.err = fmt.Errorf("the module proxy answered the %s of %s with Content-Encoding %q, which sumgate cannot filter for policy", d.mod.file, d.mod.mod.Path, enc)
		return out
	}
	body, err := io.ReadAll(io.LimitReader(out.resp.Body, maxPolicyBody+1))
	out.resp.Body.Close()
	if err == nil && len(body) > maxPolicyBody {
		err = fmt.Errorf("longer than %d bytes", maxPolicyBody)
	}
	if err != nil {
		out.resp = nil
		out.err = fmt.Errorf("reading the %s of %s for policy: %w", d.mod.file, d.mod.mod.Path, err)
		return out
	}
	path := d.mod.mod.Path
	age := g.policy.age(ctx, moduleBase(d.url))
	var kept []string
	var objected []policy.Decision
	if d.mod.file == "latest" {
		var info struct{ Version string }
		if json.Unmarshal(body, &info) == nil && info.Version != "" {
			if g.policy.engine.Cooldown() > 0 {
				// Dated by the tree-head history, as a list's versions
				// are, not by the .info time the publisher wrote.
				g.policy.prove(ctx, path, newest([]string{info.Version}))
			}
			pd := g.policy.engine.Decide(module.Version{Path: path, Version: info.Version}, age)
			g.policy.count(ctx, pd)
			if pd.Objects() {
				objected = append(objected, pd)
			}
			if pd.Block {
				out.resp = nil
				out.err = &PolicyError{Decision: pd}
			}
		}
	} else {
		versions := strings.Fields(string(body))
		if g.policy.engine.Cooldown() > 0 {
			dated := newest(versions)
			g.policy.prove(ctx, path, dated)
			age = listAge(age, dated)
		}
		kept, objected = g.policy.engine.FilterVersions(path, versions, age)
		for _, pd := range objected {
			g.policy.count(ctx, pd)
		}
		if len(versions) > 0 && len(kept) == 0 && !g.policy.engine.DryRun() {
			out.resp = nil
			out.err = &PolicyError{Decision: policy.Decision{Module: module.Version{Path: path}, Block: true, Reason: policy.ListReason(path, objected)}}
		} else {
			var b bytes.Buffer
			for _, v := range kept {
				b.WriteString(v + "\n")
			}
			body = b.Bytes()
		}
	}
	if len(objected) > 0 {
		var left []string
		for _, pd := range objected {
			left = append(left, pd.Module.Version+" ("+strings.Join(policyIDs(pd), ", ")+")")
		}
		key := auditkey.PolicyLeftOut
		if g.policy.engine.DryRun() {
			key = auditkey.PolicyWouldLeaveOut
		}
		a.set(key.StringSlice(left))
	}
	if out.resp != nil {
		out.resp.Body = io.NopCloser(bytes.NewReader(body))
		out.resp.ContentLength = int64(len(body))
		out.resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	return out
}

// newest returns the versions of a list the cooldown dates in it: the
// newest maxListAges releases, then, if there are fewer, the newest
// pre-releases (pseudo-versions among them), as the go command prefers a
// release for @latest: pre-release tags above a young release cannot
// push it out of the dated ones.
func newest(versions []string) []string {
	var releases, pre []string
	for _, v := range versions {
		switch {
		case !semver.IsValid(v):
		case semver.Prerelease(v) == "":
			releases = append(releases, v)
		default:
			pre = append(pre, v)
		}
	}
	semver.Sort(releases)
	semver.Sort(pre)
	vs := releases[max(0, len(releases)-maxListAges):]
	if n := maxListAges - len(vs); n > 0 {
		vs = append(vs, pre[max(0, len(pre)-n):]...)
	}
	return vs
}

// listAge is age for the entries of a version list: the versions in dated
// are dated by age; any other is not dated (no proof read, no .info
// fetched, which for a list of thousands of versions would be thousands
// of round trips), and stays in the list as far as the cooldown goes: its
// .zip is dated when it is asked for.
func listAge(age policy.AgeFunc, dated []string) policy.AgeFunc {
	return func(m module.Version) policy.Age {
		if slices.Contains(dated, m.Version) {
			return age(m)
		}
		return policy.Age{Known: true, Evidence: "not among the newest versions of a list, which alone are dated there"}
	}
}

// prove looks versions (the newest of a list) up in the checksum database
// (8 at a time), so that the cooldown dates them by the tree-head history
// rather than by their .info time. A version the database does not know
// is dated by its .info time while the history is too short, or blocked.
func (p *policyGate) prove(ctx context.Context, path string, vs []string) {
	var eg errgroup.Group
	eg.SetLimit(8)
	for _, v := range vs {
		m := module.Version{Path: path, Version: v}
		if _, _, ok := p.verifier.LoggedBy(m); ok {
			continue
		}
		eg.Go(func() error {
			p.verifier.Prove(ctx, m)
			return nil
		})
	}
	eg.Wait()
}

// decideGit applies the policy to a verified direct VCS fetch of res's
// module version, before sumgate serves it: there is no module proxy to
// ask for a .info time, so the cooldown dates it by the tree-head
// history only. A refusal is remembered under key (the client and the
// repository) for each of wants, the objects fetched: see refusedGit.
//
// A fetch that maps to no version (a commit, a branch, the go command's
// fetch of everything) passes only under on_unverified: allow; it is
// decided on the module path alone (modulePath, if the verifier named
// none), and a version that is not canonical is inside every deny range,
// has every advisory of its module, and has no age: a module any deny
// rule, advisory or the cooldown covers is refused, rather than passed
// undecided.
func (g *Gateway) decideGit(ctx context.Context, res vcs.Result, modulePath string, fetch bool, key string, wants []string) (*policy.Decision, bool) {
	if g.policy == nil {
		return nil, false
	}
	m := res.Module
	if m.Path == "" {
		m.Path = modulePath
	}
	if m.Path == "" || (m.Version == "" && (!fetch || res.Serves())) {
		return nil, false
	}
	pd := g.policy.engine.Decide(m, g.policy.age(ctx, ""))
	g.policy.count(ctx, pd)
	if pd.Block {
		p := g.policy
		kept := vcs.Result{Verdict: res.Verdict, Tag: res.Tag, Commit: res.Commit} // without the revisions to serve
		now := time.Now()
		p.gitMu.Lock()
		if len(p.gitSeen)+len(wants) > maxInfos {
			clear(p.gitSeen)
		}
		for _, w := range wants {
			p.gitSeen[key+" "+w] = gitPolicyRefusal{res: kept, at: now}
		}
		p.gitMu.Unlock()
	}
	return &pd, pd.Block
}

// refusedGit applies the policy again to a direct git fetch of objects a
// fetch by the same client from the same repository (key) was refused by
// the policy less than gitRefusalTTL ago: the go command falls back from
// a refused depth-1 fetch to fetching every branch and tag with their
// history, which sumgate cannot map to one version. Without this, that
// fallback would be refused for another reason than the policy's, which
// the go command then prints, and would pass under on_unverified: allow.
// It returns the earlier revision and the decision on it now, and
// whether that still blocks.
func (g *Gateway) refusedGit(ctx context.Context, key string, wants []string) (vcs.Result, *policy.Decision, bool) {
	if g.policy == nil {
		return vcs.Result{}, nil, false
	}
	p := g.policy
	now := time.Now()
	p.gitMu.Lock()
	var earlier []vcs.Result
	for _, w := range wants {
		if r, ok := p.gitSeen[key+" "+w]; ok && now.Sub(r.at) < gitRefusalTTL {
			earlier = append(earlier, r.res)
		}
	}
	p.gitMu.Unlock()
	for _, res := range earlier {
		pd := p.engine.Decide(res.Module, p.age(ctx, ""))
		if pd.Block {
			p.count(ctx, pd)
			return res, &pd, true
		}
	}
	return vcs.Result{}, nil, false
}
