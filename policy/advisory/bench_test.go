package advisory_test

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ossf/osv-schema/bindings/go/osvschema"
	"golang.org/x/mod/module"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sumgate/sumgate/policy/advisory"
	"github.com/sumgate/sumgate/policy/advisory/advisorytest"
)

// syntheticDB writes a database of the Go vulnerability database's size
// and shape in the v1 layout and returns its directory, entries and
// module paths.
func syntheticDB(b *testing.B) (string, []*osvschema.Vulnerability, []string) {
	b.Helper()
	entries, modules := advisorytest.Synthetic{Seed: 1}.Generate()
	dir := b.TempDir()
	advisorytest.WriteV1(b, dir, entries...)
	return dir, entries, modules
}

// blockList returns 1,000 selectors: malicious, cvss>=7.0, and 998
// advisory IDs and aliases, a third of them in the database.
func blockList(entries []*osvschema.Vulnerability) []string {
	items := []string{"malicious", "cvss>=7.0"}
	for i := 0; len(items) < 1000; i++ {
		switch i % 3 {
		case 0:
			items = append(items, entries[(i*7)%len(entries)].GetId())
		case 1:
			items = append(items, fmt.Sprintf("CVE-2030-%05d", i))
		default:
			items = append(items, fmt.Sprintf("GHSA-zzzz-zzzz-%04d", i))
		}
	}
	return items
}

// BenchmarkAffecting measures one request's advisory check, Affecting then
// the 1,000-item block list on each entry found, against the synthetic
// full database, for three kinds of request, and a map lookup of the
// module path as the baseline to take ratios against.
func BenchmarkAffecting(b *testing.B) {
	dir, entries, modules := syntheticDB(b)
	db, err := advisory.Load(context.Background(), dir, nil, advisory.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	set, err := advisory.ParseSelectors(blockList(entries))
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(2, 2))
	const n = 1024
	mk := func(f func() module.Version) []module.Version {
		var out []module.Version
		for range n {
			out = append(out, f())
		}
		return out
	}
	requests := map[string][]module.Version{
		// a module no advisory names: most requests
		"miss": mk(func() module.Version {
			return module.Version{Path: fmt.Sprintf("github.com/clean%d/lib", r.IntN(100000)), Version: "v1.4.2"}
		}),
		// a module some advisory names, at a version past every fix
		"named-unaffected": mk(func() module.Version {
			return module.Version{Path: modules[r.IntN(len(modules))], Version: "v9.0.0"}
		}),
		// a module some advisory names, at a version inside its ranges
		"named-affected": mk(func() module.Version {
			return module.Version{Path: modules[r.IntN(len(modules))], Version: "v0.0.1-0.20200101000000-abcdef123456"}
		}),
	}
	paths := map[string]bool{}
	for _, m := range modules {
		paths[m] = true
	}
	b.Run("baseline-map-lookup", func(b *testing.B) {
		reqs := requests["miss"]
		found := 0
		for i := 0; b.Loop(); i++ {
			if paths[reqs[i%n].Path] {
				found++
			}
		}
		runtime.KeepAlive(found)
	})
	for _, kind := range []string{"miss", "named-unaffected", "named-affected"} {
		b.Run(kind, func(b *testing.B) {
			reqs := requests[kind]
			blocked, found := 0, 0
			for i := 0; b.Loop(); i++ {
				for _, e := range db.Affecting(reqs[i%n]) {
					found++
					if _, ok := set.Match(e); ok {
						blocked++
					}
				}
			}
			b.ReportMetric(float64(found)/float64(b.N), "entries/op")
			b.ReportMetric(float64(blocked)/float64(b.N), "blocked/op")
		})
	}
}

// heapAfter returns the live heap after a collection.
func heapAfter() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkLoad measures loading the synthetic full database from a v1
// directory, and reports the heap the loaded snapshot retains next to the
// size of its JSON on disk and the heap the same entries retain as parsed
// OSV messages (what keeping the schema's types would cost).
func BenchmarkLoad(b *testing.B) {
	dir, _, _ := syntheticDB(b)
	var disk int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fi, err := d.Info()
			if err == nil {
				disk += fi.Size()
			}
			return err
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := advisory.Load(context.Background(), dir, nil, advisory.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()

	before := heapAfter()
	db, err := advisory.Load(context.Background(), dir, nil, advisory.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	retained := heapAfter() - before
	runtime.KeepAlive(db)

	files, err := filepath.Glob(filepath.Join(dir, "ID", "*.json"))
	if err != nil {
		b.Fatal(err)
	}
	before = heapAfter()
	var msgs []*osvschema.Vulnerability
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		v := new(osvschema.Vulnerability)
		if err := protojson.Unmarshal(data, v); err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, v)
	}
	asProto := heapAfter() - before
	runtime.KeepAlive(msgs)

	const mib = 1 << 20
	b.ReportMetric(float64(db.Len()), "entries")
	b.ReportMetric(float64(db.Modules()), "modules")
	b.ReportMetric(float64(disk)/mib, "MiB-json")
	b.ReportMetric(float64(retained)/mib, "MiB-retained")
	b.ReportMetric(float64(asProto)/mib, "MiB-as-proto")
}
