//go:build !unix

package sumdb

// lockFile is a no-op where flock(2) does not exist: the in-process mutex
// still serialises writers, but replicas must not share a data directory.
func lockFile(string) (func(), error) { return func() {}, nil }
