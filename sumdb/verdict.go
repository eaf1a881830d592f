package sumdb

import (
	"fmt"
	"time"

	"golang.org/x/mod/module"
)

// Kind is which file of a module version is checked.
type Kind int

const (
	// KindZip is the module's .zip archive, hashed with dirhash.HashZip.
	KindZip Kind = iota + 1
	// KindMod is the module's go.mod file, hashed as the single file "go.mod".
	KindMod
)

// String returns "zip" or "go.mod".
func (k Kind) String() string {
	switch k {
	case KindZip:
		return "zip"
	case KindMod:
		return "go.mod"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Outcome is what a check concluded. Only [Verified] and [Private] let the
// bytes through by themselves; what to do with [NotFound] and
// [Unavailable] is the caller's policy; [Mismatch], [SecurityError] and
// [StateUnavailable] must always be blocked.
type Outcome int

const (
	// Verified: the bytes hash to what the checksum database has logged,
	// proven against a signed tree head consistent with every earlier one.
	Verified Outcome = iota + 1
	// Mismatch: the bytes hash to something else, or they are malformed
	// (a hostile or broken zip, an oversized go.mod). Always block.
	Mismatch
	// NotFound: the checksum database has no record of the module version.
	NotFound
	// Private: the module path matches the private patterns; it was not
	// looked up, so that its path does not leak to the public database.
	Private
	// Unavailable: the checksum database could not be reached, or what it
	// served could not be authenticated (for example a bad signature).
	Unavailable
	// SecurityError: the checksum database has shown two inconsistent tree
	// heads (a fork). Every check fails with this outcome until an operator
	// has investigated. Always block.
	SecurityError
	// StateUnavailable: the state replicas share (etcd) could not be read
	// or written, so the tree head a lookup must be checked against, and
	// moved forward, is unknown. Always block: unlike an unreachable
	// database, it says nothing about the module, and passing would let
	// one replica's stale view hide a fork the others saw.
	StateUnavailable
)

var outcomeNames = [...]string{
	Verified:         "verified",
	Mismatch:         "mismatch",
	NotFound:         "not-found",
	Private:          "private",
	Unavailable:      "unavailable",
	SecurityError:    "security-error",
	StateUnavailable: "state-unavailable",
}

// String returns a short lower-case name, such as "verified" or "not-found".
func (o Outcome) String() string {
	if o > 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// MarshalText encodes the outcome as its [Outcome.String] name.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// MarshalText encodes the kind as its [Kind.String] name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// A Verdict is the result of checking one file of one module version.
type Verdict struct {
	Module   module.Version // decoded module path and version that was checked
	Kind     Kind           // which file
	Outcome  Outcome        // what the check concluded
	Got      string         // "h1:" hash of the bytes checked; "" if they could not be hashed
	Want     string         // "h1:" hash the checksum database has logged; "" if unknown
	TreeSize int64          // size of a verified signed tree head that contains the record; 0 if none
	Lookup   time.Duration  // time spent looking the version up (0 when answered from the on-disk cache)
	Cached   bool           // the database's answer came from the on-disk cache of proven records
	Reason   string         // why the outcome is not Verified, in words; "" when verified
}

// Pass reports whether the outcome lets the bytes through by itself.
func (v Verdict) Pass() bool { return v.Outcome == Verified || v.Outcome == Private }

// String describes the verdict on one line, naming the module version, the
// file and both hashes, for logs and for the body of a blocked response:
//
//	example.com/m@v1.0.0 (zip): checksum mismatch: downloaded h1:AAA…, checksum database has h1:BBB… (tree size 1234)
func (v Verdict) String() string {
	return fmt.Sprintf("%s (%s): %s", v.Module, v.Kind, v.Detail())
}

// Headline names the outcome in a few words ("checksum mismatch",
// "malformed module zip"), and gives the detail that belongs with it (the
// reason, for outcomes that have one; "" otherwise). It is the one place
// that words an outcome: [Verdict.String] and the gateway's block
// messages are both built from it.
func (v Verdict) Headline() (headline, detail string) {
	switch v.Outcome {
	case Verified:
		return "verified", ""
	case Mismatch:
		if v.Reason != "" {
			return "malformed module zip", v.Reason
		}
		return "checksum mismatch", ""
	case NotFound:
		return "not in the checksum database", v.Reason
	case Private:
		return "private module, not looked up in the public checksum database", ""
	case Unavailable:
		return "checksum database unavailable", v.Reason
	case SecurityError:
		return "checksum database security error", v.Reason
	case StateUnavailable:
		return "shared state unavailable", v.Reason
	}
	return v.Outcome.String(), v.Reason
}

// Detail is [Verdict.String] without the module and kind: the headline,
// both hashes and the reason, on one line.
func (v Verdict) Detail() string {
	headline, detail := v.Headline()
	tree := ""
	if v.TreeSize > 0 {
		tree = fmt.Sprintf(" (tree size %d)", v.TreeSize)
	}
	got := v.Got
	if got == "" {
		got = "(not hashed)"
	}
	switch v.Outcome {
	case Verified:
		return fmt.Sprintf("%s: %s matches the checksum database%s", headline, v.Got, tree)
	case Mismatch:
		if detail != "" {
			s := detail // the reason says what is malformed
			if v.Want != "" {
				s += fmt.Sprintf("; checksum database has %s%s", v.Want, tree)
			}
			return s
		}
		return fmt.Sprintf("%s: downloaded %s, checksum database has %s%s", headline, got, v.Want, tree)
	case NotFound:
		s := fmt.Sprintf("%s: downloaded %s", headline, got)
		if detail != "" {
			s += "; " + detail
		}
		return s
	case Private:
		return fmt.Sprintf("%s: downloaded %s", headline, got)
	case Unavailable:
		return fmt.Sprintf("%s: downloaded %s, not verified: %s", headline, got, detail)
	case SecurityError, StateUnavailable:
		return fmt.Sprintf("%s: %s", headline, detail)
	}
	return headline
}

// Advice tells a developer what to do about the verdict, in one or two
// sentences; "" when there is nothing to do.
func (v Verdict) Advice() string {
	switch v.Outcome {
	case Mismatch:
		if v.Reason != "" {
			return "The module source is malformed or hostile. Do not use it; report the module proxy that served it to your security team."
		}
		return "The bytes differ from what the Go checksum database logged for this version: the module proxy or mirror served tampered content. Do not use it; report the proxy to your security team, or try another module proxy."
	case NotFound:
		return "The Go checksum database does not know this version: it may be brand new, retracted before publication, or made up. Wait and retry, check the version exists upstream, or, if the module is private, ask your platform team to add it to sumgate's private patterns."
	case Unavailable:
		return "sumgate could not verify the download because it cannot reach or authenticate the Go checksum database. Retry later; if it persists, tell your platform team."
	case SecurityError:
		return "The Go checksum database has shown this network a forked history: this may be an attack. All downloads are blocked until your security team investigates."
	case StateUnavailable:
		return "sumgate keeps the checksum database's tree head in etcd, which this replica cannot reach now, so it verifies only what it has proven before. Retry in a minute; if it persists, tell your platform team."
	}
	return ""
}
