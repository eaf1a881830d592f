// Package config reads sumgate's YAML configuration file.
//
// The file is strict: an unknown key, a duplicate key, a value of the wrong
// type or a value that fails validation is an error that names the file, the
// line and the key. Every key has a default, so no file is needed at all:
// [Default] is the configuration sumgate runs with when none is given.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/note"

	"github.com/sumgate/sumgate/internal/hostpattern"
	"github.com/sumgate/sumgate/sumdb"
)

// Config is the whole configuration file. Each field's yaml tag is its key.
type Config struct {
	// DataDir holds all persistent state: the checksum database's tree head,
	// tiles and proven hashes, the CA, the spool, the verified-file cache and the
	// audit file.
	DataDir string `yaml:"data_dir"`
	// ModuleProxies are the module proxy base URLs sumgate knows, in order,
	// each with an optional path prefix. Being the operator's choice, their
	// hosts may resolve to private addresses (RFC 1918, RFC 4193 unique
	// local, CGNAT), such as an internal Artifactory's; never to loopback,
	// link-local, cloud metadata, unspecified, multicast or reserved ones
	// unless pinned in upstream.resolve. See [Config.Origins].
	ModuleProxies []string `yaml:"module_proxies"`
	// Private lists module path patterns in GOPRIVATE syntax. Matching
	// modules are never looked up in the public checksum database.
	Private string `yaml:"private"`
	// SumDB configures the checksum database.
	SumDB SumDB `yaml:"sumdb"`
	// Upstream configures how sumgate reaches the outside world.
	Upstream Upstream `yaml:"upstream"`
	// Intercept lists the hosts whose TLS sumgate terminates; leaf
	// certificates are minted for these and no others. An entry is a
	// lower-case host name, "*.example.com" (every name under example.com,
	// at any depth, but not example.com itself) or "*" (every DNS name;
	// IP literals are never matched by a pattern). Module files on every
	// intercepted host are verified; a host that is not intercepted is a
	// blind tunnel (under tunnel: allow), which sumgate cannot verify.
	Intercept []string `yaml:"intercept"`
	// Splice lists hosts, as names or patterns like Intercept's, that are
	// never intercepted, even when Intercept matches them (under "*"):
	// for clients that pin certificates. A spliced host follows tunnel,
	// unverified. A module proxy may not be spliced.
	Splice []string `yaml:"splice"`
	// CA configures the enterprise CA that mints those leaves.
	CA CA `yaml:"ca"`
	// Listen is the proxy's address (HTTPS_PROXY=http://<listen>).
	Listen string `yaml:"listen"`
	// Tunnel decides CONNECT to hosts not intercepted: allow or deny.
	Tunnel string `yaml:"tunnel"`
	// OnUnverified decides versions the checksum database does not know,
	// or cannot answer for: block or allow. A mismatch is always blocked.
	OnUnverified string `yaml:"on_unverified"`
	// VCS decides direct VCS fetches (git, ?go-get=1) of module paths that
	// are not private: verify (the default: only tagged revisions whose
	// module files match the checksum database pass), allow (blind),
	// private-only or deny.
	VCS string `yaml:"vcs"`
	// CacheMaxMB bounds the on-disk cache of verified module files, in MiB;
	// 0 disables it.
	CacheMaxMB int64 `yaml:"cache_max_mb"`
	// AdminListen serves /metrics, /healthz, /readyz and /ca.pem; "off"
	// disables it. Keep it on loopback or a management network.
	AdminListen string `yaml:"admin_listen"`
	// AdminPprof serves Go's profiler at /debug/pprof/ on the admin
	// listener; off by default.
	AdminPprof bool `yaml:"admin_pprof"`
	// LogFormat is json (one JSON object per line) or text.
	LogFormat string `yaml:"log_format"`
	// LogLevel is the least severe level logged: debug, info, warn or
	// error. The audit trail is spans, not logs: it does not depend on it.
	LogLevel string `yaml:"log_level"`
	// Audit configures the audit trail's export.
	Audit Audit `yaml:"audit"`
	// TransparentListen accepts connections the network redirected to
	// sumgate (REDIRECT or TPROXY of port 443); "" disables it.
	TransparentListen string `yaml:"transparent_listen"`
	// Transparent configures transparent mode.
	Transparent Transparent `yaml:"transparent"`
	// Timeouts bounds how long clients and upstreams may take.
	Timeouts Timeouts `yaml:"timeouts"`
	// State decides where the state that replicas must share lives: the
	// checksum database's tree head, the security alert, the proofs of
	// lookups and the leaf certificates.
	State State `yaml:"state"`
	// Policy blocks versions for reasons other than their hashes: deny
	// and allow rules, known advisories and a minimum release age.
	Policy Policy `yaml:"policy"`

	warnings []string // what validation found doubtful but not wrong
}

