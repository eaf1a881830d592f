// Package auditkey names the sumgate.* span attributes, events and span
// names that make up sumgate's audit trail. docs/audit.md documents each
// one, its type and an example; a name here is a contract with the
// security team's queries, so it is never renamed lightly.
package auditkey

import "go.opentelemetry.io/otel/attribute"

// TLSServerName is the SNI the client sent inside an intercepted tunnel.
// Semantic conventions v1.43.0 have no live attribute for it
// (tls.client.server_name is deprecated in favour of server.address,
// which here holds the CONNECT target); the two differ only when a client
// lies, so the SNI is kept under this name.
const TLSServerName = attribute.Key("tls.server.name")

// Attributes of a client request's server span.
const (
	Decision = attribute.Key("sumgate.decision") // intercept, tunnel or deny
	Rule     = attribute.Key("sumgate.rule")     // the policy rule that decided
	Reason   = attribute.Key("sumgate.reason")   // why a request was refused or blocked, one line
	User     = attribute.Key("sumgate.user")     // the authenticated proxy user, when there is one

	ModulePath    = attribute.Key("sumgate.module.path")    // decoded module path
	ModuleVersion = attribute.Key("sumgate.module.version") // canonical version
	ModuleKind    = attribute.Key("sumgate.module.kind")    // zip, mod, info, list, latest or sumdb
	ModuleOrigin  = attribute.Key("sumgate.module.origin")  // the module proxy base URL it came from

	Verdict  = attribute.Key("sumgate.verdict")         // the verifier's outcome
	HashGot  = attribute.Key("sumgate.hash.got")        // h1: hash of the bytes downloaded
	HashWant = attribute.Key("sumgate.hash.want")       // h1: hash the checksum database logged
	TreeSize = attribute.Key("sumgate.sumdb.tree_size") // size of the tree that proved it
	Cached   = attribute.Key("sumgate.sumdb.cached")    // the proof came from the local cache
	// HashKnown marks a zip recognised by the SHA-256 of its bytes as
	// bytes already hashed to the logged hash (not inflated again).
	HashKnown = attribute.Key("sumgate.hash.known")
	SumDB     = attribute.Key("sumgate.sumdb.name") // the checksum database's name
	// SumDBPath is what a sumdb.read or sumdb.store span read or wrote:
	// a path of the database's protocol (/lookup/…, tile/…), or latest or
	// proven for sumgate's own state.
	SumDBPath = attribute.Key("sumgate.sumdb.path")

	SpoolBytes  = attribute.Key("sumgate.spool.bytes")         // bytes spooled from upstream
	BytesSent   = attribute.Key("sumgate.bytes.sent")          // response body bytes sent to the client
	Incomplete  = attribute.Key("sumgate.delivery.incomplete") // the client went away before the whole body was sent
	CacheHit    = attribute.Key("sumgate.cache.hit")           // served from the verified-file cache
	FetchShared = attribute.Key("sumgate.fetch.shared")        // joined another request's fetch and check

	VCSModule = attribute.Key("sumgate.vcs.module") // module path a direct VCS fetch is attributed to
	VCSRepo   = attribute.Key("sumgate.vcs.repo")   // the git repository a direct fetch is from: https://host/path
	VCSTag    = attribute.Key("sumgate.vcs.tag")    // the tag a fetched revision was verified as
	VCSCommit = attribute.Key("sumgate.vcs.commit") // the commit a fetched revision is

	TunnelUp       = attribute.Key("sumgate.tunnel.client_to_server_bytes")
	TunnelDown     = attribute.Key("sumgate.tunnel.server_to_client_bytes")
	TunnelRequests = attribute.Key("sumgate.tunnel.requests") // requests served inside an intercepted tunnel

	Transparent = attribute.Key("sumgate.transparent")             // the connection was redirected, not a CONNECT
	OriginalDst = attribute.Key("sumgate.transparent.destination") // where a redirected client was connecting: ip:port

	CertMinted = attribute.Key("sumgate.cert.minted") // a new leaf was issued for this handshake

	// Policy (package policy): what it decided on a module version (.zip,
	// direct VCS fetch, cached file) or a version list.
	PolicyDecision         = attribute.Key("sumgate.policy.decision")          // pass, block or would-block (dry-run)
	PolicyWouldBlock       = attribute.Key("sumgate.policy.would_block")       // dry-run: enforce would have refused it
	PolicyRules            = attribute.Key("sumgate.policy.rules")             // the deny rules that objected
	PolicyAdvisories       = attribute.Key("sumgate.policy.advisories")        // the advisory IDs that objected, with their aliases
	PolicyCooldownUntil    = attribute.Key("sumgate.policy.cooldown.until")    // when a version the cooldown refused becomes available
	PolicyCooldownEvidence = attribute.Key("sumgate.policy.cooldown.evidence") // what dated the version: the tree-head history or the .info time
	PolicyAllowed          = attribute.Key("sumgate.policy.allowed")           // the allow rules that exempted the version
	PolicyWaivers          = attribute.Key("sumgate.policy.waivers")           // the waivers used, as "rule for module@version, owner, until date"
	PolicyLeftOut          = attribute.Key("sumgate.policy.left_out")          // versions left out of a list or @latest, each with what objected
	PolicyWouldLeaveOut    = attribute.Key("sumgate.policy.would_leave_out")   // dry-run: what enforce would have left out
	CABackend              = attribute.Key("sumgate.ca.backend")               // local or step
)

// Event names.
const (
	// SecurityEvent is added to every span that met a checksum-database
	// fork (a security error).
	SecurityEvent = "sumgate.security_error"
)
