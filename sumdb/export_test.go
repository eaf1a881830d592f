package sumdb

import "context"

// SwapHead is what the x/mod client's WriteConfig of the latest tree
// head does, for tests of a replica whose view is stale.
func (v *Verifier) SwapHead(old, new []byte) error {
	o := &clientOps{v: v, ctx: context.Background()}
	return o.WriteConfig(v.name+"/latest", old, new)
}
