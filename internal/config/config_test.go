package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sumgate/sumgate/sumdb"
)

func TestDefaultsNeedNoFile(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.SumDB.Key != sumdb.DefaultKey || c.DataDir == "" || len(c.ModuleProxies) != 4 || c.ModuleProxies[0] != "https://"+PublicProxyHost {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestParse(t *testing.T) {
	good := `data_dir: /var/lib/sumgate
module_proxies: [https://goproxy.io]
private: corp.example,*.internal.example
sumdb:
  key: ` + sumdb.DefaultKey + `
  urls: [https://sumdb.mirror.example]
upstream:
  resolve:
    sum.golang.org: 127.0.0.1:8443
`
	c, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminListen != "127.0.0.1:3129" || c.LogFormat != "json" || c.Audit.QueueSize != 8192 {
		t.Fatalf("audit defaults: %q %q %+v", c.AdminListen, c.LogFormat, c.Audit)
	}
	if c, err := Parse("off.yaml", []byte("admin_listen: \"off\"\n")); err != nil || c.AdminListen != "off" {
		t.Fatalf("admin_listen: off: %+v, %v", c, err)
	}
	if c.Listen != "127.0.0.1:3128" || c.Tunnel != "allow" || c.OnUnverified != "block" {
		t.Fatalf("gateway defaults: %q %q %q", c.Listen, c.Tunnel, c.OnUnverified)
	}
	if c.CA.Backend != "local" || c.CA.LeafLifetime != 24*time.Hour || len(c.Intercept) != 25 || !slices.Contains(c.Intercept, "gitlab.com") || !slices.Contains(c.Intercept, "go.mirrors.bjtu.edu.cn") {
		t.Fatalf("CA defaults: %+v, intercept %v", c.CA, c.Intercept)
	}
	if c.DataDir != "/var/lib/sumgate" || c.Private != "corp.example,*.internal.example" || c.Upstream.Resolve["sum.golang.org"] != "127.0.0.1:8443" || len(c.SumDB.URLs) != 1 {
		t.Fatalf("parsed: %+v", c)
	}
	if c, err := Parse("empty.yaml", nil); err != nil || c.SumDB.Key != sumdb.DefaultKey {
		t.Fatalf("empty file: %+v, %v", c, err)
	}
	if c, err := Parse("partial.yaml", []byte("private: corp.example\n")); err != nil || len(c.ModuleProxies) != 4 {
		t.Fatalf("absent keys must keep their defaults: %+v, %v", c, err)
	}
}

// TestParseErrorsNameKeyAndLine: every bad file is an error that names the
// file, the line and the key.
func TestParseErrorsNameKeyAndLine(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "data_dir: x\nlisten_addr: y\n", `c.yaml:2: unknown key "listen_addr"`},
		{"unknown nested key", "sumdb:\n  key: " + sumdb.DefaultKey + "\n  url: []\n", `c.yaml:3: unknown key "sumdb.url" (known keys here: key, urls, max_zip_entries)`},
		{"duplicate key", "private: a\nprivate: b\n", `c.yaml:2: key "private" is already set on line 1`},
		{"wrong type", "\n\nmodule_proxies: https://goproxy.io\n", `c.yaml:3: module_proxies: cannot unmarshal`},
		{"wrong nested type", "upstream:\n  resolve: [a]\n", `c.yaml:2: upstream.resolve: cannot unmarshal`},
		{"empty data_dir", "data_dir: \"\"\n", `c.yaml:1: data_dir: must not be empty`},
		{"zero max_zip_entries", "sumdb:\n  max_zip_entries: 0\n", `c.yaml:2: sumdb.max_zip_entries: must be at least 1`},
		{"bad key", "sumdb:\n  key: nonsense\n", `c.yaml:2: sumdb.key: invalid verifier key`},
		{"http proxy", "module_proxies:\n  - https://goproxy.io\n  - http://insecure.example\n", `c.yaml:1: module_proxies: URL "http://insecure.example": scheme must be https`},
		{"proxy with credentials", "module_proxies: [\"https://u:p@goproxy.io\"]\n", `module_proxies: URL "https://u:p@goproxy.io" must not carry user information`},
		{"bad sumdb url", "sumdb:\n  urls: [ftp://x]\n", `c.yaml:2: sumdb.urls: URL "ftp://x": scheme must be https`},
		{"resolve of an IP literal", "upstream:\n  resolve:\n    10.0.0.1: 127.0.0.1:443\n", `c.yaml:3: upstream.resolve.10.0.0.1: resolve applies to host names`},
		{"resolve to a name", "upstream:\n  resolve:\n    sum.golang.org: localhost:443\n", `c.yaml:3: upstream.resolve.sum.golang.org: "localhost:443" is not an ip:port`},
		{"missing roots file", "upstream:\n  roots: /nonexistent/roots.pem\n", `c.yaml:2: upstream.roots: stat /nonexistent/roots.pem`},
		{"private with spaces", "private: \"a b\"\n", `c.yaml:1: private: pattern "a b" contains white space`},
		{"syntax error", "data_dir: [\n", `c.yaml:`},
		{"bad listen", "listen: 3128\n", `c.yaml:1: listen: "3128" is not host:port`},
		{"bad tunnel", "tunnel: maybe\n", `c.yaml:1: tunnel: "maybe": want allow or deny`},
		{"bad on_unverified", "on_unverified: warn\n", `c.yaml:1: on_unverified: "warn": want block or allow`},
		{"bad vcs", "vcs: sometimes\n", `c.yaml:1: vcs: "sometimes": want verify, allow, private-only or deny`},
		{"bad log level", "log_level: verbose\n", `c.yaml:1: log_level: "verbose": want debug, info, warn or error`},
		{"bad admin_listen", "admin_listen: 9090\n", `c.yaml:1: admin_listen: "9090" is not host:port (or off)`},
		{"bad log_format", "\nlog_format: xml\n", `c.yaml:2: log_format: "xml": want json or text`},
		{"zero audit file size", "audit:\n  file_max_mb: 0\n", `c.yaml:2: audit.file_max_mb: must be at least 1`},
		{"zero audit backups", "audit:\n  file_backups: 0\n", `c.yaml:2: audit.file_backups: must be at least 1`},
		{"zero audit queue", "audit:\n  queue_size: 0\n", `c.yaml:2: audit.queue_size: must be at least 1`},
		{"unknown audit key", "audit:\n  exporter: otlp\n", `c.yaml:2: unknown key "audit.exporter"`},
		{"bad transparent_listen", "transparent_listen: 3130\n", `c.yaml:1: transparent_listen: "3130" is not host:port`},
		{"bad no_sni", "transparent:\n  no_sni: allow\n", `c.yaml:2: transparent.no_sni: "allow": want deny or splice`},
		{"bad sni_mismatch", "transparent:\n  sni_mismatch: warn\n", `c.yaml:2: transparent.sni_mismatch: "warn": want deny or intercept`},
		{"peek timeout too long", "transparent:\n  peek_timeout: 1h\n", `c.yaml:2: transparent.peek_timeout: 1h0m0s: want between 100ms and 1m`},
		{"fetch timeout too short", "timeouts:\n  idle: 1m\n  fetch: 10ms\n", `c.yaml:3: timeouts.fetch: 10ms: want between 1s and 24h0m0s`},
		{"negative drain", "timeouts:\n  drain: -1s\n", `c.yaml:2: timeouts.drain: -1s: want between 0s and 1h0m0s`},
		{"bad state backend", "state:\n  backend: redis\n", `c.yaml:2: state.backend: "redis": want file or etcd`},
		{"etcd without endpoints", "state:\n  backend: etcd\n", `c.yaml:1: state.etcd.endpoints: the etcd backend needs at least one endpoint`},
		{"etcd in plain text off loopback", "state:\n  backend: etcd\n  etcd:\n    endpoints: [http://etcd-0.etcd:2379]\n",
			`c.yaml:4: state.etcd.endpoints: "http://etcd-0.etcd:2379": plain http is allowed only to 127.0.0.1`},
		{"etcd in plain text to a name starting with 127.0.0.1", "state:\n  backend: etcd\n  etcd:\n    endpoints: [http://127.0.0.1.evil.example:2379]\n", `plain http is allowed only to 127.0.0.1`},
		{"etcd in plain text to another loopback address", "state:\n  backend: etcd\n  etcd:\n    endpoints: [http://127.0.0.2:2379]\n", `plain http is allowed only to 127.0.0.1`},
		{"etcd in plain text to IPv6 loopback", "state:\n  backend: etcd\n  etcd:\n    endpoints: ['http://[::1]:2379']\n", `plain http is allowed only to 127.0.0.1`},
		{"etcd in plain text to localhost", "state:\n  backend: etcd\n  etcd:\n    endpoints: [http://localhost:2379]\n", `plain http is allowed only to 127.0.0.1`},
		{"etcd in plain text with user info", "state:\n  backend: etcd\n  etcd:\n    endpoints: [http://127.0.0.1@evil.example:2379]\n", `want https://host:port`},
		{"etcd endpoints joined by a comma", "state:\n  backend: etcd\n  etcd:\n    endpoints: ['http://127.0.0.1:2379,http://evil.example:2379']\n", `want https://host:port`},
		{"etcd endpoint without a scheme", "state:\n  backend: etcd\n  etcd:\n    endpoints: [127.0.0.1:2379]\n", `want https://host:port`},
		{"etcd over https without a client certificate", "state:\n  backend: etcd\n  etcd:\n    endpoints: [https://etcd-0.etcd:2379]\n",
			`state.etcd.tls.ca: required with https endpoints`},
		{"etcd endpoint with a path", "state:\n  backend: etcd\n  etcd:\n    endpoints: [https://etcd/v3]\n", `state.etcd.endpoints: "https://etcd/v3": want https://host:port`},
		{"etcd prefix without slashes", "state:\n  backend: etcd\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n    prefix: sumgate\n", `c.yaml:5: state.etcd.prefix: "sumgate": must start and end with /`},
		{"etcd dial timeout too short", "state:\n  backend: etcd\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n    dial_timeout: 1ms\n", `c.yaml:5: state.etcd.dial_timeout: 1ms: want between 100ms and 5m`},
		{"module proxy not intercepted", "module_proxies: [https://mirror.corp.example/go]\n",
			`c.yaml:1: module_proxies: https://mirror.corp.example/go: mirror.corp.example is not in intercept, so its files would pass through a blind tunnel unverified: add it to intercept`},
		{"module proxy on another port", "module_proxies: [https://goproxy.io:8443]\n",
			`c.yaml:1: module_proxies: https://goproxy.io:8443: port 8443: sumgate intercepts port 443 only, so it could not verify this proxy`},
		{"module proxy prefix escaped", "module_proxies: [https://mirrors.aliyun.com/go%70roxy]\n",
			`c.yaml:1: module_proxies: https://mirrors.aliyun.com/go%70roxy: write the path prefix plainly: no escapes, query, fragment, empty or dot segments`},
		{"module proxy with an empty query", "module_proxies: [\"https://goproxy.cn?\"]\n",
			`c.yaml:1: module_proxies: https://goproxy.cn?: write the path prefix plainly: no escapes, query, fragment, empty or dot segments`},
		{"module proxy prefix in upper case", "module_proxies: [https://mirrors.aliyun.com/GoProxy]\n",
			`c.yaml:1: module_proxies: https://mirrors.aliyun.com/GoProxy: the path prefix has upper case; module proxy paths are case-encoded, so write it in lower case`},
		{"negative mark", "transparent:\n  mark: -1\n", `c.yaml:2: transparent.mark: -1: want 0 to 4294967295`},
		{"unknown backend", "ca:\n  backend: vault\n", `c.yaml:2: ca.backend: "vault": want local or step`},
		{"leaf lifetime too short", "ca:\n  leaf_lifetime: 10s\n", `c.yaml:2: ca.leaf_lifetime: 10s: want between 1m and 2160h`},
		{"leaf lifetime not a duration", "ca:\n  leaf_lifetime: soon\n", `c.yaml:2: ca.leaf_lifetime: cannot unmarshal`},
		{"upper-case intercept", "intercept: [Sum.golang.org]\n", `c.yaml:1: intercept: "Sum.golang.org" is not lower case`},
		{"IP intercept", "intercept: [10.0.0.1]\n", `c.yaml:1: intercept: "10.0.0.1" is an IP address`},
		{"wildcard inside a name", "\nintercept: [\"a.*.example.com\"]\n", `c.yaml:2: intercept: "a.*.example.com": a wildcard is allowed only as the whole entry (*) or as its first label (*.example.com)`},
		{"wildcard without a dot", "intercept: [\"*example.com\"]\n", `c.yaml:1: intercept: "*example.com": a wildcard is allowed only`},
		{"pattern of an IP range", "intercept: [\"*.0.2.1\"]\n", `c.yaml:1: intercept: "*.0.2.1": "0.2.1" is not a host name`},
		{"bad splice", "intercept: [\"*\"]\nsplice: [\"pinned.example:443\"]\n", `c.yaml:2: splice: "pinned.example:443" is not a lower-case host name`},
		{"module proxy spliced", "intercept: [\"*\"]\nsplice: [goproxy.io]\nmodule_proxies: [https://goproxy.io]\n",
			`c.yaml:3: module_proxies: https://goproxy.io: goproxy.io is in splice, so its files would pass through a blind tunnel unverified: remove it from splice`},
		{"module proxy spliced by a pattern", "intercept: [goproxy.io]\nsplice: [\"*.io\"]\nmodule_proxies: [https://goproxy.io]\n",
			`module_proxies: https://goproxy.io: goproxy.io is in splice`},
		{"module proxy outside the pattern", "intercept: [\"*.goproxy.io\"]\nmodule_proxies: [https://goproxy.io]\n",
			`module_proxies: https://goproxy.io: goproxy.io is not in intercept`},
		{"cert without key", "ca:\n  cert: /etc/hostname\n", `c.yaml:2: ca.cert: ca.cert and ca.key must be given together`},
		{"step without url", "ca:\n  backend: step\n  step:\n    fingerprint: ab\n", `c.yaml:3: ca.step.url: required`},
		{"step without root", "ca:\n  backend: step\n  step:\n    url: https://ca.example\n", `c.yaml:3: ca.step.root: ca.step.root or ca.step.fingerprint is required`},
		{"bad policy mode", "policy:\n  mode: audit\n", `c.yaml:2: policy.mode: "audit": want enforce or dry-run`},
		{"unknown rule key", "policy:\n  rules:\n    - id: a\n      deny: x\n    - id: b\n      denny: y\n", `c.yaml:6: unknown key "policy.rules[1].denny" (known keys here: id, deny, allow, versions, reason)`},
		{"duplicate rule key", "policy:\n  rules:\n    - id: a\n      deny: x\n      deny: y\n", `c.yaml:5: key "policy.rules[0].deny" is already set on line 4`},
		{"rule of the wrong type", "policy:\n  rules:\n    - id: a\n      deny: [x]\n", `c.yaml:4: policy.rules[0].deny: cannot unmarshal`},
		{"bad rule pattern", "policy:\n  rules:\n    - id: a\n      deny: \"github.com/[x\"\n", `c.yaml:4: policy.rules[0].deny: pattern "github.com/[x": glob "github.com/[x" is malformed`},
		{"pattern as a URL", "policy:\n  rules:\n    - id: a\n      allow: https://github.com/x\n", `c.yaml:4: policy.rules[0].allow: pattern "https://github.com/x": glob "https://github.com/x" has an empty path element`},
		{"bad range", "policy:\n  rules:\n    - id: a\n      deny: x\n      versions: \"< 2.4\"\n", `c.yaml:5: policy.rules[0].versions: version range "< 2.4": comparison "< 2.4": "2.4" is not a semantic version`},
		{"empty range", "policy:\n  rules:\n    - id: a\n      deny: x\n      versions: \">= v2.0.0, < v1.0.0\"\n", `c.yaml:5: policy.rules[0].versions: version range ">= v2.0.0, < v1.0.0" contains no version`},
		{"duplicate rule id", "policy:\n  rules:\n    - id: a\n      deny: x\n    - id: a\n      deny: y\n", `c.yaml:5: policy.rules[1].id: "a" is already the id of policy.rules[0]`},
		{"rule with deny and allow", "policy:\n  rules:\n    - id: a\n      deny: x\n      allow: y\n", `c.yaml:3: policy.rules[0]: rule a: set exactly one of deny and allow`},
		{"rule with neither", "policy:\n  rules:\n    - id: a\n", `c.yaml:3: policy.rules[0]: rule a: set exactly one of deny and allow`},
		{"rule without id", "policy:\n  rules:\n    - deny: x\n", `c.yaml:3: policy.rules[0].id: "": want lower-case letters`},
		{"upper-case rule id", "policy:\n  rules:\n    - id: GO-2024-1\n      deny: x\n", `c.yaml:3: policy.rules[0].id: "GO-2024-1": want lower-case`},
		{"rule named cooldown", "policy:\n  rules:\n    - id: cooldown\n      deny: x\n", `c.yaml:3: policy.rules[0].id: "cooldown" is the name waivers give the cooldown`},
		{"multi-line reason", "policy:\n  rules:\n    - id: a\n      deny: x\n      reason: \"a\\nb\"\n", `c.yaml:5: policy.rules[0].reason: "a\nb": must be one line`},
		{"waiver of an unknown rule", "policy:\n  waivers:\n    - rule: no-such-rule\n      module: a.example/m@v1.0.0\n      owner: me\n      expires: 2999-01-01\n",
			`c.yaml:3: policy.waivers[0].rule: "no-such-rule": want a rule's id, cooldown, or an advisory ID`},
		{"waiver of an allow rule", "policy:\n  rules:\n    - id: ok\n      allow: x\n  waivers:\n    - rule: ok\n      module: a.example/m@v1.0.0\n      owner: me\n      expires: 2999-01-01\n",
			`c.yaml:6: policy.waivers[0].rule: "ok" is an allow rule`},
		{"waiver without a version", "policy:\n  waivers:\n    - rule: cooldown\n      module: a.example/m\n      owner: me\n      expires: 2999-01-01\n",
			`c.yaml:4: policy.waivers[0].module: module "a.example/m": want path@version`},
		{"waiver of a non-canonical version", "policy:\n  waivers:\n    - rule: cooldown\n      module: a.example/m@v1.2\n      owner: me\n      expires: 2999-01-01\n",
			`c.yaml:4: policy.waivers[0].module: module "a.example/m@v1.2": "v1.2" is not a canonical version`},
		{"waiver without an owner", "policy:\n  waivers:\n    - rule: GO-2024-2687\n      module: a.example/m@v1.0.0\n      expires: 2999-01-01\n",
			`c.yaml:3: policy.waivers[0].owner: required`},
		{"waiver with a bad date", "policy:\n  waivers:\n    - rule: cooldown\n      module: a.example/m@v1.0.0\n      owner: me\n      expires: 31/01/2027\n",
			`c.yaml:6: policy.waivers[0].expires: expires "31/01/2027": want a date, YYYY-MM-DD`},
		{"unknown waiver key", "policy:\n  waivers:\n    - rule: cooldown\n      until: 2027-01-01\n", `c.yaml:4: unknown key "policy.waivers[0].until"`},
		{"http advisory source", "policy:\n  advisories:\n    sources: [http://vuln.go.dev]\n", `c.yaml:3: policy.advisories.sources: URL "http://vuln.go.dev": scheme must be https`},
		{"missing advisory directory", "policy:\n  advisories:\n    sources: [/nonexistent/osv]\n", `c.yaml:3: policy.advisories.sources: source "/nonexistent/osv": stat /nonexistent/osv`},
		{"refresh too often", "policy:\n  advisories:\n    refresh: 1s\n", `c.yaml:3: policy.advisories.refresh: 1s: want between 1m and 168h`},
		{"blank selector", "policy:\n  advisories:\n    block: [\"cvss >= 7\"]\n", `c.yaml:3: policy.advisories.block: "cvss >= 7": want malicious`},
		{"negative cooldown", "policy:\n  cooldown: -1h\n", `c.yaml:2: policy.cooldown: -1h0m0s: want between 0s (off) and 8760h`},
		{"step x5c without cert", "ca:\n  backend: step\n  step:\n    url: https://ca.example\n    fingerprint: ab\n    provisioner: p\n    type: x5c\n", `ca.step.cert: the x5c provisioner needs`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want a not-exist error", err)
	}
}

// FuzzParse: no input makes Parse panic, and an accepted file yields a
// configuration that validates again.
func FuzzParse(f *testing.F) {
	f.Add([]byte("data_dir: x\nsumdb:\n  key: " + sumdb.DefaultKey + "\n"))
	f.Add([]byte("upstream:\n  resolve:\n    a.example: 127.0.0.1:1\n"))
	f.Add([]byte("private: [\n"))
	f.Add([]byte("&a [*a]"))
	f.Add([]byte("admin_listen: off\nlog_format: text\naudit:\n  file_max_mb: 5\n  queue_size: 10\n"))
	f.Add([]byte("transparent_listen: \":3130\"\ntransparent:\n  no_sni: splice\n  mark: 21319\n  peek_timeout: 5s\n"))
	f.Add([]byte("policy:\n  mode: dry-run\n  rules:\n    - id: a\n      deny: \"x/*\"\n      versions: \"< v1.0.0\"\n  waivers:\n    - rule: a\n      module: x/y@v0.1.0\n      owner: o\n      expires: 2020-01-01\n  cooldown: 72h\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := c.validate(nil); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
	})
}

// TestOrigins: the hosts sumgate may reach at private addresses are
// exactly those of module_proxies and sumdb.urls.
func TestOrigins(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"defaults", "", []string{PublicProxyHost + ":443", "goproxy.cn:443", "goproxy.io:443", "mirrors.aliyun.com:443"}},
		{"internal proxy and mirror", `module_proxies: [https://Artifactory.Corp.example/api/go/golang, https://artifactory.corp.example/api/go/other]
intercept: [artifactory.corp.example]
sumdb:
  urls: [https://sumdb.corp.example:8443/sumdb/sum.golang.org, "https://[fd12::5]/sumdb"]
`, []string{"artifactory.corp.example:443", "sumdb.corp.example:8443", "[fd12::5]:443"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("sumgate.yaml", []byte(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Origins(); !slices.Equal(got, tt.want) {
				t.Errorf("Origins() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestREADMEShowsEveryKeyWithItsDefault: the README's configuration block
// names every key of the file, and what it shows is the default.
func TestREADMEShowsEveryKeyWithItsDefault(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Configuration\n")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no ```yaml block under ## Configuration")
	}
	// The README names the public proxy in words.
	block = strings.NewReplacer("<the public Go module proxy's host>", PublicProxyHost, "<the public Go module proxy>", PublicProxyHost).Replace(block)
	c, err := Parse("README.md", []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := yaml.Marshal(c) // nil and empty maps and lists alike
	want, _ := yaml.Marshal(Default())
	if string(got) != string(want) {
		t.Errorf("the README's block is not the defaults:\n%s\nwant:\n%s", got, want)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(block), &doc); err != nil {
		t.Fatal(err)
	}
	documented := keyLines{}
	if err := walk("README.md", doc.Content[0], reflect.TypeFor[Config](), "", documented); err != nil {
		t.Fatal(err)
	}
	for _, key := range allKeys(reflect.TypeFor[Config](), "") {
		if _, ok := documented[key]; !ok {
			t.Errorf("the README's configuration block lacks %s", key)
		}
	}
}

// allKeys returns the dotted keys of the struct type t, parents before
// their children.
func allKeys(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		key := prefix + yamlTag(f)
		out = append(out, key)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, allKeys(f.Type, key+".")...)
		}
	}
	return out
}

// TestInterceptPatterns: patterns are accepted in intercept and splice,
// and a module proxy is accepted when a pattern intercepts it and
// nothing splices it.
func TestInterceptPatterns(t *testing.T) {
	for _, tt := range []struct{ name, yaml string }{
		{"every host", "intercept: [\"*\"]\n"},
		{"every host but pinned ones", "intercept: [\"*\"]\nsplice: [pinned.example, \"*.bank.example\"]\n"},
		{"subdomains at any depth", "intercept: [sum.golang.org, proxy.golang.org, \"*.goproxy.io\", goproxy.io, \"*.cn\", \"*.aliyun.com\"]\n" +
			"module_proxies: [https://proxy.golang.org, https://goproxy.cn, https://goproxy.io, https://mirrors.aliyun.com/goproxy]\n"},
		{"a splice that spares the module proxies", "intercept: [\"*\"]\nsplice: [\"*.goproxy.cn\"]\nmodule_proxies: [https://goproxy.cn]\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse("c.yaml", []byte(tt.yaml)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPolicy: the example loads as written, an expired waiver is a
// warning naming its line rather than an error, and advisory selectors
// without a source are a warning.
func TestPolicy(t *testing.T) {
	file := `policy:
  mode: dry-run
  rules:
    - id: no-old-yaml
      deny: "gopkg.in/yaml.v2"
      versions: "< v2.4.0"
      reason: "CVE-2022-28948; use v2.4.0 or later"
    - id: allow-internal-fork
      allow: "github.com/corp-forks/*"
  waivers:
    - rule: cooldown
      module: "golang.org/x/net@v0.99.0"
      owner: "security@corp.example"
      expires: 2999-01-31
    - rule: no-old-yaml
      module: "gopkg.in/yaml.v2@v2.3.0"
      owner: "platform@corp.example"
      expires: 2020-01-31
    - rule: GHSA-8r3f-844c-mc37
      module: "google.golang.org/protobuf@v1.32.0"
      owner: "platform@corp.example"
      expires: 2999-01-31
  advisories:
    sources: []
    refresh: 2h
    block: [malicious, "GO-2024-2687", "cvss>=7.0"]
  cooldown: 72h
`
	c, err := Parse("p.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policy
	if p.Mode != PolicyDryRun || len(p.Rules) != 2 || p.Rules[0].Versions != "< v2.4.0" || p.Rules[1].Allow != "github.com/corp-forks/*" ||
		len(p.Waivers) != 3 || p.Waivers[0].Expires != "2999-01-31" || p.Advisories.Refresh != 2*time.Hour || len(p.Advisories.Block) != 3 || p.Cooldown != 72*time.Hour {
		t.Fatalf("parsed: %+v", p)
	}
	want := []string{
		`p.yaml:18: policy.waivers[1]: the waiver of no-old-yaml for gopkg.in/yaml.v2@v2.3.0 (owner platform@corp.example) expired at the end of 2020-01-31; it no longer applies`,
		`p.yaml:26: policy.advisories.block: set, but policy.advisories.sources is empty: no advisory blocks anything`,
	}
	if got := c.Warnings(); !slices.Equal(got, want) {
		t.Errorf("Warnings() =\n%q\nwant\n%q", got, want)
	}
	if d, err := Load(""); err != nil || len(d.Warnings()) != 0 || d.Policy.Mode != PolicyEnforce || d.Policy.Cooldown != 0 {
		t.Fatalf("defaults: %+v, %v, warnings %q", d.Policy, err, d.Warnings())
	}
	// A policy under vcs: allow, which passes direct git blind.
	blind, err := Parse("v.yaml", []byte("vcs: allow\npolicy:\n  cooldown: 72h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := blind.Warnings(), []string{"v.yaml:1: vcs: allow passes direct git fetches blind, so the policy (rules, advisories, cooldown) does not apply to them; vcs: verify decides them"}; !slices.Equal(got, want) {
		t.Errorf("Warnings() under vcs: allow =\n%q\nwant\n%q", got, want)
	}
}

func TestWaiverExpiresAtTheEndOfItsDayUTC(t *testing.T) {
	end, err := Waiver{Expires: "2027-01-31"}.ExpiresAt()
	if want := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC); err != nil || !end.Equal(want) {
		t.Fatalf("ExpiresAt = %v, %v; want %v", end, err, want)
	}
}

func TestIDs(t *testing.T) {
	for _, tt := range []struct {
		s              string
		rule, advisory bool
	}{
		{"no-old-yaml", true, false}, {"a", true, false}, {"r1.v2_x", true, false}, {"-a", false, false}, {"a-", false, false},
		{strings.Repeat("a", 65), false, false}, {"GO-2024-2687", false, true}, {"CVE-2024-24786", false, true},
		{"GHSA-8r3f-844c-mc37", false, true}, {"MAL-2025-1", false, true}, {"PYSEC-2021-1", false, true},
		{"GO-", false, false}, {"-GO", false, false}, {"go-2024-1", true, false}, {"GO-2024 1", false, false},
	} {
		if IsRuleID(tt.s) != tt.rule || IsAdvisoryID(tt.s) != tt.advisory {
			t.Errorf("%q: IsRuleID = %v, IsAdvisoryID = %v; want %v, %v", tt.s, IsRuleID(tt.s), IsAdvisoryID(tt.s), tt.rule, tt.advisory)
		}
	}
}