// State configures where shared state lives.
type State struct {
	// Backend is file (everything under data_dir, for one gateway) or
	// etcd (shared by every replica that names the same etcd and prefix;
	// data_dir then holds only each replica's own caches).
	Backend string `yaml:"backend"`
	// Etcd configures the etcd backend.
	Etcd Etcd `yaml:"etcd"`
}

// Etcd configures the etcd cluster that holds shared state.
type Etcd struct {
	// Endpoints are the cluster's client URLs, https://host:port; http is
	// accepted only for 127.0.0.1 (tests, a sidecar).
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix every key sumgate writes lives under; it
	// must start and end with "/".
	Prefix string `yaml:"prefix"`
	// TLS holds the PEM files of the client's TLS: the CA that signed the
	// servers' certificates, and the client certificate and key etcd
	// authenticates sumgate by. All three are required for https.
	TLS EtcdTLS `yaml:"tls"`
	// DialTimeout bounds the connection to the cluster at start, and each
	// request to it.
	DialTimeout time.Duration `yaml:"dial_timeout"`
}

// EtcdTLS names the PEM files of the etcd client's TLS.
type EtcdTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Timeouts bounds the time spent on clients and upstreams.
type Timeouts struct {
	// Idle closes a client connection (tunnels included) that moves no
	// byte for this long, and ends a module download whose upstream sends
	// no byte for this long (the client gets a 504).
	Idle time.Duration `yaml:"idle"`
	// Header bounds the reading of a request's headers from their first
	// byte, on the listener and inside intercepted tunnels.
	Header time.Duration `yaml:"header"`
	// Fetch bounds one module file's download and check: the longest a
	// client waits for a verified file.
	Fetch time.Duration `yaml:"fetch"`
	// Drain is how long SIGTERM lets requests in flight finish.
	Drain time.Duration `yaml:"drain"`
}

// Transparent configures transparent mode; see deploy/transparent.
type Transparent struct {
	// NoSNI decides redirected connections with no SNI or no TLS: deny or
	// splice (to the original destination, under tunnel).
	NoSNI string `yaml:"no_sni"`
	// SNIMismatch decides an intercepted SNI that does not resolve to the
	// original destination: deny or intercept. Splices always require
	// the match.
	SNIMismatch string `yaml:"sni_mismatch"`
	// PeekTimeout bounds the wait for a ClientHello.
	PeekTimeout time.Duration `yaml:"peek_timeout"`
	// Mark is set as SO_MARK on sumgate's own upstream sockets so that the
	// redirect rule can exempt them (0: none; needs CAP_NET_ADMIN).
	Mark int `yaml:"mark"`
	// TProxy sets IP_TRANSPARENT on the listener, for TPROXY rules.
	TProxy bool `yaml:"tproxy"`
}

// Audit configures the audit trail. Where spans go is set by the standard
// OTEL_* environment variables; with none set, they go to
// data_dir/audit/spans.jsonl.
type Audit struct {
	// FileMaxMB rotates the audit file at this size, in MiB.
	FileMaxMB int `yaml:"file_max_mb"`
	// FileBackups is how many rotated audit files are kept.
	FileBackups int `yaml:"file_backups"`
	// QueueSize bounds the spans waiting for export; past it, spans are
	// dropped, counted (sumgate_spans_dropped_total) and logged.
	QueueSize int `yaml:"queue_size"`
}

// CA configures the enterprise CA.
type CA struct {
	// Backend is "local" (an embedded CA under data_dir/ca, or the
	// imported Cert and Key) or "step" (a step-ca).
	Backend string `yaml:"backend"`
	// Cert and Key import an existing root or intermediate (local).
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// PasswordFile holds the password of Key; $SUMGATE_CA_PASSWORD is
	// used when it is empty. There is never a prompt.
	PasswordFile string `yaml:"password_file"`
	// LeafLifetime is how long minted leaves are valid.
	LeafLifetime time.Duration `yaml:"leaf_lifetime"`
	// Step configures the step backend.
	Step Step `yaml:"step"`
}

