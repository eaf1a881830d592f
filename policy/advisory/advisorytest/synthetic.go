package advisorytest

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/ossf/osv-schema/bindings/go/osvschema"
	"google.golang.org/protobuf/types/known/structpb"
)

// Synthetic describes a generated database shaped like the Go
// vulnerability database: entries GO-YYYY-NNNN, most with a CVE and a
// GHSA alias, each naming one to three modules (a few modules named by
// many entries, most by one or two), each with a SEMVER range of one to
// three introduced/fixed pairs (some fixes pseudo-versions, some entries
// with no fix), and symbol lists and references as long as the real ones
// carry, so that a file is a few KiB.
type Synthetic struct {
	Entries int    // default 4,500 (the real database held about 4,400 in 2025)
	Modules int    // distinct module paths; default 2,200
	Seed    uint64 // the same seed gives the same database
}

// Generate returns the entries and every module path they name, in
// order. Module i is named by entry i for i < Modules, so every module is
// used.
func (s Synthetic) Generate() (entries []*osvschema.Vulnerability, modules []string) {
	if s.Entries <= 0 {
		s.Entries = 4500
	}
	if s.Modules <= 0 {
		s.Modules = 2200
	}
	r := rand.New(rand.NewPCG(s.Seed, 0x5eed))
	for i := range s.Modules {
		p := fmt.Sprintf("github.com/org%d/project%d", i/3, i)
		switch i % 10 {
		case 0:
			p += "/v2"
		case 1:
			p = fmt.Sprintf("golang.org/x/tool%d", i)
		case 2:
			p = fmt.Sprintf("gopkg.in/lib%d.v3", i)
		}
		modules = append(modules, p)
	}
	for i := range s.Entries {
		year := 2020 + i*6/s.Entries
		id := fmt.Sprintf("GO-%d-%04d", year, i)
		var aliases []string
		if r.IntN(10) < 8 {
			aliases = append(aliases, fmt.Sprintf("CVE-%d-%05d", year, r.IntN(60000)))
		}
		if r.IntN(10) < 9 {
			aliases = append(aliases, "GHSA-"+ghsaPart(r)+"-"+ghsaPart(r)+"-"+ghsaPart(r))
		}
		n := 1
		if u := r.IntN(10); u >= 9 {
			n = 3
		} else if u >= 7 {
			n = 2
		}
		var affected []*osvschema.Affected
		for k := range n {
			m := r.IntN(s.Modules)
			if k == 0 && i < s.Modules {
				m = i
			} else if k == 0 {
				m = int(float64(s.Modules) * r.Float64() * r.Float64()) // skewed: a few modules have many entries
			}
			affected = append(affected, syntheticAffected(r, modules[m]))
		}
		v := Vuln(id, aliases, affected...)
		v.Summary = fmt.Sprintf("Improper validation of input in %s allows denial of service", affected[0].GetPackage().GetName())
		v.Details = strings.Repeat("An attacker can send a crafted request that causes excessive resource use. ", 4)
		for k := range 3 {
			v.References = append(v.References, &osvschema.Reference{Type: osvschema.Reference_WEB,
				Url: fmt.Sprintf("https://example.com/%s/ref/%d", id, k)})
		}
		entries = append(entries, v)
	}
	return entries, modules
}

// syntheticAffected returns one affected item for path.
func syntheticAffected(r *rand.Rand, path string) *osvschema.Affected {
	var events []*osvschema.Event
	pairs := 1 + r.IntN(3)
	major := r.IntN(3)
	for p := range pairs {
		minor := p*4 + r.IntN(3)
		if p == 0 {
			events = append(events, &osvschema.Event{Introduced: "0"})
		} else {
			events = append(events, &osvschema.Event{Introduced: fmt.Sprintf("%d.%d.0", major, minor)})
		}
		switch u := r.IntN(20); {
		case u == 0 && p == pairs-1:
			// no fix yet
		case u < 3:
			events = append(events, &osvschema.Event{Fixed: fmt.Sprintf("%d.%d.1-0.2024%02d%02d120000-%012x", major, minor+1, 1+r.IntN(12), 1+r.IntN(28), r.Uint64()&0xffffffffffff)})
		default:
			events = append(events, &osvschema.Event{Fixed: fmt.Sprintf("%d.%d.%d", major, minor+1, r.IntN(10))})
		}
	}
	var symbols []any
	for k := range 5 + r.IntN(40) {
		symbols = append(symbols, fmt.Sprintf("Type%d.Method%d", k, r.IntN(100)))
	}
	es, err := structpb.NewStruct(map[string]any{
		"imports": []any{map[string]any{"path": path + "/internal/pkg", "symbols": symbols}},
	})
	if err != nil {
		panic(err)
	}
	return &osvschema.Affected{
		Package:           &osvschema.Package{Ecosystem: "Go", Name: path},
		Ranges:            []*osvschema.Range{{Type: osvschema.Range_SEMVER, Events: events}},
		EcosystemSpecific: es,
	}
}

// ghsaPart returns four characters of a GHSA ID.
func ghsaPart(r *rand.Rand) string {
	const alphabet = "23456789cfghjmpqrvwx"
	var b [4]byte
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b[:])
}
