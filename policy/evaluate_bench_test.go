package policy

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/policy/advisory"
	"github.com/sumgate/sumgate/policy/advisory/advisorytest"
)

// BenchmarkEvaluate is the cost of the policy on one request, as the
// issue asks: 1,000 rules and a database of the Go vulnerability
// database's size and shape (advisorytest.Synthetic: 4,500 entries over
// 2,200 modules; the real one cannot be fetched here) with a 1,000-item
// block list, under a cooldown the version passes. Cases: a module
// neither rules nor advisories name; a module the database names, at a
// version past every fix; the same at an affected version; a module
// rules match. "bare" is Decide with an empty policy, the baseline the
// ratios are taken against in the same run. It also reports the heap the
// loaded database and the compiled rules retain.
func BenchmarkEvaluate(b *testing.B) {
	entries, modules := advisorytest.Synthetic{Seed: 1}.Generate()
	dir := b.TempDir()
	advisorytest.WriteV1(b, dir, entries...)
	block := []string{"malicious", "cvss>=7.0"}
	for i := 0; len(block) < 1000; i++ {
		block = append(block, entries[(i*7)%len(entries)].GetId())
	}
	set, err := advisory.ParseSelectors(block)
	if err != nil {
		b.Fatal(err)
	}
	before := heap()
	db, err := advisory.Load(context.Background(), dir, nil, advisory.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	dbHeap := heap() - before
	before = heap()
	e, err := New(benchPolicy(1000), Options{Advisories: Advisories(func() *advisory.DB { return db }, set)})
	if err != nil {
		b.Fatal(err)
	}
	rulesHeap := heap() - before
	bare, err := New(config.Policy{Mode: config.PolicyEnforce, Cooldown: 72 * time.Hour}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	// A module the database names, and one of its affected versions and
	// one past every fix, found by asking the database.
	var named, affected, fixed string
	for _, path := range modules {
		affected, fixed = "", ""
		for minor := range 40 {
			v := fmt.Sprintf("v1.%d.0", minor)
			if len(db.Affecting(module.Version{Path: path, Version: v})) > 0 {
				if affected == "" {
					affected = v
				}
			} else if affected != "" && fixed == "" {
				fixed = v
			}
		}
		if affected != "" && fixed != "" {
			named = path
			break
		}
	}
	if named == "" {
		b.Fatal("no module with an affected and a fixed v1 version in the synthetic database")
	}
	old := func(module.Version) Age { return Age{Known: true, Since: time.Now().AddDate(-1, 0, 0)} }
	cases := []struct {
		name   string
		engine *Engine
		m      module.Version
	}{
		{"bare", bare, module.Version{Path: "golang.org/x/net", Version: "v0.30.0"}},
		{"unnamed", e, module.Version{Path: "golang.org/x/net", Version: "v0.30.0"}},
		{"advisory-fixed", e, module.Version{Path: named, Version: fixed}},
		{"advisory-affected", e, module.Version{Path: named, Version: affected}},
		{"rules-match", e, module.Version{Path: "github.com/org6/repo6", Version: "v1.1.5"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.engine.Decide(c.m, old)
			}
			b.ReportMetric(float64(dbHeap)/(1<<20), "db-MiB")
			b.ReportMetric(float64(rulesHeap)/(1<<20), "rules-MiB")
		})
	}
	runtime.KeepAlive(db)
	runtime.KeepAlive(e)
}

// heap returns the bytes of live heap objects after a collection.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