// Step configures a step-ca backend.
type Step struct {
	URL          string `yaml:"url"`           // the CA's https URL
	Root         string `yaml:"root"`          // PEM file of its root, or give Fingerprint
	Fingerprint  string `yaml:"fingerprint"`   // SHA-256 of the root, hex
	Provisioner  string `yaml:"provisioner"`   // provisioner name
	Type         string `yaml:"type"`          // jwk or x5c
	Key          string `yaml:"key"`           // provisioner key (jwk: optional) or x5c key
	Cert         string `yaml:"cert"`          // x5c certificate
	PasswordFile string `yaml:"password_file"` // or $SUMGATE_STEP_PASSWORD
}

// SumDB configures the checksum database sumgate verifies against.
type SumDB struct {
	// Key is the database's note verifier key; its name is the database's name.
	Key string `yaml:"key"`
	// URLs, if set, are the database's base URLs, tried in order. If empty,
	// sumgate uses https://<name>, then <proxy>/sumdb/<name> on each module
	// proxy that supports it, in order, moving on while one fails. Like
	// module_proxies, their hosts may resolve to private addresses (see
	// [Config.Origins]); https://<name> may not.
	URLs []string `yaml:"urls"`
	// MaxZipEntries bounds the files in a module zip; a zip that may hold
	// more is blocked as malformed before it is parsed.
	MaxZipEntries int `yaml:"max_zip_entries"`
}

// Upstream configures connections to upstream servers.
type Upstream struct {
	// Roots is a PEM file of extra root certificates trusted for upstream
	// TLS, in addition to the system roots. Upstream certificates are
	// always verified; this is the only way to trust more.
	Roots string `yaml:"roots"`
	// Resolve maps a host name to the "ip:port" sumgate dials instead of
	// host:443. It is never applied to IP literals. A pinned name is
	// dialled where it says, whatever the address: the only way to reach
	// loopback or link-local addresses, or a private one from a host that
	// is not in module_proxies or sumdb.urls.
	Resolve map[string]string `yaml:"resolve"`
}

// Origins returns the operator's own upstream origins as "host:port":
// those of module_proxies and sumdb.urls, in that order, without repeats,
// the host in lower case and the port 443 unless the URL names another.
// sumgate may dial these at private addresses (upstream.Options.Origins);
// every other host, redirect targets included, only at public ones. The
// checksum database's default https://<name> is not among them.
func (c *Config) Origins() []string {
	var out []string
	for _, s := range append(slices.Clone(c.ModuleProxies), c.SumDB.URLs...) {
		u, err := url.Parse(s)
		if err != nil || u.Hostname() == "" {
			continue // validate refuses it
		}
		port := u.Port()
		if port == "" {
			port = "443"
		}
		if o := net.JoinHostPort(strings.ToLower(u.Hostname()), port); !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out
}

// Level is LogLevel as a slog level.
func (c *Config) Level() (slog.Level, error) {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q", c.LogLevel)
}

// Default returns the configuration used when no file is given.
func Default() *Config {
	return &Config{
		DataDir:       "./sumgate-data",
		ModuleProxies: []string{"https://" + PublicProxyHost, GoproxyCN, GoproxyIO, Aliyun},
		SumDB:         SumDB{Key: sumdb.DefaultKey, MaxZipEntries: sumdb.DefaultMaxZipEntries},
		// The module proxies and mirrors, the checksum database, the code
		// hosts Go modules come from directly, and the vanity import hosts
		// whose ?go-get=1 pages map module paths to repositories: git
		// through a host that is not intercepted is a blind tunnel, beyond
		// the vcs policy. Only module_proxies' four are sumgate's own
		// sources; the other mirrors are verified as any intercepted host.
		Intercept:    slices.Concat([]string{PublicProxyHost, SumDBName}, MirrorHosts(), CodeHosts(), VanityHosts()),
		CA:           CA{Backend: "local", LeafLifetime: 24 * time.Hour, Step: Step{Type: "jwk"}},
		Listen:       "127.0.0.1:3128",
		Tunnel:       "allow",
		OnUnverified: "block",
		VCS:          "verify",
		CacheMaxMB:   10 << 10,
		AdminListen:  "127.0.0.1:3129",
		LogFormat:    "json",
		LogLevel:     "info",
		Audit:        Audit{FileMaxMB: 100, FileBackups: 10, QueueSize: 8192},
		Transparent:  Transparent{NoSNI: "deny", SNIMismatch: "deny", PeekTimeout: 10 * time.Second},
		Timeouts:     Timeouts{Idle: 5 * time.Minute, Header: 30 * time.Second, Fetch: 10 * time.Minute, Drain: 30 * time.Second},
		State:        State{Backend: "file", Etcd: Etcd{Prefix: "/sumgate/", DialTimeout: 5 * time.Second}},
		Policy:       Policy{Mode: PolicyEnforce, Advisories: Advisories{Refresh: time.Hour}},
	}
}

// Warnings returns what the last validation found doubtful but not wrong,
// each a line naming the file, line and key as errors do: an expired
// waiver, advisory selectors with no source. The caller logs them.
func (c *Config) Warnings() []string {
	return slices.Clone(c.warnings)
}

// Load reads the file at path over the defaults and validates the result.
// An empty path yields the validated defaults.
func Load(path string) (*Config, error) {
	if path == "" {
		c := Default()
		return c, c.validate(nil)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data, named name in errors, over the defaults and validates
// the result. Keys absent from data keep their defaults.
func Parse(name string, data []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(name, err, nil)
	}
	lines := keyLines{}
	if len(doc.Content) > 0 {
		if err := walk(name, doc.Content[0], reflect.TypeFor[Config](), "", lines); err != nil {
			return nil, err
		}
	}
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty document
		return nil, yamlError(name, err, lines)
	}
	if err := c.validate(func(key string) string { return lines.at(name, key) }); err != nil {
		return nil, err
	}
	return c, nil
}

// keyLines records the line on which each dotted key appears.
type keyLines map[string]int

// at returns "name:line: " for key or its nearest parent that has a line,
// or "name: " if none does.
func (l keyLines) at(name, key string) string {
	for k := key; k != ""; {
		if n, ok := l[k]; ok {
			return name + ":" + strconv.Itoa(n) + ": "
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return name + ": "
}

// walk checks that every mapping key in n names a field of t (recursively),
// and records each key's line.
func walk(name string, n *yaml.Node, t reflect.Type, prefix string, lines keyLines) error {
	if t.Kind() != reflect.Struct || n.Kind != yaml.MappingNode {
		return nil // type errors are reported by the decoder
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := prefix + k.Value
		f, ok := fieldByTag(t, k.Value)
		if !ok {
			msg := fmt.Sprintf("%s:%d: unknown key %q", name, k.Line, key)
			if known := tags(t); len(known) > 0 {
				msg += " (known keys here: " + strings.Join(known, ", ") + ")"
			}
			return errors.New(msg)
		}
		if _, dup := lines[key]; dup {
			return fmt.Errorf("%s:%d: key %q is already set on line %d", name, k.Line, key, lines[key])
		}
		lines[key] = k.Line
		if f.Type.Kind() == reflect.Map && v.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(v.Content); j += 2 {
				lines[key+"."+v.Content[j].Value] = v.Content[j].Line
			}
		}
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && v.Kind == yaml.SequenceNode {
			// A list of mappings (policy.rules): each element's keys are
			// checked and recorded as "policy.rules[2].deny".
			for j, e := range v.Content {
				ekey := fmt.Sprintf("%s[%d]", key, j)
				lines[ekey] = e.Line
				if err := walk(name, e, f.Type.Elem(), ekey+".", lines); err != nil {
					return err
				}
			}
			continue
		}
		if err := walk(name, v, f.Type, key+".", lines); err != nil {
			return err
		}
	}
	return nil
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if f.IsExported() && yamlTag(f) == tag {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tags(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if f.IsExported() {
			out = append(out, yamlTag(f))
		}
	}
	return out
}

func yamlTag(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return tag
}

// yamlError rewrites the YAML library's messages ("yaml: line 3: ...") as
// "name:3: key: ...", naming the key that starts on that line when known.
func yamlError(name string, err error, lines keyLines) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	var out []string
	for m := range strings.SplitSeq(msg, "\n  ") {
		rest, ok := strings.CutPrefix(m, "line ")
		n, after, found := strings.Cut(rest, ": ")
		line, convErr := strconv.Atoi(n)
		if !ok || !found || convErr != nil {
			out = append(out, name+": "+m)
			continue
		}
		key := ""
		for k, l := range lines {
			if l == line && (key == "" || len(k) > len(key)) {
				key = k
			}
		}
		if key != "" {
			after = key + ": " + after
		}
		out = append(out, fmt.Sprintf("%s:%d: %s", name, line, after))
	}
	return errors.New(strings.Join(out, "\n"))
}

// validate checks every value. at(key) returns the "file:line: " prefix for
// key; nil means there is no file.
func (c *Config) validate(at func(key string) string) error {
	if at == nil {
		at = func(string) string { return "" }
	}
	fail := func(key, format string, args ...any) error {
		return fmt.Errorf("%s%s: %s", at(key), key, fmt.Sprintf(format, args...))
	}
	if c.DataDir == "" {
		return fail("data_dir", "must not be empty")
	}
	for _, p := range c.ModuleProxies {
		if err := checkHTTPSURL(p); err != nil {
			return fail("module_proxies", "%v", err)
		}
	}
	for _, p := range strings.Split(c.Private, ",") {
		if p = strings.TrimSpace(p); p != "" && strings.ContainsAny(p, " \t\n") {
			return fail("private", "pattern %q contains white space", p)
		}
	}
	if _, err := note.NewVerifier(c.SumDB.Key); err != nil {
		return fail("sumdb.key", "invalid verifier key %q: %v", c.SumDB.Key, err)
	}
	if c.SumDB.MaxZipEntries < 1 {
		return fail("sumdb.max_zip_entries", "must be at least 1")
	}
	for _, u := range c.SumDB.URLs {
		if err := checkHTTPSURL(u); err != nil {
			return fail("sumdb.urls", "%v", err)
		}
	}
	if c.Upstream.Roots != "" {
		if _, err := os.Stat(c.Upstream.Roots); err != nil {
			return fail("upstream.roots", "%v", err)
		}
	}
	for key, list := range map[string][]string{"intercept": c.Intercept, "splice": c.Splice} {
		for _, h := range list {
			if err := hostpattern.Check(h); err != nil {
				return fail(key, "%v: want a lower-case host name, \"*.example.com\" or \"*\"", err)
			}
		}
	}
	// A module proxy sumgate does not intercept is reached through a blind
	// tunnel: nothing from it would be verified. Refuse that here rather
	// than fail open in the gateway.
	hosts, err := hostpattern.NewPolicy(c.Intercept, c.Splice)
	if err != nil {
		return fail("intercept", "%v", err) // checked above
	}
	for _, p := range c.ModuleProxies {
		u, _ := url.Parse(p) // checked above
		host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		switch {
		case u.Port() != "" && u.Port() != "443":
			return fail("module_proxies", "%s: port %s: sumgate intercepts port 443 only, so it could not verify this proxy", p, u.Port())
		case hosts.Spliced(host):
			return fail("module_proxies", "%s: %s is in splice, so its files would pass through a blind tunnel unverified: remove it from splice", p, host)
		case !hosts.Intercepts(host):
			return fail("module_proxies", "%s: %s is not in intercept, so its files would pass through a blind tunnel unverified: add it to intercept", p, host)
		case u.Path != strings.ToLower(u.Path):
			return fail("module_proxies", "%s: the path prefix has upper case; module proxy paths are case-encoded, so write it in lower case", p)
		case strings.ContainsAny(p, `?#%\;`) || strings.Contains(u.Path+"/", "//") || strings.Contains(u.Path+"/", "./"):
			return fail("module_proxies", "%s: write the path prefix plainly: no escapes, query, fragment, empty or dot segments", p)
		}
	}
	if err := c.CA.validate(fail); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fail("listen", "%q is not host:port: %v", c.Listen, err)
	}
	if c.AdminListen != "off" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			return fail("admin_listen", "%q is not host:port (or off): %v", c.AdminListen, err)
		}
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fail("log_format", "%q: want json or text", c.LogFormat)
	}
	if _, err := c.Level(); err != nil {
		return fail("log_level", "%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.Audit.FileMaxMB < 1 {
		return fail("audit.file_max_mb", "must be at least 1")
	}
	if c.Audit.FileBackups < 1 {
		return fail("audit.file_backups", "must be at least 1")
	}
	if c.Audit.QueueSize < 1 {
		return fail("audit.queue_size", "must be at least 1")
	}
	if c.TransparentListen != "" {
		if _, _, err := net.SplitHostPort(c.TransparentListen); err != nil {
			return fail("transparent_listen", "%q is not host:port: %v", c.TransparentListen, err)
		}
	}
	if c.Transparent.NoSNI != "deny" && c.Transparent.NoSNI != "splice" {
		return fail("transparent.no_sni", "%q: want deny or splice", c.Transparent.NoSNI)
	}
	if c.Transparent.SNIMismatch != "deny" && c.Transparent.SNIMismatch != "intercept" {
		return fail("transparent.sni_mismatch", "%q: want deny or intercept", c.Transparent.SNIMismatch)
	}
	for _, t := range []struct {
		key      string
		v        time.Duration
		min, max time.Duration
	}{
		{"timeouts.idle", c.Timeouts.Idle, time.Second, 24 * time.Hour},
		{"timeouts.header", c.Timeouts.Header, 100 * time.Millisecond, 10 * time.Minute},
		{"timeouts.fetch", c.Timeouts.Fetch, time.Second, 24 * time.Hour},
		{"timeouts.drain", c.Timeouts.Drain, 0, time.Hour},
	} {
		if t.v < t.min || t.v > t.max {
			return fail(t.key, "%v: want between %v and %v", t.v, t.min, t.max)
		}
	}
	if c.Transparent.PeekTimeout < 100*time.Millisecond || c.Transparent.PeekTimeout > time.Minute {
		return fail("transparent.peek_timeout", "%v: want between 100ms and 1m", c.Transparent.PeekTimeout)
	}
	if c.Transparent.Mark < 0 || c.Transparent.Mark > 0xffffffff {
		return fail("transparent.mark", "%d: want 0 to 4294967295", c.Transparent.Mark)
	}
	if c.Tunnel != "allow" && c.Tunnel != "deny" {
		return fail("tunnel", "%q: want allow or deny", c.Tunnel)
	}
	if c.OnUnverified != "block" && c.OnUnverified != "allow" {
		return fail("on_unverified", "%q: want block or allow", c.OnUnverified)
	}
	if err := c.State.validate(fail); err != nil {
		return err
	}
	warnings, err := c.Policy.validate(fail, at, time.Now())
	if err != nil {
		return err
	}
	c.warnings = warnings
	if p := c.Policy; c.VCS == "allow" && (len(p.Rules) > 0 || len(p.Advisories.Sources) > 0 || p.Cooldown > 0) {
		c.warnings = append(c.warnings, at("vcs")+"vcs: allow passes direct git fetches blind, so the policy (rules, advisories, cooldown) does not apply to them; vcs: verify decides them")
	}
	if c.CacheMaxMB < 0 {
		return fail("cache_max_mb", "must not be negative (0 disables the cache)")
	}
	if c.VCS != "verify" && c.VCS != "allow" && c.VCS != "private-only" && c.VCS != "deny" {
		return fail("vcs", "%q: want verify, allow, private-only or deny", c.VCS)
	}
	for _, host := range slices.Sorted(maps.Keys(c.Upstream.Resolve)) {
		key := "upstream.resolve." + host
		if _, err := netip.ParseAddr(host); err == nil {
			return fail(key, "resolve applies to host names, not IP literals")
		}
		if err := checkHostName(host); err != nil {
			return fail(key, "%v", err)
		}
		addr := c.Upstream.Resolve[host]
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return fail(key, "%q is not an ip:port address: %v", addr, err)
		}
		c.Upstream.Resolve[host] = ap.String()
	}
	return nil
}

// checkHostName accepts a lower-case DNS host name: no IP literal, port,
// path or wildcard.
func checkHostName(h string) error {
	if _, err := netip.ParseAddr(h); err == nil {
		return fmt.Errorf("%q is an IP address, not a host name", h)
	}
	if err := module.CheckImportPath(h); err != nil || strings.ContainsAny(h, "/:*") || h != strings.ToLower(h) || !strings.Contains(h, ".") {
		return fmt.Errorf("%q is not a lower-case host name", h)
	}
	return nil
}

func (ca *CA) validate(fail func(key, format string, args ...any) error) error {
	switch ca.Backend {
	case "local", "step":
	default:
		return fail("ca.backend", "%q: want local or step", ca.Backend)
	}
	if ca.LeafLifetime < time.Minute || ca.LeafLifetime > 90*24*time.Hour {
		return fail("ca.leaf_lifetime", "%v: want between 1m and 2160h", ca.LeafLifetime)
	}
	if (ca.Cert == "") != (ca.Key == "") {
		return fail("ca.cert", "ca.cert and ca.key must be given together")
	}
	for key, file := range map[string]string{"ca.cert": ca.Cert, "ca.key": ca.Key, "ca.password_file": ca.PasswordFile,
		"ca.step.root": ca.Step.Root, "ca.step.key": ca.Step.Key, "ca.step.cert": ca.Step.Cert, "ca.step.password_file": ca.Step.PasswordFile} {
		if file == "" {
			continue
		}
		if _, err := os.Stat(file); err != nil {
			return fail(key, "%v", err)
		}
	}
	if ca.Backend != "step" {
		return nil
	}
	st := ca.Step
	switch {
	case st.URL == "":
		return fail("ca.step.url", "required for the step backend")
	case st.Root == "" && st.Fingerprint == "":
		return fail("ca.step.root", "ca.step.root or ca.step.fingerprint is required for the step backend")
	case st.Provisioner == "":
		return fail("ca.step.provisioner", "required for the step backend")
	case st.Type != "jwk" && st.Type != "x5c":
		return fail("ca.step.type", "%q: want jwk or x5c", st.Type)
	case st.Type == "x5c" && (st.Cert == "" || st.Key == ""):
		return fail("ca.step.cert", "the x5c provisioner needs ca.step.cert and ca.step.key")
	}
	if err := checkHTTPSURL(st.URL); err != nil {
		return fail("ca.step.url", "%v", err)
	}
	return nil
}

// checkHTTPSURL accepts an absolute https URL with a host and no query,
// fragment or user information.
func checkHTTPSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %v", s, err)
	}
	switch {
	case u.Scheme != "https":
		return fmt.Errorf("URL %q: scheme must be https", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("URL %q has no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("URL %q must not carry user information, a query or a fragment", s)
	}
	if _, port, err := net.SplitHostPort(u.Host); err == nil && port == "" {
		return fmt.Errorf("URL %q has an empty port", s)
	}
	return nil
}

func (st *State) validate(fail func(key, format string, args ...any) error) error {
	switch st.Backend {
	case "file":
		return nil
	case "etcd":
	default:
		return fail("state.backend", "%q: want file or etcd", st.Backend)
	}
	e := &st.Etcd
	if len(e.Endpoints) == 0 {
		return fail("state.etcd.endpoints", "the etcd backend needs at least one endpoint")
	}
	secure := 0
	for _, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return fail("state.etcd.endpoints", "%q: want https://host:port", ep)
		}
		switch u.Scheme {
		case "https":
			secure++
		case "http":
			if u.Hostname() != "127.0.0.1" {
				return fail("state.etcd.endpoints", "%q: plain http is allowed only to 127.0.0.1: use https with client certificates", ep)
			}
		default:
			return fail("state.etcd.endpoints", "%q: want https://host:port", ep)
		}
	}
	if secure > 0 && secure < len(e.Endpoints) {
		return fail("state.etcd.endpoints", "mixes http and https endpoints")
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") {
		return fail("state.etcd.prefix", "%q: must start and end with /", e.Prefix)
	}
	if secure > 0 {
		for _, kf := range [][2]string{{"state.etcd.tls.ca", e.TLS.CA}, {"state.etcd.tls.cert", e.TLS.Cert}, {"state.etcd.tls.key", e.TLS.Key}} {
			key, f := kf[0], kf[1]
			if f == "" {
				return fail(key, "required with https endpoints: etcd must authenticate sumgate by a client certificate")
			}
			if _, err := os.Stat(f); err != nil {
				return fail(key, "%v", err)
			}
		}
	} else if e.TLS != (EtcdTLS{}) {
		return fail("state.etcd.tls", "set, but the endpoints are plain http")
	}
	if e.DialTimeout < 100*time.Millisecond || e.DialTimeout > 5*time.Minute {
		return fail("state.etcd.dial_timeout", "%v: want between 100ms and 5m", e.DialTimeout)
	}
	return nil
}
